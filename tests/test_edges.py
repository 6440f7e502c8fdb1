"""The edges around format v3, attacked as the edges issue found them: a refused session that stayed
usable, forged weights driving ORT's initialisation, files read twice, the fallback's re-read of the model,
metadata outside the signature, FIFOs, untyped errors on malformed files. Real files, real ORT sessions."""

from __future__ import annotations

import os
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from forge import blob_span, content_key, device_of, keep_tag_rewrite
from models import IR_VERSION, OPSET, big_embedding, transformer_like
from onnx import TensorProto, helper, numpy_helper

import ortseal
from ortseal import FormatError, KeySet, OrtsealError, TamperedError
from ortseal.model._graph import SEALED_SUFFIX, load_model
from ortseal.model._record import read_record
from ortseal.model.seal import plaintext_report

CPU = ["CPUExecutionProvider"]


class OrtCreations:
    """Counts ORT's own session creations (ORT runs for real: nothing is replaced)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count, real = 0, ort.InferenceSession._create_inference_session

        def counted(session, *args, **kwargs):
            self.count += 1
            return real(session, *args, **kwargs)

        monkeypatch.setattr(ort.InferenceSession, "_create_inference_session", counted)


@pytest.fixture(scope="module")
def mid(tmp_path_factory):
    """A 20 MiB sealed table (it opens through RAM files) and its plain values."""
    d = tmp_path_factory.mktemp("mid")
    table = np.array(big_embedding(d / "model.onnx", rows=5120, dim=1024))
    keys = KeySet.generate()
    ortseal.seal_model(d / "model.onnx", d / "sealed.onnx", keys, progress=False)
    return d, keys, table


def forge_segment(path: Path, keys: KeySet, tensor: str, segment: int, chosen: bytes) -> None:
    """Rewrite one segment of a sealed tensor's blob as a content-key holder can: every GCM tag kept."""
    data, offset, length = blob_span(path, tensor)
    raw = bytearray(data.read_bytes())
    raw[offset:offset + length] = keep_tag_rewrite(bytes(raw[offset:offset + length]), content_key(keys), segment,
                                                   chosen)
    data.write_bytes(bytes(raw))


def deploy(src: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    shutil.copy(src, folder / src.name)
    shutil.copy(src.with_name(src.name + ".data"), folder / (src.name + ".data"))
    return folder / src.name


# -- a refusal leaves no usable session ---------------------------------------------------------------
@pytest.mark.slow
def test_set_providers_on_a_forged_file_keeps_the_good_session(mid, tmp_path):
    d, keys, table = mid
    path = deploy(d / "sealed.onnx", tmp_path)
    device = device_of(keys)
    sess = ortseal.InferenceSession(str(path), providers=CPU, keys=device)
    ids = np.array([0, 7, 5119], np.int64)
    chosen = bytearray(table.tobytes()[1 << 20:2 << 20])
    chosen[:4096] = np.full(1024, 1e30, np.float32).tobytes()
    forge_segment(path, keys, "table", 1, bytes(chosen))
    with pytest.raises(TamperedError, match="signed digest"):
        sess.set_providers(CPU)
    # the session that stays is the one built from verified bytes, never one built from the forgery
    assert sess.run(None, {"ids": ids})[0].tobytes() == table[ids].tobytes()
    assert sess.run(None, {"ids": np.array([256], np.int64)})[0].tobytes() == table[[256]].tobytes()


# -- verify first: nothing ORT computes sees bytes whose signed digest was not checked -----------------
def test_forged_shape_weight_never_reaches_ort(tmp_path, monkeypatch):
    """A 64 KiB int64 weight that feeds ConstantOfShape, rewritten by a content-key holder to ask for a
    huge tensor: refused before ORT is created (no allocation, no time), by the session and by verify."""
    dims = np.full(8192, 2, np.int64)
    graph = helper.make_graph(
        [helper.make_node("Slice", ["dims", "starts", "ends"], ["shape"]),
         helper.make_node("ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
         helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)],
        "shape", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(dims, "dims"), numpy_helper.from_array(np.array([0], np.int64), "starts"),
         numpy_helper.from_array(np.array([2], np.int64), "ends")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION),
              str(tmp_path / "shape.onnx"))
    keys = KeySet.generate()
    ortseal.seal_model(tmp_path / "shape.onnx", tmp_path / "shape.sealed.onnx", keys, min_bytes=1024,
                       segment_size=1 << 16)
    assert ortseal.InferenceSession(str(tmp_path / "shape.sealed.onnx"), providers=CPU, keys=keys).run(None, {})[0] == 4
    chosen = np.full(8192, 1 << 20, np.int64).tobytes()
    forge_segment(tmp_path / "shape.sealed.onnx", keys, "dims", 0, chosen)
    creations = OrtCreations(monkeypatch)
    for attempt in (lambda: ortseal.InferenceSession(str(tmp_path / "shape.sealed.onnx"), providers=CPU,
                                                     keys=device_of(keys)),
                    lambda: ortseal.verify_model(tmp_path / "shape.sealed.onnx", device_of(keys))):
        with pytest.raises(TamperedError, match="'dims'.*signed digest"):
            attempt()
    assert creations.count == 0


