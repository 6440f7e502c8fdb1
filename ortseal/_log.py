"""ortseal's log records, sent to the standard ``logging`` loggers ``ortseal`` and below, once the application
has imported ``logging``.

A library logs; the application decides where. ortseal gives its loggers only a ``NullHandler``, so until
the application imports ``logging`` (to configure it, or through any library that logs) no record of
ortseal's could be shown anywhere; until then ortseal does not import it either (``logging`` with
``traceback``, ``string`` and ``threading`` is about 5 ms of every program's start-up: a tenth of the time
opening a small sealed model may add, docs/benchmarks.md "Cold start").
"""

from __future__ import annotations

import sys
from typing import Any

ROOT = "ortseal"


class Log:
    """``logging.getLogger(name)``'s ``info``, ``warning`` and ``error``, looked up when a record is made."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _logger(self) -> Any | None:
        logging = sys.modules.get("logging")
        if logging is None:
            return None  # nothing in this process could show the record
        root = logging.getLogger(ROOT)
        if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
            root.addHandler(logging.NullHandler())  # no "No handlers could be found" / last-resort printing
        return logging.getLogger(self.name)

    def info(self, msg: str, *args: object) -> None:
        logger = self._logger()
        if logger is not None:
            logger.info(msg, *args, stacklevel=2)

    def warning(self, msg: str, *args: object) -> None:
        logger = self._logger()
        if logger is not None:
            logger.warning(msg, *args, stacklevel=2)

    def error(self, msg: str, *args: object) -> None:
        logger = self._logger()
        if logger is not None:
            logger.error(msg, *args, stacklevel=2)
