"""The seams between the hardened parts, attacked after they were merged: an OpenVINO cache asked for in an
escaped spelling, options changed after a session exists, keyset entries that borrow another key's id, roles
read from odd scopes, a sealed model named like an opening folder's tensor file."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from models import big_embedding

import ortseal
from ortseal import FormatError, KeySet, UnsafeOptionError
from ortseal.model import open as opening

CPU = ["CPUExecutionProvider"]
OV = "OpenVINOExecutionProvider"


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    d = tmp_path_factory.mktemp("seams")
    table = np.array(big_embedding(d / "m.onnx", rows=1024, dim=64))
    keys = KeySet.generate()
    ortseal.seal_model(d / "m.onnx", d / "s.onnx", keys, min_bytes=64, progress=False)
    return d, keys, table


@pytest.mark.parametrize("load_config", ['{"CPU": {"\\u0043ACHE_DIR": "/tmp/ovc"}}', '{"CPU": {"cache_dir": "x"}}',
                                         "/etc/ov_config.json", '["CACHE_DIR"]'])
def test_openvino_cache_in_any_spelling_is_refused(sealed, load_config):
    d, keys, _ = sealed
    with pytest.raises(UnsafeOptionError, match="load_config"):
        ortseal.InferenceSession(str(d / "s.onnx"), providers=[(OV, {"load_config": load_config}), "CPUExecutionProvider"],
                                 keys=keys)


def test_options_changed_after_creation_are_refused_and_the_session_kept(sealed, tmp_path):
    d, keys, table = sealed
    so = ort.SessionOptions()
    sess = ortseal.InferenceSession(str(d / "s.onnx"), so, providers=CPU, keys=keys)
    so.optimized_model_filepath = str(tmp_path / "leak.onnx")  # the application's own object, changed later
    with pytest.raises(UnsafeOptionError, match="optimized_model_filepath"):
        sess.set_providers(CPU)
    assert not (tmp_path / "leak.onnx").exists()
    ids = np.array([3], np.int64)
    assert sess.run(None, {"ids": ids})[0].tobytes() == table[ids].tobytes()  # the good session stayed


def test_a_keyset_entry_cannot_borrow_another_keys_id(tmp_path):
    publisher, attacker = KeySet.generate(), Ed25519PrivateKey.generate()
    device = json.loads(publisher.for_device().to_json())
    entry = next(e for e in device["trusted_keys"] if e["id"] == publisher.signing_key_ids[0])
    forged = dict(entry, public=base64.b64encode(attacker.public_key().public_bytes_raw()).decode())
    for trusted in ([forged], [entry, dict(entry, scope=["*"])]):  # another key under its id; the id twice
        doc = dict(device, trusted_keys=trusted)
        with pytest.raises(FormatError, match="does not match its key|twice"):
            KeySet.from_json(json.dumps(doc))
    with pytest.raises(FormatError, match="version"):
        KeySet.from_json(json.dumps(dict(device, version=True)))


def test_inspect_keys_reads_roles_from_any_scope(tmp_path):
    from click.testing import CliRunner

    from ortseal.cli import main

    keys = KeySet(content_keys={"k": bytes(32)}, signing_keys=[Ed25519PrivateKey.generate()])
    doc = json.loads(keys.to_json())
    kid = keys.signing_key_ids[0]
    pub = base64.b64encode(keys.signing_key()[1].public_key().public_bytes_raw()).decode()
    doc["trusted_keys"] = [{"id": kid, "public": pub, "scope": ["m*"]}]  # matches model:<name> too
    (tmp_path / "k.json").write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["inspect-keys", str(tmp_path / "k.json"), "--json"])
    assert r.exit_code == 0, r.output
    roles = json.loads(r.output)["roles"]
    assert roles["seal and sign models (publisher)"] and roles["open models on a device"]


@pytest.mark.parametrize("name", ["t0.bin", "m.ort"])
def test_a_model_named_like_a_tensor_file_or_ort_format_opens(sealed, tmp_path, monkeypatch, name):
    d, keys, table = sealed
    monkeypatch.setattr(opening, "SMALL_MODEL_BYTES", 0)  # through RAM files, where the names could collide
    shutil.copy(d / "s.onnx", tmp_path / name)
    shutil.copy(d / "s.onnx.data", tmp_path / "s.onnx.data")
    ids = np.array([5], np.int64)
    assert ortseal.InferenceSession(str(tmp_path / name), providers=CPU, keys=keys).run(None, {"ids": ids})[0].tobytes() \
        == table[ids].tobytes()
