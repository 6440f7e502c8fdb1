"""``ortseal cache list`` and ``ortseal cache verify``: the sealed TensorRT engine cache from the shell."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import click

from .._atomic import lock_held, temp_files
from ..clikit import Passphrase, echo_rows, fail_cleanly, keys_option, load_keys, passphrase_options
from ..errors import OrtsealError, TamperedError
from .provider import QUARANTINE
from .vault import ENGINE_SUFFIX, read_engine_header, verify_engine_file


def _lstat_size(path: Path) -> str:
    try:
        return str(path.lstat().st_size)
    except OSError:
        return "-"


def _engine_files(directory: str) -> list[Path]:
    root = Path(directory)
    if not root.is_dir():
        raise click.ClickException(f"{directory} is not a directory")
    return sorted(root.glob(f"*{ENGINE_SUFFIX}")) + sorted((root / QUARANTINE).glob(f"*{ENGINE_SUFFIX}"))


@click.group()
def cache() -> None:
    """Inspect and check a sealed TensorRT engine cache directory."""


@cache.command("list")
@click.argument("directory", type=click.Path(file_okay=False))
@fail_cleanly
def list_cache(directory: str) -> None:
    """List engines in DIRECTORY with sizes, key ids, signer and state (no keys needed)."""
    rows = [("file", "bytes", "engine bytes", "key id", "signer", "state")]
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
    echo_rows(rows)
    if len(rows) == 1:
        click.echo(f"(no *{ENGINE_SUFFIX} files)")


@cache.command("verify")
@click.argument("directory", type=click.Path(file_okay=False))
@keys_option
@passphrase_options
@fail_cleanly
def verify_cache(directory: str, keys_path: str, passphrase: Passphrase) -> None:
    """Fully verify every engine in DIRECTORY; exit 1 naming each bad file."""
    keys = load_keys(keys_path, passphrase)
    bad = 0
    files = [p for p in _engine_files(directory) if p.parent.name != QUARANTINE]
    for path in files:
        try:
            verify_engine_file(path, keys)
            click.echo(f"ok   {path.name}")
        except (OrtsealError, OSError) as exc:
            bad += 1
            click.echo(f"BAD  {path.name}: {type(exc).__name__}: {exc}")
    click.echo(f"{len(files) - bad} ok, {bad} bad in {os.path.abspath(directory)}")
    if bad:
        sys.exit(1)
