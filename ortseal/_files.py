"""The one way ortseal opens a file it will read: one descriptor, checked with ``fstat`` before a byte is
read, never blocking on a FIFO or a device. What differs between callers (follow a link or not, which
error, refuse sparse files) is a :class:`ReadPolicy`, so every reader gets the same checks.

    fd, st = open_checked(path, MODEL_FILE)   # the caller reads from fd, then closes it
"""

from __future__ import annotations

import errno
import os
import stat
from typing import NamedTuple

from .errors import OrtsealError

# Errors os.open gives for a path that is there but is not a regular file we could read.
_NOT_REGULAR = {errno.ELOOP: "a symbolic link", errno.ENXIO: "a socket or device with nothing behind it"}


class ReadPolicy(NamedTuple):
    """How to open one kind of file.

    ``what`` names it in every message ("model file"); ``error`` is raised for a path that is refused (not a
    regular file, a link where none is followed, sparse) and, when ``wrap_os_errors``, for one that cannot be
    opened at all (missing, no permission); otherwise that ``OSError`` is raised as it is.
    ``follow_links=False``: a symbolic link as the last component is refused, not followed (``O_NOFOLLOW``),
    for names ortseal wrote itself. ``refuse_sparse``: refuse a file over 1 MiB with fewer than half its bytes
    allocated (ciphertext has no holes: such a file declares a length it does not hold).
    """

    what: str
    error: type[OrtsealError]
    follow_links: bool = True
    refuse_sparse: bool = False
    wrap_os_errors: bool = True


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, for a message ("a FIFO", "a directory"...)."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def open_checked(path: str | os.PathLike[str], policy: ReadPolicy) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only and refuse, before any byte is read, anything ``policy`` does not accept.
    Returns the descriptor (blocking again; the caller closes it) and its ``fstat``."""
    name = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if policy.follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in _NOT_REGULAR and (exc.errno != errno.ELOOP or not policy.follow_links):
            raise policy.error(f"{policy.what} {name} is {_NOT_REGULAR[exc.errno]}, not a regular file: "
                               "refused") from None
        if not policy.wrap_os_errors:
            raise
        if isinstance(exc, FileNotFoundError):
            raise policy.error(f"{policy.what} {name} does not exist") from None
        raise policy.error(f"cannot open {policy.what} {name}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise policy.error(f"{policy.what} {name} is {file_kind(st.st_mode)}, not a regular file: refused")
        if policy.refuse_sparse and st.st_size > (1 << 20) and st.st_blocks * 512 < st.st_size // 2:
            raise policy.error(f"{policy.what} {name} is sparse ({st.st_blocks * 512} bytes allocated of "
                               f"{st.st_size}): refused")
        os.set_blocking(fd, True)
        return fd, st
    except BaseException:
        os.close(fd)
        raise
