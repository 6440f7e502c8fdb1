"""The engine vault: the in-process callback behind the shim's ``decrypt`` and ``encrypt``.

Engines are sealed with the sealed-blob format, bound to the cache file's name (context
``"ortseal/trt-engine/v1\\0" + name``), signed when the keyset can sign, and written atomically.
Vaults are registered per cache directory; the shim's calls are routed by the path ORT passes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

from .._atomic import atomic_writer
from ..blob import MAX_HEADER_SIZE, Opener, open_file, parse_header, seal_stream
from ..errors import OrtsealError, TamperedError
from ..keys import KeySet
from .shim import DECRYPT_CALLBACK, ENCRYPT_CALLBACK, load_shim

log = logging.getLogger("ortseal.tensorrt")
ENGINE_SUFFIX = ".engine.encrypted"
CONTEXT_PREFIX = b"ortseal/trt-engine/v1\x00"


def engine_context(path: str | os.PathLike[str]) -> bytes:
    """The binding context of an engine cache file: its name, so a file copied onto another name fails."""
    return CONTEXT_PREFIX + os.fsencode(Path(path).name)


def open_engine(path: str | os.PathLike[str], keys: KeySet, fd: int) -> Opener:
    """Check an engine file's length, context, key and signature; return the opener to decrypt with."""
    return open_file(fd, 0, os.fstat(fd).st_size, keys, context=engine_context(path))


def verify_engine_file(path: str | os.PathLike[str], keys: KeySet) -> None:
    """Fully verify a sealed engine file without keeping its plaintext; raises on any failure."""
    fd = os.open(path, os.O_RDONLY)
    try:
        open_engine(path, keys, fd).verify()
    finally:
        os.close(fd)


def write_engine(path: str | os.PathLike[str], engine: memoryview, keys: KeySet) -> None:
    """Seal ``engine`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    if keys.requires_signature and keys.signing_key() is None:
        raise OrtsealError("this keyset verifies signatures but cannot sign, so an engine written with it could "
                           "never be opened again; ship signed engines, or give the engine cache a keyset with a "
                           "signing key (e.g. the device's own KeySet.generate())")

    with atomic_writer(path, mode=0o600) as fh:
        seal_stream(engine, fh, keys, context=engine_context(path), sign=keys.signing_key() is not None)


class _Registry:
    """Cache directory -> keyset, and the one pair of ctypes callbacks this process gives the shim."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vaults: dict[str, KeySet] = {}
        # Kept alive for the life of the process: the shim may call them until unregistered.
        self._decrypt_cb = DECRYPT_CALLBACK(self._decrypt)
        self._encrypt_cb = ENCRYPT_CALLBACK(self._encrypt)
        self._registered = False

    def add(self, cache_dir: str, keys: KeySet) -> None:
        with self._lock:
            current = self._vaults.get(cache_dir)
            if current is not None and current is not keys:
                raise ValueError(f"engine cache {cache_dir} is already sealed with another keyset in this process; "
                                 "give each keyset its own trt_engine_cache_path")
            self._vaults[cache_dir] = keys
            if not self._registered:
                load_shim().ortseal_shim_register(self._decrypt_cb, self._encrypt_cb, None)
                self._registered = True

    def keys_for(self, path: str) -> KeySet:
        directory = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        with self._lock:
            keys = self._vaults.get(directory)
        if keys is None:
            raise OrtsealError(f"no ortseal vault is registered for the cache directory {directory}")
        return keys

    # The two callbacks never raise into C: any failure is logged and reported to ORT as 0.
    def _decrypt(self, _user: int, c_path: bytes, buf: int | None, size_ptr) -> int:
        path = os.fsdecode(c_path)
        try:
            keys = self.keys_for(path)
            fd = os.open(path, os.O_RDONLY)
            try:
                if not buf:
                    header = parse_header(os.pread(fd, MAX_HEADER_SIZE, 0))
                    if header.blob_length != os.fstat(fd).st_size:
                        raise TamperedError("engine file length does not match its header: truncated or damaged")
                    size_ptr[0] = header.plaintext_length
                    return 1
                opener = open_engine(path, keys, fd)
                if size_ptr[0] != opener.header.plaintext_length:
                    raise ValueError(f"ORT's buffer is {size_ptr[0]} bytes, the engine {opener.header.plaintext_length}")
                out = (ctypes.c_char * size_ptr[0]).from_address(buf)
                opener.decrypt_into(memoryview(out).cast("B"))
                return 1
            finally:
                os.close(fd)
        except BaseException as exc:  # noqa: BLE001 - must not propagate into ORT
            log.error("ortseal: refusing to open TensorRT engine %s: %s: %s", path, type(exc).__name__, exc)
            return 0

    def _encrypt(self, _user: int, c_path: bytes, data: int | None, size: int) -> int:
        path = os.fsdecode(c_path)
        try:
            keys = self.keys_for(path)
            engine = memoryview((ctypes.c_char * size).from_address(data)).cast("B") if size else memoryview(b"")
            write_engine(path, engine, keys)
            log.info("ortseal: sealed TensorRT engine %s (%d bytes)", path, size)
            return 1
        except BaseException as exc:  # noqa: BLE001
            log.error("ortseal: could not seal TensorRT engine %s: %s: %s", path, type(exc).__name__, exc)
            return 0


registry = _Registry()
