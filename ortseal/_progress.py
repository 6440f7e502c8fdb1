"""Progress bars for long byte-sized work (sealing, opening, verifying): shown only on a terminal."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

PROGRESS_MIN_BYTES = 64 << 20  # work on fewer bytes finishes in a blink: no bar


class ByteProgress:
    """A byte counter drawn on stderr when it is a terminal and the work is large; ``add`` may be called
    from several threads. When no bar is drawn, tqdm is not even imported (cold start of small opens)."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True) -> None:
        self.disable = not enabled or total < PROGRESS_MIN_BYTES or not sys.stderr.isatty()
        self._bar = None
        if not self.disable:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)
        self._add_lock = threading.Lock()

    def add(self, n: int) -> None:
        if self._bar is not None:
            with self._add_lock:
                self._bar.update(n)

    update = add

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ByteProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def status_line(text: str, *, enabled: bool) -> Iterator[None]:
    """``text`` on stderr while the block runs (after a progress bar, for work that has no bytes to count),
    erased when it ends; only when ``enabled`` and stderr is a terminal."""
    shown = enabled and sys.stderr.isatty()
    if shown:
        sys.stderr.write(f"\r{text}...")
        sys.stderr.flush()
    try:
        yield
    finally:
        if shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
