"""The opening pool: ``for_each(fn, items)`` on one thread per core, started once per process.

Separate from the blob pool (``ortseal.blob.run_split``) on purpose: each item here (a tensor file being
filled) runs its segments on the blob pool, so the two never wait on each other's threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .blob import available_cores

T = TypeVar("T")
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="ortseal-open")
    return _POOL


def for_each(fn: Callable[[T], None], items: Sequence[T]) -> None:
    """``fn(item)`` for every item on the opening pool (in the caller's thread when there is one item or one
    core); the first error is raised after every item has finished."""
    if len(items) <= 1 or available_cores() <= 1:
        for item in items:
            fn(item)
        return
    errors = []
    for future in [_pool().submit(fn, item) for item in items]:
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - re-raised below, once nothing is still writing
            errors.append(exc)
    if errors:
        raise errors[0]
