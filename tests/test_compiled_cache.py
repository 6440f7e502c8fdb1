"""The sealed compiled-model cache on a real OpenVINO-EP session (ORT's compile API, EPContext models).

Every test needs an EP that offers a device here (the OpenVINO plugin EP on an Intel CPU); elsewhere each
skips, saying so. Each attack docs/compiled-cache.md lists is carried out below on real files.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import contains_run
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

import ortseal
from ortseal import KeySet, RollbackError, TamperedError, UnsafeOptionError
from ortseal.compiled.entry import (
    CONTEXT_PREFIX,
    ENTRY_SUFFIX,
    PREFIX_SIZE,
    open_entry,
    parse_entry,
    read_entry,
    verify_entry,
    write_entry,
)

ort = pytest.importorskip("onnxruntime")
EP = "OpenVINOExecutionProvider"
ROOT = Path(__file__).resolve().parents[1]


def _openvino_target():
    """The OpenVINO EP's CPU device, if it is here and loads the EPContext models it compiles (the classic
    onnxruntime-openvino 1.24.1 does not: docs/support-matrix.md); else the test skips, saying why."""
    from ortseal.compiled import ep_target

    try:
        target = ep_target(EP, device_type="CPU")
    except ortseal.ProviderUnavailableError as exc:
        pytest.skip(f"no EP offers a device for the compiled-model cache here: {exc}")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10).SerializeToString()
    try:
        sessions = [ort.SessionOptions() for _ in range(2)]
        for so in sessions:
            target.add_to(so)
        ort.InferenceSession(ort.ModelCompiler(sessions[0], probe, embed_compiled_data_into_model=True)
                             .compile_to_bytes(), sessions[1])
    except Exception as exc:  # noqa: BLE001 - ORT's own error types
        pytest.skip(f"{EP} {target.version} here cannot load the EPContext models it compiles: {exc}")
    return target


@pytest.fixture(scope="module")
def target():
    return _openvino_target()


def _model(path: Path, seed: int = 0, n: int = 256) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n, 2 * n)).astype(np.float32)
    w2 = rng.standard_normal((2 * n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return {"w1": w1, "w2": w2}


@pytest.fixture(scope="module")
def publisher() -> KeySet:
    return KeySet.generate()


@pytest.fixture(scope="module")
def device(publisher) -> KeySet:
    """A device keyset: the publisher's content key and public key, plus its own engine-signing key."""
    return publisher.for_device(engine_signing_key=True)


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """A working folder that is also the current folder and the temp folder, so the plaintext check sees
    whatever ORT, the EP or ortseal might write to either."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp))
    return tmp_path


def _x(n: int = 256) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((4, n)).astype(np.float32)


def _fresh(model: Path, target) -> np.ndarray:
    so = ort.SessionOptions()
    target.add_to(so)
    return ort.InferenceSession(str(model), so).run(None, {"x": _x()})[0]


def _cache(work: Path, keys: KeySet, **kw):
    from ortseal.compiled import CompiledModelCache

    return CompiledModelCache(work / "cache", keys, **kw)


def _no_plaintext(folders: list[Path], secrets: dict[str, np.ndarray], source: Path | None = None) -> None:
    """No file in ``folders`` (the plain ``source`` model aside) holds a 32-byte run of any secret."""
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink() and path != source:
                data = path.read_bytes()
                for name, w in secrets.items():
                    assert not contains_run(data, w.tobytes()), f"{path} holds plaintext of {name}"


# -- starts ---------------------------------------------------------------------------------------
def test_first_start_compiles_and_seals_later_starts_open_the_entry(work, device, target):
    weights = _model(work / "m.onnx")
    cache = _cache(work, device)
    first = cache.start(work / "m.onnx", target)
    second = cache.start(work / "m.onnx", target)
    assert first.compiled and not second.compiled and first.entry == second.entry
    assert first.session.get_providers()[0] == EP and second.session.get_providers()[0] == EP
    expected = _fresh(work / "m.onnx", target)
    assert np.array_equal(first.session.run(None, {"x": _x()})[0], expected)
    assert np.array_equal(second.session.run(None, {"x": _x()})[0], expected)
    assert [p.name for p in (work / "cache").iterdir()] == [first.entry.name]
    assert oct(first.entry.stat().st_mode & 0o777) == "0o600"
    # the check below can fail: the compiled model inside the entry holds the weights in plaintext
    plain = open_entry(read_entry(first.entry), device, read_entry(first.entry).binding)
    assert contains_run(bytes(plain), weights["w1"].tobytes())
    _no_plaintext([work], weights, source=work / "m.onnx")


def test_sealed_source_compiles_in_memory(work, publisher, device, target):
    weights = _model(work / "m.onnx", seed=1)
    ortseal.seal_model(work / "m.onnx", work / "m.sealed.onnx", publisher)
    expected = _fresh(work / "m.onnx", target)
    (work / "m.onnx").unlink()
    cache = _cache(work, device)
    first = cache.start(work / "m.sealed.onnx", target, model_name="m")
    second = cache.start(work / "m.sealed.onnx", target, model_name="m")
    assert first.compiled and not second.compiled
    assert np.array_equal(first.session.run(None, {"x": _x()})[0], expected)
    assert np.array_equal(second.session.run(None, {"x": _x()})[0], expected)
    assert read_entry(first.entry).binding.doc["source"]["kind"] == "sealed"
    _no_plaintext([work], weights)
    with pytest.raises(TamperedError, match="not 'other'"):
        cache.start(work / "m.sealed.onnx", target, model_name="other")


_COUNT_COMPILES = textwrap.dedent("""
    import sys, onnxruntime as ort
    from ortseal.compiled import CompiledModelCache, ep_target
    so = ort.SessionOptions()
    so.log_severity_level = 0  # verbose: the OpenVINO EP logs each compile_model and import_model call
    start = CompiledModelCache(sys.argv[2], sys.argv[3]).start(sys.argv[1], ep_target("OpenVINOExecutionProvider",
                                                                                      device_type="CPU"), sess_options=so)
    print("COMPILED" if start.compiled else "OPENED")
