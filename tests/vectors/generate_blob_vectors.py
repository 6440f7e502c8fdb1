"""Regenerate tests/vectors/blob_v2.json: python tests/vectors/generate_blob_vectors.py

Keys, salts and nonce prefixes are fixed so that the vectors are reproducible (Ed25519 is deterministic).
Each valid vector gives its content digest, so a second implementation can check its hashing too. Every
"fail_*" vector is named after the rule of docs/format.md that it breaks.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ortseal.blob import SIGNATURE_SIZE, TAG_SIZE, Sealer, parse_header
from ortseal.blob import _format as blob_format
from ortseal.keys import KeySet

sys.path.insert(0, str(Path(__file__).parent.parent))
from forge import keep_tag_rewrite  # noqa: E402

CONTENT_KEY = bytes(range(32))
SIGNING_SEED = bytes(range(32, 64))
KEY_ID = "vector-key-1"
SEGMENT = 4096  # the smallest segment size the format allows


def keyset() -> KeySet:
    return KeySet(content_keys={KEY_ID: CONTENT_KEY}, signing_keys=[Ed25519PrivateKey.from_private_bytes(SIGNING_SEED)])


@contextlib.contextmanager
def fixed_randomness(n: int) -> Iterator[None]:
    """Salt = 32 bytes of n, nonce prefix = 7 bytes of 0xA0 + n (vectors only: ortseal itself never fixes them)."""
    original = blob_format._random
    blob_format._random = lambda size: bytes([n if size == 32 else 0xA0 + n]) * size
    try:
        yield
    finally:
        blob_format._random = original


def seal(plaintext: bytes, context: str, *, sign: bool, n: int, release: int = 0) -> tuple[bytes, bytes]:
    """``(blob, content digest)``."""
    with fixed_randomness(n):
        sealer = Sealer(keyset(), context=context, length=len(plaintext), sign=sign, segment_size=SEGMENT,
                        release=release)
    h = sealer.header
    body = bytearray(h.body_length - len(h.raw))
    sealer.encrypt(0, memoryview(plaintext), memoryview(body))
    return h.raw + bytes(body) + sealer.signature(), sealer.content_digest()


CASES = [(0, True, 0), (1, True, 1), (SEGMENT - 1, True, 2), (SEGMENT, True, 3), (SEGMENT + 1, True, 4),
         (3 * SEGMENT, False, 5), (2 * SEGMENT, True, 6)]


def main() -> None:
    ok = []
    for n, (size, sign, release) in enumerate(CASES):
        plaintext = bytes((i * 7 + n) % 251 for i in range(size))
        blob, digest = seal(plaintext, f"vector/{n}", sign=sign, n=n, release=release)
        ok.append({"name": f"ok_{size}_bytes_{'signed' if sign else 'unsigned'}", "context": f"vector/{n}",
                   "signed": sign, "release": release, "plaintext": plaintext.hex(), "content_digest": digest.hex(),
                   "blob": blob.hex()})
    base = bytes.fromhex(ok[4]["blob"])  # signed, release 4, two segments of 4096 and 1 bytes
    h = parse_header(base)
    s0, _ = h.segment_span(0)
    s1, _ = h.segment_span(1)
    seg0, seg1 = base[s0:s1], base[s1:h.body_length]
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]  # noqa: E731
    two = bytes.fromhex(ok[6]["blob"])  # signed, two full segments
    rewritten = keep_tag_rewrite(two, CONTENT_KEY, 0, bytes(SEGMENT))
    fail = {
        "fail_bad_magic": (base, flip(base, 0), "FormatError", 0),
        "fail_v1_refused": (base, base[:8] + b"\x01" + base[9:], "FormatError", 0),
        "fail_unsupported_version": (base, base[:8] + b"\x03" + base[9:], "FormatError", 0),
        "fail_header_tampered_salt": (base, flip(base, 40), "TamperedError", 0),
        "fail_ciphertext_flipped": (base, flip(base, s0 + 3), "TamperedError", 0),
        "fail_tag_flipped": (base, flip(base, s1 - 1), "TamperedError", 0),
        "fail_signature_flipped": (base, flip(base, len(base) - 1), "TamperedError", 0),
        "fail_signature_stripped": (base, base[:10] + b"\x00" + base[11:h.body_length], "FormatError", 0),
        "fail_truncated_at_segment_boundary": (base, base[:s1], "TamperedError", 0),
        "fail_truncated_mid_segment": (base, base[:s0 + 10], "TamperedError", 0),
        "fail_trailing_data": (base, base + b"\x00", "TamperedError", 0),
        "fail_last_segment_dropped_length_fixed": (
            base, base[:16] + SEGMENT.to_bytes(8, "little") + base[24:s1] + base[-SIGNATURE_SIZE:], "TamperedError", 0),
        "fail_segments_swapped": (base, base[:s0] + seg1 + seg0[:len(seg1)] + base[-SIGNATURE_SIZE:], "TamperedError", 0),
        "fail_header_truncated": (base, base[:50], "FormatError", 0),
        "fail_release_below_minimum": (base, base, "RollbackError", 5),
        "fail_rewritten_with_content_key_tags_kept": (two, rewritten, "TamperedError", 0),
    }
    contexts = {id(base): ok[4]["context"], id(two): ok[6]["context"]}
    vectors = {
        "format": "ortseal sealed blob v2",
        "content_key_id": KEY_ID,
        "content_key": CONTENT_KEY.hex(),
        "signing_key_seed": SIGNING_SEED.hex(),
        "segment_size": SEGMENT,
        "tag_size": TAG_SIZE,
        "valid": ok,
        "invalid": [{"name": k, "context": contexts[id(src)], "min_release": m, "blob": v.hex(), "expect": e}
                    for k, (src, v, e, m) in fail.items()],
    }
    out = Path(__file__).with_name("blob_v2.json")
    out.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
