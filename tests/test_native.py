"""libortseal (native/): the sealed-blob and keyset vectors open in C exactly as in Python, and blobs
sealed in C open in Python (and the other way round)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ortseal
from ortseal import KeySet

from native_host import PYTHON_ERRORS, Host, build

HERE = Path(__file__).parent / "vectors"
VECTORS = json.loads((HERE / "blob_v2.json").read_text())
PASSPHRASE = "ortseal vector passphrase"
SIGNER = "24f6ed6acbfe1009"


@pytest.fixture(scope="module")
def host() -> Host:
    return Host(build())


@pytest.fixture(scope="module")
def unsigned_keys(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "unsigned.json"
    ks = KeySet(content_keys={VECTORS["content_key_id"]: bytes.fromhex(VECTORS["content_key"])}, allow_unsigned=True)
    path.write_text(ks.to_json())
    return path


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_opens_in_c(host, unsigned_keys, vector, tmp_path):
    blob, out = tmp_path / "blob", tmp_path / "out"
    blob.write_bytes(bytes.fromhex(vector["blob"]))
    keys = HERE / "keyset_v1.json" if vector["signed"] else unsigned_keys
    for min_release in (0, vector["release"]):
        assert host("unseal", keys, "-", vector["context"], min_release, blob, out).name == "ok"
        assert out.read_bytes().hex() == vector["plaintext"]
    if vector["release"] < 2**63 - 1:
        refused = host("unseal", keys, "-", vector["context"], vector["release"] + 1, blob, out)
        assert refused.name == "rollback"


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_refused_in_c_with_pythons_code(host, vector, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(bytes.fromhex(vector["blob"]))
    result = host("unseal", HERE / "keyset_v1.json", "-", vector["context"], vector["min_release"], blob, tmp_path / "out")
    assert result.name == PYTHON_ERRORS[vector["expect"]], result.message
    assert not (tmp_path / "out").exists()


def test_forged_vector_passes_gcm_alone_in_c(host, unsigned_keys, tmp_path):
    """The content-key holder's forgery: refused above only by the signature, accepted by GCM alone."""
    vector = next(v for v in VECTORS["invalid"] if v["name"] == "fail_rewritten_with_content_key_tags_kept")
    blob, out = tmp_path / "blob", tmp_path / "out"
    blob.write_bytes(bytes.fromhex(vector["blob"]))
    assert host("unseal", unsigned_keys, "-", vector["context"], 0, blob, out).name == "ok"
    assert out.read_bytes()[:4096 - 16] == bytes(4096 - 16)


def test_keyset_vectors_load_in_c(host):
    assert host.lines("keyset", HERE / "keyset_v1.json", "-", SIGNER, "engine")[0] == f"trusts {SIGNER} engine 1"
    wrapped = host.lines("keyset", HERE / "keyset_v1_wrapped.json", PASSPHRASE, SIGNER, "model:x")
    assert wrapped[0] == f"trusts {SIGNER} model:x 1"
    scoped = host.lines("keyset", HERE / "keyset_v1_public_scoped.json", "-", SIGNER, "model:mul_1", SIGNER, "engine",
                        SIGNER, "model:other", "0000000000000000", "model:mul_1")
    assert scoped[:4] == [f"trusts {SIGNER} model:mul_1 1", f"trusts {SIGNER} engine 0",
                          f"trusts {SIGNER} model:other 0", "trusts 0000000000000000 model:mul_1 0"]


def test_protected_keyset_refusals_match_python(host, tmp_path):
    wrapped = HERE / "keyset_v1_wrapped.json"
    assert host("keyset", wrapped, "-").name == "key_not_found"  # no passphrase
    assert host("keyset", wrapped, "").name == "key_not_found"  # empty passphrase
    assert host("keyset", wrapped, "wrong").name == "tampered"
    doc = json.loads(wrapped.read_text())
    # the readable policy is bound to the secrets: a trusted key slipped in, or signatures switched off
    for edit in ({"allow_unsigned": True},
                 {"trusted_keys": [{"id": SIGNER, "public": "Kay64UG8yvCyLhqU000LxzYeUm0L/hLIl5S8kyKWbdc="}]}):
        (tmp_path / "k.json").write_text(json.dumps({**doc, **edit}))
        assert host("keyset", tmp_path / "k.json", PASSPHRASE).name == "tampered"
        with pytest.raises(ortseal.TamperedError):
            KeySet.load(tmp_path / "k.json", passphrase=PASSPHRASE)
    # scrypt bounds are checked before any scrypt work
    for n, r, p in ((2**19, 8, 1), (2**14, 8, 1), (3 * 2**15, 8, 1), (2**17, 16, 1), (2**17, 8, 2)):
        (tmp_path / "k.json").write_text(json.dumps({**doc, "wrapped_secrets": {**doc["wrapped_secrets"], "n": n, "r": r, "p": p}}))
        assert host("keyset", tmp_path / "k.json", PASSPHRASE).name == "format"


@pytest.mark.parametrize("text", ["", "{", "[]", '{"format": "ortseal-keyset", "version": 2}',
                                  '{"format": "other", "version": 1}',
                                  '{"format": "ortseal-keyset", "version": 1, "content_keys": [{"id": "a", "key": "!!"}]}',
                                  '{"format": "ortseal-keyset", "version": 1, "signing_keys": [{"id": "00", '
                                  '"private": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="}]}',
                                  '{"format": "ortseal-keyset", "version": 1, "allow_unsigned": 1}',
                                  "[" * 10000])
def test_malformed_keysets_are_format_errors_as_in_python(host, text, tmp_path):
    (tmp_path / "k.json").write_text(text)
    assert host("keyset", tmp_path / "k.json", "-").name == "format"
    with pytest.raises(ortseal.FormatError):
        KeySet.load(tmp_path / "k.json")


@pytest.mark.parametrize("size", [0, 1, 4096, (1 << 20) + 3])
def test_blobs_sealed_in_c_open_in_python_and_back(host, size, tmp_path):
    plain = bytes((i * 7 + 3) % 251 for i in range(size))
    (tmp_path / "in").write_bytes(plain)
    keys = KeySet.load(HERE / "keyset_v1.json")
    assert host("seal", HERE / "keyset_v1.json", "-", "ctx", 9, 1, tmp_path / "in", tmp_path / "blob").name == "ok"
    blob = (tmp_path / "blob").read_bytes()
    assert ortseal.unseal_bytes(blob, keys, context="ctx", min_release=9) == plain
    (tmp_path / "py").write_bytes(ortseal.seal_bytes(plain, keys, context="ctx", release=3))
    assert host("unseal", HERE / "keyset_v1.json", "-", "ctx", 3, tmp_path / "py", tmp_path / "out").name == "ok"
    assert (tmp_path / "out").read_bytes() == plain
    # a device keyset (content key + the publisher's key scoped to model:mul_*) refuses it for "blob"
    content = KeySet(content_keys={VECTORS["content_key_id"]: bytes.fromhex(VECTORS["content_key"])})
    (tmp_path / "content.json").write_text(content.to_json())
    device = KeySet.merge(content, KeySet.load(HERE / "keyset_v1_public_scoped.json"))
    with pytest.raises(ortseal.TamperedError):
        ortseal.unseal_bytes(blob, device, context="ctx")
    assert host("merge-unseal", tmp_path / "content.json", HERE / "keyset_v1_public_scoped.json", "ctx", 0,
                tmp_path / "blob", tmp_path / "out2").name == "tampered"
