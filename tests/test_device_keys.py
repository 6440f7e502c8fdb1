"""Which keyset goes where: ``ortseal device-keys`` and ``inspect-keys``, ``KeySet.for_device`` (a device's own
engine-signing key trusted for engines only), and ``as_keyset`` (a keyset file's path wherever a KeySet goes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from models import transformer_like

import ortseal
from ortseal import KeySet, TamperedError, as_keyset
from ortseal.tensorrt.harness import EngineLoadError, TensorrtEpHarness, harness_provider
from ortseal.tensorrt.vault import verify_engine_file

CPU = ["CPUExecutionProvider"]


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ortseal", *args], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A publisher keyset file and a model sealed with it."""
    folder = tmp_path_factory.mktemp("publisher")
    publisher = KeySet.generate()
    publisher.save(folder / "keys.json")
    transformer_like(folder / "m.onnx", d=32, vocab=64)
    ortseal.seal_model(folder / "m.onnx", folder / "s.onnx", publisher, min_bytes=256, release=2)
    return folder, publisher


@pytest.mark.slow
def test_device_keys_hold_no_publisher_signing_key_and_open_the_model(sealed, tmp_path):
    folder, publisher = sealed
    r = cli("device-keys", str(folder / "keys.json"), "-o", str(tmp_path / "device.json"))
    assert r.returncode == 0, r.stderr
    assert "no publisher signing key" in r.stdout
    doc = json.loads((tmp_path / "device.json").read_text())
    assert doc["signing_keys"] == [] and [e["id"] for e in doc["trusted_keys"]] == publisher.signing_key_ids
    assert oct((tmp_path / "device.json").stat().st_mode & 0o777) == "0o600"
    device = KeySet.load(tmp_path / "device.json")
    assert device.content_key_ids == publisher.content_key_ids and not device.signing_key_ids
    ids = np.arange(16, dtype=np.int64).reshape(1, 16)
    want = ortseal.InferenceSession(str(folder / "s.onnx"), providers=CPU, keys=publisher).run(None, {"ids": ids})
    got = ortseal.InferenceSession(str(folder / "s.onnx"), providers=CPU, keys=device).run(None, {"ids": ids})
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want))
    ok = cli("verify", str(folder / "s.onnx"), "--keys", str(tmp_path / "device.json"))
    assert ok.returncode == 0 and "opened by ONNX Runtime" in ok.stdout
    # a device keyset cannot make another device keyset: it holds no signing key to hand on, and says so
    again = cli("device-keys", str(tmp_path / "device.json"), "-o", str(tmp_path / "d2.json"))
    assert again.returncode == 0  # content keys and trust carry over; still no signing key
    assert not KeySet.load(tmp_path / "d2.json").signing_key_ids
    public = cli("device-keys", str(folder / "keys.json"), "-o", str(tmp_path / "p.json"))
    assert public.returncode == 0
    KeySet.load(folder / "keys.json").public().save(tmp_path / "trusted.json")
    refused = cli("device-keys", str(tmp_path / "trusted.json"), "-o", str(tmp_path / "d3.json"))
    assert refused.returncode == 1 and "no content key" in refused.stderr and not (tmp_path / "d3.json").exists()


def test_a_device_cannot_sign_a_model_it_would_accept(sealed, tmp_path):
    """The attack: whoever holds a device's keyset (content key and its own engine-signing key) seals and
    signs a model of their own with them. The device refuses it; its engines still round-trip."""
    folder, publisher = sealed
    r = cli("device-keys", str(folder / "keys.json"), "-o", str(tmp_path / "device.json"), "--engine-signing-key")
    assert r.returncode == 0, r.stderr
    device = KeySet.load(tmp_path / "device.json")
    (own,) = device.signing_key_ids
    assert own not in publisher.trusted_key_ids and device.trust_scope(own) == ("engine",)
    doc = json.loads((tmp_path / "device.json").read_text())
    (entry,) = [e for e in doc["trusted_keys"] if e["id"] == own]  # its own signing key, listed with its scope
    assert entry["scope"] == ["engine"] and doc["signing_keys"][0]["id"] == own

    forged = tmp_path / "forged.onnx"
    ortseal.seal_model(folder / "m.onnx", forged, device, min_bytes=256, model_name="m", release=99)
    with pytest.raises(TamperedError, match="does not trust"):
        ortseal.InferenceSession(str(forged), providers=CPU, keys=device)
    bad = cli("verify", str(forged), "--keys", str(tmp_path / "device.json"))
    assert bad.returncode == 1 and "which this keyset does not trust" in bad.stderr
    ortseal.InferenceSession(str(folder / "s.onnx"), providers=CPU, keys=device)  # the publisher's still opens

    trt = TensorrtEpHarness(harness_provider(device, {"trt_engine_cache_path": str(tmp_path / "cache")}))
    engine = os.urandom(1 << 16)
    path = trt.engine_path()
    trt.save_engine(path, engine)
    assert trt.load_engine(path) == engine
    verify_engine_file(path, device)
    # another device of the same publisher, with its own engine key, refuses this device's engine
    other = TensorrtEpHarness(harness_provider(publisher.for_device(engine_signing_key=True),
                                               {"trt_engine_cache_path": str(tmp_path / "other")}))
    copied = other.engine_path()
    os.makedirs(os.path.dirname(copied), exist_ok=True)
    shutil.copy(path, copied)
    with pytest.raises(EngineLoadError):
        other.load_engine(copied)