# -- every byte read once ---------------------------------------------------------------------------
@pytest.fixture
def with_plain_external(tmp_path):
    """A sealed model whose ``ff1`` weight stays plain (--exclude) in the sealed data file."""
    weights = transformer_like(tmp_path / "m.onnx", d=128, ff=4)
    keys = KeySet.generate()
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=64, exclude="^ff1$")
    model = onnx.load(str(tmp_path / "s.onnx"), load_external_data=False)
    ff1 = next(t for t in model.graph.initializer if t.name == "ff1")
    info = {e.key: e.value for e in ff1.external_data}
    feeds = {"ids": np.random.default_rng(0).integers(0, 512, (2, 16), dtype=np.int64)}
    want = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=CPU).run(None, feeds)[0]
    return tmp_path, keys, weights, (int(info["offset"]), int(info["length"])), feeds, want


def test_rewritten_plain_external_tensor_is_refused(with_plain_external):
    d, keys, weights, (offset, length), feeds, want = with_plain_external
    raw = bytearray((d / "s.onnx.data").read_bytes())
    assert raw[offset:offset + length] == weights["ff1"].tobytes()
    raw[offset:offset + 4] = np.array([1e30], np.float32).tobytes()  # a keyless attacker: no key needed
    (d / "s.onnx.data").write_bytes(bytes(raw))
    for opener in (keys, keys.public()):
        with pytest.raises(TamperedError, match="'ff1'.*differ from those that were signed"):
            ortseal.verify_model(d / "s.onnx", opener)
    with pytest.raises(TamperedError, match="'ff1'"):
        ortseal.InferenceSession(str(d / "s.onnx"), providers=CPU, keys=keys)
    with pytest.raises(TamperedError, match="'ff1'"):
        ortseal.fallback_session_options(keys, model=d / "s.onnx")


