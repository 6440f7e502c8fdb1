"""Content key rotation (issue 24, item 4): re-sealing under a new content key with no plaintext on disk,
devices holding the old and the new key during the change."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import contains_run
from models import constants_everywhere, matmul, transformer_like
from test_cli import ortseal_cli

import ortseal
from ortseal import KeyNotFoundError, KeySet, TamperedError
from ortseal.model._record import read_record
from ortseal.model.reseal import reseal_model


def _session(path, keys):
    return ortseal.InferenceSession(str(path), providers=["CPUExecutionProvider"], keys=keys)


def _content_only(keys: KeySet, *ids: str) -> KeySet:
    return KeySet(content_keys={k: keys.content_key(k) for k in ids}, trusted_keys=[
        keys.signing_key()[1].public_key()])


def test_reseal_moves_to_the_new_key_and_devices_hold_both_during_the_change(tmp_path):
    w, x = matmul(tmp_path / "m.onnx", n=256)
    publisher = KeySet.generate()
    old_id = publisher.content_key_ids[0]
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "old.onnx", publisher, progress=False, release=3)
    rotated = publisher.with_new_content_key()
    new_id = rotated.content_key_ids[0]
    assert new_id != old_id and rotated.content_key_ids[1:] == [old_id]
    summary = reseal_model(tmp_path / "old.onnx", tmp_path / "new.onnx", rotated, progress=False)
    assert summary.manifest.key_id == new_id and summary.manifest.release == 3
    for name in ("new.onnx", "new.onnx.data"):  # the weights are never in clear in what was written
        assert not contains_run((tmp_path / name).read_bytes(), w.tobytes())
    both = rotated.for_device()
    for path in ("old.onnx", "new.onnx"):
        np.testing.assert_allclose(_session(tmp_path / path, both).run(None, {"x": x})[0], x @ w, rtol=1e-4, atol=1e-4)
    only_new = _content_only(rotated, new_id)
    np.testing.assert_allclose(_session(tmp_path / "new.onnx", only_new).run(None, {"x": x})[0], x @ w, rtol=1e-4, atol=1e-4)
    with pytest.raises(KeyNotFoundError):
        _session(tmp_path / "old.onnx", only_new)
    with pytest.raises(KeyNotFoundError):
        _session(tmp_path / "new.onnx", _content_only(rotated, old_id))


def test_reseal_keeps_every_kind_of_tensor_and_plain_externals(tmp_path):
    feeds_and_weights = constants_everywhere(tmp_path / "c.onnx")
    transformer_like(tmp_path / "t.onnx", d=32, vocab=64)
    publisher = KeySet.generate()
    rotated = publisher.with_new_content_key("k-2026")
    for src, kw in (("c.onnx", {"external_data": False, "min_bytes": 0}), ("t.onnx", {"exclude": "^ff2$"})):
        ortseal.seal_model(tmp_path / src, tmp_path / f"s-{src}", publisher, progress=False, **kw)
        reseal_model(tmp_path / f"s-{src}", tmp_path / f"r-{src}", rotated, progress=False)
        before = ortseal.inspect_model(str(tmp_path / f"s-{src}"))
        after = ortseal.inspect_model(str(tmp_path / f"r-{src}"))
        assert [(i.name, i.shape, i.plaintext_bytes) for i in before] == [(i.name, i.shape, i.plaintext_bytes)
                                                                         for i in after]
        assert {i.key_id for i in after} == {"k-2026"}
        ortseal.verify_model(str(tmp_path / f"r-{src}"), rotated.for_device())
    assert feeds_and_weights


def test_reseal_refuses_a_source_that_does_not_verify_and_writes_nothing(tmp_path):
    matmul(tmp_path / "m.onnx")
    publisher = KeySet.generate()
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", publisher, progress=False)
    data = bytearray((tmp_path / "s.onnx.data").read_bytes())
    data[200] ^= 1
    (tmp_path / "s.onnx.data").write_bytes(data)
    with pytest.raises(TamperedError):
        reseal_model(tmp_path / "s.onnx", tmp_path / "r.onnx", publisher.with_new_content_key(), progress=False)
    assert not (tmp_path / "r.onnx").exists() and not (tmp_path / "r.onnx.data").exists()
    with pytest.raises(ValueError, match="already sealed with content key"):
        reseal_model(tmp_path / "s.onnx", tmp_path / "r.onnx", publisher, progress=False)


def test_cli_rotate_then_reseal(tmp_path):
    w, x = matmul(tmp_path / "m.onnx")
    keys = tmp_path / "keys.json"
    assert ortseal_cli("keygen", "-o", str(keys)).returncode == 0
    assert ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(keys)).returncode == 0
    old_id = KeySet.load(keys).content_key_ids[0]
    r = ortseal_cli("rotate-content-key", str(keys), "--json")
    assert r.returncode == 0, r.stderr
    new_id = json.loads(r.stdout)["sealing_key"]
    assert KeySet.load(keys).content_key_ids == [new_id, old_id]
    r = ortseal_cli("reseal", str(tmp_path / "s.onnx"), "-o", str(tmp_path / "r.onnx"), "--keys", str(keys), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["content_key"] == new_id
    assert read_record((tmp_path / "r.onnx").read_bytes()).signer_id == KeySet.load(keys).signing_key_ids[0]
    assert ortseal_cli("device-keys", str(keys), "-o", str(tmp_path / "device.json")).returncode == 0
    device = KeySet.load(tmp_path / "device.json")
    assert set(device.content_key_ids) == {old_id, new_id}
    np.testing.assert_allclose(_session(tmp_path / "r.onnx", device).run(None, {"x": x})[0], x @ w, rtol=1e-4, atol=1e-4)
