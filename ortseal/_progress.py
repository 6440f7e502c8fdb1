"""Progress bars for long byte-sized work (sealing, opening, verifying): shown only on a terminal."""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm

PROGRESS_MIN_BYTES = 64 << 20  # work on fewer bytes finishes in a blink: no bar


class ByteProgress(tqdm):
    """A byte counter drawn on stderr when it is a terminal and the work is large; ``add`` may be called
    from several threads."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True) -> None:
        super().__init__(total=total, unit="B", unit_scale=True, desc=desc, leave=False,
                         disable=not enabled or total < PROGRESS_MIN_BYTES or not sys.stderr.isatty())
        self._add_lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._add_lock:
            self.update(n)
