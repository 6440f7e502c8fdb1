"""The engine vault: the in-process callback behind the shim's ``decrypt`` and ``encrypt``.

Engines are sealed with the sealed-blob format, bound to the cache file's name (context
``"ortseal/trt-engine/v2\\0" + name``), stamped with the deployment's release, signed, and written
atomically. Opening checks the signature over the content digest before the content key is fetched,
and refuses engines older than the vault's minimum release. Vaults are registered per cache directory;
the shim's calls are routed by the path ORT passes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .._atomic import atomic_writer
from ..blob import BlobSource, Opener, read_header, seal_stream
from ..errors import OrtsealError, TamperedError
from ..keys import KeySet
from .shim import DECRYPT_CALLBACK, ENCRYPT_CALLBACK, load_shim

log = logging.getLogger("ortseal.tensorrt")
ENGINE_SUFFIX = ".engine.encrypted"
CONTEXT_PREFIX = b"ortseal/trt-engine/v2\x00"
PURPOSE = "engine"


@dataclass(frozen=True, eq=False)
class Vault:
    """What one cache directory is sealed with: the keyset, the release stamped on new engines, and the
    oldest release accepted when reading."""

    keys: KeySet
    release: int = 0
    min_release: int = 0


def engine_context(path: str | os.PathLike[str]) -> bytes:
    """The binding context of an engine cache file: its name, so a file copied onto another name fails."""
    return CONTEXT_PREFIX + os.fsencode(Path(path).name)


def _engine_source(fd: int) -> BlobSource:
    st = os.fstat(fd)
    # Ciphertext does not compress and has no holes: a file with far fewer blocks than bytes declares a
    # length it does not hold (a sparse file), which would only cost time to hash.
    if st.st_size > (1 << 20) and st.st_blocks * 512 < st.st_size // 2:
        raise TamperedError(f"engine file is sparse ({st.st_blocks * 512} bytes allocated of {st.st_size}): "
                            "not a sealed engine")
    return BlobSource(fd=fd, length=st.st_size)


def open_engine(path: str | os.PathLike[str], vault: Vault, fd: int) -> Opener:
    """Check an engine file's length, context, release and signature, then fetch its key; return the
    opener to decrypt with."""
    return Opener(_engine_source(fd), vault.keys, context=engine_context(path), purpose=PURPOSE,
                  min_release=vault.min_release, kind="engine")


def engine_size(fd: int) -> int:
    """The plaintext size a sealed engine file declares, after checking its length against its header."""
    source = _engine_source(fd)
    header = read_header(source, kind="engine")
    if header.blob_length != source.size:
        raise TamperedError("engine file length does not match its header: truncated or damaged")
    return header.plaintext_length


def verify_engine_file(path: str | os.PathLike[str], keys: KeySet | Vault) -> None:
    """Fully verify a sealed engine file without keeping its plaintext; raises on any failure."""
    vault = keys if isinstance(keys, Vault) else Vault(keys)
    fd = os.open(path, os.O_RDONLY)
    try:
        open_engine(path, vault, fd).verify()
    finally:
        os.close(fd)


def check_can_write(keys: KeySet) -> None:
    """Raise unless engines written with ``keys`` could be opened again by the same keyset."""
    keys.sealing_key()
    if keys.requires_signature and keys.signing_key() is None:
        raise OrtsealError("this keyset verifies signatures but cannot sign, so an engine written with it could "
                           "never be opened again; ship signed engines, or give the engine cache a keyset with a "
                           "signing key (e.g. the device's own KeySet.generate())")


def write_engine(path: str | os.PathLike[str], engine: memoryview, vault: Vault) -> None:
    """Seal ``engine`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    check_can_write(vault.keys)
    with atomic_writer(path, mode=0o600) as fh:
        seal_stream(engine, fh, vault.keys, context=engine_context(path), sign=vault.keys.signing_key() is not None,
                    release=vault.release)


class _Registry:
    """Cache directory -> vault, and the one pair of ctypes callbacks this process gives the shim."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vaults: dict[str, Vault] = {}
        # Kept alive for the life of the process: the shim may call them until unregistered.
        self._decrypt_cb = DECRYPT_CALLBACK(self._decrypt)
        self._encrypt_cb = ENCRYPT_CALLBACK(self._encrypt)
        self._registered = False

    def add(self, cache_dir: str, vault: Vault) -> None:
        with self._lock:
            current = self._vaults.get(cache_dir)
            if current is not None and current.keys is not vault.keys:
                raise ValueError(f"engine cache {cache_dir} is already sealed with another keyset in this process; "
                                 "give each keyset its own trt_engine_cache_path")
            self._vaults[cache_dir] = vault  # the same keyset again: its latest release settings apply
            if not self._registered:
                self.register()

    def register(self) -> None:
        """(Re)give the shim this process's callbacks."""
        load_shim().ortseal_shim_register(self._decrypt_cb, self._encrypt_cb, None)
        self._registered = True

    def vault_for(self, path: str) -> Vault:
        directory = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        with self._lock:
            vault = self._vaults.get(directory)
        if vault is None:
            raise OrtsealError(f"no ortseal vault is registered for the cache directory {directory}")
        return vault

    # The two callbacks never raise into C: any failure is logged and reported to ORT as 0.
    def _decrypt(self, _user: int, c_path: bytes, buf: int | None, size_ptr) -> int:
        path = os.fsdecode(c_path)
        try:
            vault = self.vault_for(path)
            fd = os.open(path, os.O_RDONLY)
            try:
                if not buf:
                    size_ptr[0] = engine_size(fd)
                    return 1
                opener = open_engine(path, vault, fd)
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
            vault = self.vault_for(path)
            engine = memoryview((ctypes.c_char * size).from_address(data)).cast("B") if size else memoryview(b"")
            write_engine(path, engine, vault)
            log.info("ortseal: sealed TensorRT engine %s (%d bytes, release %d)", path, size, vault.release)
            return 1
        except BaseException as exc:  # noqa: BLE001
            log.error("ortseal: could not seal TensorRT engine %s: %s: %s", path, type(exc).__name__, exc)
            return 0


registry = _Registry()
