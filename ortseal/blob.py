"""The sealed-blob format, version 1 (spec: ``docs/format.md``).

A blob is a header, then AES-256-GCM segments, then an optional Ed25519 signature::

    header    | segment 0 (ciphertext || tag) | ... | segment n-1 (last) | signature (64, if signed)

Each blob has its own key, ``HKDF-SHA256(content key, salt, "ortseal v1 blob key" || context digest)``.
Segment ``i`` uses nonce ``nonce_prefix(7) || i (u32 big-endian) || last(1)`` and the whole header as
associated data (the STREAM construction), so a reordered, duplicated, dropped or appended segment,
and any change of the header, fails authentication.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import FormatError, TamperedError
from .keys import KeySet, check_key_id

# -- spec constants (docs/format.md, "Header") ------------------------------------------------------
MAGIC = b"ORTSEAL\n"
VERSION = 1
ALGORITHM_AES256GCM_HKDF_SHA256_ED25519 = 1
FLAG_SIGNED = 0x01
_FIXED = struct.Struct("<8sBBBBIQ32s7s32sB")
FIXED_HEADER_SIZE = _FIXED.size  # 96
MAX_ID_LENGTH = 64
MAX_HEADER_SIZE = FIXED_HEADER_SIZE + 2 * MAX_ID_LENGTH
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
DIGEST_SIZE = 32
TAG_SIZE = 16
SIGNATURE_SIZE = 64
DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE = 64
MAX_SEGMENT_SIZE = 1 << 26
MAX_SEGMENTS = 1 << 32  # the segment index is a u32 in the nonce
LAST_SEGMENT = 0x01

CONTEXT_LABEL = b"ortseal v1 context\x00"
BLOB_KEY_LABEL = b"ortseal v1 blob key\x00"
SIGNATURE_LABEL = b"ortseal v1 signature\x00"

Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]
Context = Union[bytes, str]


def context_digest(context: Context) -> bytes:
    """SHA-256 of the binding context, as stored in the header."""
    if isinstance(context, str):
        context = context.encode("utf-8")
    if not isinstance(context, (bytes, bytearray, memoryview)):
        raise TypeError(f"context must be bytes or str, got {type(context).__name__}")
    return hashlib.sha256(CONTEXT_LABEL + bytes(context)).digest()


@dataclass(frozen=True)
class Header:
    """A parsed blob header. ``raw`` is the exact header bytes (the AEAD's associated data)."""

    version: int
    key_id: str
    signer_id: str | None
    segment_size: int
    plaintext_length: int
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
    def blob_length(self) -> int:
        """Total blob size this header declares."""
        return (len(self.raw) + self.plaintext_length + self.segment_count * TAG_SIZE
                + (SIGNATURE_SIZE if self.signed else 0))

    def segment_span(self, index: int) -> tuple[int, int]:
        """``(offset in blob, plaintext length)`` of segment ``index``."""
        start = index * self.segment_size
        return len(self.raw) + start + index * TAG_SIZE, min(self.segment_size, self.plaintext_length - start)

    def nonce(self, index: int) -> bytes:
        last = LAST_SEGMENT if index == self.segment_count - 1 else 0
        return self.nonce_prefix + struct.pack(">IB", index, last)


def parse_header(data: Buffer) -> Header:
    """Parse the header at the start of ``data`` (at least the header's bytes; the rest is not read)."""
    view = memoryview(data).cast("B")
    if len(view) < FIXED_HEADER_SIZE or bytes(view[:8]) != MAGIC:
        if len(view) >= 8 and bytes(view[:8]) == MAGIC:
            raise FormatError("ortseal blob header is truncated")
        raise FormatError("not an ortseal sealed blob (bad magic)")
    (_, version, algorithm, flags, kid_len, segment_size, length, salt, prefix, digest,
     sid_len) = _FIXED.unpack_from(view)
    if version != VERSION:
        raise FormatError(f"ortseal blob version {version} is not supported (this ortseal reads version {VERSION}); "
                          "upgrade ortseal")
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
    end = FIXED_HEADER_SIZE + kid_len + sid_len
    if len(view) < end:
        raise FormatError("ortseal blob header is truncated")
    ids = bytes(view[FIXED_HEADER_SIZE:end])
    try:
        key_id = check_key_id(ids[:kid_len].decode("ascii"))
        signer = check_key_id(ids[kid_len:].decode("ascii")) if signed else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError("blob header key id is not printable ASCII") from exc
    return Header(version, key_id, signer, segment_size, length, salt, prefix, digest, bytes(view[:end]))


def plaintext_size(blob_header: Buffer) -> int:
    """Plaintext length declared by a blob header (pass at least the first :data:`MAX_HEADER_SIZE` bytes)."""
    return parse_header(blob_header).plaintext_length


def _blob_aead(content_key: bytes, header: Header) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=header.salt,
               info=BLOB_KEY_LABEL + header.context_digest).derive(content_key)
    return AESGCM(key)


