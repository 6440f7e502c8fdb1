"""KeySet: generation, files, passphrases, permissions, merging, providers."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

import ortseal
from ortseal import FormatError, KeyNotFoundError, KeySet, OrtsealError, TamperedError


def test_save_load_round_trip_and_mode(keys, tmp_path):
    path = tmp_path / "keys.json"
    keys.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = KeySet.load(path)
    blob = ortseal.seal_bytes(b"abc", loaded, context="c")
    assert ortseal.unseal_bytes(blob, keys, context="c") == b"abc"
    assert loaded.signing_key_ids == keys.signing_key_ids
    with pytest.raises(FileExistsError):
        keys.save(path)
    KeySet.generate().save(path, overwrite=True)
    assert KeySet.load(path).content_key_ids != keys.content_key_ids


def test_passphrase_wraps_secrets(keys, tmp_path):
    path = tmp_path / "keys.json"
    keys.save(path, passphrase="correct horse")
    text = path.read_text()
    for kid in keys.content_key_ids:
        assert keys.content_key(kid).hex() not in text
    assert "content_keys" not in json.loads(text)
    loaded = KeySet.load(path, passphrase="correct horse")
    assert loaded.content_key(keys.content_key_ids[0]) == keys.content_key(keys.content_key_ids[0])
    with pytest.raises(TamperedError, match="passphrase"):
        KeySet.load(path, passphrase="wrong")
    with pytest.raises(KeyNotFoundError, match="passphrase"):
        KeySet.load(path)


def test_wrapped_keyset_trust_list_cannot_be_extended(tmp_path):
    publisher, attacker = KeySet.generate(), KeySet.generate()
    device = KeySet.merge(publisher.without_signing(), KeySet.generate().public())
    path = tmp_path / "device.json"
    device.save(path, passphrase="pw")
    doc = json.loads(path.read_text())
    doc["trusted_keys"] += json.loads(attacker.public().to_json())["trusted_keys"]
    path.write_text(json.dumps(doc))
    with pytest.raises(TamperedError):
        KeySet.load(path, passphrase="pw")


def test_public_holds_no_secret(keys, tmp_path):
    pub = keys.public()
    assert pub.content_key_ids == [] and pub.signing_key_ids == []
    assert pub.trusted_key_ids == keys.signing_key_ids
    doc = json.loads(pub.to_json())
    assert "content_keys" not in doc or not doc["content_keys"]
    assert not doc.get("signing_keys")
    with pytest.raises(KeyNotFoundError):
        ortseal.seal_bytes(b"x", pub, context="c")


def test_merge_old_keys_open_new_key_seals(keys):
    old_blob = ortseal.seal_bytes(b"old", keys, context="c")
    new = KeySet.generate()
    merged = KeySet.merge(new, keys)
    assert merged.sealing_key()[0] == new.content_key_ids[0]
    assert ortseal.unseal_bytes(old_blob, merged, context="c") == b"old"
    assert set(merged.trusted_key_ids) == set(new.trusted_key_ids + keys.trusted_key_ids)


def test_from_env(keys, monkeypatch):
    monkeypatch.setenv("ORTSEAL_TEST_KEYS", keys.to_json())
    assert KeySet.from_env("ORTSEAL_TEST_KEYS").content_key_ids == keys.content_key_ids
    monkeypatch.delenv("ORTSEAL_TEST_KEYS")
    with pytest.raises(KeyNotFoundError, match="ORTSEAL_TEST_KEYS"):
        KeySet.from_env("ORTSEAL_TEST_KEYS")


def test_from_provider_fetches_by_id(keys):
    secret = os.urandom(32)
    asked: list[str] = []

    def provider(key_id: str) -> bytes | None:
        asked.append(key_id)
        return secret if key_id == "kms-1" else None

    hsm = KeySet.merge(KeySet.from_provider(provider, seal_key_id="kms-1"), KeySet(signing_keys=[Ed25519PrivateKey.generate()]))
    blob = ortseal.seal_bytes(b"payload", hsm, context="c")
    assert ortseal.unseal_bytes(blob, hsm, context="c") == b"payload"
    assert "kms-1" in asked
    assert "kms-1" not in hsm.to_json()
    with pytest.raises(KeyNotFoundError):
        ortseal.unseal_bytes(ortseal.seal_bytes(b"x", keys, context="c"), KeySet.merge(hsm, keys.public()), context="c")


@pytest.mark.parametrize("text, error", [
    ("not json", FormatError),
    ('{"format": "other"}', FormatError),
    ('{"format": "ortseal-keyset", "version": 99}', FormatError),
    ('{"format": "ortseal-keyset", "version": 1, "content_keys": [{"id": "a", "key": "AAAA"}]}', FormatError),
])
def test_bad_keyset_files(text, error):
    with pytest.raises(error):
        KeySet.from_json(text)


def test_repr_hides_secrets(keys):
    kid = keys.content_key_ids[0]
    assert keys.content_key(kid).hex() not in repr(keys)


@pytest.mark.slow
def test_policy_round_trips_and_is_bound_when_wrapped(keys, tmp_path):
    device = KeySet.merge(keys.without_signing(), KeySet.generate().public(scope=["model:cam*", "engine"]))
    lax = KeySet(content_keys={"k1": os.urandom(32)}, allow_unsigned=True)
    for ks in (device, lax):
        again = KeySet.from_json(ks.to_json())
        assert again.allow_unsigned == ks.allow_unsigned and again.trusted_key_ids == ks.trusted_key_ids
    scoped_id = device.trusted_key_ids[-1]
    again = KeySet.from_json(device.to_json("pw"), "pw")
    assert again.trusted_key(scoped_id, "model:camera") and not again.trusted_key(scoped_id, "model:other")
    # switching signatures off, or widening a scope, in a protected file makes it fail to open
    for edit in (lambda d: d.update(allow_unsigned=True), lambda d: d["trusted_keys"][-1].update(scope=["*"])):
        doc = json.loads(device.to_json("pw"))
        edit(doc)
        with pytest.raises(TamperedError):
            KeySet.from_json(json.dumps(doc), "pw")


def test_passphrase_edge_cases_are_typed_errors(keys):
    wrapped = keys.to_json("pw")
    with pytest.raises(KeyNotFoundError, match="empty"):
        KeySet.from_json(wrapped, "")
    with pytest.raises(ValueError, match="empty"):
        keys.to_json("")


@pytest.mark.parametrize("n, r, p", [(2**22, 8, 1), (2**18, 32, 1), (2**17, 8, 16), (2**10, 8, 1), (3 * 2**15, 8, 1),
                                     ("2", 8, 1), (True, 8, 1)])
def test_scrypt_parameters_a_file_may_demand_are_bounded(keys, n, r, p):
    doc = json.loads(keys.to_json("pw"))
    doc["wrapped_secrets"].update(n=n, r=r, p=p)
    started = time.perf_counter()
    with pytest.raises(FormatError, match="scrypt"):
        KeySet.from_json(json.dumps(doc), "pw")
    assert time.perf_counter() - started < 0.5  # refused before any scrypt work


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                            max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(doc=st.fixed_dictionaries({"format": st.just("ortseal-keyset"), "version": st.just(1)},
                                 optional={"trusted_keys": _json_values, "content_keys": _json_values,
                                           "signing_keys": _json_values, "allow_unsigned": _json_values,
                                           "wrapped_secrets": _json_values}))
@pytest.mark.slow
def test_fuzzed_keyset_files_raise_only_ortseal_errors(doc):
    try:
        KeySet.from_json(json.dumps(doc), "pw")
    except OrtsealError:
        pass


# -- trust scopes: the grammar, and merging never widens trust -------------------------------------------

def _sealed_model_named(tmp_path, keys: KeySet, name: str):
    from models import transformer_like

    src = tmp_path / f"{len(list(tmp_path.iterdir()))}.onnx"
    transformer_like(src, d=16, vocab=32, seq=4)
    dst = src.with_suffix(".sealed.onnx")
    ortseal.seal_model(src, dst, keys, min_bytes=64, model_name=name, progress=False)
    return str(dst)


def _opens(path: str, keys: KeySet) -> bool:
    try:
        ortseal.InferenceSession(path, providers=["CPUExecutionProvider"], keys=keys)
        return True
    except TamperedError as exc:
        assert "does not trust" in str(exc), exc
        return False


def test_attack_merge_with_without_signing_cannot_widen_a_scope(tmp_path):
    """Observed: merge(keys.without_signing(), keys.public(scope=["model:detector*"])) trusted the publisher
    for '*' (the former signing key's own scope, unioned in), so a model named camera-1 opened."""
    publisher = KeySet.generate()
    device = KeySet.merge(publisher.without_signing(), publisher.public(scope=["model:detector*"]))
    camera = _sealed_model_named(tmp_path, publisher, "camera-1")
    detector = _sealed_model_named(tmp_path, publisher, "detector-2")
    assert not _opens(camera, device)
    assert _opens(detector, device)
    signer = publisher.signing_key_ids[0]
    assert device.trusted_key(signer, "model:camera-1") is None and device.trusted_key(signer, "engine") is None
    again = KeySet.from_json(device.to_json("pw"), "pw")  # the narrowed scope is what is saved
    assert not _opens(camera, again) and _opens(detector, again)


def test_attack_scope_brackets_are_literal_not_a_character_class(tmp_path):
    """Observed: a scope 'model:cam[1]' (fnmatch) refused cam[1] itself and accepted cam1."""
    publisher = KeySet.generate()
    content = KeySet(content_keys={k: publisher.content_key(k) for k in publisher.content_key_ids})
    device = KeySet.merge(content, publisher.public(scope=["model:cam[1]"]))
    assert _opens(_sealed_model_named(tmp_path, publisher, "cam[1]"), device)
    assert not _opens(_sealed_model_named(tmp_path, publisher, "cam1"), device)
    for other in ("model:cam?", "model:cam[!1]", "model:cam\\1"):
        assert not ortseal.keys.scope_matches(other, "model:cam1")


def test_without_signing_keeps_its_former_signing_key_scoped_as_before(keys):
    scoped = KeySet.merge(keys, keys.public(scope=["blob"]))
    signer = keys.signing_key_ids[0]
    assert scoped.trusted_key(signer, "blob") and scoped.trusted_key(signer, "engine") is None
    device = scoped.without_signing()
    assert device.trusted_key(signer, "blob") and device.trusted_key(signer, "engine") is None
    assert keys.without_signing().trusted_key(signer, "engine")
    # a keyset's own signing key, scoped, saves and loads with its scope
    again = KeySet.from_json(scoped.to_json())
    assert again.signing_key_ids == [signer]
    assert again.trusted_key(signer, "blob") and again.trusted_key(signer, "engine") is None


def test_public_scope_narrows_never_widens(keys):
    signer = keys.signing_key_ids[0]
    narrow = keys.public(scope=["model:cam*"])
    assert narrow.public(scope=["*"]).trusted_key(signer, "engine") is None
    assert narrow.public(scope=["*"]).trusted_key(signer, "model:cam2")


def test_a_merged_scope_no_list_can_express_refuses_to_save(keys):
    merged = KeySet.merge(keys.public(scope=["model:cam*"]), keys.public(scope=["*-eu"]))
    signer = keys.signing_key_ids[0]
    assert merged.trusted_key(signer, "model:cam-eu") and merged.trusted_key(signer, "model:cam-us") is None
    assert merged.trusted_key(signer, "model:det-eu") is None
    with pytest.raises(ValueError, match="merge them after loading"):
        merged.to_json()


_PATTERN = st.text(alphabet="ab*?[", min_size=1, max_size=4)
_PURPOSE = st.text(alphabet="ab*?[", max_size=5)
_SIGNERS = [Ed25519PrivateKey.generate() for _ in range(3)]
_SIGNER_IDS = [ortseal.keys.signer_id(k.public_key()) for k in _SIGNERS]


def _reference_match(pattern: str, purpose: str) -> bool:
    import re

    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), purpose, re.DOTALL) is not None