""")


def test_second_start_does_not_compile_counted_through_the_eps_log(work, device, target):
    """Two processes, as two starts of an application: the EP's own log shows one compile_model in the first
    and none in the second, which imports the compiled blob instead."""
    _model(work / "m.onnx", seed=2)
    device.save(work / "device.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.run([sys.executable, "-c", _COUNT_COMPILES, str(work / "m.onnx"), str(work / "cache"),
                            str(work / "device.json")], capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    assert [r.stdout.split()[-1] for r in runs] == ["COMPILED", "OPENED"]
    compiles = [r.stderr.count("ov::Core::compile_model(") for r in runs]
    imports = [r.stderr.count("ov::Core::import_model(") for r in runs]
    assert compiles[0] >= 1 and compiles[1] == 0 and imports[1] >= 1, (compiles, imports)


# -- stale entries: another binding is another entry, never loaded -------------------------------------
def test_other_options_or_ep_version_compile_their_own_entry(work, device, target):
    _model(work / "m.onnx", seed=3)
    cache = _cache(work, device)
    base = cache.start(work / "m.onnx", target)
    other_options = dataclasses.replace(target, options={"precision": "ACCURACY"})
    other_version = dataclasses.replace(target, version=target.version + "-older")
    for changed in (other_options, other_version):
        start = cache.start(work / "m.onnx", changed)
        assert start.compiled and start.entry != base.entry
        assert not cache.start(work / "m.onnx", changed).compiled
    assert not cache.start(work / "m.onnx", target).compiled
    assert len(list((work / "cache").glob(f"*{ENTRY_SUFFIX}"))) == 3


def test_changed_source_model_is_a_new_entry(work, device, target):
    _model(work / "m.onnx", seed=4)
    cache = _cache(work, device)
    old = cache.start(work / "m.onnx", target)
    _model(work / "m.onnx", seed=5)
    new = cache.start(work / "m.onnx", target)
    assert new.compiled and new.entry != old.entry
    assert np.array_equal(new.session.run(None, {"x": _x()})[0], _fresh(work / "m.onnx", target))


# -- attacks ----------------------------------------------------------------------------------------
def _entry_of(work: Path, keys: KeySet, target, model: str = "m.onnx", **kw) -> Path:
    return _cache(work, keys, **kw).start(work / model, target).entry


def test_flipped_byte_is_refused_or_quarantined_and_rebuilt(work, device, target):
    weights = _model(work / "m.onnx", seed=6)
    entry = _entry_of(work, device, target)
    size = entry.stat().st_size
    for offset in (PREFIX_SIZE + 3, size // 2, size - 1):  # binding, ciphertext, signature
        data = bytearray(entry.read_bytes())
        data[offset] ^= 0x01
        entry.write_bytes(bytes(data))
        with pytest.raises(ortseal.OrtsealError):
            _cache(work, device).start(work / "m.onnx", target)
        rebuilt = _cache(work, device, on_tamper="rebuild").start(work / "m.onnx", target)
        assert rebuilt.compiled and rebuilt.quarantined == work / "cache" / "quarantine" / entry.name
        assert np.array_equal(rebuilt.session.run(None, {"x": _x()})[0], _fresh(work / "m.onnx", target))
        assert not _cache(work, device).start(work / "m.onnx", target).compiled
    _no_plaintext([work], weights, source=work / "m.onnx")  # the cache, its quarantine, cwd and TMPDIR


def test_entry_of_model_a_under_model_b_name_is_refused(work, device, target):
    _model(work / "a.onnx", seed=7)
    _model(work / "b.onnx", seed=8)
    a = _entry_of(work, device, target, "a.onnx")
    b = _entry_of(work, device, target, "b.onnx")
    b.write_bytes(a.read_bytes())
    with pytest.raises(TamperedError, match="compiled for another model"):
        _cache(work, device).start(work / "b.onnx", target)
    rebuilt = _cache(work, device, on_tamper="rebuild").start(work / "b.onnx", target)
    assert rebuilt.compiled and rebuilt.quarantined is not None
    assert np.array_equal(rebuilt.session.run(None, {"x": _x()})[0], _fresh(work / "b.onnx", target))


@pytest.mark.parametrize("change", ["options", "ep_version"])
def test_entry_compiled_otherwise_put_under_this_name_is_refused(work, device, target, change):
    _model(work / "m.onnx", seed=9)
    other = dataclasses.replace(target, options={"precision": "ACCURACY"}) if change == "options" else \
        dataclasses.replace(target, version="0.0.1")
    foreign = _entry_of(work, device, other)
    entry = _entry_of(work, device, target)
    entry.write_bytes(foreign.read_bytes())
    with pytest.raises(TamperedError, match="compiled for another"):
        _cache(work, device).start(work / "m.onnx", target)


def test_binding_rewritten_to_match_is_refused(work, device, target):
    """The stored binding swapped for this name's own: the blob's context no longer matches it."""
    _model(work / "m.onnx", seed=10)
    foreign = read_entry(_entry_of(work, device, dataclasses.replace(target, version="0.0.1")))
    entry_path = _entry_of(work, device, target)
    own = read_entry(entry_path)
    entry_path.write_bytes(own.data[:PREFIX_SIZE + len(own.binding.raw)] + bytes(foreign.blob))
    with pytest.raises(TamperedError, match="different context"):
        _cache(work, device).start(work / "m.onnx", target)


def test_older_release_is_refused(work, device, target):
    _model(work / "m.onnx", seed=11)
    old = _entry_of(work, device, target, release=1).read_bytes()
    with pytest.raises(RollbackError):  # a new release refuses the old entry (as the TensorRT vault does)...
        _cache(work, device, release=2).start(work / "m.onnx", target)
    entry = _entry_of(work, device, target, release=2, on_tamper="rebuild")  # ...or sets it aside and rebuilds
    assert not _cache(work, device, release=2).start(work / "m.onnx", target).compiled
    entry.write_bytes(old)  # the authentic release-1 entry put back over the release-2 one
    with pytest.raises(RollbackError):
        _cache(work, device, release=2).start(work / "m.onnx", target)
    rebuilt = _cache(work, device, release=2, on_tamper="rebuild").start(work / "m.onnx", target)
    assert rebuilt.compiled and read_entry(rebuilt.entry).header.release == 2


def test_entry_signed_by_a_model_only_or_unknown_key_is_refused(work, target):
    content = {"ck": os.urandom(32)}
    publisher_key = Ed25519PrivateKey.generate()
    publisher = KeySet(content_keys=content, signing_keys=[publisher_key])
    # the device trusts the publisher for models only, and signs its own cache with its engine key
    device = KeySet.merge(KeySet(content_keys=content), publisher.public(scope=["model:*"])).for_device(
        engine_signing_key=True)
    _model(work / "m.onnx", seed=12)
    entry = _entry_of(work, device, target)
    genuine = read_entry(entry)
    plain = open_entry(genuine, device, genuine.binding)
    stranger = KeySet(content_keys=content, signing_keys=[Ed25519PrivateKey.generate()])
    for signer, why in ((publisher, "does not trust"), (stranger, "does not trust")):
        write_entry(entry, plain, genuine.binding, signer)  # the same compiled model, the right binding
        with pytest.raises(TamperedError, match=why):
            _cache(work, device).start(work / "m.onnx", target)
    unsigned = KeySet(content_keys=content, allow_unsigned=True)
    write_entry(entry, plain, genuine.binding, unsigned)
    with pytest.raises(TamperedError, match="unsigned"):
        _cache(work, device).start(work / "m.onnx", target)


def test_fifo_or_symlink_as_the_entry_is_refused_without_waiting_or_following(work, device, target):
    weights = _model(work / "m.onnx", seed=13)
    entry = _entry_of(work, device, target)
    real = work / "elsewhere.sealed"
    entry.rename(real)
    os.symlink(real, entry)
    with pytest.raises(TamperedError, match="symbolic link"):
        _cache(work, device).start(work / "m.onnx", target)
    entry.unlink()
    os.mkfifo(entry)
    t = time.monotonic()
    with pytest.raises(TamperedError, match="FIFO"):
        _cache(work, device).start(work / "m.onnx", target)
    assert time.monotonic() - t < 30  # refused at once, never waited on for a writer
    rebuilt = _cache(work, device, on_tamper="rebuild").start(work / "m.onnx", target)
    assert rebuilt.compiled and entry.is_file() and not entry.is_symlink()
    assert (work / "cache" / "quarantine" / entry.name).is_fifo()
    assert real.is_file()  # what a link pointed at is never touched
    _no_plaintext([work], weights, source=work / "m.onnx")


_KILLED_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from ortseal import KeySet
    from ortseal.compiled.entry import Binding, read_entry, write_entry
    binding = read_entry(sys.argv[1]).binding
    write_entry(sys.argv[1], np.ones(1 << 28, np.uint8), binding, KeySet.load(sys.argv[2]))
""")


