"""Shared fixtures: real keysets and real files, nothing mocked."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ortseal import KeySet
from ortseal._atomic import lock_held
from ortseal.model.ramdir import FOLDER_PREFIX, SHARED_RAM_DIR, USER_BASE_PREFIX


@pytest.fixture(scope="session")
def keys() -> KeySet:
    return KeySet.generate()


@pytest.fixture(scope="session")
def other_keys() -> KeySet:
    return KeySet.generate()


def contains_run(haystack: bytes, secret: bytes, run: int = 32) -> bool:
    """True if ``haystack`` holds any ``run``-byte substring of ``secret`` (run >= 16).

    Runs of one repeated byte (zero padding) are ignored: they are not secret material. Fast on many
    MiB: any such match contains an 8-byte word of ``secret`` at an 8-aligned offset, so candidates are
    found with numpy over the 8 byte phases of ``haystack`` (a 2**24-entry table of the words' low bits,
    then an exact lookup), and confirmed byte by byte.
    """
    if len(secret) < run or len(haystack) < run:
        return False
    words = np.frombuffer(secret, "<u8", count=len(secret) // 8)
    wanted = np.unique(words)
    low = np.uint64((1 << 24) - 1)
    table = np.zeros(1 << 24, np.bool_)
    table[(wanted & low).astype(np.intp)] = True
    for phase in range(8):
        count = (len(haystack) - phase) // 8
        hay = np.frombuffer(haystack, np.uint8, count=count * 8, offset=phase).copy().view("<u8")
        candidates = np.nonzero(table[(hay & low).astype(np.intp)])[0]
        slot = np.minimum(np.searchsorted(wanted, hay[candidates]), len(wanted) - 1)
        for idx in candidates[wanted[slot] == hay[candidates]]:
            pos = phase + 8 * int(idx)
            for j in (8 * np.nonzero(words == hay[idx])[0]).tolist():
                left = 0
                while left < j and left < pos and haystack[pos - left - 1] == secret[j - left - 1]:
                    left += 1
                right = 8
                while j + right < len(secret) and pos + right < len(haystack) and \
                        haystack[pos + right] == secret[j + right]:
                    right += 1
                match = secret[j - left:j + right]
                if left + right >= run and len(set(match)) > 1:
                    return True
    return False


def unlocked_opening_folders(runtime_dir: str | None = None) -> set[str]:
    """Opening folders in ``runtime_dir`` (default: this user's bases, whatever $ORTSEAL_RUNTIME_DIR says) whose
    lock is free: left behind (a live opener holds its lock)."""
    bases = [runtime_dir] if runtime_dir else \
        [f"{SHARED_RAM_DIR}/{USER_BASE_PREFIX}{os.getuid()}", *filter(None, [os.environ.get("XDG_RUNTIME_DIR")])]
    return {str(p) for base in bases for p in Path(base).glob(FOLDER_PREFIX + "*") if not lock_held(p)}
