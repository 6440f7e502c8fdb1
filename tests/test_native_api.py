"""The parts of libortseal's C API a host calls beyond opening a path with a keyset file, each carried out
through the test hosts (native/tests/host.c, ort_host.cpp): opening a model from bytes, the model_name
check, content keys from a host callback (ortseal_keyset_from_provider) and engines signed through a host
callback (ortseal_keyset_add_signer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import ortseal
from ortseal import KeySet
from ortseal.tensorrt.vault import ENGINE_SUFFIX

from models import transformer_like
from native_host import PYTHON_ERRORS, Host, build, read_tensors, write_tensors
from test_native_models import hosts, publisher  # noqa: F401 (fixtures, one copy)

ENGINE_NAME = "TensorrtExecutionProvider_TRTKernel_graph_main_77_0_0_sm86" + ENGINE_SUFFIX
ENGINE = bytes(range(256)) * 3000 + b"engine tail"




def feeds_of(path: Path) -> dict[str, np.ndarray]:
    ids = np.arange(16, dtype=np.int64).reshape(1, 16) % 512
    return {i.name: ids for i in onnx.load(str(path), load_external_data=False).graph.input}


def python_code(path: Path, keys: KeySet, **kw) -> str:
    try:
        ortseal.verify_model(path, keys, **kw)
    except ortseal.OrtsealError as exc:
        return PYTHON_ERRORS[type(exc).__name__]
    return "ok"


# -- ortseal_model_open_bytes ---------------------------------------------------------------------------

@pytest.fixture()
def inline(publisher, tmp_path) -> Path:
    """A sealed model whose sealed weights are inside the .onnx file (no data file)."""
    keys, _ = publisher
    transformer_like(tmp_path / "t.onnx")
    ortseal.seal_model(tmp_path / "t.onnx", tmp_path / "t.sealed.onnx", keys, external_data=False, release=4)
    assert not list(tmp_path.glob("t.sealed.onnx.*"))
    return tmp_path / "t.sealed.onnx"


def test_model_from_bytes_runs_bit_identical_to_plain_ort(hosts, publisher, inline, tmp_path):
    _, ort_host = hosts
    _, keyfile = publisher
    write_tensors(tmp_path / "in.bin", feeds_of(tmp_path / "t.onnx"))
    assert ort_host("plain", tmp_path / "t.onnx", tmp_path / "in.bin", tmp_path / "plain.bin").name == "ok"
    result = ort_host("sealed-bytes", keyfile, inline, "-", tmp_path / "in.bin", tmp_path / "sealed.bin")
    assert result.name == "ok", result.message
    plain, sealed = read_tensors(tmp_path / "plain.bin"), read_tensors(tmp_path / "sealed.bin")
    assert plain.keys() == sealed.keys() and plain
    for name in plain:
        assert plain[name].dtype == sealed[name].dtype and plain[name].tobytes() == sealed[name].tobytes(), name


def test_model_from_bytes_opens_to_what_the_path_opens(hosts, publisher, inline, tmp_path):
    host, _ = hosts
    _, keyfile = publisher
    (tmp_path / "by_path").mkdir()
    (tmp_path / "by_bytes").mkdir()
    assert host("model", keyfile, "-", 0, inline, tmp_path / "by_path").name == "ok"
    assert host("model-bytes", keyfile, 4, inline, "-", tmp_path / "by_bytes").name == "ok"
    for f in (tmp_path / "by_path").iterdir():
        assert (tmp_path / "by_bytes" / f.name).read_bytes() == f.read_bytes(), f.name


def test_model_from_bytes_with_data_files_needs_their_folder(hosts, publisher, tmp_path):
    host, _ = hosts
    keys, keyfile = publisher
    transformer_like(tmp_path / "t.onnx")
    (tmp_path / "deploy").mkdir()
    ortseal.seal_model(tmp_path / "t.onnx", tmp_path / "deploy" / "m.onnx", keys)
    assert list((tmp_path / "deploy").glob("m.onnx.*"))  # the weights are in a data file
    out = tmp_path / "out"
    out.mkdir()
    assert host("model-bytes", keyfile, 0, tmp_path / "deploy" / "m.onnx", tmp_path / "deploy", out).name == "ok"
    raw = (tmp_path / "deploy" / "m.onnx").read_bytes()
    for folder, c_folder in ((None, "-"), (str(tmp_path), tmp_path)):  # no folder given, the wrong folder
        assert python_code(raw, keys, data_dir=folder) == "format"
        refused = host("model-bytes", keyfile, 0, tmp_path / "deploy" / "m.onnx", c_folder, out)
        assert refused.name == "format" and "m.onnx.data" in refused.message, refused


@pytest.mark.parametrize("attack", ["flipped", "truncated", "rollback", "not a model"])
def test_model_from_bytes_refusals_match_python(hosts, publisher, inline, tmp_path, attack):
    host, _ = hosts
    keys, keyfile = publisher
    raw, min_release = bytearray(inline.read_bytes()), 0
    if attack == "flipped":
        raw[len(raw) // 2] ^= 1
    elif attack == "truncated":
        raw = raw[: len(raw) - 100]
    elif attack == "rollback":
        min_release = 5
    else:
        raw = bytearray(b"\x00garbage" * 50)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(bytes(raw))
    want = python_code(bad, keys, min_release=min_release)
    assert want != "ok"
    out = tmp_path / "out"
    out.mkdir()
    assert host("model-bytes", keyfile, min_release, bad, "-", out).name == want
    assert not list(out.iterdir())  # a refusal leaves nothing


# -- model_name -------------------------------------------------------------------------------------------

def test_the_publishers_other_model_is_refused_by_name(hosts, publisher, tmp_path):
    host, _ = hosts
    keys, keyfile = publisher
    transformer_like(tmp_path / "t.onnx")
    for name in ("triage", "billing"):
        ortseal.seal_model(tmp_path / "t.onnx", tmp_path / f"{name}.onnx", keys, external_data=False, model_name=name)
    out = tmp_path / "out"
    out.mkdir()
    assert host("model", keyfile, "-", 0, tmp_path / "triage.onnx", out, "triage").name == "ok"
    # the publisher's other model, signed by the same key, put where "triage" is expected
    assert python_code(tmp_path / "billing.onnx", keys, model_name="triage") == "tampered"
    for refused in (host("model", keyfile, "-", 0, tmp_path / "billing.onnx", out, "triage"),
                    host("model-bytes", keyfile, 0, tmp_path / "billing.onnx", "-", out, "triage")):
        assert refused.name == "tampered" and "billing" in refused.message and "triage" in refused.message


# -- ortseal_keyset_from_provider --------------------------------------------------------------------------

def provider_args(keys: KeySet) -> tuple[str, str, str]:
    key_id = keys.content_key_ids[0]
    _, signer = keys.signing_key()
    return key_id, keys.content_key(key_id).hex(), signer.public_key().public_bytes_raw().hex()


def test_content_keys_from_a_host_callback_open_the_model(hosts, publisher, inline, tmp_path):
    host, _ = hosts
    keys, keyfile = publisher
    (tmp_path / "file").mkdir()
    (tmp_path / "provider").mkdir()
    assert host("model", keyfile, "-", 0, inline, tmp_path / "file").name == "ok"
    result = host("provider-model", "ok", *provider_args(keys), inline, tmp_path / "provider")
    assert result.name == "ok", result.message
    for f in (tmp_path / "file").iterdir():
        assert (tmp_path / "provider" / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.parametrize("mode,want,says", [("unknown", "key_not_found", "no content key"),
                                            ("fail", "key_not_found", "provider failed"),
                                            ("length", "key_not_found", "returned 32"),
                                            ("short", "key_not_found", "returned 16"),
                                            ("partial", "tampered", "")])
def test_a_misbehaving_key_callback_gives_a_typed_code(hosts, publisher, inline, tmp_path, mode, want, says):
    host, _ = hosts
    keys, _ = publisher
    out = tmp_path / "out"
    out.mkdir()
    result = host("provider-model", mode, *provider_args(keys), inline, out)
    assert result.name == want and says in result.message, result
    assert not list(out.iterdir())


def test_the_key_callback_is_not_asked_for_a_model_from_an_untrusted_signer(hosts, publisher, inline, tmp_path):
    host, _ = hosts
    keys, _ = publisher
    key_id, key_hex, _ = provider_args(keys)
    other = KeySet.generate().signing_key()[1].public_key().public_bytes_raw().hex()
    out = tmp_path / "out"
    out.mkdir()
    # "fail" would be key_not_found if the callback were asked: the signature check refuses first
    result = host("provider-model", "fail", key_id, key_hex, other, inline, out)
    assert result.name == "tampered" and "does not trust" in result.message, result


# -- ortseal_keyset_add_signer -----------------------------------------------------------------------------

def hsm_save(host: Host, keys: KeySet, seed_hex: str, folder: Path) -> subprocess.CompletedProcess:
    key_id, key_hex, pub_hex = provider_args(keys)
    (folder.parent / "engine.bin").write_bytes(ENGINE)
    shim = host.exe.parent / "libortseal_shim.so"
    return subprocess.run([str(host.exe), "hsm-engine-save", key_id, key_hex, pub_hex, seed_hex, str(shim),
                           str(folder), ENGINE_NAME, str(folder.parent / "engine.bin"), "2"],
                          capture_output=True, text=True, timeout=60)


def test_an_engine_signed_through_a_host_callback_passes_cache_verify(hosts, publisher, tmp_path):
    host, _ = hosts
    keys, keyfile = publisher
    folder = tmp_path / "trt_cache"
    folder.mkdir()
    done = hsm_save(host, keys, keys.signing_key()[1].private_key.private_bytes_raw().hex(), folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ENGINE not in (folder / ENGINE_NAME).read_bytes()
    verify = subprocess.run([sys.executable, "-m", "ortseal", "cache", "verify", str(folder), "--keys", str(keyfile)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert host("engine-load", keyfile, host.exe.parent / "libortseal_shim.so", folder, ENGINE_NAME,
                tmp_path / "out.bin", 2).name == "ok"
    assert (tmp_path / "out.bin").read_bytes() == ENGINE


@pytest.mark.parametrize("signer", ["another key", "fails"])
def test_a_signing_callback_with_another_key_is_refused_before_anything_is_written(hosts, publisher, tmp_path, signer):
    host, _ = hosts
    keys, _ = publisher
    folder = tmp_path / "trt_cache"
    folder.mkdir()
    seed = KeySet.generate().signing_key()[1].private_key.private_bytes_raw().hex() if signer == "another key" else "fail"
    done = hsm_save(host, keys, seed, folder)
    assert done.returncode == 2 and "signing with key" in done.stderr, done.stdout + done.stderr
    assert not list(folder.iterdir())  # no engine, no temp file