@settings(max_examples=500, deadline=None)
@given(pattern=_PATTERN, purpose=_PURPOSE)
def test_scope_grammar_star_is_the_only_special_character(pattern, purpose):
    assert ortseal.keys.scope_matches(pattern, purpose) == _reference_match(pattern, purpose)


@st.composite
def _keysets(draw):
    """A keyset that trusts (or signs with) some of three keys, each maybe scoped."""
    trusted, signing, scopes = [], [], {}
    for key, kid in zip(_SIGNERS, _SIGNER_IDS):
        role = draw(st.sampled_from(["none", "trusted", "signing"]))
        if role == "none":
            continue
        (signing if role == "signing" else trusted).append(key)
        if draw(st.booleans()):
            scopes[kid] = draw(st.lists(_PATTERN, min_size=1, max_size=3))
    return KeySet(signing_keys=signing, trusted_keys=[k.public_key() for k in trusted], trust_scopes=scopes)


def _accepts(ks: KeySet, kid: str, purpose: str) -> bool:
    return ks.trusted_key(kid, purpose) is not None


@settings(max_examples=300, deadline=None)
@given(inputs=st.lists(_keysets(), min_size=1, max_size=4), purposes=st.lists(_PURPOSE, min_size=1, max_size=8))
def test_merge_accepts_exactly_what_every_keyset_trusting_the_key_accepts(inputs, purposes):
    merged = KeySet.merge(*inputs)
    for kid in _SIGNER_IDS:
        trusting = [ks for ks in inputs if kid in ks.trusted_key_ids]
        for purpose in purposes:
            expected = bool(trusting) and all(_accepts(ks, kid, purpose) for ks in trusting)
            assert _accepts(merged, kid, purpose) == expected, (kid, purpose)
    try:
        text = merged.to_json()
    except ValueError as exc:
        assert "merge them after loading" in str(exc)
        return
    again = KeySet.from_json(text)  # what is saved is the same trust, not a wider one
    for kid in _SIGNER_IDS:
        for purpose in purposes:
            assert _accepts(again, kid, purpose) == _accepts(merged, kid, purpose), (kid, purpose)