def test_killed_writer_leaves_no_entry_and_its_temp_is_removed(work, device, target):
    _model(work / "m.onnx", seed=14)
    entry = _entry_of(work, device, target)
    before = entry.read_bytes()
    device.save(work / "device.json")
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(entry), str(work / "device.json")],
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    temps: list[Path] = []
    while time.monotonic() < deadline and child.poll() is None:
        temps = [p for p in (work / "cache").glob(".*.tmp") if p.stat().st_size > (1 << 20)]
        if temps:
            break
        time.sleep(0.005)
    assert temps, "the writer never started writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert entry.read_bytes() == before  # the entry is the old one, whole
    start = _cache(work, device).start(work / "m.onnx", target)  # a new cache removes the dead writer's temp
    assert not start.compiled and not list((work / "cache").glob(".*.tmp"))


# -- refused options: nothing written, nothing compiled ----------------------------------------------
@pytest.mark.parametrize("options, config", [
    ({"cache_dir": "ovcache"}, {}),
    ({"load_config": '{"CPU": {"CACHE_DIR": "ovcache"}}'}, {}),
    ({"export_ep_ctx_blob": "1"}, {}),
    ({}, {"ep.context_enable": "1"}),
    ({}, {"ep.context_file_path": "out_ctx.onnx"}),
])
def test_options_that_write_the_compiled_model_are_refused(work, device, target, options, config):
    _model(work / "m.onnx", seed=15)
    so = ort.SessionOptions()
    for k, v in config.items():
        so.add_session_config_entry(k, v)
    with pytest.raises(UnsafeOptionError):
        _cache(work, device).start(work / "m.onnx", dataclasses.replace(target, options=options), sess_options=so)
    assert not list((work / "cache").iterdir())
    assert not (work / "ovcache").exists() and not (work / "out_ctx.onnx").exists()