@pytest.mark.parametrize("route", ["memory", "ram-files"])
def test_plain_tensor_rewritten_while_sessions_open_never_runs(with_plain_external, monkeypatch, route):
    """An attacker rewrites the plain tensor back and forth while sessions are created: each session either
    refuses or runs with the signed bytes, on both routes (ORT reads nothing but what ortseal checked)."""
    d, keys, _, (offset, length), feeds, want = with_plain_external
    if route == "ram-files":
        monkeypatch.setattr("ortseal.model.open.SMALL_MODEL_BYTES", 0)
        monkeypatch.setattr("ortseal.model.open.INLINE_BELOW", 0)
    good = (d / "s.onnx.data").read_bytes()[offset:offset + length]
    bad = np.full(length // 4, 1e30, np.float32).tobytes()
    stop = threading.Event()

    def flip() -> None:
        fd = os.open(d / "s.onnx.data", os.O_WRONLY)
        try:
            while not stop.is_set():
                for chunk in (bad, good):
                    os.pwrite(fd, chunk, offset)
        finally:
            os.pwrite(fd, good, offset)
            os.close(fd)

    flipper = threading.Thread(target=flip)
    flipper.start()
    opened = refused = 0
    try:
        for _ in range(12):
            try:
                got = ortseal.InferenceSession(str(d / "s.onnx"), providers=CPU, keys=keys).run(None, feeds)[0]
            except TamperedError:
                refused += 1
                continue
            opened += 1
            assert got.tobytes() == want.tobytes()
    finally:
        stop.set()
        flipper.join()
    assert opened + refused == 12


def test_fallback_hands_the_verified_bytes(tmp_path):
    """The documented fallback use loads the bytes that were verified: an edited graph renamed over the
    file afterwards (a weight added as an output) is never read."""
    transformer_like(tmp_path / "m.onnx", d=64, vocab=128)
    keys = KeySet.generate()
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=64)
    fb = ortseal.fallback_session_options(keys, model=tmp_path / "s.onnx")
    edited = onnx.load(str(tmp_path / "s.onnx"), load_external_data=False)
    edited.graph.output.append(helper.make_tensor_value_info("wq", TensorProto.FLOAT, [64, 64]))
    onnx.save(edited, str(tmp_path / "edited.onnx"))
    os.replace(tmp_path / "edited.onnx", tmp_path / "s.onnx")
    sess = ort.InferenceSession(fb.model_bytes, fb.sess_options, providers=CPU)
    assert [o.name for o in sess.get_outputs()] == ["y"]
    handed = onnx.load_from_string(fb.model_bytes)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in handed.graph.initializer)


# -- metadata is signed ------------------------------------------------------------------------------
def test_ort_config_added_to_metadata_is_refused(tmp_path, monkeypatch):
    """With ORT_LOAD_CONFIG_FROM_MODEL=1 an ``ort_config`` entry configures the session (profiling that
    writes a file): an entry added after sealing is refused, so no profile is written."""
    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keys = KeySet.generate()
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=64)
    model = onnx.load(str(tmp_path / "s.onnx"), load_external_data=False)
    model.metadata_props.add(key="ort_config", value='{"session_options": {"enable_profiling": true}}')
    onnx.save(model, str(tmp_path / "s.onnx"))
    monkeypatch.setenv("ORT_LOAD_CONFIG_FROM_MODEL", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TamperedError):
        ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=keys)
    assert not list(tmp_path.glob("onnxruntime_profile*"))


# -- FIFOs and special files never hang ---------------------------------------------------------------
def _finishes(fn, seconds: float = 20):
    """Run ``fn`` in a thread; return the exception it raised (None if none); fail if it hangs."""
    box: dict = {}

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "it hangs"
    return box.get("exc")


@pytest.mark.parametrize("where", ["model", "data"])
def test_fifo_planted_as_model_or_data_is_refused(tmp_path, where):
    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keys = KeySet.generate()
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=64)
    target = tmp_path / ("s.onnx" if where == "model" else "s.onnx.data")
    target.unlink()
    os.mkfifo(target)
    for fn in (lambda: ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=keys),
               lambda: ortseal.verify_model(tmp_path / "s.onnx", keys),
               lambda: ortseal.inspect_model(tmp_path / "s.onnx")):
        exc = _finishes(fn)
        assert isinstance(exc, FormatError) and "not a regular file" in str(exc), exc


