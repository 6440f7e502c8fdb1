"""``ortseal seal``, ``ortseal inspect`` and ``ortseal verify``."""

from __future__ import annotations

import json
import sys

import click

from ..cli import fail_cleanly, keys_option, load_keys, main, passphrase_option
from .inspect import inspect_model, verify_model
from .seal import seal_model


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@main.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False), help="Sealed model to write.")
@keys_option
@passphrase_option
@click.option("--min-bytes", default=1024, show_default=True, help="Seal initializers of at least this many bytes.")
@click.option("--include", metavar="REGEX", help="Seal only initializers whose name matches.")
@click.option("--exclude", metavar="REGEX", help="Leave initializers whose name matches unsealed.")
@click.option("--no-sign", is_flag=True, help="Do not sign (devices that trust a publisher key will refuse it).")
@click.option("--inline", is_flag=True, help="Keep sealed payloads inside the model file (models under 2 GiB).")
@click.option("--model-name", metavar="NAME", help="The model's identity in its signed manifest (default: SRC's stem).")
@click.option("--release", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Release number in the signed manifest; devices can refuse older ones (--min-release).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@fail_cleanly
def seal(src: str, dst: str, keys_path: str, passphrase_env: str | None, min_bytes: int, include: str | None,
         exclude: str | None, no_sign: bool, inline: bool, model_name: str | None, release: int,
         overwrite: bool) -> None:
    """Seal the initializers of SRC into a new model (payloads in <output>.data)."""
    keys = load_keys(keys_path, passphrase_env)
    summary = seal_model(src, dst, keys, min_bytes=min_bytes, include=include, exclude=exclude, sign=not no_sign,
                         external_data=not inline, model_name=model_name, release=release, overwrite=overwrite)
    data = f" + {summary.data_file}" if summary.data_file else ""
    click.echo(f"sealed {len(summary.sealed)} tensors ({_size(summary.plaintext_bytes)}) -> {summary.model}{data}")


def print_table(infos: list) -> None:
    """The human-readable table of ``ortseal inspect``."""
    rows = [("tensor", "scope", "dtype", "shape", "size", "sealed", "key id", "signer", "v")]
    rows += [(i.name, i.scope, i.dtype, "x".join(map(str, i.shape)) or "scalar", _size(i.plaintext_bytes),
              _size(i.sealed_bytes), i.key_id, i.signer or "(unsigned)", str(i.format_version)) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    total = sum(i.plaintext_bytes for i in infos)
    click.echo(f"{len(infos)} sealed tensors, {_size(total)}; model {infos[0].model!r}, release {infos[0].release}, "
               f"manifest signer {infos[0].signer or '(unsigned)'} (not verified: use ortseal verify)")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for tools instead of a table.")
@fail_cleanly
def inspect(model: str, as_json: bool) -> None:
    """Show which tensors of MODEL are sealed, with sizes, key ids and signer (no keys needed)."""
    infos = inspect_model(model)
    if as_json:
        click.echo(json.dumps({"model": model, "sealed": [i.as_dict() for i in infos]}, indent=2))
    elif not infos:
        click.echo(f"{model}: no sealed tensors")
    else:
        print_table(infos)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@keys_option
@passphrase_option
@click.option("--min-release", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Refuse a model whose signed release is older.")
def verify(model: str, keys_path: str, passphrase_env: str | None, min_release: int) -> None:
    """Check MODEL's signed manifest, release, graph binding and every sealed blob; writes no plaintext.
    Exit 0 or 1."""
    keys = load_keys(keys_path, passphrase_env)  # a missing or unreadable keyset is reported as such
    try:
        count = verify_model(model, keys, min_release=min_release)
    except Exception as exc:  # noqa: BLE001 - any failure is a failed verification, reported on one line
        click.echo(f"FAILED {model}: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"ok {model}: graph binding and {count} sealed tensors verified")
