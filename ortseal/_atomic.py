"""Atomic file writes: temp file in the target's directory, fsync, rename; nothing half-written.

While a writer runs it holds an exclusive ``flock`` on its temp file, so :func:`remove_stale_temps` can
tell a live writer's temp file from one left by a writer that was killed (its lock died with it),
whatever PID namespace either process runs in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import glob
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UnsafeOptionError

TEMP_SUFFIX = ".tmp"
# A temp file is made under this suffix, locked, then renamed to TEMP_SUFFIX: stale cleanup never sees a live
# writer's file unlocked (between mkstemp and flock). One left under it (a writer killed in that instant) is
# removed once older than NEW_STALE_SECONDS.
NEW_SUFFIX = ".new"
NEW_STALE_SECONDS = 60
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}  # a write failed: about the file written


def _exists_error(target: Path) -> FileExistsError:
    return FileExistsError(f"{target} exists; choose another output, or replace it (overwrite=True)")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, mode: int = 0o644, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only if the block completes.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise _exists_error(target)
    try:
        fd, new = tempfile.mkstemp(prefix=f".{target.name}.", suffix=NEW_SUFFIX, dir=target.parent or ".")
    except OSError as exc:
        raise _naming(exc, target) from None
    tmp = new
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
        locked = new[:-len(NEW_SUFFIX)] + TEMP_SUFFIX
        os.rename(new, locked)  # visible to stale cleanup only once locked
        tmp = locked
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            if not overwrite and target.exists():
                raise _exists_error(target)
            os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.filename == tmp or (exc.filename is None and exc.errno in _WRITE_ERRORS):
            raise _naming(exc, target) from exc
        raise  # about another file (or a read): its own message is the right one
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _naming(exc: OSError, target: Path) -> OSError:
    """``exc`` about the file the caller asked for, not the temp file beside it: ``[Errno 13] cannot write
    out/model.onnx.data: Permission denied`` for a read-only folder."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, f"cannot write {target}: {exc.strerror}")  # OSError(errno, ...): the matching subclass


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path, mode=mode, overwrite=overwrite) as fh:
        fh.write(data)


def temp_files(directory: str | os.PathLike[str], name_glob: str = "*") -> list[Path]:
    """Temp files :func:`atomic_writer` made in ``directory`` for targets matching ``name_glob``."""
    return sorted(Path(directory).glob(f".{name_glob}.*{TEMP_SUFFIX}"))


def lock_held(path: str | os.PathLike[str]) -> bool:
    """True while some process holds an exclusive ``flock`` on the file or folder ``path``: the writer of
    a temp file, or a process opening a model into a RAM folder. The kernel drops the lock when its
    process dies, so a free lock means the owner is gone. A link is never followed (False: no writer makes one):
    whoever planted it would have this process open what it points to (a FIFO, a device)."""
    try:
        # a FIFO put there must not block the open, nor a terminal become this process's controlling one
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ELOOP):  # a socket, a link: nothing of ours holds a lock there
            return False
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remove_stale_temps(directory: str | os.PathLike[str], name_glob: str = "*") -> list[Path]:
    """Remove temp files left in ``directory`` by writers that were killed; returns what was removed.

    The rules, shared with libortseal's engine vault (native/src/os_posix.c) so that C and Python processes
    can clean one folder: every entry is looked up relative to the folder's descriptor, links never
    followed; only this user's entries; a regular file only while no process holds its lock (taken, and the
    name removed while it is held, if it still names the file locked); a ``.new`` file only once older than
    :data:`NEW_STALE_SECONDS`; anything else under a temp name (a link, a FIFO: no writer makes one) is
    removed as itself; folders are left."""
    removed = []
    young = time.time() - NEW_STALE_SECONDS
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return []
    try:
        for name in sorted(os.listdir(dfd)):
            if fnmatch.fnmatchcase(name, f".{name_glob}.*{TEMP_SUFFIX}"):
                stale_before = None
            elif fnmatch.fnmatchcase(name, f".{name_glob}.*{NEW_SUFFIX}"):
                stale_before = young
            else:
                continue
            if _remove_if_stale(dfd, name, stale_before):
                removed.append(Path(directory) / name)
    finally:
        os.close(dfd)
    return removed


def _remove_if_stale(dfd: int, name: str, stale_before: float | None) -> bool:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if st.st_uid != os.geteuid() or (stale_before is not None and st.st_mtime >= stale_before):
            return False
        if stat.S_ISDIR(st.st_mode):
            return False
        if not stat.S_ISREG(st.st_mode):
            os.unlink(name, dir_fd=dfd)
            return True
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dfd)
    except OSError:  # gone, replaced by a link, or not ours to remove
        return False
    try:
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != (st.st_dev, st.st_ino):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            return False
        os.unlink(name, dir_fd=dfd)
        return True
    except OSError:  # BlockingIOError: a live writer holds it
        return False
    finally:
        os.close(fd)


def move_into_private_folder(directory: Path, name: str, folder_name: str, left: str) -> Path:
    """Move ``directory/name`` (a link or FIFO itself, never what it points to) into ``directory/folder_name``
    (made 0700 when missing), both folders opened without following links; returns where it went. Raises
    :class:`UnsafeOptionError` when that folder is a link, a file, another user's or writable by others
    (someone else planted it: what is moved there would be theirs to take); ``left`` ends the message (what
    was left in place, and why it was to be moved)."""
    folder = directory / folder_name
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:  # the folder as it is now, never through a link planted in its place
        qfd = os.open(folder, flags)
    except OSError as err:
        if err.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        raise UnsafeOptionError(f"{folder} is not a folder (a link or a file was put there): refused; remove it "
                                f"({left})") from None
    try:
        st = os.fstat(qfd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise UnsafeOptionError(f"{folder} belongs to another user or is writable by others: refused; "
                                    f"remove it ({left})")
        dfd = os.open(directory, flags)
        try:
            os.replace(name, name, src_dir_fd=dfd, dst_dir_fd=qfd)
        finally:
            os.close(dfd)
    finally:
        os.close(qfd)
    return folder / name


LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def output_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the exclusive lock of output ``path`` (and the files written beside it) until the block ends,
    waiting for another writer that holds it; then remove temp files that dead writers of ``path`` left.

    The lock is an ``flock`` on a hidden ``.<name>.lock`` beside ``path``, opened without following links
    and removed on release; the kernel drops it when its holder dies, so a lock file a killed writer left
    is simply taken over. A writer that opened a lock file another has since removed tries again."""
    target = Path(path)
    lock = target.with_name(f".{target.name}{LOCK_SUFFIX}")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _naming(exc, target) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(lock, follow_symlinks=False)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # released and removed by its last holder while we waited: take the new one
    try:
        remove_stale_temps(target.parent, glob.escape(target.name))
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(directory or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
