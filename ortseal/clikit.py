"""What every ``ortseal`` command shares: error handling, keyset and passphrase options, output helpers.

Below ``cli.py`` and the command modules (``ops/commands.py``, ``ep_plugin/commands.py``), which all
import it; it imports none of them.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .errors import KeyNotFoundError, OrtsealError
from .keys import KeySet

LOG_LEVELS = ("debug", "info", "warning", "error")


def fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library and OS errors into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # the reader went away (``ortseal inspect ... | head``): stop quietly, as a filter does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (OrtsealError, OSError, ValueError) as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


@dataclass
class Passphrase:
    """Where a keyset's passphrase comes from: one of an environment variable, a file, a descriptor, or
    (interactive sessions, when a protected keyset needs one) a prompt."""

    env: str | None = None
    file: str | None = None
    fd: int | None = None

    def given(self) -> str | None:
        """The passphrase from the option given, or None when none was; read once."""
        sources = [s for s in (self.env, self.file, self.fd) if s is not None]
        if len(sources) > 1:
            raise click.ClickException("give the passphrase one way: --passphrase-env, --passphrase-file or "
                                       "--passphrase-fd")
        if self.env is not None:
            value = os.environ.get(self.env)
            where = f"environment variable {self.env} (from --passphrase-env)"
        elif self.file is not None:
            try:
                value = Path(self.file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise click.ClickException(f"--passphrase-file {self.file}: {exc.strerror}") from exc
            where = f"--passphrase-file {self.file}"
        elif self.fd is not None:
            try:
                with os.fdopen(self.fd, "r", closefd=False) as fh:
                    value = fh.read().rstrip("\r\n")
            except OSError as exc:
                raise click.ClickException(f"--passphrase-fd {self.fd}: {exc.strerror}") from exc
            where = f"--passphrase-fd {self.fd}"
        else:
            return None
        if not value:
            raise click.ClickException(f"{where} is not set or empty")
        return value

    def for_new_keyset(self, protect: bool) -> str | None:
        """The passphrase to protect a new keyset with: given, prompted (``protect``, twice), or None."""
        value = self.given()
        if value is None and protect:
            if not sys.stdin.isatty():
                raise click.ClickException("--protect needs a terminal to prompt; or pass --passphrase-file or "
                                           "--passphrase-fd")
            value = click.prompt("passphrase for the new keyset", hide_input=True, confirmation_prompt=True)
        return value


def passphrase_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--passphrase-env``, ``--passphrase-file`` and ``--passphrase-fd``; the command receives one
    ``passphrase: Passphrase`` argument."""

    @click.option("--passphrase-fd", type=int, metavar="FD", help="Read the passphrase from this open file descriptor.")
    @click.option("--passphrase-file", metavar="PATH", help="Read the passphrase from this file (first line).")
    @click.option("--passphrase-env", metavar="VAR", help="Read the passphrase from this environment variable.")
    @functools.wraps(fn)
    def wrapper(*args: Any, passphrase_env: str | None, passphrase_file: str | None, passphrase_fd: int | None,
                **kwargs: Any) -> Any:
        return fn(*args, passphrase=Passphrase(passphrase_env, passphrase_file, passphrase_fd), **kwargs)

    return wrapper


def load_keys(path: str, passphrase: Passphrase) -> KeySet:
    """Load ``--keys``: a keyset file, or ``env:VAR`` for a keyset held in an environment variable. A
    protected keyset with no passphrase option is unlocked from a prompt when stdin is a terminal."""
    if path.startswith("env:"):
        text = os.environ.get(path[4:])
        if not text:
            raise click.ClickException(f"--keys {path}: environment variable {path[4:]} is not set or empty")
    elif not os.path.isfile(path):
        raise click.ClickException(f"--keys {path}: no such keyset file (make one with: ortseal keygen -o {path})")
    else:
        text = Path(path).read_text()
    given = passphrase.given()
    try:
        return KeySet.from_json(text, given)
    except KeyNotFoundError as exc:
        if given is not None or "passphrase-protected" not in str(exc) or not sys.stdin.isatty():
            raise
    return KeySet.from_json(text, click.prompt(f"passphrase for {path}", hide_input=True))


keys_option = click.option("--keys", "keys_path", required=True, metavar="KEYS",
                           help="Keyset JSON file, or env:VAR to read it from an environment variable.")


def quiet() -> bool:
    """True when ``ortseal --quiet`` was given (no progress bars, errors only)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().obj or {}).get("quiet"))


def setup_logging(level: str, quiet_flag: bool) -> None:
    """Send the ``ortseal`` logger to stderr at ``level`` (``--quiet``: errors only)."""
    logger = logging.getLogger("ortseal")
    for old in [h for h in logger.handlers if getattr(h, "ortseal_cli", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.ortseal_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet_flag else getattr(logging, level.upper()))


def echo_rows(rows: list[tuple[str, ...]]) -> None:
    """Print rows as left-aligned columns."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
