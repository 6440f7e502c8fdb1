"""Private per-user folders on RAM-backed file systems, where opening puts the plaintext files ORT reads.

``/dev/shm`` is shared and world-writable (mode 1777): any local user can plant a symlink, a FIFO, a file
or a folder under any name there, at any moment. So ortseal never works in it directly. Each user gets a
base folder of their own, whose type, owner and mode are checked on the very descriptor that is then used
(opened with ``O_NOFOLLOW``, then ``fstat``: what ``lstat`` sees, with no gap between check and use):

1. ``$ORTSEAL_RUNTIME_DIR`` if set (``none``: the in-memory route); refused with UnsafeOptionError if it
   fails a check. A shared sticky folder such as ``/dev/shm`` itself stands for the per-user folder in it.
2. ``$XDG_RUNTIME_DIR`` (made by the system for this user), used only if it passes the checks.
3. ``/dev/shm/ortseal-<uid>``, made 0700 if missing; skipped with a warning if it passes no check.

A base passes if it is a real folder (not a link), owned by this user, mode exactly 0700, on tmpfs or
ramfs (``fstatfs`` magic), and no other user can replace it or any folder above it (each is owned by root
or this user, and writable by others only with the sticky bit). Inside a base, each opening gets a fresh
0700 folder, ``flock``-locked for as long as it exists; every operation in it is relative to an open
folder descriptor (``dir_fd``, ``O_NOFOLLOW``, ``O_EXCL``), and removal never follows a link and removes
only entries this user owns, inside folders ortseal itself made.

"This user" is the effective uid: it owns what this process creates. A process whose real uid differs
(a service that ``seteuid()``-s) must not trust a base of the real uid's, who could swap the opening folder
out of it while ORT reads it.

libortseal (``native/src/os_posix.c``) implements the same rules with the same names and locks, so Python
and C processes can share a base: keep the two in step (``tests/test_native_ramdir.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import platform
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from .._log import Log
from .._parallel import for_each
from ..errors import SetupError, UnsafeOptionError

log = Log("ortseal")

RUNTIME_DIR_ENV = "ORTSEAL_RUNTIME_DIR"
SHARED_RAM_DIR = "/dev/shm"
USER_BASE_PREFIX = "ortseal-"  # /dev/shm/ortseal-<uid>
FOLDER_PREFIX = "ortseal-open-"
NEW_PREFIX = ".ortseal-open-new-"  # a folder being made, not yet locked: stale cleanup waits STALE_NEW_SECONDS
STALE_NEW_SECONDS = 60
TMPFS_MAGIC = 0x01021994  # linux/magic.h
RAMFS_MAGIC = 0x858458F6
RAM_MAGICS = frozenset({TMPFS_MAGIC, RAMFS_MAGIC})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_warned: set[str] = set()


# -- file system type ------------------------------------------------------------------------------------

def _statfs_functions() -> tuple[Callable[..., int], Callable[..., int]] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    # The 64-bit variants where there are (32-bit ABIs: no EOVERFLOW on large file systems); same f_type.
    fstatfs = getattr(libc, "fstatfs64", None) or getattr(libc, "fstatfs", None)
    statfs = getattr(libc, "statfs64", None) or getattr(libc, "statfs", None)
    if fstatfs is None or statfs is None:
        return None
    fstatfs.argtypes, statfs.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_char_p, ctypes.c_void_p]
    fstatfs.restype = statfs.restype = ctypes.c_int
    return fstatfs, statfs


_STATFS = _statfs_functions()
# ``struct statfs`` starts with ``f_type``: a long (``__fsword_t``) on Linux, except an unsigned int on s390x.
_F_TYPE = ctypes.c_uint32 if platform.machine() == "s390x" else ctypes.c_long


def is_ram_backed(fd_or_path: int | str) -> bool:
    """True if the open file or folder (or the path, links followed) is on tmpfs or ramfs: its pages live
    in memory (or swap), never on a persistent disk. False where that cannot be told."""
    if _STATFS is None:
        return False
    buf = ctypes.create_string_buffer(512)  # larger than struct statfs on every Linux ABI
    if isinstance(fd_or_path, int):
        rc = _STATFS[0](fd_or_path, buf)
    else:
        rc = _STATFS[1](os.fsencode(fd_or_path), buf)
    if rc != 0:
        return False
    return (_F_TYPE.from_buffer(buf).value & 0xFFFFFFFF) in RAM_MAGICS


# -- checked bases ---------------------------------------------------------------------------------------

def _check_above(fd: int, shown: str) -> None:
    """A folder above a base: no other user may rename or replace what is in it."""
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafeOptionError(f"{shown} is owned by uid {st.st_uid}, who could replace the folders in it")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafeOptionError(f"{shown} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}, "
                                "no sticky bit), who could replace the folders in it")


def _check_base(fd: int, shown: str) -> None:
    st = os.fstat(fd)
    if not is_ram_backed(fd):
        raise UnsafeOptionError(f"{shown} is not on tmpfs or ramfs: plaintext weights would reach a persistent disk")
    if st.st_uid != os.geteuid():
        raise UnsafeOptionError(f"{shown} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise UnsafeOptionError(f"{shown} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700 "
                                f"(chmod 700 {shown})")


def _open_child(parent: int, name: str, shown: str) -> int:
    """Open the folder ``name`` in ``parent`` without following a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # O_DIRECTORY|O_NOFOLLOW says ENOTDIR for a link too: look (for the message only) at what it is
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        what = "a symbolic link" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a folder"
        raise UnsafeOptionError(f"{shown} is {what}") from None