def test_session_options_with_their_own_providers_are_refused(work, device, target):
    _model(work / "m.onnx", seed=16)
    so = ort.SessionOptions()
    target.add_to(so)
    with pytest.raises(UnsafeOptionError, match="already has execution providers"):
        _cache(work, device).start(work / "m.onnx", target, sess_options=so)


def test_a_keyset_that_cannot_sign_compiles_nothing(work, publisher, target):
    _model(work / "m.onnx", seed=17)
    verifier = KeySet.merge(publisher.without_signing(), publisher.public())
    with pytest.raises(ortseal.OrtsealError, match="cannot sign"):
        _cache(work, verifier).start(work / "m.onnx", target)
    assert not list((work / "cache").iterdir())


def test_cache_folder_writable_by_others_is_refused(work, device):
    (work / "cache").mkdir(mode=0o700)
    os.chmod(work / "cache", 0o777)
    with pytest.raises(UnsafeOptionError, match="writable by others"):
        _cache(work, device)


# -- the format, from its spec ------------------------------------------------------------------------
def test_a_second_implementation_from_the_spec_opens_an_entry(work, device, target):
    """docs/compiled-cache.md and docs/format.md alone: split the prefix, take the binding, open the blob
    with context "ortseal/compiled-model/v1\\0" || binding (tests/test_vectors.py's blob reader)."""
    import hashlib
    import json
    import struct

    from cryptography.hazmat.primitives import serialization
    from test_vectors import _spec_blob

    _model(work / "m.onnx", seed=18)
    path = _entry_of(work, device, target)
    data = path.read_bytes()
    magic, version, length = struct.unpack_from(">8sBI", data)
    assert magic == b"ORTSEALC" and version == 1
    binding = data[13:13 + length]
    doc = json.loads(binding)
    assert doc["ep"]["name"] == EP and doc["source"]["sha256"] == hashlib.sha256(
        b"ortseal compiled source v1\x00" + len((work / "m.onnx").read_bytes()).to_bytes(8, "big")
        + (work / "m.onnx").read_bytes()).hexdigest()
    assert path.name.endswith(f"-{hashlib.sha256(binding).hexdigest()[:20]}.epctx.sealed")
    signer = device.signing_key()[1].public_key().public_bytes(serialization.Encoding.Raw,
                                                               serialization.PublicFormat.Raw)
    compiled = _spec_blob(data[13 + length:], device.content_key(device.content_key_ids[0]),
                          CONTEXT_PREFIX + binding, public=signer)
    model = onnx.load_from_string(compiled)
    assert [n.op_type for n in model.graph.node] == ["EPContext"]
    assert parse_entry(data).binding.raw == binding


