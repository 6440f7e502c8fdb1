"""Known-answer vectors of the formats (tests/vectors/, made by generate_blob_vectors.py and
generate_model_vectors.py)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime.datasets
import pytest

import ortseal
from ortseal import FormatError, KeySet, TamperedError

HERE = Path(__file__).parent / "vectors"
VECTORS = json.loads((HERE / "blob_v2.json").read_text())
sys.path.insert(0, str(HERE))
import generate_blob_vectors as gen  # noqa: E402
from generate_model_vectors import PASSPHRASE  # noqa: E402


def vector_keys(signed: bool) -> KeySet:
    if signed:
        return gen.keyset()
    return KeySet(content_keys={VECTORS["content_key_id"]: bytes.fromhex(VECTORS["content_key"])}, allow_unsigned=True)


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_opens(vector):
    blob = bytes.fromhex(vector["blob"])
    keys = vector_keys(vector["signed"])
    assert ortseal.unseal_bytes(blob, keys, context=vector["context"]).hex() == vector["plaintext"]
    assert ortseal.unseal_bytes(blob, keys, context=vector["context"], min_release=vector["release"]).hex() == vector["plaintext"]


@pytest.mark.parametrize("n, vector", enumerate(VECTORS["valid"]), ids=lambda v: str(v) if isinstance(v, int) else v["name"])
def test_sealing_reproduces_vector(n, vector):
    plaintext = bytes.fromhex(vector["plaintext"])
    blob, digest = gen.seal(plaintext, vector["context"], sign=vector["signed"], n=n, release=vector["release"])
    assert blob.hex() == vector["blob"] and digest.hex() == vector["content_digest"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_refused(vector):
    with pytest.raises(getattr(ortseal, vector["expect"])) as info:
        ortseal.unseal_bytes(bytes.fromhex(vector["blob"]), vector_keys(True), context=vector["context"],
                             min_release=vector["min_release"])
    assert type(info.value).__name__ == vector["expect"]


def test_rewritten_vector_still_passes_gcm_alone():
    """The forged vector is a real forgery: with signatures off, the content key alone accepts it."""
    vector = next(v for v in VECTORS["invalid"] if v["name"] == "fail_rewritten_with_content_key_tags_kept")
    opened = ortseal.unseal_bytes(bytes.fromhex(vector["blob"]), vector_keys(False), context=vector["context"])
    assert opened[:gen.SEGMENT - 16] == bytes(gen.SEGMENT - 16)  # the attacker's chosen plaintext


def test_keyset_vectors_load():
    want = gen.keyset()
    for name, passphrase in (("keyset_v1.json", None), ("keyset_v1_wrapped.json", PASSPHRASE)):
        ks = KeySet.load(HERE / name, passphrase=passphrase)
        assert ks.content_key(VECTORS["content_key_id"]) == want.content_key(VECTORS["content_key_id"])
        assert ks.signing_key_ids == want.signing_key_ids
    scoped = KeySet.load(HERE / "keyset_v1_public_scoped.json")
    signer = want.signing_key_ids[0]
    assert scoped.trusted_key(signer, "model:mul_1") is not None
    assert scoped.trusted_key(signer, "engine") is None and scoped.trusted_key(signer, "model:other") is None


def test_sealed_model_vector_still_opens():
    path = HERE / "mul_1.sealed.onnx"
    assert ortseal.verify_model(path, gen.keyset(), min_release=1).sealed_tensors == 1
    with pytest.raises(ortseal.RollbackError):
        ortseal.verify_model(path, gen.keyset(), min_release=2)
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    plain = ort.InferenceSession(onnxruntime.datasets.get_example("mul_1.onnx"), providers=["CPUExecutionProvider"])
    content_only = KeySet(content_keys={VECTORS["content_key_id"]: bytes.fromhex(VECTORS["content_key"])})
    device = KeySet.merge(content_only, KeySet.load(HERE / "keyset_v1_public_scoped.json"))
    sealed = ortseal.InferenceSession(str(path), providers=["CPUExecutionProvider"], keys=device)
    assert sealed.run(None, {"X": x})[0].tobytes() == plain.run(None, {"X": x})[0].tobytes()


@pytest.mark.parametrize("version", [1, 2])
def test_older_sealed_models_are_refused_saying_to_reseal(version):
    for attempt in (lambda p: ortseal.verify_model(p, gen.keyset()),
                    lambda p: ortseal.InferenceSession(str(p), providers=["CPUExecutionProvider"], keys=gen.keyset())):
        with pytest.raises(FormatError, match=f"format v{version}.*re-seal the original model"):
            attempt(HERE / f"fail_v{version}_mul_1.sealed.onnx")
    assert issubclass(ortseal.RollbackError, TamperedError)


def _spec_blob(blob: bytes, content_key: bytes, context: bytes, *, public: bytes | None = None,
               digest: bytes | None = None) -> bytes:
    """A second implementation of opening a v2 blob, written from docs/format.md alone (no ortseal code):
    parse the header table, check length and context, check the content digest (against a signature by
    ``public``, or against ``digest`` as a model's manifest names it), then decrypt the STREAM segments."""
    import hashlib
    import struct

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    assert blob[:8] == b"ORTSEAL\n" and blob[8] == 2 and blob[9] == 1
    flags, kid_len = blob[10], blob[11]
    segment_size, length, _release = struct.unpack_from("<IQQ", blob, 12)
    salt, prefix, ctx_digest, sid_len = blob[32:64], blob[64:71], blob[71:103], blob[103]
    header = blob[:104 + kid_len + sid_len]
    n = max(1, -(-length // segment_size))
    body_end = len(header) + length + 16 * n
    assert len(blob) == body_end + (64 if flags & 1 else 0)
    assert ctx_digest == hashlib.sha256(b"ortseal v2 context\x00" + context).digest()
    segments, offset = [], len(header)
    for i in range(n):
        size = min(segment_size, length - i * segment_size) + 16
        segments.append(blob[offset:offset + size])
        offset += size
    content = hashlib.sha256(b"ortseal v2 content\x00" + header + b"".join(hashlib.sha256(s).digest()
                                                                           for s in segments)).digest()
    if public is not None:
        Ed25519PublicKey.from_public_bytes(public).verify(blob[body_end:], b"ortseal v2 signature\x00" + content)
    else:
        assert content == digest
    key = HKDF(hashes.SHA256(), 32, salt, b"ortseal v2 blob key\x00" + ctx_digest).derive(content_key)
    aead = AESGCM(key)
    return b"".join(aead.decrypt(prefix + struct.pack(">IB", i, int(i == n - 1)), s, header)
                    for i, s in enumerate(segments))


def _spec_open(blob: bytes, content_key: bytes, public: bytes, context: bytes) -> bytes:
    return _spec_blob(blob, content_key, context, public=public)


def test_a_second_implementation_from_the_spec_opens_the_vectors():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["signing_key_seed"])).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = bytes.fromhex(VECTORS["content_key"])
    signed = [v for v in VECTORS["valid"] if v["signed"]]
    assert len(signed) >= 5
    for v in signed:
        assert _spec_open(bytes.fromhex(v["blob"]), key, public, v["context"].encode()).hex() == v["plaintext"]
    forged = next(v for v in VECTORS["invalid"] if v["name"] == "fail_rewritten_with_content_key_tags_kept")
    with pytest.raises(InvalidSignature):
        _spec_open(bytes.fromhex(forged["blob"]), key, public, forged["context"].encode())


def _spec_open_model(path: Path, content_key: bytes, public: bytes) -> dict[str, bytes]:
    """A second implementation of opening a sealed model v3, written from docs/format.md alone (no ortseal
    code): find the seal record at the end of the file, verify the signature over the rest, read the
    manifest, then check and decrypt each sealed tensor's blob. Returns ``{tensor name: plaintext}``."""
    import base64
    import hashlib
    import json
    import re

    import onnx
    import rfc8785
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = path.read_bytes()
    record = data[-137:]
    head = b"\x72\x86\x01\x0a\x11ortseal.signature\x12\x71"
    match = re.fullmatch(rb"ed25519:([0-9a-f]{16}):([A-Za-z0-9+/]{86}==)", record[len(head):])
    assert record[:len(head)] == head and match
    body = data[:-137]
    digest = hashlib.sha256(b"ortseal v3 model\x00" + body).digest()
    Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(match[2]),
                                                      b"ortseal v3 model signature\x00" + digest)
    model = onnx.load_from_string(data)
    text = next(p.value for p in model.metadata_props if p.key == "ortseal.manifest")
    manifest = json.loads(text)
    assert rfc8785.dumps(manifest).decode() == text and manifest["version"] == 3
    digests = {e["tensor"]: e["digest"] for e in manifest["tensors"]}
    inits = {t.name: t for t in model.graph.initializer}
    opened = {}
    for node in model.graph.node:
        if node.domain != "ai.ortseal" or node.op_type != "Unseal":
            continue
        identity = next(a.s for a in node.attribute if a.name == "tensor").decode()
        ext = {e.key: e.value for e in inits[node.input[0]].external_data}
        with open(path.parent / ext["location"], "rb") as fh:
            fh.seek(int(ext["offset"]))
            blob = fh.read(int(ext["length"]))
        context = b"ortseal/tensor/v3\x00" + manifest["seal_id"].encode() + b"\x00" + identity.encode()
        assert blob[104:104 + blob[11]].decode() == manifest["key_id"]
        opened[node.output[0]] = _spec_blob(blob, content_key, context, digest=bytes.fromhex(digests[identity]))
    assert set(opened) and {json.loads(i)["name"] for i in digests} == set(opened)
    return opened


def test_a_second_implementation_from_the_spec_opens_the_model_vector(tmp_path):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["signing_key_seed"])).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = bytes.fromhex(VECTORS["content_key"])
    opened = _spec_open_model(HERE / "mul_1.sealed.onnx", key, public)
    plain = onnx.load(onnxruntime.datasets.get_example("mul_1.onnx"))
    assert opened == {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in plain.graph.initializer}
    # one byte of metadata changed (the producer name): the second implementation refuses it too
    data = bytearray((HERE / "mul_1.sealed.onnx").read_bytes())
    at = data.index(b"ortseal.sealed")
    data[at + len("ortseal.sealed") + 2] ^= 0x01
    shutil.copy(HERE / "mul_1.sealed.onnx.data", tmp_path / "mul_1.sealed.onnx.data")
    (tmp_path / "mul_1.sealed.onnx").write_bytes(bytes(data))
    with pytest.raises(InvalidSignature):
        _spec_open_model(tmp_path / "mul_1.sealed.onnx", key, public)
    with pytest.raises(TamperedError):
        ortseal.verify_model(tmp_path / "mul_1.sealed.onnx", gen.keyset())
