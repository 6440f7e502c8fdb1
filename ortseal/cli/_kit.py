"""What every ``ortseal`` command shares: error handling, keyset and passphrase options, output helpers.

Below the ``ortseal`` group (``cli/__init__.py``) and the command modules (``cli/model.py``, ``cli/cache.py``), which all
import it; it imports none of them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._files import ReadPolicy, open_checked
from .._parallel import stop_pools
from ..errors import FormatError, KeyNotFoundError, OrtsealError

if TYPE_CHECKING:
    from ..keys import KeySet

LOG_LEVELS = ("debug", "info", "warning", "error")

# The library's messages name its Python parameters; the CLI shows its own flags for them.
_PARAMETER_FLAGS = {"min_bytes": "--min-bytes", "include": "--include", "exclude": "--exclude"}
_PHRASES = (("replace it (overwrite=True)", "replace it with --overwrite"), ("sign=False", "--no-sign"),
            ("below min_bytes", "below --min-bytes"), ("(seal_model)", "(ortseal seal)"),
            ("pass passphrase=", "give --passphrase-file, --passphrase-fd or --passphrase-env"),
            ("pass pin=", "give --pin-file, --pin-fd or --pin-env"), ("pass module=", "give --pkcs11-module"),
            ("(KeySet.with_new_content_key(); CLI: ortseal rotate-content-key)", "(ortseal rotate-content-key)"),
            ("give model_name=NAME", "give --model-name NAME"))
_PARAMETER = re.compile(r"\b(" + "|".join(_PARAMETER_FLAGS) + r")=(\S?)")


def cli_words(text: str) -> str:
    """A library message (or report line) as the CLI says it: ``min_bytes=1024`` becomes ``--min-bytes 1024``,
    ``overwrite=True`` becomes ``--overwrite``..."""
    for python, flag in _PHRASES:
        text = text.replace(python, flag)
    return _PARAMETER.sub(lambda m: _PARAMETER_FLAGS[m[1]] + (" " + m[2] if m[2] else ""), text)


class ErrorBoundary:
    """Mixed into the ``ortseal`` group (and any command run on its own, as ``tools/convert.py`` does): every
    failure ends as one line on stderr, ``error: ...``, never a traceback. Exit 1 for a failure, 2 for a
    command line click cannot parse. With ``--json`` the failure is also printed on stdout as
    ``{"ok": false, "error": ..., "message": ...}``. Something unexpected is one line too; ``--log-level
    debug`` adds its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as exc:
            if ctx.meta.get(JSON_META) and not ctx.meta.get(JSON_META_SENT):  # the inner command's boundary may have
                kind = "UsageError" if isinstance(exc, click.UsageError) else "CommandError"
                _echo_json_error(ctx, kind, exc.format_message())
            raise
        except BrokenPipeError:
            # the reader went away (``ortseal inspect ... | head``): stop quietly, as a filter does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None
        except (OrtsealError, OSError, ValueError, ImportError) as exc:
            kind, detail = type(exc).__name__, cli_words(describe(exc))
        except Exception as exc:  # noqa: BLE001 - the boundary: nothing gets past it as a traceback
            logging.getLogger("ortseal").debug("unexpected error", exc_info=True)
            # a bug: the one message that keeps Python's class name, for the report
            kind = f"unexpected {type(exc).__name__}"
            detail = f"{kind}: {exc} (a bug in ortseal; --log-level debug shows where; please report it)"
        if ctx.meta.get(JSON_META):
            _echo_json_error(ctx, kind, detail)  # the class name is for tools; people get the sentence alone
        raise click.ClickException(detail)

    def main(self, *args: Any, **extra: Any) -> Any:  # click's arguments (args, prog_name...), always standalone
        extra.pop("standalone_mode", None)
        terminate_as_exit()
        if isinstance(self, click.Group):  # click's ``args``: the first positional argument, or a keyword
            given = args[0] if args else extra.get("args")
            argv = hoist_global_options(list(sys.argv[1:] if given is None else given))
            if args:
                args = (argv, *args[1:])
            else:
                extra["args"] = argv
        try:
            try:
                code = super().main(*args, standalone_mode=False, **extra)  # type: ignore[misc]
            finally:
                stop_pools()  # an interrupted command's workers must not hold the interpreter's exit
        except click.UsageError as exc:
            hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt, EOFError) as exc:
            if KeyboardInterrupt in (type(exc), type(exc.__cause__), type(exc.__context__)):
                click.echo("error: interrupted", err=True)  # what it was writing was removed on the way out
                sys.exit(INTERRUPTED)
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def describe(exc: BaseException) -> str:
    """What failed, as a sentence: ``OSError``'s own text is Python's (``[Errno 2] No such file or directory:
    'x'``), so it becomes ``x: No such file or directory``."""
    if isinstance(exc, OSError) and exc.strerror:
        name = exc.filename if exc.filename is not None else ""
        return f"{name}: {exc.strerror}" if name else exc.strerror
    return str(exc)


