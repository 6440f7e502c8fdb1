"""Regenerate tests/vectors/blob_v1.json: python tests/vectors/generate_blob_vectors.py

Keys, salts and nonce prefixes are fixed so that the vectors are reproducible (Ed25519 is
deterministic). Every "fail_*" vector is named after the rule of docs/format.md that it breaks.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ortseal.blob import SIGNATURE_SIZE, TAG_SIZE, Sealer, parse_header
from ortseal.keys import KeySet

CONTENT_KEY = bytes(range(32))
SIGNING_SEED = bytes(range(32, 64))
KEY_ID = "vector-key-1"
SEGMENT = 64


def keyset() -> KeySet:
    return KeySet(content_keys={KEY_ID: CONTENT_KEY}, signing_keys=[Ed25519PrivateKey.from_private_bytes(SIGNING_SEED)])


def seal(plaintext: bytes, context: str, *, sign: bool, n: int) -> bytes:
    sealer = Sealer(keyset(), context=context, length=len(plaintext), sign=sign, segment_size=SEGMENT,
                    salt=bytes([n]) * 32, nonce_prefix=bytes([0xA0 + n]) * 7)
    h = sealer.header
    body = bytearray(h.blob_length - len(h.raw) - (SIGNATURE_SIZE if sign else 0))
    sealer.encrypt(0, memoryview(plaintext), memoryview(body))
    return h.raw + bytes(body) + sealer.signature()


def main() -> None:
    ok = []
    for n, (size, sign) in enumerate([(0, True), (1, True), (SEGMENT - 1, True), (SEGMENT, True),
                                      (SEGMENT + 1, True), (3 * SEGMENT, False)]):
        plaintext = bytes((i * 7 + n) % 251 for i in range(size))
        ok.append({"name": f"ok_{size}_bytes_{'signed' if sign else 'unsigned'}", "context": f"vector/{n}",
                   "signed": sign, "plaintext": plaintext.hex(), "blob": seal(plaintext, f"vector/{n}", sign=sign, n=n).hex()})
    base = bytes.fromhex(ok[4]["blob"])  # signed, two segments of 64 and 1 bytes
    h = parse_header(base)
    s0, _ = h.segment_span(0)
    s1, _ = h.segment_span(1)
    seg0, seg1 = base[s0:s1], base[s1:h.blob_length - SIGNATURE_SIZE]
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]  # noqa: E731
    fail = {
        "fail_bad_magic": (flip(base, 0), "FormatError"),
        "fail_unsupported_version": (base[:8] + b"\x02" + base[9:], "FormatError"),
        "fail_header_tampered_salt": (flip(base, 30), "TamperedError"),
        "fail_ciphertext_flipped": (flip(base, s0 + 3), "TamperedError"),
        "fail_tag_flipped": (flip(base, s1 - 1), "TamperedError"),
        "fail_signature_flipped": (flip(base, len(base) - 1), "TamperedError"),
        "fail_truncated_at_segment_boundary": (base[:s1], "TamperedError"),
        "fail_truncated_mid_segment": (base[:s0 + 10], "TamperedError"),
        "fail_trailing_data": (base + b"\x00", "TamperedError"),
        "fail_last_segment_dropped_length_fixed": (
            base[:16] + (64).to_bytes(8, "little") + base[24:s1] + base[-SIGNATURE_SIZE:], "TamperedError"),
        "fail_segments_swapped": (base[:s0] + seg1 + seg0[:len(seg1)] + base[-SIGNATURE_SIZE:], "TamperedError"),
        "fail_header_truncated": (base[:50], "FormatError"),
    }
    vectors = {
        "format": "ortseal sealed blob v1",
        "content_key_id": KEY_ID,
        "content_key": CONTENT_KEY.hex(),
        "signing_key_seed": SIGNING_SEED.hex(),
        "segment_size": SEGMENT,
        "tag_size": TAG_SIZE,
        "valid": ok,
        "invalid": [{"name": k, "context": ok[4]["context"], "blob": v.hex(), "expect": e} for k, (v, e) in fail.items()],
    }
    out = Path(__file__).with_name("blob_v1.json")
    out.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