def test_protected_device_keyset_keeps_its_engine_scope(sealed, tmp_path):
    folder, _ = sealed
    (tmp_path / "pass").write_text("device passphrase\n")
    r = cli("device-keys", str(folder / "keys.json"), "-o", str(tmp_path / "device.json"), "--engine-signing-key",
            "--device-passphrase-file", str(tmp_path / "pass"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["protected"] and report["roles"]["seal engines on a device"]
    assert not report["roles"]["seal and sign models (publisher)"]
    assert "wrapped_secrets" in (tmp_path / "device.json").read_text()
    device = KeySet.load(tmp_path / "device.json", "device passphrase")
    assert device.trust_scope(device.signing_key_ids[0]) == ("engine",)
    # --passphrase-* unlocks KEYSET; given for an unprotected KEYSET alone it would protect nothing
    confused = cli("device-keys", str(folder / "keys.json"), "-o", str(tmp_path / "d2.json"), "--passphrase-file",
                   str(tmp_path / "pass"))
    assert confused.returncode == 2 and "--device-passphrase" in confused.stderr and not (tmp_path / "d2.json").exists()
    secret = cli("device-keys", str(folder / "keys.json"), "-o", "-")
    assert secret.returncode == 2 and "only to a file" in secret.stderr


@pytest.mark.slow
def test_inspect_keys_names_the_roles(sealed, tmp_path):
    folder, publisher = sealed
    assert cli("device-keys", str(folder / "keys.json"), "-o", str(tmp_path / "device.json")).returncode == 0
    assert cli("device-keys", str(folder / "keys.json"), "-o", str(tmp_path / "engines.json"),
               "--engine-signing-key").returncode == 0
    assert cli("pubkey", str(folder / "keys.json"), "-o", str(tmp_path / "trusted.json")).returncode == 0
    roles = {}
    for name, path in [("publisher", folder / "keys.json"), ("device", tmp_path / "device.json"),
                       ("engines", tmp_path / "engines.json"), ("public", tmp_path / "trusted.json")]:
        r = cli("inspect-keys", str(path), "--json")
        assert r.returncode == 0, r.stderr
        roles[name] = {role for role, able in json.loads(r.stdout)["roles"].items() if able}
    assert roles == {
        "publisher": {"seal and sign models (publisher)", "open models on a device", "verify models",
                      "seal engines on a device"},
        "device": {"open models on a device", "verify models"},
        "engines": {"open models on a device", "verify models", "seal engines on a device"},
        "public": {"verify models"},
    }
    table = cli("inspect-keys", str(tmp_path / "engines.json"))
    assert table.returncode == 0 and "(for engine)" in table.stdout and "yes  seal engines on a device" in table.stdout
    piped = cli("inspect-keys", "-", input=(tmp_path / "trusted.json").read_text())
    assert piped.returncode == 0 and "verify only" in piped.stdout
    (tmp_path / "pass").write_text("pw\n")
    assert cli("keygen", "-o", str(tmp_path / "locked.json"), "--passphrase-file", str(tmp_path / "pass")).returncode == 0
    locked = cli("inspect-keys", str(tmp_path / "locked.json"), stdin=subprocess.DEVNULL)
    assert locked.returncode == 0 and "NOT read" in locked.stdout and "unknown until unlocked" in locked.stdout
    unlocked = cli("inspect-keys", str(tmp_path / "locked.json"), "--passphrase-file", str(tmp_path / "pass"), "--json")
    assert json.loads(unlocked.stdout)["roles"]["seal and sign models (publisher)"]
    model = cli("inspect-keys", str(folder / "s.onnx"))
    assert model.returncode == 1 and model.stderr.startswith("error: KEYSET ") and model.stderr.count("\n") == 1


def test_as_keyset_takes_a_path_wherever_a_keyset_goes(sealed, monkeypatch):
    folder, publisher = sealed
    path = folder / "keys.json"
    assert as_keyset(publisher) is publisher
    for given in (str(path), path):
        assert as_keyset(given).signing_key_ids == publisher.signing_key_ids
    monkeypatch.setenv("ORTSEAL_TEST_KEYS", path.read_text())
    assert as_keyset("env:ORTSEAL_TEST_KEYS").content_key_ids == publisher.content_key_ids
    with pytest.raises(TypeError, match="path of a keyset file"):
        as_keyset(b"not a path")
    with pytest.raises(FileNotFoundError):
        as_keyset(folder / "missing.json")
    ids = np.arange(16, dtype=np.int64).reshape(1, 16)
    sess = ortseal.InferenceSession(str(folder / "s.onnx"), providers=CPU, keys=str(path))
    want = ortseal.InferenceSession(str(folder / "s.onnx"), providers=CPU, keys=publisher).run(None, {"ids": ids})
    assert all(a.tobytes() == b.tobytes() for a, b in zip(sess.run(None, {"ids": ids}), want))
    assert ortseal.verify_model(folder / "s.onnx", path, min_release=2).decrypted
    so = ortseal.fallback_session_options(path, model=str(folder / "s.onnx"))
    assert so is not None
    name, options = harness_provider(str(path), {"trt_engine_cache_path": str(folder / "cache")})
    assert name == "TensorrtExecutionProvider" and options["trt_engine_cache_path"].endswith("cache")
