"""``ortseal compiled list`` and ``ortseal compiled verify``: a sealed compiled-model cache from the shell."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .._atomic import lock_held, temp_files
from ..compiled.entry import ENTRY_SUFFIX, entry_files, read_entry, verify_entry
from ..errors import OrtsealError
from ._kit import Group, Passphrase, echo_json, echo_rows, json_option, keys_option, load_keys, passphrase_options

QUARANTINE = "quarantine"  # the cache's (ortseal/compiled/cache.py); not imported: that module needs ONNX Runtime


def _entries(directory: str) -> list[Path]:
    root = Path(directory)
    if not root.is_dir():
        raise click.ClickException(f"{directory} is not a directory")
    return entry_files(root) + entry_files(root / QUARANTINE)


@click.group(cls=Group)
def compiled() -> None:
    """Inspect and check a sealed compiled-model (EPContext) cache folder.

    \b
    Example:
      ortseal compiled list cache/
      ortseal compiled verify cache/ --keys device.json
    """


@compiled.command("list")
@click.argument("directory", type=click.Path(file_okay=False))
@json_option
def list_entries(directory: str, as_json: bool) -> None:
    """List the entries in DIRECTORY: what each was compiled for, its size, signer, release and state (no keys
    needed; nothing is verified: use verify).

    \b
    Example:
      ortseal compiled list cache/ --json
    """
    header = ("file", "bytes", "ep", "ep version", "device", "source", "signer", "release", "state")
    rows: list[tuple[str, ...]] = [header]
    for path in _entries(directory):
        name = str(path.relative_to(directory))
        state = "quarantined" if path.parent.name == QUARANTINE else "sealed"
        try:
            entry = read_entry(path)  # never follows a link nor waits on a FIFO
            doc, h = entry.binding.doc, entry.header
            devices = doc.get("device") or []
            kind = ",".join(str(d.get("type", "?")) for d in devices if isinstance(d, dict)) if isinstance(devices, list) \
                else "classic"
            rows.append((name, str(len(entry.data)), str(doc["ep"]["name"]), str(doc["ep"]["version"]), kind,
                         f"{doc['source']['kind']} {doc['source']['sha256'][:16]}", h.signer_id or "(unsigned)",
                         str(h.release), state))
        except (OrtsealError, OSError, KeyError, TypeError) as exc:
            rows.append((name, "-", "-", "-", "-", "-", "-", "-", f"refused: {exc}"))
    for tmp in temp_files(directory, f"*{ENTRY_SUFFIX}"):
        rows.append((tmp.name, "-", "-", "-", "-", "-", "-", "-", "partial: being written" if lock_held(tmp) else
                     "partial: writer killed (removed by the next CompiledModelCache on this folder)"))
    if as_json:
        keys = [h.replace(" ", "_") for h in header]
        echo_json({"ok": True, "directory": os.path.abspath(directory),
                   "entries": [dict(zip(keys, row, strict=True)) for row in rows[1:]]})
        return
    echo_rows(rows)
    if len(rows) == 1:
        click.echo(f"(no *{ENTRY_SUFFIX} files)")


@compiled.command("verify")
@click.argument("directory", type=click.Path(file_okay=False))
@keys_option
@passphrase_options
@click.option("--min-release", type=click.IntRange(0), default=0, show_default=True,
              help="Refuse entries older than this release.")
@json_option
def verify_entries(directory: str, keys_path: str, passphrase: Passphrase, min_release: int, as_json: bool) -> None:
    """Fully verify every entry in DIRECTORY against the binding it stores (signature by a key trusted for
    engines, release, every segment); exit 1 naming each bad file, or when there is none to verify.

    \b
    Example:
      ortseal compiled verify cache/ --keys device.json --min-release 4
    """
    keys = load_keys(keys_path, passphrase)
    files = [p for p in _entries(directory) if p.parent.name != QUARANTINE]
    if not files:  # a gate with nothing to check must not pass
        raise click.ClickException(f"no *{ENTRY_SUFFIX} entries in {os.path.abspath(directory)}: nothing to verify")
    results = []
    for path in files:
        try:
            verify_entry(path, keys, min_release=min_release)
            results.append({"file": path.name, "ok": True})
        except (OrtsealError, OSError) as exc:
            results.append({"file": path.name, "ok": False, "error": type(exc).__name__, "message": str(exc)})
    bad = sum(not r["ok"] for r in results)
    if as_json:
        echo_json({"ok": not bad, "directory": os.path.abspath(directory), "entries": results})
    else:
        for r in results:
            click.echo(f"ok   {r['file']}" if r["ok"] else f"BAD  {r['file']}: {r['error']}: {r['message']}")
        click.echo(f"{len(files) - bad} ok, {bad} bad in {os.path.abspath(directory)}")
    if bad:
        sys.exit(1)