def test_verify_entry_checks_against_its_own_binding(work, device, publisher, target):
    _model(work / "m.onnx", seed=19)
    path = _entry_of(work, device, target)
    assert verify_entry(path, device).binding.doc["ep"]["name"] == EP
    assert verify_entry(path, device.public()).header.signed  # public keys only: hashed, not decrypted
    with pytest.raises(TamperedError):
        verify_entry(path, publisher.public())  # the publisher never trusted the device's engine key


def test_cli_list_and_verify(work, device, target):
    _model(work / "m.onnx", seed=20)
    path = _entry_of(work, device, target)
    device.save(work / "device.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ortseal", "compiled", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    r = cli("list", str(work / "cache"))
    assert r.returncode == 0 and path.name in r.stdout and EP in r.stdout, r.stderr
    assert cli("verify", str(work / "cache"), "--keys", str(work / "device.json")).returncode == 0
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    r = cli("verify", str(work / "cache"), "--keys", str(work / "device.json"))
    assert r.returncode == 1 and "BAD" in r.stdout and "Traceback" not in r.stderr


def test_an_ep_nobody_offers_is_named_with_what_to_install():
    from ortseal.compiled import ep_target

    with pytest.raises(ortseal.ProviderUnavailableError, match="onnxruntime-ep-nv-tensorrt-rtx"):
        ep_target("NvTensorRTRTXExecutionProvider", device_type="GPU")


@pytest.mark.parametrize("damage, error", [
    (lambda d: b"ORTSEALX" + d[8:], ortseal.FormatError),                       # fail_bad_magic
    (lambda d: d[:8] + b"\x02" + d[9:], ortseal.FormatError),                    # fail_unknown_version
    (lambda d: d[:9] + (1 << 20).to_bytes(4, "big") + d[13:], TamperedError),   # fail_binding_longer_than_file
    (lambda d: d[:13] + b"[" + d[14:], ortseal.FormatError),                     # fail_binding_not_json
    (lambda d: d[:9] + (int.from_bytes(d[9:13], "big") + 1).to_bytes(4, "big") + b"{ " + d[14:],
     ortseal.FormatError),                                                      # fail_binding_not_canonical
    (lambda d: d[:-1], TamperedError),                                          # fail_truncated_blob
    (lambda d: d + b"\x00", TamperedError),                                     # fail_appended_byte
])
def test_malformed_entries_are_refused_before_any_key_is_used(tmp_path, damage, error):
    """Entry-format rules, checked on an entry sealed here (no EP needed)."""
    from ortseal.compiled.entry import Binding

    keys = KeySet.generate().for_device(engine_signing_key=True)
    binding = Binding.make(source_sha256="00" * 32, source_kind="plain", ep={"name": "X", "version": "1", "vendor": ""},
                           device=[], options={}, session={"graph_optimization_level": 99}, onnxruntime="1.32.0")
    path = tmp_path / "e.epctx.sealed"
    write_entry(path, b"compiled model bytes" * 100, binding, keys)
    assert bytes(open_entry(read_entry(path), keys, binding)) == b"compiled model bytes" * 100
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(error):
        open_entry(read_entry(path), keys, binding)


@pytest.mark.parametrize("ep, options", [
    ("TensorrtExecutionProvider", {"trt_engine_cache_enable": "True"}),
    ("TensorrtExecutionProvider", {"trt_dump_ep_context_model": "1"}),
    ("TensorrtExecutionProvider", {"trt_ep_context_file_path": "ctx.onnx"}),
    ("TensorrtExecutionProvider", {"trt_engine_decryption_enable": "1", "trt_engine_decryption_lib_path": "/x.so"}),
    ("NvTensorRTRTXExecutionProvider", {"nv_runtime_cache_path": "rtx_cache"}),
    ("OpenVINOExecutionProvider", {"cache_dir": "ov"}),
    ("QNNExecutionProvider", {"qnn_context_cache_enable": "1"}),
    ("MIGraphXExecutionProvider", {"migraphx_dump_ep_context_model": "1"}),
])
def test_the_gate_refuses_ep_caches_for_a_plain_source_too(ep, options):
    """The compiled model holds the weights whatever the source: EP caches are refused for plain sources."""
    from ortseal._policy import refuse_compiled_cache_writers

    with pytest.raises(UnsafeOptionError, match="compiled-model cache"):
        refuse_compiled_cache_writers(ep, options, ort.SessionOptions(), sealed_model=False)
    refuse_compiled_cache_writers(ep, {"some_other_option": "1"}, ort.SessionOptions(), sealed_model=False)


def test_plain_model_with_external_data_is_bound_to_its_data_file(work, device, target):
    """The external data is read once, hashed and compiled inline; a changed data file is another entry."""
    _model(work / "src.onnx", seed=21)
    model = onnx.load(str(work / "src.onnx"))
    onnx.save(model, str(work / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    cache = _cache(work, device)
    first = cache.start(work / "m.onnx", target)
    assert first.compiled and not cache.start(work / "m.onnx", target).compiled
    assert np.array_equal(first.session.run(None, {"x": _x()})[0], _fresh(work / "src.onnx", target))
    data = bytearray((work / "m.onnx.data").read_bytes())
    data[100] ^= 0x40  # another weight, same file, same graph
    (work / "m.onnx.data").write_bytes(bytes(data))
    changed = cache.start(work / "m.onnx", target)
    assert changed.compiled and changed.entry != first.entry


# -- vectors (tests/vectors/compiled_entry_v1.json, made by generate_compiled_vectors.py) --------------
def _vectors():
    import json

    sys.path.insert(0, str(ROOT / "tests" / "vectors"))
    import generate_compiled_vectors as gen

    return gen, json.loads((ROOT / "tests" / "vectors" / "compiled_entry_v1.json").read_text())


def test_entry_vector_opens_and_is_reproduced(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from test_vectors import _spec_blob

    from ortseal.compiled.entry import Binding

    gen, vectors = _vectors()
    data = bytes.fromhex(vectors["valid"]["entry"])
    assert gen.entry(gen.binding(), n=9) == data  # sealing reproduces the vector byte for byte
    binding = Binding.parse(vectors["binding"].encode())
    assert bytes(open_entry(parse_entry(data), gen.keyset(), binding, min_release=2)).hex() == vectors["plaintext"]
    public = gen.keyset().signing_key()[1].public_key().public_bytes(serialization.Encoding.Raw,
                                                                    serialization.PublicFormat.Raw)
    length = int.from_bytes(data[9:13], "big")
    assert _spec_blob(data[13 + length:], gen.keyset().content_key("vector-key-1"), CONTEXT_PREFIX + data[13:13 + length],
                      public=public).hex() == vectors["plaintext"]  # the second implementation agrees


def test_invalid_entry_vectors_are_refused(tmp_path):
    from ortseal.compiled.entry import Binding

    gen, vectors = _vectors()
    binding = Binding.parse(vectors["binding"].encode())
    for v in vectors["invalid"]:
        path = tmp_path / f"{v['name']}.epctx.sealed"
        path.write_bytes(bytes.fromhex(v["entry"]))
        with pytest.raises(ortseal.OrtsealError) as info:
            open_entry(read_entry(path), gen.keyset(), binding, min_release=vectors["min_release"])
        assert type(info.value).__name__ == v["expect"], (v["name"], info.value)