def _open_base(path: str, *, create: bool) -> tuple[int, str]:
    """Open the base folder ``path`` after checking it and every folder above it; with ``create``, make it
    (0700) if missing. Returns its descriptor and its path with the links above it resolved.

    Raises UnsafeOptionError when a check fails, OSError when the file system says no."""
    if not os.path.isabs(path):
        raise UnsafeOptionError(f"{path} is not an absolute path")
    path = os.path.normpath(path)
    name = os.path.basename(path)
    if not name or name == "..":
        raise UnsafeOptionError(f"{path} names no folder of its own")
    # Links above the base are resolved once; each folder on the resolved path is then opened without
    # following links and checked, so none of them can be swapped afterwards by another user.
    above = os.path.realpath(os.path.dirname(path))
    fd = os.open("/", _DIR_FLAGS)
    try:
        _check_above(fd, "/")
        shown = ""
        for part in filter(None, above.split("/")):
            shown += "/" + part
            child = _open_child(fd, part, shown)
            os.close(fd)
            fd = child
            _check_above(fd, shown)
        real = os.path.join(above, name)
        created = False
        try:
            base = _open_child(fd, name, real)
        except FileNotFoundError:
            if not create:
                raise
            if not is_ram_backed(fd):  # check first: nothing is made on a persistent disk
                raise UnsafeOptionError(f"{real} would not be on tmpfs or ramfs: plaintext weights would reach "
                                        "a persistent disk") from None
            with contextlib.suppress(FileExistsError):  # someone else's is refused below
                os.mkdir(name, 0o700, dir_fd=fd)
                created = True
            base = _open_child(fd, name, real)
    finally:
        os.close(fd)
    try:
        if created and os.fstat(base).st_uid == os.geteuid():
            os.fchmod(base, 0o700)  # undo the umask, on the folder just made (a descriptor: no link followed)
        _check_base(base, real)
    except BaseException:
        os.close(base)
        raise
    return base, real