# -- every bad input is typed -----------------------------------------------------------------------
def _mutations(data: bytes, rng: random.Random, count: int):
    for _ in range(count):
        m = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            at = rng.randrange(len(m))
            if kind < 0.5:
                m[at] ^= 1 << rng.randrange(8)
            elif kind < 0.75:
                del m[at:at + rng.randint(1, 64)]
            else:
                m[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        yield bytes(m)


def _edited(model: onnx.ModelProto, edit) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    edit(copy)
    return copy.SerializeToString()


def _set_external(key: str, value: str):
    def edit(m: onnx.ModelProto) -> None:
        t = next(t for t in m.graph.initializer if t.name.endswith(SEALED_SUFFIX))
        next(e for e in t.external_data if e.key == key).value = value
    return edit


def test_malformed_sealed_models_give_only_typed_errors(tmp_path):
    """Random mutations of a sealed model, and the crafted values that escaped before (negative offset,
    offset 2**70, a tensor identity that is not UTF-8, a missing data file): opening, verifying and
    inspecting raise an OrtsealError or work, nothing else. Unsigned models (an HMAC, no signature) are
    included, so mutations get past the signature check into parsing."""
    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keys = KeySet(content_keys={"k": os.urandom(32)}, allow_unsigned=True)
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=64, sign=False)
    data = (tmp_path / "s.onnx").read_bytes()
    model = onnx.load_from_string(data)
    crafted = [_edited(model, _set_external("offset", "-5")), _edited(model, _set_external("offset", str(2 ** 70))),
               _edited(model, _set_external("length", "x")), _edited(model, _set_external("location", "nowhere.data")),
               _edited(model, lambda m: setattr(next(a for n in m.graph.node for a in n.attribute
                                                     if a.name == "tensor"), "s", b"\xc0\xff"))]
    for i, variant in enumerate(crafted + list(_mutations(data, random.Random(15), 150))):
        path = tmp_path / f"v{i}.onnx"
        path.write_bytes(variant)
        for fn in (lambda: ortseal.InferenceSession(str(path), providers=CPU, keys=keys),
                   lambda: ortseal.verify_model(path, keys), lambda: ortseal.inspect_model(path),
                   lambda: plaintext_report(load_model(path).model)):
            try:
                fn()
            except OrtsealError:
                pass
        path.unlink()


def test_a_sealed_model_never_takes_orts_python_fallback(tmp_path, capfd):
    """ORT's Python API retries a failed session on other EPs and prints 'EP Error' banners: never for a
    sealed model."""
    w = np.ones((64, 64), np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("NoSuchOp", ["m"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION),
              str(tmp_path / "bad.onnx"))
    keys = KeySet.generate()
    ortseal.seal_model(tmp_path / "bad.onnx", tmp_path / "bad.sealed.onnx", keys)
    with pytest.raises(Exception, match="NoSuchOp"):
        ortseal.InferenceSession(str(tmp_path / "bad.sealed.onnx"), providers=CPU, keys=keys)
    assert "Falling back" not in capfd.readouterr().out


def test_record_layout(tmp_path):
    """The seal record is the file's last bytes, and the whole file still parses as ONNX."""
    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keys = KeySet.generate()
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=64)
    data = (tmp_path / "s.onnx").read_bytes()
    record = read_record(data)
    assert record is not None and record.signer_id == keys.signing_key_ids[0] and record.size == 137
    model = onnx.load_from_string(data)
    assert model.metadata_props[-1].key == "ortseal.signature"
    onnx.checker.check_model(str(tmp_path / "s.onnx"))


# -- bytes and renamed files: what is missing is named -----------------------------------------------
def test_sealed_bytes_with_large_external_data_open_like_paths(mid, monkeypatch):
    """Bytes whose weights take the RAM-file route (20 MiB) open with the folder option, and without it the
    error names the model's data file, never an internal one."""
    d, keys, table = mid
    data = (d / "sealed.onnx").read_bytes()
    ids = np.array([3, 4097], np.int64)
    with pytest.raises(FormatError, match="'sealed.onnx.data'") as refused:
        ortseal.InferenceSession(data, providers=CPU, keys=keys)
    assert ".bin" not in str(refused.value)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(d))
    assert ortseal.InferenceSession(data, so, providers=CPU, keys=keys).run(None, {"ids": ids})[0].tobytes() == \
        table[ids].tobytes()
    assert ortseal.verify_model(data, keys, data_dir=str(d)).decrypted


def test_a_renamed_sealed_model_opens_and_a_renamed_data_file_is_named(mid, tmp_path):
    d, keys, table = mid
    shutil.copy(d / "sealed.onnx", tmp_path / "prod.onnx")  # the model file renamed: its data file kept
    shutil.copy(d / "sealed.onnx.data", tmp_path / "sealed.onnx.data")
    ids = np.array([1], np.int64)
    assert ortseal.InferenceSession(str(tmp_path / "prod.onnx"), providers=CPU, keys=keys).run(
        None, {"ids": ids})[0].tobytes() == table[ids].tobytes()
    os.rename(tmp_path / "sealed.onnx.data", tmp_path / "prod.onnx.data")  # the pair renamed
    for fn in (lambda: ortseal.verify_model(tmp_path / "prod.onnx", keys),
               lambda: ortseal.InferenceSession(str(tmp_path / "prod.onnx"), providers=CPU, keys=keys)):
        with pytest.raises(FormatError, match="names the data file 'sealed.onnx.data'.*missing"):
            fn()


