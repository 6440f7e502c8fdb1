"""The engine vault: the in-process callback behind the shim's ``decrypt`` and ``encrypt``.

Engines are sealed with the sealed-blob format, bound to the cache file's name (context
``"ortseal/trt-engine/v2\\0" + name``), stamped with the deployment's release, signed, and written
atomically. Opening checks the signature over the content digest before the content key is fetched,
and refuses engines older than the vault's minimum release. Vaults are registered per cache directory;
the shim's calls are routed by the path ORT passes.
"""

from __future__ import annotations

import ctypes
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .._atomic import atomic_writer
from .._files import ReadPolicy, open_checked
from .._log import Log
from ..blob import BlobSource, Header, Opener, read_header, seal_stream
from ..errors import KeyNotFoundError, SetupError, TamperedError
from ..keys import KeySet
from .shim import DECRYPT_CALLBACK, ENCRYPT_CALLBACK, load_shim

log = Log("ortseal.tensorrt")
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


# The name is ours (ortseal wrote it): a symbolic link in its place is refused, not followed; a FIFO planted
# there is refused at once instead of waited on.
ENGINE_FILE = ReadPolicy("engine file", TamperedError, follow_links=False, refuse_sparse=True, wrap_os_errors=False)


def _checked_header(fd: int, st: os.stat_result) -> Header:
    header = read_header(BlobSource(fd=fd, length=st.st_size), kind="engine")
    if header.blob_length != st.st_size:
        raise TamperedError(f"engine file length ({st.st_size} bytes) does not match its header "
                            f"({header.blob_length}): truncated or damaged")
    return header


def read_engine_header(path: str | os.PathLike[str]) -> tuple[Header, int]:
    """The header of the engine file at ``path`` (no keys needed) and the file's size, after the checks
    of :func:`read_engine_file`; its length is checked against the header."""
    fd, st = open_checked(path, ENGINE_FILE)
    try:
        return _checked_header(fd, st), st.st_size
    finally:
        os.close(fd)


def read_engine_file(path: str | os.PathLike[str]) -> bytes:
    """The whole engine file, read once into memory ortseal owns. The file is opened with
    :data:`ENGINE_FILE`, must be a regular, non-sparse file whose length matches its header (checked
    before the rest is read), and must not change length while it is read. Every later check runs on
    these bytes."""
    fd, st = open_checked(path, ENGINE_FILE)
    try:
        _checked_header(fd, st)
        with io.FileIO(fd, "rb", closefd=False) as fh:
            data = fh.readall()
    finally:
        os.close(fd)
    if len(data) != st.st_size:
        raise TamperedError(f"engine file {os.fspath(path)} changed length while it was read: refused")
    return data


def open_engine(path: str | os.PathLike[str], vault: Vault, data: bytes) -> Opener:
    """Check a sealed engine's length, context (``path``'s name), release and signature, then fetch its key;
    return the opener to decrypt ``data`` (the file's bytes, from :func:`read_engine_file`) with."""
    return Opener(BlobSource(data), vault.keys, context=engine_context(path), purpose=PURPOSE,
                  min_release=vault.min_release, kind="engine")


def engine_size(path: str | os.PathLike[str]) -> int:
    """The plaintext size a sealed engine file declares, after checking its kind and its length against its
    header (no keys needed: ORT's size query)."""
    return read_engine_header(path)[0].plaintext_length


def verify_engine_file(path: str | os.PathLike[str], keys: KeySet | Vault) -> None:
    """Fully verify a sealed engine file without keeping its plaintext; raises on any failure
    (:class:`TamperedError` for anything but a regular file, a bad length, context, release or signature)."""
    vault = keys if isinstance(keys, Vault) else Vault(keys)
    open_engine(path, vault, read_engine_file(path)).verify()


def check_can_write(keys: KeySet) -> None:
    """Raise unless engines written with ``keys`` could be opened again by the same keyset."""
    keys.sealing_key()
    if keys.requires_signature and keys.signing_key() is None:
        raise KeyNotFoundError("this keyset verifies signatures but cannot sign (it holds no signing key), so an "
                               "engine written with it could never be opened again; ship signed engines, or give the "
                               "engine cache a keyset with a signing key (e.g. the device's own KeySet.generate())")


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
            raise SetupError(f"no ortseal vault is registered for the cache directory {directory}")
        return vault

    # The two callbacks never raise into C: any failure is logged and reported to ORT as 0.
    def _decrypt(self, _user: int, c_path: bytes, buf: int | None, size_ptr) -> int:
        """ORT calls this twice: ``buf`` NULL for the size, then with its buffer of that size. Each call
        reads the file itself; the second reads it whole once and checks everything on those bytes, so a
        file swapped in between is opened whole and verified (and must fit ORT's buffer exactly) or refused."""
        path = os.fsdecode(c_path)
        try:
            vault = self.vault_for(path)
            if not buf:
                size_ptr[0] = engine_size(path)
                return 1
            opener = open_engine(path, vault, read_engine_file(path))
            if size_ptr[0] != opener.header.plaintext_length:
                raise TamperedError(f"ORT's buffer is {size_ptr[0]} bytes but the engine holds "
                                    f"{opener.header.plaintext_length}: the file changed after the size query")
            out = (ctypes.c_char * size_ptr[0]).from_address(buf)
            opener.decrypt_into(memoryview(out).cast("B"))
            return 1
        except BaseException as exc:  # noqa: BLE001 - must not propagate into ORT
            log.error("ortseal: refusing to open TensorRT engine %s: %s: %s", path, type(exc).__name__, exc)
            return 0

    def _encrypt(self, _user: int, c_path: bytes, data: int | None, size: int) -> int:
        path = os.fsdecode(c_path)
        try:
            vault = self.vault_for(path)
            if size and not data:
                raise ValueError(f"encrypt was given {size} bytes at a NULL address")
            engine = memoryview((ctypes.c_char * size).from_address(data)).cast("B") if size and data else memoryview(b"")
            write_engine(path, engine, vault)
            log.info("ortseal: sealed TensorRT engine %s (%d bytes, release %d)", path, size, vault.release)
            return 1
        except BaseException as exc:  # noqa: BLE001
            log.error("ortseal: could not seal TensorRT engine %s: %s: %s", path, type(exc).__name__, exc)
            return 0


registry = _Registry()
