"""Opening blobs (docs/format.md, "Opening"): every check before any plaintext exists, then decryption."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._parallel import run_split
from ..errors import RollbackError, TamperedError
from ..keys import KeySet
from ._format import (
    DEFAULT_SEGMENT_SIZE,
    DIGEST_SIZE,
    MAX_HEADER_SIZE,
    PURPOSE_BLOB,
    SIGNATURE_SIZE,
    TAG_SIZE,
    Buffer,
    Context,
    Header,
    _blob_aead,
    _content_digest,
    _signature_input,
    context_digest,
    parse_header,
)


class BlobSource:
    """Random access to a blob's bytes: a buffer (zero-copy slices) or a file descriptor (pread)."""

    def __init__(self, buffer: Buffer | None = None, *, fd: int | None = None, offset: int = 0,
                 length: int | None = None) -> None:
        self._view = memoryview(buffer).cast("B") if buffer is not None else None
        # Only an immutable buffer is sure to read the same on a second pass (a file or an mmap may change).
        self.immutable = isinstance(buffer, bytes) or (isinstance(buffer, memoryview) and isinstance(buffer.obj, bytes))
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
            raise TamperedError(keys.untrusted(f"sealed {kind}", h.signer_id, purpose))  # type: ignore[arg-type]
        digest = self._stored_digest()
        signature = bytes(self._source.read(h.body_length, SIGNATURE_SIZE))
        try:
            public.verify(signature, _signature_input(digest))
        except InvalidSignature:
            raise TamperedError(f"signature by {h.signer_id!r} does not verify: the {kind} was altered") from None
        return digest

    def _each_segment(self, sink: Callable[[int, memoryview], None], *, decrypt: bool,
                      scratch_for: Callable[[int], memoryview] | None = None, workers: int | None = None) -> None:
        """For each segment ``i``, on all cores: read it, record its digest when a commitment is checked,
        decrypt it (into ``scratch_for(i)`` or a per-thread scratch buffer) when ``decrypt``,
        and call ``sink(i, plaintext or stored bytes)``. Stops early once any segment fails; raises
        TamperedError."""
        h = self.header
        aead = self._aead
        if decrypt and aead is None:
            raise ValueError("this blob was opened for checking only (need_key=False): it cannot be decrypted")
        checked = decrypt and self.expected_digest is not None
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
            self._check_segment_digests(digests)

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

    def decrypt_to_file(self, fd: int, offset: int, *, workers: int | None = None,
                        progress: Callable[[int], object] | None = None) -> None:
        """Decrypt into file ``fd`` at ``offset`` with ``pwrite`` (for a RAM-backed file: no mapping, no
        page pre-zeroing), on at most ``workers`` threads (default: all cores). On failure the region holds
        partial plaintext: the caller removes the file. The signed digest is checked in the same pass, as
        :meth:`decrypt_into` does. ``progress(n)`` is called as each segment of ``n`` bytes is written."""
        seg = self.header.segment_size

        def write(i: int, plain: memoryview) -> None:
            done, at = 0, offset + i * seg
            while done < len(plain):
                done += os.pwrite(fd, plain[done:], at + done)
            if progress is not None:
                progress(len(plain))

        self._each_segment(write, decrypt=True, workers=workers)

    def _check_segment_digests(self, digests: bytes | bytearray) -> None:
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
