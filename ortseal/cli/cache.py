"""``ortseal cache list`` and ``ortseal cache verify``: the sealed TensorRT engine cache from the shell.

Each command imports the engine-cache modules when it runs, not when the CLI starts."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import click

from ..errors import OrtsealError, TamperedError
from ._kit import (Group, Passphrase, describe, echo_json, echo_rows, json_option, keys_option, load_keys,
                   passphrase_options, say)


def _lstat_size(path: Path) -> str:
    try:
        return str(path.lstat().st_size)
    except OSError:
        return "-"


def _engine_files(directory: str) -> list[Path]:
    from ..tensorrt.provider import QUARANTINE
    from ..tensorrt.vault import ENGINE_SUFFIX

    root = Path(directory)
    if not root.is_dir():
        raise click.ClickException(f"{directory} is not a directory")
    return sorted(root.glob(f"*{ENGINE_SUFFIX}")) + sorted((root / QUARANTINE).glob(f"*{ENGINE_SUFFIX}"))


@click.group(cls=Group)
def cache() -> None:
    """Inspect and check a sealed TensorRT engine cache directory.

    \b
    Example:
      ortseal cache list trt_cache
      ortseal cache verify trt_cache --keys device.json
    """


@cache.command("list")
@click.argument("directory", type=click.Path(file_okay=False))
@json_option
def list_cache(directory: str, as_json: bool) -> None:
    """List engines in DIRECTORY with sizes, key ids, signer and state (no keys needed).

    \b
    Example:
      ortseal cache list trt_cache --json
    """
    from .._atomic import lock_held, temp_files
    from ..tensorrt.provider import QUARANTINE
    from ..tensorrt.vault import ENGINE_SUFFIX, read_engine_header

    header = ("file", "bytes", "engine bytes", "key id", "signer", "state")
    rows = [header]
    for path in _engine_files(directory):
        name = str(path.relative_to(directory))
        state = "quarantined" if path.parent.name == QUARANTINE else "sealed"
        try:
            h, size = read_engine_header(path)  # never follows a link nor waits on a FIFO
            rows.append((name, str(size), str(h.plaintext_length), h.key_id, h.signer_id or "(unsigned)", state))
        except TamperedError as exc:  # not a regular file, or its length does not match its header
            rows.append((name, _lstat_size(path), "-", "-", "-", f"refused: {exc}"))
        except (OrtsealError, OSError) as exc:
            rows.append((name, _lstat_size(path), "-", "-", "-", f"not ortseal: {exc}"))
    for tmp in temp_files(directory, f"*{ENGINE_SUFFIX}"):
        if not stat.S_ISREG(tmp.lstat().st_mode):
            rows.append((tmp.name, "-", "-", "-", "-", "not a regular file (removed by the next tensorrt_provider "
                                                       "on this cache)"))
            continue
        state = "partial: being written" if lock_held(tmp) else "partial: writer killed (removed by the next " \
                                                                   "tensorrt_provider on this cache)"
        rows.append((tmp.name, str(tmp.lstat().st_size), "-", "-", "-", state))
    if as_json:
        keys = ("file", "bytes", "engine_bytes", "key_id", "signer", "state")
        echo_json({"ok": True, "directory": os.path.abspath(directory), "engines": [
            {k: (None if v == "-" else int(v) if k.endswith("bytes") else v) for k, v in zip(keys, row, strict=False)}
            for row in rows[1:]]})
        return
    echo_rows(rows)
    if len(rows) == 1:
        click.echo(f"(no *{ENGINE_SUFFIX} files)")


@cache.command("verify")
@click.argument("directory", type=click.Path(file_okay=False))
@keys_option
@passphrase_options
@json_option
def verify_cache(directory: str, keys_path: str, passphrase: Passphrase, as_json: bool) -> None:
    """Fully verify every engine in DIRECTORY; exit 1 naming each bad file, or when there is none to verify.

    \b
    Example:
      ortseal cache verify trt_cache --keys device.json
    """
    from ..tensorrt.provider import QUARANTINE
    from ..tensorrt.vault import ENGINE_SUFFIX, verify_engine_file

    keys = load_keys(keys_path, passphrase, device=True)
    files = [p for p in _engine_files(directory) if p.parent.name != QUARANTINE]
    if not files:  # a gate with nothing to check must not pass
        raise click.ClickException(f"no *{ENGINE_SUFFIX} engine files in {os.path.abspath(directory)}: nothing "
                                   "to verify (is it the trt_engine_cache_path?)")
    results = []
    for path in files:
        try:
            verify_engine_file(path, keys)
            results.append({"file": path.name, "ok": True})
        except (OrtsealError, OSError) as exc:
            results.append({"file": path.name, "ok": False, "error": type(exc).__name__, "message": describe(exc)})
    bad = sum(not r["ok"] for r in results)
    if as_json:
        echo_json({"ok": not bad, "directory": os.path.abspath(directory), "engines": results})
    else:
        for r in results:
            if not r["ok"]:
                click.echo(f"BAD  {r['file']}: {r['message']}")
            else:
                say(f"ok   {r['file']}")
        say(f"{len(files) - bad} ok, {bad} bad in {os.path.abspath(directory)}")
    if bad:
        sys.exit(1)