def test_opening_logs_what_it_checks(mid, caplog):
    d, keys, _ = mid
    with caplog.at_level("INFO", logger="ortseal"):
        ortseal.verify_model(d / "sealed.onnx", keys)
    text = caplog.text
    assert "1 sealed tensors" in text and "20.0 MiB" in text and "verified and decrypted in" in text


@pytest.mark.slow
def test_verify_shows_progress_on_a_terminal(tmp_path):
    """On a terminal, verifying (which opens) a large model draws a progress bar; redirected, it does not."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    big_embedding(tmp_path / "big.onnx", rows=18000)  # 70 MiB: above the progress bar's threshold
    keys = KeySet.generate()
    keys.save(tmp_path / "k.json")
    ortseal.seal_model(tmp_path / "big.onnx", tmp_path / "s.onnx", keys, progress=False)
    command = [sys.executable, "-m", "ortseal", "verify", str(tmp_path / "s.onnx"), "--keys", str(tmp_path / "k.json")]
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a width
    r = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, timeout=300)
    os.close(follower)
    shown = b""
    os.set_blocking(leader, False)
    try:
        while chunk := os.read(leader, 1 << 16):
            shown += chunk
    except OSError:
        pass
    os.close(leader)
    assert r.returncode == 0 and b"opening s.onnx" in shown and b"\r" in shown
    redirected = subprocess.run(command, capture_output=True, timeout=300)
    assert redirected.returncode == 0 and b"\r" not in redirected.stderr


# -- found by attacking format v3: every external byte checked, ids and names from the signed manifest --
def test_external_sparse_constant_is_sealed_inline(tmp_path):
    """A Constant whose sparse_value keeps its values in an external file: sealing takes them in, so a file
    rewritten afterwards changes nothing; an HMAC-sealed model that points one outside is refused."""
    from ortseal.model._graph import set_external
    from ortseal.model._record import body_digest, make_record, read_record

    n = 64
    vals = np.full(4, 1.0, np.float32)
    (tmp_path / "sp.bin").write_bytes(vals.tobytes())
    values = numpy_helper.from_array(vals, "sv")
    set_external(values, "sp.bin", 0, vals.nbytes)
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.arange(4, dtype=np.int64), "si"), [1, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y0"]),
                               helper.make_node("Constant", [], ["S"], sparse_value=sparse),
                               helper.make_node("Add", ["y0", "S"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(np.eye(n, dtype=np.float32), "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION),
              str(tmp_path / "m.onnx"))
    keys = KeySet(content_keys={"k": os.urandom(32)}, allow_unsigned=True)
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=64, include="^W$", sign=False)
    x = np.ones((1, n), np.float32)
    want = ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=keys).run(None, {"x": x})[0]
    (tmp_path / "sp.bin").write_bytes(np.full(4, 1000.0, np.float32).tobytes())
    assert ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=keys).run(None, {"x": x})[0].tobytes() \
        == want.tobytes()
    # a content-key holder re-seals (HMAC) a model whose sparse values point at a file: refused, not read
    data = (tmp_path / "s.onnx").read_bytes()
    model = onnx.load_from_string(data[:len(data) - read_record(data).size])
    const = next(n for n in model.graph.node if n.op_type == "Constant" and n.output[0] == "S")
    set_external(const.attribute[0].sparse_tensor.values, "sp.bin", 0, vals.nbytes)
    body = model.SerializeToString()
    (tmp_path / "e.onnx").write_bytes(body + make_record(body_digest(body), keys, sign=False, key_id="k"))
    with pytest.raises(FormatError, match="only initializers as external data"):
        ortseal.InferenceSession(str(tmp_path / "e.onnx"), providers=CPU, keys=keys)


def test_plain_external_tensor_in_a_function_subgraph_is_checked(tmp_path):
    """A plain external initializer inside an If branch of a local function is moved into the sealed data
    file, listed in the manifest and checked like any other: rewritten, it is refused."""
    n = 64
    bias = np.full((1, n), 2.0, np.float32)
    from ortseal.model._graph import set_external

    (tmp_path / "b.bin").write_bytes(bias.tobytes())
    external_bias = numpy_helper.from_array(bias, "B")
    set_external(external_bias, "b.bin", 0, bias.nbytes)
    then_g = helper.make_graph([helper.make_node("Add", ["a", "B"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, n])], [external_bias])
    else_g = helper.make_graph([helper.make_node("Identity", ["a"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, n])])
    fn = helper.make_function("local", "F", ["a"], ["b"], [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True), "c")),
        helper.make_node("If", ["c"], ["b"], name="iff", then_branch=then_g, else_branch=else_g)],
        opset_imports=[helper.make_opsetid("", OPSET)])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y0"]),
                               helper.make_node("F", ["y0"], ["y"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(np.eye(n, dtype=np.float32), "W")])
    model = helper.make_model(graph, functions=[fn], ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("local", 1)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    keys = KeySet.generate()
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=64, exclude="^B$")
    x = np.ones((1, n), np.float32)
    got = ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=keys).run(None, {"x": x})[0]
    assert got.tobytes() == (x + bias).tobytes()
    sealed = onnx.load(str(tmp_path / "s.onnx"), load_external_data=False)
    b = next(t for a in sealed.functions[0].node[1].attribute for t in a.g.initializer if t.name == "B")
    assert b.data_location == TensorProto.EXTERNAL
    info = {e.key: e.value for e in b.external_data}
    raw = bytearray((tmp_path / "s.onnx.data").read_bytes())
    raw[int(info["offset"]):int(info["offset"]) + 4] = np.array([1000.0], np.float32).tobytes()
    (tmp_path / "s.onnx.data").write_bytes(bytes(raw))
    for attempt in (lambda: ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=keys),
                    lambda: ortseal.verify_model(tmp_path / "s.onnx", keys.public())):
        with pytest.raises(TamperedError, match="'B'"):
            attempt()


def test_a_key_id_chosen_by_the_file_never_reaches_the_key_provider(tmp_path):
    """The blob header is read once and checked against the signed manifest's key id before any key is
    asked for: a data file naming another key id is refused without the provider seeing that id."""
    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    publisher = KeySet.generate()
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", publisher, min_bytes=64)
    real_id = publisher.content_key_ids[0]
    asked: list[str] = []

    def provider(key_id: str) -> bytes | None:
        asked.append(key_id)
        return publisher.content_key(key_id) if key_id == real_id else None

    device = KeySet.merge(KeySet.from_provider(provider), publisher.public())
    assert ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=device)
    data = (tmp_path / "s.onnx.data").read_bytes()
    (tmp_path / "s.onnx.data").write_bytes(data.replace(real_id.encode(), b"deadbeefdeadbeef"))
    with pytest.raises(TamperedError, match="names key 'deadbeefdeadbeef'"):
        ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=device)
    assert set(asked) == {real_id}


def test_another_model_of_the_same_publisher_is_refused_by_name(tmp_path):
    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keys = KeySet.generate()
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "a.onnx", keys, min_bytes=64, model_name="detector")
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "b.onnx", keys, min_bytes=64, model_name="classifier")
    assert ortseal.verify_model(tmp_path / "a.onnx", keys, model_name="detector").model == "detector"
    for attempt in (lambda: ortseal.InferenceSession(str(tmp_path / "b.onnx"), providers=CPU, keys=keys,
                                                     model_name="detector"),
                    lambda: ortseal.verify_model(tmp_path / "b.onnx", keys, model_name="detector"),
                    lambda: ortseal.fallback_session_options(keys, model=tmp_path / "b.onnx", model_name="detector")):
        with pytest.raises(TamperedError, match="'classifier', not 'detector'"):
            attempt()
