"""ortseal's two thread pools and the core count they are sized by; each pool starts once per process.

- The segment pool (``run_split``) runs one blob's segments, one contiguous range per core: sealing and
  opening blobs.
- The opening pool (``for_each``) runs independent items (a tensor file being filled), each of which runs
  its own segments on the segment pool.

Two pools on purpose: an item of the opening pool waits on segment-pool work, so were they one pool its
items could hold every thread while waiting for segments that then never run. ``concurrent.futures`` is
imported when a pool first starts: a small model opens on the caller's thread alone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

T = TypeVar("T")
_POOLS: dict[str, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says, else the CPU count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _pool(name: str) -> ThreadPoolExecutor:
    from concurrent.futures import ThreadPoolExecutor

    with _POOLS_LOCK:
        pool = _POOLS.get(name)
        if pool is None:
            pool = _POOLS[name] = ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix=name)
    return pool


def stop_pools() -> None:
    """Tell every worker of both pools to exit, now and without waiting (the pools start again when next
    used). For a process unwinding from an interrupt: Ctrl-C (or SIGTERM) landing while ``concurrent.futures``
    starts a worker can leave that worker unregistered with its exit hook, which would then wait for it
    forever as the interpreter exits; shutting its pool down wakes it whatever happened."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=False, cancel_futures=True)


def _first_error(futures: Sequence[Future[None]], errors: list[BaseException]) -> None:
    """Wait for every future, then raise the first error (nothing is still running when it is raised)."""
    try:
        for future in futures:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - re-raised below, once nothing is still writing
                errors.append(exc)
    except BaseException:
        _settle(futures)
        raise
    if errors:
        raise errors[0]


def _settle(futures: Sequence[Future[None]]) -> None:
    """An interrupt (Ctrl-C; SIGTERM in the CLI) while work runs: the workers use the caller's buffers, which
    the caller frees as the interrupt unwinds it, so every one of them must have stopped first."""
    from concurrent.futures import wait

    wait(futures)


def run_split(count: int, work: Callable[[int, int], None], workers: int | None = None) -> None:
    """Run ``work(first, stop)`` over ``range(count)`` split into one contiguous range per core (at most
    ``workers``), the first range in the caller's thread; the first error is raised once every range has
    stopped."""
    n = min(workers or available_cores(), count)
    if n <= 1:
        work(0, count)
        return
    bounds = [count * k // n for k in range(n + 1)]
    futures = [_pool("ortseal").submit(work, bounds[k], bounds[k + 1]) for k in range(1, n)]
    errors: list[BaseException] = []
    try:
        work(bounds[0], bounds[1])
    except Exception as exc:  # noqa: BLE001 - re-raised below after the others finish
        errors.append(exc)
    except BaseException:
        _settle(futures)
        raise
    _first_error(futures, errors)


def for_each(fn: Callable[[T], None], items: Sequence[T]) -> None:
    """``fn(item)`` for every item on the opening pool (in the caller's thread when there is one item or one
    core); the first error is raised after every item has finished."""
    if len(items) <= 1 or available_cores() <= 1:
        for item in items:
            fn(item)
        return
    _first_error([_pool("ortseal-open").submit(fn, item) for item in items], [])