# -- parallel segment work ------------------------------------------------------------------------
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_split(count: int, work: Callable[[int, int], None]) -> None:
    """Run ``work(first, stop)`` over ``range(count)`` split into one contiguous range per core."""
    global _POOL
    n = min(_workers(), count)
    if n <= 1:
        work(0, count)
        return
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="ortseal")
    bounds = [count * k // n for k in range(n + 1)]
    futures = [_POOL.submit(work, bounds[k], bounds[k + 1]) for k in range(1, n)]
    errors = []
    try:
        work(bounds[0], bounds[1])
    except Exception as exc:  # noqa: BLE001 - re-raised below after the others finish
        errors.append(exc)
    for f in futures:
        try:
            f.result()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    if errors:
        raise errors[0]


# -- sealing -------------------------------------------------------------------------------------
class Sealer:
    """Seals one blob of a known length, segment by segment; used by every sealing path."""

    def __init__(self, keys: KeySet, *, context: Context, length: int, sign: bool = True,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, salt: bytes | None = None,
                 nonce_prefix: bytes | None = None) -> None:
        # salt and nonce_prefix are random unless given; only test-vector generation gives them.
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment_size must be in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
        key_id, key = keys.sealing_key()
        signer = keys.signing_key() if sign else None
        if sign and signer is None:
            raise ValueError("sign=True but the keyset has no signing key; pass sign=False or use a keyset with one")
        if -(-length // segment_size) > MAX_SEGMENTS:
            raise ValueError(f"data too large for one blob at segment_size={segment_size}")
        self._signer = signer[1] if signer else None
        sid = signer[0].encode() if signer else b""
        kid = key_id.encode()
        fixed = _FIXED.pack(MAGIC, VERSION, ALGORITHM_AES256GCM_HKDF_SHA256_ED25519,
                            FLAG_SIGNED if signer else 0, len(kid), segment_size, length,
                            salt or os.urandom(SALT_SIZE), nonce_prefix or os.urandom(NONCE_PREFIX_SIZE),
                            context_digest(context), len(sid))
        self.header = parse_header(fixed + kid + sid)
        self._aead = _blob_aead(key, self.header)
        self._tags = bytearray(self.header.segment_count * TAG_SIZE)

    def encrypt(self, first: int, plaintext: memoryview, out: memoryview) -> None:
        """Encrypt the segments starting at ``first`` whose plaintext is ``plaintext`` into ``out``
        (segment-aligned; ``out`` is ``len(plaintext) + TAG_SIZE`` per segment), on all cores."""
        h, seg = self.header, self.header.segment_size
        count = max(1, -(-len(plaintext) // seg))

        def work(a: int, b: int) -> None:
            for k in range(a, b):
                chunk = plaintext[k * seg:(k + 1) * seg]
                dst = out[k * (seg + TAG_SIZE):k * (seg + TAG_SIZE) + len(chunk) + TAG_SIZE]
                self._aead.encrypt_into(h.nonce(first + k), chunk, h.raw, dst)
                self._tags[(first + k) * TAG_SIZE:(first + k + 1) * TAG_SIZE] = dst[-TAG_SIZE:]

        _run_split(count, work)

    def signature(self) -> bytes:
        """The trailing signature (empty when unsigned); call after every segment is encrypted."""
        if self._signer is None:
            return b""
        return self._signer.sign(SIGNATURE_LABEL + self.header.raw + bytes(self._tags))


def seal_bytes(data: Buffer, keys: KeySet, *, context: Context, sign: bool = True,
               segment_size: int = DEFAULT_SEGMENT_SIZE) -> bytes:
    """Seal ``data`` into a blob bound to ``context``; signed with the keyset's signing key when ``sign``."""
    src = memoryview(data).cast("B")
    sealer = Sealer(keys, context=context, length=len(src), sign=sign, segment_size=segment_size)
    h = sealer.header
    out = np.empty(h.blob_length, np.uint8)  # uninitialised: every byte is written below
    view = memoryview(out)
    view[:len(h.raw)] = h.raw
    body_end = h.blob_length - (SIGNATURE_SIZE if h.signed else 0)
    sealer.encrypt(0, src, view[len(h.raw):body_end])
    view[body_end:] = sealer.signature()
    return out.tobytes()


class BlobWriter:
    """Seals blobs one after another into a file, streaming: plaintext is encrypted straight from the
    caller's buffer (which may be an mmap of a huge file) into two reused batch buffers, and writing one
    batch overlaps encrypting the next. Use as a context manager."""

    def __init__(self, out: BinaryIO, keys: KeySet, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        self._out, self._keys, self._segment_size = out, keys, segment_size
        self._batch = segment_size * 4 * _workers()
        self._buffers = [bytearray(0), bytearray(0)]
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ortseal-write")

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.shutdown()

    def write(self, data: Buffer, *, context: Context, sign: bool = True,
              progress: Callable[[int], None] | None = None) -> int:
        """Seal ``data`` as one blob bound to ``context``; returns the blob length."""
        src = memoryview(data).cast("B")
        seg = self._segment_size
        sealer = Sealer(self._keys, context=context, length=len(src), sign=sign, segment_size=seg)
        self._out.write(sealer.header.raw)
        offset, turn, pending = 0, 0, None
        while True:
            n = min(self._batch, len(src) - offset)
            need = n + max(1, -(-n // seg)) * TAG_SIZE
            if len(self._buffers[turn]) < need:
                self._buffers[turn] = bytearray(self._batch + (self._batch // seg + 1) * TAG_SIZE)
            cv = memoryview(self._buffers[turn])[:need]
            sealer.encrypt(offset // seg, src[offset:offset + n], cv)
            if pending is not None:
                pending.result()  # the other buffer is free again
            pending = self._writer.submit(self._out.write, cv)
            offset, turn = offset + n, turn ^ 1
            if progress:
                progress(n)
            if offset >= len(src):
                break
        pending.result()
        self._out.write(sealer.signature())
        return sealer.header.blob_length


def seal_stream(data: Buffer, out: BinaryIO, keys: KeySet, *, context: Context, sign: bool = True,
                segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Seal ``data`` as one blob written to ``out`` in batches; returns the blob length."""
    with BlobWriter(out, keys, segment_size=segment_size) as writer:
        return writer.write(data, context=context, sign=sign)


# -- opening -------------------------------------------------------------------------------------
class BlobSource:
    """Random access to a blob's bytes: a buffer (zero-copy slices) or a file descriptor (pread)."""

    def __init__(self, buffer: Buffer | None = None, *, fd: int | None = None, offset: int = 0,
                 length: int | None = None) -> None:
        self._view = memoryview(buffer).cast("B") if buffer is not None else None
        self._fd, self._base = fd, offset
        self.size = len(self._view) if self._view is not None else int(length)  # type: ignore[arg-type]
        self._local = threading.local()

    def read(self, offset: int, n: int) -> memoryview:
        if self._view is not None:
            return self._view[offset:offset + n]
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < n:
            buf = self._local.buf = bytearray(max(n, DEFAULT_SEGMENT_SIZE + TAG_SIZE))
        view = memoryview(buf)[:n]
        got = os.preadv(self._fd, [view], self._base + offset)  # type: ignore[arg-type]
        if got != n:
            raise TamperedError("sealed data is truncated (file shorter than its header declares)")
        return view


class Opener:
    """Verifies a blob's header, length, context, key and signature; then decrypts on request.

    Nothing is decrypted until every check that needs no decryption has passed.
    """

    def __init__(self, source: BlobSource, keys: KeySet, *, context: Context) -> None:
        self._source = source
        h = self.header = parse_header(source.read(0, min(MAX_HEADER_SIZE, source.size)))
        if source.size != h.blob_length:
            raise TamperedError(f"sealed blob is {source.size} bytes but its header declares {h.blob_length}: "
                                "truncated, extended or damaged")
        if h.context_digest != context_digest(context):
            raise TamperedError("sealed blob belongs to a different context (swapped file, renamed tensor or "
                                "edited graph)")
        self._aead = _blob_aead(keys.content_key(h.key_id), h)
        if keys.requires_signature:
            self._verify_signature(keys)

    def _verify_signature(self, keys: KeySet) -> None:
        h = self.header
        if not h.signed:
            raise TamperedError("sealed blob is unsigned, but this keyset requires a signature from a trusted key")
        public = keys.trusted_key(h.signer_id)  # type: ignore[arg-type]
        if public is None:
            raise TamperedError(f"sealed blob is signed by {h.signer_id!r}, which this keyset does not trust")
        tags = b"".join(bytes(self._source.read(off + n, TAG_SIZE))
                        for off, n in map(h.segment_span, range(h.segment_count)))
        signature = bytes(self._source.read(h.blob_length - SIGNATURE_SIZE, SIGNATURE_SIZE))
        try:
            public.verify(signature, SIGNATURE_LABEL + h.raw + tags)
        except InvalidSignature:
            raise TamperedError(f"signature by {h.signer_id!r} does not verify: the blob was altered") from None

    def decrypt_into(self, out: memoryview) -> None:
        """Decrypt every segment into ``out`` on all cores; on failure ``out`` is zeroed and TamperedError raised."""
        h = self.header
        if len(out) != h.plaintext_length:
            raise ValueError(f"output buffer is {len(out)} bytes; the blob holds {h.plaintext_length}")

        def work(a: int, b: int) -> None:
            for i in range(a, b):
                off, n = h.segment_span(i)
                start = i * h.segment_size
                self._aead.decrypt_into(h.nonce(i), self._source.read(off, n + TAG_SIZE), h.raw,
                                        out[start:start + n])

        try:
            _run_split(h.segment_count, work)
        except InvalidTag:
            _zero(out)
            raise TamperedError("sealed blob failed authentication: wrong key, or the data was altered") from None
        except BaseException:
            _zero(out)
            raise

    def _each_segment(self, sink: Callable[[int, memoryview], None]) -> None:
        """Decrypt each segment into a per-thread scratch buffer (wiped afterwards) and hand
        ``(plaintext offset, plaintext)`` to ``sink``, on all cores."""
        h = self.header

        def work(a: int, b: int) -> None:
            scratch = bytearray(min(h.segment_size, h.plaintext_length))
            try:
                for i in range(a, b):
                    off, n = h.segment_span(i)
                    plain = memoryview(scratch)[:n]
                    self._aead.decrypt_into(h.nonce(i), self._source.read(off, n + TAG_SIZE), h.raw, plain)
                    sink(i * h.segment_size, plain)
            finally:
                scratch[:] = bytes(len(scratch))

        try:
            _run_split(h.segment_count, work)
        except InvalidTag:
            raise TamperedError("sealed blob failed authentication: wrong key, or the data was altered") from None

    def verify(self) -> None:
        """Authenticate every segment without keeping any plaintext."""
        self._each_segment(lambda offset, plain: None)

    def decrypt_to_file(self, fd: int, offset: int) -> None:
        """Decrypt into file ``fd`` at ``offset`` with ``pwrite`` (for a RAM-backed file: no mapping, no
        page pre-zeroing). On failure the region holds partial plaintext: the caller removes the file."""

        def write(at: int, plain: memoryview) -> None:
            done = 0
            while done < len(plain):
                done += os.pwrite(fd, plain[done:], offset + at + done)

        self._each_segment(write)


def _zero(out: memoryview) -> None:
    chunk = bytes(min(len(out), 1 << 20))
    for start in range(0, len(out), len(chunk) or 1):
        end = min(start + len(chunk), len(out))
        out[start:end] = chunk[:end - start]


def _writable(out: object) -> memoryview:
    view = memoryview(out)  # type: ignore[arg-type]
    if view.readonly:
        raise ValueError("out must be a writable buffer (bytearray, numpy array, writable mmap)")
    if not view.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return view.cast("B")


def unseal_into(blob: Buffer, keys: KeySet, out: object, *, context: Context) -> int:
    """Verify ``blob`` and decrypt it straight into the writable buffer ``out`` (exactly
    :func:`plaintext_size` bytes). Returns the number of bytes written."""
    view = _writable(out)
    opener = Opener(BlobSource(blob), keys, context=context)
    opener.decrypt_into(view)
    return len(view)


def unseal_bytes(blob: Buffer, keys: KeySet, *, context: Context) -> bytes:
    """Verify ``blob`` and return its plaintext."""
    opener = Opener(BlobSource(blob), keys, context=context)
    out = bytearray(opener.header.plaintext_length)
    opener.decrypt_into(memoryview(out))
    return bytes(out)


def open_file(fd: int, offset: int, length: int, keys: KeySet, *, context: Context) -> Opener:
    """An :class:`Opener` over ``length`` bytes of ``fd`` at ``offset``, read with ``pread`` (no mapping)."""
    return Opener(BlobSource(fd=fd, offset=offset, length=length), keys, context=context)
