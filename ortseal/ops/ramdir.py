"""TEMPORARY stand-in (replaced by the rtdir branch): private RAM-backed folders for opening."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

RUNTIME_DIR_ENV = "ORTSEAL_RUNTIME_DIR"
FOLDER_PREFIX = "ortseal-open-"


def runtime_dirs() -> list[str]:
    chosen = os.environ.get(RUNTIME_DIR_ENV)
    if chosen == "none":
        return []
    if chosen:
        return [os.path.realpath(chosen)]
    return ["/dev/shm"] if os.path.isdir("/dev/shm") else []


@dataclass
class PrivateFolder:
    path: str
    fd: int

    def create(self, name: str) -> int:
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.fd)

    def free_bytes(self) -> int:
        st = os.fstatvfs(self.fd)
        return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def private_folder(base: str) -> Iterator[PrivateFolder]:
    path = tempfile.mkdtemp(prefix="ortseal-open-", dir=base)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    import fcntl
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield PrivateFolder(path, fd)
    finally:
        os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_folders(base: str) -> list[str]:
    return []
