"""The attack of issue 7, item 1, carried out: a holder of the content key rewrites a sealed segment's
plaintext while keeping its AES-GCM tag (GHASH is linear in the ciphertext), so the tag, and any signature
over tags alone, still verifies. Format v2 signs a digest of the ciphertext instead, which this changes.

GF(2^128) arithmetic in GCM's bit order (NIST SP 800-38D, section 6.3).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ortseal import KeySet
from ortseal.blob import TAG_SIZE, blob_key, parse_header
from ortseal.model._graph import SEALED_SUFFIX

_R = 0xE1 << 120
_ONE = 1 << 127


def gf_mul(x: int, y: int) -> int:
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def gf_pow(x: int, e: int) -> int:
    result = _ONE
    while e:
        if e & 1:
            result = gf_mul(result, x)
        x = gf_mul(x, x)
        e >>= 1
    return result


def gf_inv(x: int) -> int:
    return gf_pow(x, (1 << 128) - 2)


def keep_tag_rewrite(blob: bytes, content_key: bytes, index: int, new_plaintext: bytes) -> bytes:
    """Rewrite segment ``index`` of ``blob`` so that it decrypts to ``new_plaintext`` in every 16-byte block
    but the last full one (the compensation block), with the segment's tag unchanged."""
    h = parse_header(blob)
    off, n = h.segment_span(index)
    assert len(new_plaintext) == n and n >= 32 and n % 16 == 0, "whole blocks, at least two"
    key = blob_key(content_key, h)
    aead = AESGCM(key)
    old_ct = blob[off:off + n]
    old_pt = aead.decrypt(h.nonce(index), blob[off:off + n + TAG_SIZE], h.raw)
    keystream = bytes(a ^ b for a, b in zip(old_ct, old_pt))
    new_ct = bytearray(a ^ b for a, b in zip(new_plaintext, keystream))
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    hash_key = int.from_bytes(encryptor.update(bytes(16)) + encryptor.finalize(), "big")
    blocks = n // 16
    comp = blocks - 1  # ciphertext block j carries H^(blocks + 1 - j) in GHASH
    delta, power = 0, gf_mul(hash_key, hash_key)  # H^(blocks + 1 - j), from j = blocks - 1 down
    for j in range(blocks - 1, -1, -1):
        d = int.from_bytes(old_ct[16 * j:16 * j + 16], "big") ^ int.from_bytes(new_ct[16 * j:16 * j + 16], "big")
        if d and j != comp:
            delta ^= gf_mul(d, power)
        power = gf_mul(power, hash_key)
    fix = gf_mul(delta, gf_inv(gf_pow(hash_key, blocks + 1 - comp)))
    c = int.from_bytes(old_ct[16 * comp:16 * comp + 16], "big") ^ fix
    new_ct[16 * comp:16 * comp + 16] = c.to_bytes(16, "big")
    forged = blob[:off] + bytes(new_ct) + blob[off + n:]
    aead.decrypt(h.nonce(index), forged[off:off + n + TAG_SIZE], h.raw)  # still authentic under GCM
    return forged


def device_of(publisher: KeySet) -> KeySet:
    """What a device holds: the content key and the publisher's public key, no signing key."""
    return KeySet.merge(publisher.without_signing(), publisher.public())


def content_key(keys: KeySet) -> bytes:
    return keys.content_key(keys.content_key_ids[0])


def blob_span(model_path: Path, tensor: str) -> tuple[Path, int, int]:
    """``(data file, offset, length)`` of a sealed tensor's blob."""
    model = onnx.load(str(model_path), load_external_data=False)
    t = next(t for t in model.graph.initializer if t.name == tensor + SEALED_SUFFIX)
    info = {e.key: e.value for e in t.external_data}
    return model_path.parent / info["location"], int(info["offset"]), int(info["length"])
