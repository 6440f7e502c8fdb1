"""``ortseal cache list`` and ``ortseal cache verify``: the sealed TensorRT engine cache from the shell."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .._atomic import lock_held, temp_files
from ..blob import MAX_HEADER_SIZE, parse_header
from ..clikit import Passphrase, echo_rows, fail_cleanly, keys_option, load_keys, passphrase_options
from ..errors import OrtsealError
from .provider import QUARANTINE
from .vault import ENGINE_SUFFIX, verify_engine_file


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
        size = path.stat().st_size
        state = "quarantined" if path.parent.name == QUARANTINE else "sealed"
        try:
            with open(path, "rb") as fh:
                h = parse_header(fh.read(MAX_HEADER_SIZE))
            if h.blob_length != size:
                state = "damaged: length does not match header"
            rows.append((str(path.relative_to(directory)), str(size), str(h.plaintext_length), h.key_id,
                         h.signer_id or "(unsigned)", state))
        except OrtsealError as exc:
            rows.append((str(path.relative_to(directory)), str(size), "-", "-", "-", f"not ortseal: {exc}"))
    for tmp in temp_files(directory, f"*{ENGINE_SUFFIX}"):
        state = "partial: being written" if lock_held(tmp) else "partial: writer killed (removed by the next " \
                                                                   "tensorrt_provider on this cache)"
        rows.append((tmp.name, str(tmp.stat().st_size), "-", "-", "-", state))
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