def _shared_sticky(path: str) -> bool:
    """A folder every user may create entries in, protected by the sticky bit (like /dev/shm, /tmp)."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        return stat.S_ISDIR(st.st_mode) and bool(st.st_mode & 0o002) and bool(st.st_mode & stat.S_ISVTX)
    return False


def _user_base(shared: str) -> str:
    return os.path.join(shared, f"{USER_BASE_PREFIX}{os.geteuid()}")


def _usable(path: str, *, create: bool) -> str:
    fd, real = _open_base(path, create=create)
    os.close(fd)
    return real


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("ortseal: %s", message)


def runtime_dirs() -> list[str]:
    """Per-user private base folders on RAM-backed file systems, best first (created 0700 if needed, owner,
    type and mode checked with lstat/fstat; a base that fails the checks is skipped with a warning or, when
    it is $ORTSEAL_RUNTIME_DIR, refused with UnsafeOptionError). [] when none (caller opens in memory)."""
    chosen = os.environ.get(RUNTIME_DIR_ENV)
    if chosen == "none":
        return []  # the application asked for the in-memory route
    if chosen:
        target = _user_base(chosen) if _shared_sticky(chosen) else chosen
        try:
            return [_usable(target, create=True)]
        except UnsafeOptionError as exc:
            raise UnsafeOptionError(f"{RUNTIME_DIR_ENV}={chosen}: {exc}") from None
        except OSError as exc:
            raise SetupError(f"{RUNTIME_DIR_ENV}={chosen}: cannot use {target}: {exc.strerror}") from None
    dirs = []
    candidates = [(os.environ.get("XDG_RUNTIME_DIR"), False)]
    if os.path.isdir(SHARED_RAM_DIR):
        candidates.append((_user_base(SHARED_RAM_DIR), True))
    for candidate, create in candidates:
        if not candidate:
            continue
        try:
            real = _usable(candidate, create=create)
        except (UnsafeOptionError, OSError) as exc:
            reason = exc if isinstance(exc, UnsafeOptionError) else f"{candidate}: {exc.strerror}"
            _warn_once(f"not opening models in {candidate} ({reason}); remove or fix it, or set {RUNTIME_DIR_ENV} "
                       "to a tmpfs folder of your own (mode 0700)")
            continue
        if real not in dirs:
            dirs.append(real)
    return dirs


# -- the private folder ----------------------------------------------------------------------------------

class PrivateFolder:
    """A fresh 0700 folder of this process's, yielded by :func:`private_folder`. ORT opens files in it by
    :attr:`path`; ortseal makes them through :attr:`fd` (see :meth:`create`)."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path  # absolute: ORT opens files under it by path
        self.fd = fd  # O_DIRECTORY|O_NOFOLLOW descriptor of it, flock-locked while the folder exists
        self._names: list[str] = []
        self._lock = threading.Lock()

    def create(self, name: str) -> int:
        """A new 0600 file ``name`` in the folder, open for writing (never an existing file or a link)."""
        _check_name(name)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=self.fd)
        with self._lock:
            self._names.append(name)
        return fd

    def open(self, name: str) -> int:
        """The file ``name`` in the folder, open for reading (never through a link; a FIFO cannot block)."""
        _check_name(name)
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=self.fd)

    def free_bytes(self) -> int:
        """Bytes the folder's file system has free for this user."""
        st = os.fstatvfs(self.fd)
        return st.f_bavail * st.f_frsize


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a plain file name")


def _serial(fn: Callable[[str], None], items: Sequence[str]) -> None:
    for item in items:
        fn(item)


@contextlib.contextmanager
def private_folder(base: str, *, parallel: Callable[[Callable[[str], None], Sequence[str]], None] | None = None
                   ) -> Iterator[PrivateFolder]:
    """A fresh 0700 folder in ``base``, flock-locked while it exists (liveness for stale cleanup), removed
    with all it holds when the block ends (parallel unlink of the files to give RAM back fast, via dir_fd,
    never following links, only names it created).

    The lock is the opening process's liveness: the kernel drops it when the process dies, in any PID
    namespace, so :func:`remove_stale_folders` removes exactly the folders whose owner is gone.
    ``parallel(fn, names)`` runs the unlinks (default: the opening pool, a thread per core). Raises UnsafeOptionError if
    ``base`` no longer passes the checks of :func:`runtime_dirs`, SetupError if no folder can be made.
    """
    try:
        base_fd, real = _open_base(base, create=False)
    except OSError as exc:
        raise SetupError(f"cannot open the runtime folder {base}: {exc.strerror}") from None
    try:
        folder = _make_locked_folder(base_fd, real)
        try:
            yield folder
        finally:
            _remove(base_fd, folder.path, folder.fd, folder._names, parallel or for_each)
    finally:
        os.close(base_fd)


def _make_locked_folder(base_fd: int, base: str) -> PrivateFolder:
    # Made and locked under a name stale cleanup leaves alone for a while, then renamed: no cleanup can
    # see it unlocked under its final name.
    token = os.urandom(16).hex()
    new, final = NEW_PREFIX + token, FOLDER_PREFIX + token
    try:
        os.mkdir(new, 0o700, dir_fd=base_fd)
    except OSError as exc:
        raise SetupError(f"cannot make a private folder in {base}: {exc.strerror}") from None
    fd = -1
    try:
        fd = os.open(new, _DIR_FLAGS, dir_fd=base_fd)
        os.fchmod(fd, 0o700)  # undo the umask
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(new, final, src_dir_fd=base_fd, dst_dir_fd=base_fd)
        return PrivateFolder(os.path.join(base, final), fd)
    except OSError as exc:
        # The base is this user's alone, so this is the file system saying no (EMFILE, ENOSPC...).
        if fd >= 0:
            _remove(base_fd, os.path.join(base, new), fd, [], _serial)
        else:
            with contextlib.suppress(OSError):
                os.rmdir(new, dir_fd=base_fd)
        raise SetupError(f"cannot make a private folder in {base}: {exc.strerror}") from None