GLOBAL_FLAGS = ("-q", "--quiet")
GLOBAL_VALUED = ("--log-level",)


def hoist_global_options(args: list[str]) -> list[str]:
    """The group's own options given after the subcommand (``ortseal seal ... --quiet``) moved before it,
    as users of git and openssl expect; nothing after ``--`` is touched."""
    head, rest, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        if a in GLOBAL_FLAGS or any(a.startswith(o + "=") for o in GLOBAL_VALUED):
            head.append(a)
        elif a in GLOBAL_VALUED and i + 1 < len(args):
            head += args[i:i + 2]
            i += 1
        else:
            rest.append(a)
        i += 1
    return head + rest


INTERRUPTED = 128 + signal.SIGINT  # the shell's code for a command stopped by Ctrl-C


def _terminated(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def terminate_as_exit() -> None:
    """SIGTERM (``kill``, a service manager stopping a job) unwinds the command as Ctrl-C does, so every
    ``finally`` runs and a half-written output's temp file is removed; the exit code is 143, as for a
    process killed by it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


class Group(ErrorBoundary, click.Group):
    """A click group behind :class:`ErrorBoundary`."""


class Command(ErrorBoundary, click.Command):
    """A click command behind :class:`ErrorBoundary` when run on its own."""


JSON_META = "ortseal.json"
JSON_META_SENT = "ortseal.json.sent"


def _echo_json_error(ctx: click.Context, kind: str, message: str) -> None:
    click.echo(json.dumps({"ok": False, "error": kind, "message": message}))
    ctx.meta[JSON_META_SENT] = True


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON_META] = True  # the error boundary prints failures as JSON too
    return value


json_option = click.option("--json", "as_json", is_flag=True, callback=_remember_json,
                           help="Print the result as JSON for tools (failures too: {\"ok\": false, ...}).")


def echo_json(doc: Any) -> None:
    """Print ``doc`` as indented JSON on stdout."""
    click.echo(json.dumps(doc, indent=2))


def refuse_dash(value: str, option: str, why: str) -> str:
    """``value`` unless it is ``-`` (stdin/stdout), which ``option`` does not take: ``why`` says so."""
    if value == "-":
        raise click.BadParameter(f"'-' (stdin/stdout) is not accepted here: {why}", param_hint=option)
    return value


@dataclass
class Passphrase:
    """Where a keyset's passphrase comes from: one of an environment variable, a file, a descriptor, or
    (interactive sessions, when a protected keyset needs one) a prompt."""

    env: str | None = None
    file: str | None = None
    fd: int | None = None
    option: str = "--"  # how its options start: "--" (--passphrase-env...) or e.g. "--device-"

    def given(self) -> str | None:
        """The passphrase from the option given, or None when none was; read once."""
        sources = [s for s in (self.env, self.file, self.fd) if s is not None]
        if len(sources) > 1:
            o = f"{self.option}passphrase"
            raise click.ClickException(f"give the passphrase one way: {o}-env, {o}-file or {o}-fd")
        if self.env is not None:
            value = os.environ.get(self.env)
            where = f"environment variable {self.env} (from {self.option}passphrase-env)"
        elif self.file is not None:
            where = f"{self.option}passphrase-file {self.file}"
            # a regular file only: a FIFO put in its place would block the command until someone writes to it
            fd, _ = open_checked(self.file, ReadPolicy(f"{self.option}passphrase-file", FormatError))
            with os.fdopen(fd, "rb") as fh:
                value = _decoded(read_bounded(fh, MAX_PASSPHRASE_BYTES, where), where)
        elif self.fd is not None:
            where = f"{self.option}passphrase-fd {self.fd}"
            try:
                with os.fdopen(self.fd, "rb", closefd=False) as fh:
                    value = _decoded(read_bounded(fh, MAX_PASSPHRASE_BYTES, where), where)
            except OSError as exc:
                raise click.ClickException(f"{where}: {exc.strerror}") from exc
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
                raise click.ClickException(f"--protect needs a terminal to prompt; or pass {self.option}passphrase-file "
                                           f"or {self.option}passphrase-fd")
            value = click.prompt("passphrase for the new keyset", hide_input=True, confirmation_prompt=True)
        return value


def passphrase_options_for(prefix: str, param: str, whose: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding ``--{prefix}passphrase-env``, ``-file`` and ``-fd`` (the passphrase of ``whose``);
    the command receives them as one ``{param}: Passphrase`` argument."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        names = {f"{prefix}passphrase_{k}".replace("-", "_"): k for k in ("env", "file", "fd")}

        @click.option(f"--{prefix}passphrase-fd", type=int, metavar="FD",
                      help=f"Read the passphrase of {whose} from this open file descriptor.")
        @click.option(f"--{prefix}passphrase-file", metavar="PATH",
                      help=f"Read the passphrase of {whose} from this file (first line).")
        @click.option(f"--{prefix}passphrase-env", metavar="VAR",
                      help=f"Read the passphrase of {whose} from this environment variable.")
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {kind: kwargs.pop(name) for name, kind in names.items()}
            return fn(*args, **{param: Passphrase(given["env"], given["file"], given["fd"], f"--{prefix}"),
                                **kwargs})

        return wrapper

    return decorate


passphrase_options = passphrase_options_for("", "passphrase", "the keyset")


MAX_PASSPHRASE_BYTES = 64 << 10
MAX_KEYSET_BYTES = 1 << 20  # a keyset file is a few hundred bytes per key


def read_bounded(stream: Any, limit: int, what: str) -> bytes:
    """All of ``stream`` (stdin, a pipe), refusing more than ``limit`` bytes: a reader of ``-`` stops at a
    stated size instead of filling memory with whatever is piped in."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise click.ClickException(f"{what}: more than {format_limit(limit)}; refused")
    return data


def format_limit(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def _decoded(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise click.ClickException(f"{where}: not UTF-8 text") from None


def read_keyset(path: str, what: str = "--keys", device: bool = False) -> bytes:
    """The bytes of a keyset named on the command line: a file, ``-`` for stdin, or ``env:VAR``. ``device``:
    the command runs on a device, whose keyset comes from the publisher (the message for a missing file
    says so instead of suggesting ``keygen``)."""
    if path.startswith("env:"):
        text = os.environ.get(path[4:], "").encode()
        if not text:
            raise click.ClickException(f"{what} {path}: environment variable {path[4:]} is not set or empty")
        return text
    if path == "-":
        return read_bounded(sys.stdin.buffer, MAX_KEYSET_BYTES, f"{what} - (stdin)")
    if not os.path.isfile(path):
        how = ("a device's keyset is made by the publisher: ortseal device-keys keys.json -o device.json" if device
               else f"make one with: ortseal keygen -o {path}")
        raise click.ClickException(f"{what} {path}: no such keyset file ({how})")
    return Path(path).read_bytes()


def open_keyset(text: bytes, path: str, passphrase: Passphrase, what: str = "--keys") -> KeySet:
    """Parse keyset bytes read from ``path``; a protected keyset with no passphrase option is unlocked
    from a prompt when stdin is a terminal (and not the keyset itself)."""
    from ..keys import KeySet  # when a command needs keys: the CLI starts without cryptography

    given = passphrase.given()
    try:
        return KeySet.from_json(text, given)
    except FormatError as exc:
        raise FormatError(f"{what} {path}: {exc}") from None
    except KeyNotFoundError as exc:
        if given is not None or "passphrase-protected" not in str(exc):
            raise
        if path == "-" or not sys.stdin.isatty():
            raise KeyNotFoundError(f"{what} {path} is passphrase-protected and there is no terminal to ask on: pass "
                                   "--passphrase-file, --passphrase-fd or --passphrase-env") from None
    return KeySet.from_json(text, click.prompt(f"passphrase for {path}", hide_input=True))


def load_keys(path: str, passphrase: Passphrase, what: str = "--keys", device: bool = False) -> KeySet:
    """Load ``--keys``: a keyset file, ``-`` for stdin, or ``env:VAR`` for a keyset held in an environment
    variable (:func:`read_keyset`, :func:`open_keyset`)."""
    return open_keyset(read_keyset(path, what, device), path, passphrase, what)


def say(message: str) -> None:
    """A line that reports success (``wrote ...``, ``ok ...``): not printed under ``--quiet``, which means
    errors only. What a command was asked to show (a table, ``--json``, a keyset on stdout) is not said."""
    if not quiet():
        click.echo(message)


keys_option = click.option("--keys", "keys_path", required=True, metavar="KEYS",
                           help="Keyset JSON file, - for stdin, or env:VAR to read it from an environment variable.")


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


def echo_rows(rows: Sequence[tuple[str, ...]]) -> None:
    """Print rows as left-aligned columns."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
