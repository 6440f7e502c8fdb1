"""Sealing blobs (docs/format.md, "Sealing"): one :class:`Sealer` per blob, in memory or streamed to a file."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

from .._parallel import available_cores, run_split
from ..keys import KeySet
from ._format import (
    DEFAULT_SEGMENT_SIZE,
    DIGEST_SIZE,
    MAX_SEGMENT_SIZE,
    MAX_SEGMENTS,
    MIN_SEGMENT_SIZE,
    TAG_SIZE,
    Buffer,
    Context,
    Header,
    _blob_aead,
    _content_digest,
    _signature_input,
    check_release,
    new_header,
)


class SealedInfo(NamedTuple):
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
        self.header = new_header(key_id=key_id, signer_id=signer[0] if signer else None, segment_size=segment_size,
                                 length=length, release=release, context=context)
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
    out = bytearray(h.blob_length)
    view = memoryview(out)
    view[:len(h.raw)] = h.raw
    sealer.encrypt(0, src, view[len(h.raw):h.body_length])
    view[h.body_length:] = sealer.signature()
    return bytes(out)


class BlobWriter:
    """Seals blobs one after another into a file, streaming: plaintext is encrypted straight from the
    caller's buffer (which may be an mmap of a huge file) into two reused batch buffers, and writing one
    batch overlaps encrypting the next. Use as a context manager."""

    def __init__(self, out: BinaryIO, keys: KeySet, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        self._out, self._keys, self._segment_size = out, keys, segment_size
        self._batch = segment_size * 4 * available_cores()
        self._buffers = [bytearray(0), bytearray(0)]
        from concurrent.futures import ThreadPoolExecutor  # sealing only: opening never writes

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

