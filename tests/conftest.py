"""Shared fixtures: real keysets and real files, nothing mocked."""

from __future__ import annotations

import pytest

from ortseal import KeySet


@pytest.fixture(scope="session")
def keys() -> KeySet:
    return KeySet.generate()


@pytest.fixture(scope="session")
def other_keys() -> KeySet:
    return KeySet.generate()


def contains_run(haystack: bytes, secret: bytes, run: int = 32) -> bool:
    """True if ``haystack`` holds any ``run``-byte window of ``secret`` (windows taken every ``run // 2`` bytes)."""
    step = max(1, run // 2)
    return any(secret[i:i + run] in haystack for i in range(0, max(1, len(secret) - run + 1), step))
