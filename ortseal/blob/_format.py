"""The sealed-blob format, version 2 (spec: ``docs/format.md``).

A blob is a header, then AES-256-GCM segments, then an optional Ed25519 signature::

    header    | segment 0 (ciphertext || tag) | ... | segment n-1 (last) | signature (64, if signed)

Each blob has its own key, ``HKDF-SHA256(content key, salt, "ortseal v2 blob key" || context digest)``.
Segment ``i`` uses nonce ``nonce_prefix(7) || i (u32 big-endian) || last(1)`` and the whole header as
associated data (the STREAM construction), so a reordered, duplicated, dropped or appended segment,
and any change of the header, fails authentication.

GCM tags authenticate only towards someone without the key: a holder of the content key (every device)
can rewrite a segment's plaintext and keep its tag. So what is signed is the **content digest**, SHA-256
over the header and the SHA-256 of every stored segment: a commitment no key short of the signing key can
move. Segment digests are computed in parallel and in the same pass as decryption.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from typing import NamedTuple, Union

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import FormatError
from ..keys import check_key_id

# -- spec constants (docs/format.md, "Header") ------------------------------------------------------
MAGIC = b"ORTSEAL\n"
VERSION = 2
ALGORITHM_AES256GCM_HKDF_SHA256_ED25519 = 1
FLAG_SIGNED = 0x01
_FIXED = struct.Struct("<8sBBBBIQQ32s7s32sB")
FIXED_HEADER_SIZE = _FIXED.size  # 104
MAX_ID_LENGTH = 64
MAX_HEADER_SIZE = FIXED_HEADER_SIZE + 2 * MAX_ID_LENGTH  # 232
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
DIGEST_SIZE = 32
TAG_SIZE = 16
SIGNATURE_SIZE = 64
DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE = 1 << 12  # bounds the per-segment work a declared length can demand
MAX_SEGMENT_SIZE = 1 << 26
MAX_SEGMENTS = 1 << 32  # the segment index is a u32 in the nonce
MAX_RELEASE = (1 << 63) - 1
LAST_SEGMENT = 0x01

CONTEXT_LABEL = b"ortseal v2 context\x00"
BLOB_KEY_LABEL = b"ortseal v2 blob key\x00"
CONTENT_LABEL = b"ortseal v2 content\x00"
SIGNATURE_LABEL = b"ortseal v2 signature\x00"

# What each kind of signed blob is signed for; a trusted key's scope names the purposes it may sign.
PURPOSE_BLOB = "blob"

RESEAL_HINT = {
    "blob": "seal it again with this ortseal (ortseal.seal_bytes)",
    "model": "re-seal the original model with this ortseal (seal_model)",
    "engine": "delete the engine file (or use on_tamper='rebuild'): TensorRT rebuilds and re-seals it",
}

Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]
Context = Union[bytes, str]

_random = os.urandom  # the only source of salts and nonce prefixes (vector generation replaces it)


def context_digest(context: Context) -> bytes:
    """SHA-256 of the binding context, as stored in the header."""
    if isinstance(context, str):
        context = context.encode("utf-8")
    if not isinstance(context, (bytes, bytearray, memoryview)):
        raise TypeError(f"context must be bytes or str, got {type(context).__name__}")
    return hashlib.sha256(CONTEXT_LABEL + bytes(context)).digest()


class Header(NamedTuple):
    """A parsed blob header. ``raw`` is the exact header bytes (the AEAD's associated data)."""

    version: int
    key_id: str
    signer_id: str | None
    segment_size: int
    plaintext_length: int
    release: int
    salt: bytes
    nonce_prefix: bytes
    context_digest: bytes
    raw: bytes

    @property
    def signed(self) -> bool:
        return self.signer_id is not None

    @property
    def segment_count(self) -> int:
        return max(1, -(-self.plaintext_length // self.segment_size))

    @property
    def body_length(self) -> int:
        """Bytes of header and segments: where the signature starts."""
        return len(self.raw) + self.plaintext_length + self.segment_count * TAG_SIZE

    @property
    def blob_length(self) -> int:
        """Total blob size this header declares."""
        return self.body_length + (SIGNATURE_SIZE if self.signed else 0)

    def segment_span(self, index: int) -> tuple[int, int]:
        """``(offset in blob, plaintext length)`` of segment ``index``."""
        start = index * self.segment_size
        return len(self.raw) + start + index * TAG_SIZE, min(self.segment_size, self.plaintext_length - start)

    def nonce(self, index: int) -> bytes:
        last = LAST_SEGMENT if index == self.segment_count - 1 else 0
        return self.nonce_prefix + struct.pack(">IB", index, last)


def check_release(value: object, name: str = "release") -> int:
    """Return ``value`` if it is a release number (an int in [0, 2**63 - 1]), else raise ValueError."""
    if type(value) is not int or not 0 <= value <= MAX_RELEASE:
        raise ValueError(f"{name} must be an int in [0, 2**63 - 1], got {value!r}")
    return value


def parse_header(data: Buffer, *, kind: str = "blob") -> Header:
    """Parse the header at the start of ``data`` (at least the header's bytes; the rest is not read).

    ``kind`` ("blob", "model" or "engine") only chooses the advice given for a version-1 file.
    """
    view = memoryview(data).cast("B")
    if len(view) < 9 or bytes(view[:8]) != MAGIC:
        if len(view) >= 8 and bytes(view[:8]) == MAGIC:
            raise FormatError("ortseal blob header is truncated")
        raise FormatError("not an ortseal sealed blob (bad magic)")
    if view[8] == 1:
        raise FormatError(f"this is an ortseal format v1 {kind}, which is refused (its signature does not commit "
                          f"to the content); {RESEAL_HINT.get(kind, RESEAL_HINT['blob'])}")
    if view[8] != VERSION:
        raise FormatError(f"ortseal blob version {view[8]} is not supported (this ortseal reads version {VERSION}); "
                          "upgrade ortseal")
    if len(view) < FIXED_HEADER_SIZE:
        raise FormatError("ortseal blob header is truncated")
    (_, version, algorithm, flags, kid_len, segment_size, length, release, salt, prefix, digest,
     sid_len) = _FIXED.unpack_from(view)
    if algorithm != ALGORITHM_AES256GCM_HKDF_SHA256_ED25519:
        raise FormatError(f"unknown blob algorithm {algorithm}")
    if flags & ~FLAG_SIGNED:
        raise FormatError(f"unknown blob flags 0x{flags:02x}")
    signed = bool(flags & FLAG_SIGNED)
    if not 0 < kid_len <= MAX_ID_LENGTH or signed != (sid_len > 0) or sid_len > MAX_ID_LENGTH:
        raise FormatError("blob header has an invalid key id or signer id length")
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise FormatError(f"blob segment size {segment_size} is outside [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
    if -(-length // segment_size) > MAX_SEGMENTS:
        raise FormatError("blob declares more segments than the format allows")
    if release > MAX_RELEASE:
        raise FormatError("blob release number is out of range")
    end = FIXED_HEADER_SIZE + kid_len + sid_len
    if len(view) < end:
        raise FormatError("ortseal blob header is truncated")
    ids = bytes(view[FIXED_HEADER_SIZE:end])
    try:
        key_id = check_key_id(ids[:kid_len].decode("ascii"))
        signer = check_key_id(ids[kid_len:].decode("ascii")) if signed else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError("blob header key id is not printable ASCII") from exc
    return Header(version, key_id, signer, segment_size, length, release, salt, prefix, digest, bytes(view[:end]))


def sealed_length(plaintext_length: int, *, key_id: str, signer_id: str | None = None,
                  segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The length of the blob that seals ``plaintext_length`` bytes under ``key_id`` (signed by ``signer_id``,
    if given): the header, the plaintext, one tag per segment and the signature (docs/format.md)."""
    segments = max(1, -(-plaintext_length // segment_size))
    header = FIXED_HEADER_SIZE + len(key_id.encode()) + (len(signer_id.encode()) if signer_id is not None else 0)
    return header + plaintext_length + segments * TAG_SIZE + (SIGNATURE_SIZE if signer_id is not None else 0)


def plaintext_size(blob_header: Buffer) -> int:
    """Plaintext length declared by a blob header (pass at least the first :data:`MAX_HEADER_SIZE` bytes)."""
    return parse_header(blob_header).plaintext_length


def blob_key(content_key: bytes, header: Header) -> bytes:
    """The blob's own AES-256 key, derived from the content key, the salt and the context digest."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=header.salt,
                info=BLOB_KEY_LABEL + header.context_digest).derive(content_key)


def _blob_aead(content_key: bytes, header: Header) -> AESGCM:
    return AESGCM(blob_key(content_key, header))


def _content_digest(header: Header, segment_digests: bytes | bytearray) -> bytes:
    return hashlib.sha256(CONTENT_LABEL + header.raw + bytes(segment_digests)).digest()


def _signature_input(content_digest: bytes) -> bytes:
    return SIGNATURE_LABEL + content_digest


def new_header(*, key_id: str, signer_id: str | None, segment_size: int, length: int, release: int,
               context: Context) -> Header:
    """A fresh header for sealing: salt and nonce prefix are always new random values, so no caller can
    make two blobs share a keystream."""
    sid = signer_id.encode() if signer_id is not None else b""
    kid = key_id.encode()
    fixed = _FIXED.pack(MAGIC, VERSION, ALGORITHM_AES256GCM_HKDF_SHA256_ED25519,
                        FLAG_SIGNED if signer_id is not None else 0, len(kid), segment_size, length, release,
                        _random(SALT_SIZE), _random(NONCE_PREFIX_SIZE), context_digest(context), len(sid))
    return parse_header(fixed + kid + sid)