def _same(st: os.stat_result, other: os.stat_result) -> bool:
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)


def _clear(fd: int, shown: str) -> None:
    """Remove what the open folder ``fd`` holds: only entries this user owns, never through a link."""
    for entry in list(os.scandir(fd)):
        with contextlib.suppress(FileNotFoundError):
            st = entry.stat(follow_symlinks=False)
            if st.st_uid != os.geteuid():
                log.warning("ortseal: left %s/%s in place: owned by uid %d", shown, entry.name, st.st_uid)
                continue
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(entry.name, dir_fd=fd)  # a link is removed itself, never what it points to
                continue
            child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
            try:
                if _same(os.fstat(child), st):
                    _clear(child, f"{shown}/{entry.name}")
                    os.rmdir(entry.name, dir_fd=fd)
            finally:
                os.close(child)


def _remove(base_fd: int, path: str, fd: int, names: Sequence[str],
            parallel: Callable[[Callable[[str], None], Sequence[str]], None]) -> bool:
    """Remove the folder ``path`` (in ``base_fd``), open (and locked) as ``fd``, then close ``fd``; False if
    it could not be removed (a warning says why).

    The known files go first, in parallel: unlinking a tmpfs file frees its pages (~0.15 s per GiB on one
    core), and freeing them here rather than on a helper thread later keeps the first ``run()`` calls fast.
    """
    def unlink(file_name: str) -> None:
        with contextlib.suppress(OSError):  # what is left is removed by _clear, or reported
            os.unlink(file_name, dir_fd=fd)

    name = os.path.basename(path)
    try:
        parallel(unlink, list(names))
        _clear(fd, path)
        if not _same(os.stat(name, dir_fd=base_fd, follow_symlinks=False), os.fstat(fd)):
            log.warning("ortseal: %s was replaced while in use; left in place", path)
            return False
        os.rmdir(name, dir_fd=base_fd)  # while still locked: no one sees it unlocked
        return True
    except OSError as exc:
        log.warning("ortseal: could not remove %s: %s; the next open removes it", path, exc.strerror)
        return False
    finally:
        os.close(fd)


def remove_stale_folders(base: str) -> list[str]:
    """Remove opening folders in ``base`` whose process died before cleaning up (their lock is free), and
    folders a killed process left half-made. Returns the paths removed."""
    try:
        base_fd, real = _open_base(base, create=False)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SetupError(f"cannot open the runtime folder {base}: {exc.strerror}") from None
    removed = []
    try:
        for entry in list(os.scandir(base_fd)):
            if not entry.name.startswith((FOLDER_PREFIX, NEW_PREFIX)):
                continue
            with contextlib.suppress(OSError):
                if _remove_if_stale(base_fd, real, entry):
                    removed.append(os.path.join(real, entry.name))
                    if entry.name.startswith(FOLDER_PREFIX):
                        log.warning("ortseal: removed %s, left by a process that ended while opening a model",
                                    os.path.join(real, entry.name))
    finally:
        os.close(base_fd)
    return removed


def _remove_if_stale(base_fd: int, base: str, entry: os.DirEntry[str]) -> bool:
    st = entry.stat(follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return False  # not a folder ortseal made
    if entry.name.startswith(NEW_PREFIX) and time.time() - st.st_mtime < STALE_NEW_SECONDS:
        return False  # a live process may be about to lock it
    fd = os.open(entry.name, _DIR_FLAGS, dir_fd=base_fd)
    try:
        if not _same(os.fstat(fd), st):
            os.close(fd)
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until removed: no one else removes it meanwhile
    except BlockingIOError:
        os.close(fd)
        return False  # its process is still opening a model
    except BaseException:
        os.close(fd)
        raise
    return _remove(base_fd, os.path.join(base, entry.name), fd, [], _serial)
