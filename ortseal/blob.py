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
import hmac
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

from .errors import FormatError, KeyNotFoundError, RollbackError, TamperedError
from .keys import KeySet, check_key_id

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
    "model": "re-seal the original model: ortseal seal ORIGINAL.onnx -o SEALED.onnx --keys KEYS",
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


@dataclass(frozen=True)
class Header:
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


# -- parallel segment work ------------------------------------------------------------------------
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_split(count: int, work: Callable[[int, int], None], workers: int | None = None) -> None:
    """Run ``work(first, stop)`` over ``range(count)`` split into one contiguous range per core (at most
    ``workers``); the first error is raised once every range has stopped."""
    global _POOL
    n = min(workers or available_cores(), count)
    if n <= 1:
        work(0, count)
        return
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="ortseal")
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
@dataclass(frozen=True)
class SealedInfo:
    """What sealing one blob produced: its length, content digest and header."""

    length: int
    digest: bytes
    header: Header


class Sealer:
    """Seals one blob of a known length, segment by segment; used by every sealing path.

    Salt and nonce prefix are always fresh random values: no caller can make two blobs share a keystream.
    """

    def __init__(self, keys: KeySet, *, context: Context, length: int, sign: bool = True,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, release: int = 0) -> None:
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment_size must be in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
        check_release(release)
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
                            FLAG_SIGNED if signer else 0, len(kid), segment_size, length, release,
                            _random(SALT_SIZE), _random(NONCE_PREFIX_SIZE), context_digest(context), len(sid))
        self.header = parse_header(fixed + kid + sid)
        self._aead = _blob_aead(key, self.header)
        self._segment_digests = bytearray(self.header.segment_count * DIGEST_SIZE)

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
                i = first + k
                self._segment_digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE] = hashlib.sha256(dst).digest()

        run_split(count, work)

    def content_digest(self) -> bytes:
        """The blob's content digest; call after every segment is encrypted."""
        return _content_digest(self.header, self._segment_digests)

    def signature(self) -> bytes:
        """The trailing signature (empty when unsigned); call after every segment is encrypted."""
        if self._signer is None:
            return b""
        return self._signer.sign(_signature_input(self.content_digest()))

    def info(self) -> SealedInfo:
        return SealedInfo(self.header.blob_length, self.content_digest(), self.header)


def seal_bytes(data: Buffer, keys: KeySet, *, context: Context, sign: bool = True,
               segment_size: int = DEFAULT_SEGMENT_SIZE, release: int = 0) -> bytes:
    """Seal ``data`` into a blob bound to ``context``; signed with the keyset's signing key when ``sign``.

    ``release`` (an int the publisher increases) lets openers refuse older blobs (``min_release``).
    """
    src = memoryview(data).cast("B")
    sealer = Sealer(keys, context=context, length=len(src), sign=sign, segment_size=segment_size, release=release)
    h = sealer.header
    out = np.empty(h.blob_length, np.uint8)  # uninitialised: every byte is written below
    view = memoryview(out)
    view[:len(h.raw)] = h.raw
    sealer.encrypt(0, src, view[len(h.raw):h.body_length])
    view[h.body_length:] = sealer.signature()
    return out.tobytes()


class BlobWriter:
    """Seals blobs one after another into a file, streaming: plaintext is encrypted straight from the
    caller's buffer (which may be an mmap of a huge file) into two reused batch buffers, and writing one
    batch overlaps encrypting the next. Use as a context manager."""

    def __init__(self, out: BinaryIO, keys: KeySet, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        self._out, self._keys, self._segment_size = out, keys, segment_size
        self._batch = segment_size * 4 * available_cores()
        self._buffers = [bytearray(0), bytearray(0)]
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ortseal-write")

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.shutdown()

    def write(self, data: Buffer, *, context: Context, sign: bool = True, release: int = 0,
              progress: Callable[[int], None] | None = None) -> SealedInfo:
        """Seal ``data`` as one blob bound to ``context``; returns its length and content digest."""
        src = memoryview(data).cast("B")
        seg = self._segment_size
        sealer = Sealer(self._keys, context=context, length=len(src), sign=sign, segment_size=seg, release=release)
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
        return sealer.info()


def seal_stream(data: Buffer, out: BinaryIO, keys: KeySet, *, context: Context, sign: bool = True,
                segment_size: int = DEFAULT_SEGMENT_SIZE, release: int = 0) -> SealedInfo:
    """Seal ``data`` as one blob written to ``out`` in batches."""
    with BlobWriter(out, keys, segment_size=segment_size) as writer:
        return writer.write(data, context=context, sign=sign, release=release)


# -- opening -------------------------------------------------------------------------------------
class BlobSource:
    """Random access to a blob's bytes: a buffer (zero-copy slices) or a file descriptor (pread)."""

    def __init__(self, buffer: Buffer | None = None, *, fd: int | None = None, offset: int = 0,
                 length: int | None = None) -> None:
        self._view = memoryview(buffer).cast("B") if buffer is not None else None
        # Only an immutable buffer is sure to read the same on a second pass (a file or an mmap may change).
        self.immutable = isinstance(buffer, bytes)
        self._fd, self._base = fd, offset
        self.size = len(self._view) if self._view is not None else int(length)  # type: ignore[arg-type]
        self._local = threading.local()

    def read(self, offset: int, n: int) -> memoryview:
        if self._view is not None:
            return self._view[offset:offset + n]
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < n:
            buf = self._local.buf = bytearray(max(n, min(self.size, DEFAULT_SEGMENT_SIZE + TAG_SIZE)))
        view = memoryview(buf)[:n]
        got = os.preadv(self._fd, [view], self._base + offset)  # type: ignore[arg-type]
        if got != n:
            raise TamperedError("sealed data is truncated (file shorter than its header declares)")
        return view


class Opener:
    """Checks a blob before any of its plaintext exists; then decrypts on request.

    Order (docs/format.md, "Opening"): header; length; context; release; then the commitment: either
    ``expected_digest`` (a content digest the caller holds from a verified, signed manifest) or the blob's
    own signature by a key this keyset trusts for ``purpose``, checked over the content digest *before*
    the content key is asked for, so nothing the file chooses reaches a key provider unverified. Only a
    keyset that says ``allow_unsigned`` skips the commitment. Decryption re-computes the content digest
    in the same pass and fails (output zeroed) unless it matches.
    """

    def __init__(self, source: BlobSource, keys: KeySet, *, context: Context, expected_digest: bytes | None = None,
                 purpose: str = PURPOSE_BLOB, min_release: int = 0, kind: str = "blob", need_key: bool = True,
                 key_id: str | None = None, plaintext_length: int | None = None) -> None:
        self._source = source
        h = self.header = parse_header(source.read(0, min(MAX_HEADER_SIZE, source.size)), kind=kind)
        # What the caller's signed manifest says, checked on this one read of the header (never a second).
        if key_id is not None and h.key_id != key_id:
            raise TamperedError(f"sealed {kind} names key {h.key_id!r}, its manifest {key_id!r}")
        if plaintext_length is not None and h.plaintext_length != plaintext_length:
            raise TamperedError(f"sealed {kind} holds {h.plaintext_length} bytes, its manifest {plaintext_length}")
        if source.size != h.blob_length:
            raise TamperedError(f"sealed {kind} is {source.size} bytes but its header declares {h.blob_length}: "
                                "truncated, extended or damaged")
        if h.context_digest != context_digest(context):
            raise TamperedError(f"sealed {kind} belongs to a different context (swapped file, renamed tensor or "
                                "edited graph)")
        if h.release < min_release:
            raise RollbackError(f"sealed {kind} is release {h.release}, older than the minimum release {min_release} "
                                "this deployment accepts (an older file put in place of a newer one?)")
        self.expected_digest = expected_digest
        self._aead: AESGCM | None = None
        if expected_digest is None and keys.requires_signature:
            verified = self._verify_signature(keys, purpose, kind)
            # Decryption re-checks the digest unless the bytes cannot have changed since it was computed.
            self.expected_digest = None if source.immutable else verified
        # need_key=False: a keyset of public keys checks the stored bytes only (verify_stored)
        if need_key:
            self._aead = _blob_aead(keys.content_key(h.key_id), h)

    def verify_stored(self) -> None:
        """Check the stored bytes against the commitment (signed digest) by hashing alone: no content key
        is used and nothing is decrypted. Raises TamperedError; a blob with no commitment fails too."""
        if self.expected_digest is None:
            raise TamperedError("nothing commits to this blob's content (unsigned): it can only be checked by "
                                "decrypting it with the content key")
        if not hmac.compare_digest(self._stored_digest(), self.expected_digest):
            raise TamperedError("the stored bytes differ from those that were signed: the file was altered")

    def _stored_digest(self) -> bytes:
        """The content digest of the stored bytes (one hash pass on all cores, nothing decrypted)."""
        digests = bytearray(self.header.segment_count * DIGEST_SIZE)
        self._each_segment(lambda i, stored: _put_digest(digests, i, stored), decrypt=False)
        return _content_digest(self.header, digests)

    def _verify_signature(self, keys: KeySet, purpose: str, kind: str) -> bytes:
        h = self.header
        if not h.signed:
            raise TamperedError(f"sealed {kind} is unsigned, but this keyset requires a signature from a trusted "
                                "key (KeySet(allow_unsigned=True) accepts unsigned blobs)")
        public = keys.trusted_key(h.signer_id, purpose)  # type: ignore[arg-type]
        if public is None:
            raise TamperedError(f"sealed {kind} is signed by {h.signer_id!r}, which this keyset does not trust "
                                f"for {purpose!r}")
        digest = self._stored_digest()
        signature = bytes(self._source.read(h.body_length, SIGNATURE_SIZE))
        try:
            public.verify(signature, _signature_input(digest))
        except InvalidSignature:
            raise TamperedError(f"signature by {h.signer_id!r} does not verify: the {kind} was altered") from None
        return digest

    def _each_segment(self, sink: Callable[[int, memoryview], None], *, decrypt: bool,
                      scratch_for: Callable[[int], memoryview] | None = None, workers: int | None = None,
                      check: bool = True) -> None:
        """For each segment ``i``, on all cores: read it, record its digest when a commitment is checked
        (and ``check``), decrypt it (into ``scratch_for(i)`` or a per-thread scratch buffer) when ``decrypt``,
        and call ``sink(i, plaintext or stored bytes)``. Stops early once any segment fails; raises
        TamperedError."""
        h = self.header
        aead = self._aead
        if decrypt and aead is None:
            raise KeyNotFoundError("this blob was opened for checking only (need_key=False): it cannot be decrypted")
        checked = decrypt and check and self.expected_digest is not None
        digests = bytearray(h.segment_count * DIGEST_SIZE) if checked else None
        failed = threading.Event()

        def work(a: int, b: int) -> None:
            scratch = bytearray(min(h.segment_size, h.plaintext_length)) if decrypt and scratch_for is None else None
            try:
                for i in range(a, b):
                    if failed.is_set():
                        return
                    off, n = h.segment_span(i)
                    stored = self._source.read(off, n + TAG_SIZE)
                    if digests is not None:
                        _put_digest(digests, i, stored)
                    if not decrypt:
                        sink(i, stored)
                        continue
                    plain = scratch_for(i) if scratch_for else memoryview(scratch)[:n]  # type: ignore[arg-type]
                    aead.decrypt_into(h.nonce(i), stored, h.raw, plain)  # type: ignore[union-attr]
                    sink(i, plain)
            except BaseException:
                failed.set()
                raise
            finally:
                if scratch is not None:
                    scratch[:] = bytes(len(scratch))

        try:
            run_split(h.segment_count, work, workers)
        except InvalidTag:
            raise TamperedError("sealed blob failed authentication: wrong key, or the data was altered") from None
        if digests is not None:
            self.check_segment_digests(digests)

    def decrypt_into(self, out: memoryview) -> None:
        """Decrypt every segment into ``out`` on all cores; on failure ``out`` is zeroed and TamperedError raised."""
        h = self.header
        if len(out) != h.plaintext_length:
            raise ValueError(f"output buffer is {len(out)} bytes; the blob holds {h.plaintext_length}")

        def target(i: int) -> memoryview:
            start = i * h.segment_size
            return out[start:start + h.segment_span(i)[1]]

        try:
            self._each_segment(lambda i, plain: None, decrypt=True, scratch_for=target)
        except BaseException:
            _zero(out)
            raise

    def verify(self) -> None:
        """Authenticate every segment (and the commitment) without keeping any plaintext."""
        self._each_segment(lambda i, plain: None, decrypt=True)

    def decrypt_to_file(self, fd: int, offset: int, *, workers: int | None = None, check: bool = True,
                        progress: Callable[[int], object] | None = None) -> None:
        """Decrypt into file ``fd`` at ``offset`` with ``pwrite`` (for a RAM-backed file: no mapping, no
        page pre-zeroing), on at most ``workers`` threads (default: all cores). On failure the region holds
        partial plaintext: the caller removes the file.

        ``check=False`` authenticates each segment (GCM) but leaves the signed digest unchecked: the caller
        must then check what the file holds with :meth:`digest_from_plaintext` and
        :meth:`check_segment_digests` before anything is accepted. ``progress(n)`` is called as each
        segment of ``n`` bytes is written."""
        seg = self.header.segment_size

        def write(i: int, plain: memoryview) -> None:
            done, at = 0, offset + i * seg
            while done < len(plain):
                done += os.pwrite(fd, plain[done:], at + done)
            if progress is not None:
                progress(len(plain))

        self._each_segment(write, decrypt=True, workers=workers, check=check)

    def digest_from_plaintext(self, index: int, plaintext: memoryview, scratch: memoryview) -> bytes:
        """The digest of segment ``index`` as stored, recomputed from its plaintext by encrypting it again
        (into ``scratch``, at least ``len(plaintext) + TAG_SIZE`` bytes). Encryption is deterministic (the
        blob key, nonce and header are fixed), so this is the digest of exactly the stored bytes that
        decrypt to ``plaintext``: checking it checks the plaintext itself, wherever it has been kept."""
        if self._aead is None:
            raise KeyNotFoundError("this blob was opened for checking only (need_key=False)")
        out = scratch[:len(plaintext) + TAG_SIZE]
        self._aead.encrypt_into(self.header.nonce(index), plaintext, self.header.raw, out)
        return hashlib.sha256(out).digest()

    def check_segment_digests(self, digests: bytes | bytearray) -> None:
        """Check every segment's digest (in order, concatenated) against the commitment; raises TamperedError."""
        if self.expected_digest is None:
            raise TamperedError("nothing commits to this blob's content (unsigned)")
        if len(digests) != self.header.segment_count * DIGEST_SIZE or \
                not hmac.compare_digest(_content_digest(self.header, digests), self.expected_digest):
            raise TamperedError("sealed blob's content does not match its signed digest: it was rewritten by "
                                "someone holding the content key, or changed while it was being read")


def _put_digest(digests: bytearray, index: int, stored: memoryview) -> None:
    digests[index * DIGEST_SIZE:(index + 1) * DIGEST_SIZE] = hashlib.sha256(stored).digest()


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


def unseal_into(blob: Buffer, keys: KeySet, out: object, *, context: Context, min_release: int = 0) -> int:
    """Verify ``blob`` and decrypt it straight into the writable buffer ``out`` (exactly
    :func:`plaintext_size` bytes). Returns the number of bytes written."""
    view = _writable(out)
    opener = Opener(BlobSource(blob), keys, context=context, min_release=min_release)
    opener.decrypt_into(view)
    return len(view)


def unseal_bytes(blob: Buffer, keys: KeySet, *, context: Context, min_release: int = 0) -> bytes:
    """Verify ``blob`` and return its plaintext."""
    opener = Opener(BlobSource(blob), keys, context=context, min_release=min_release)
    out = bytearray(opener.header.plaintext_length)
    opener.decrypt_into(memoryview(out))
    return bytes(out)


def read_header(source: BlobSource, *, kind: str = "blob") -> Header:
    """The header of the blob in ``source``, parsed without keys."""
    return parse_header(source.read(0, min(MAX_HEADER_SIZE, source.size)), kind=kind)
