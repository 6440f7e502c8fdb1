"""``ortseal seal``, ``ortseal inspect`` and ``ortseal verify``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import click

from ..clikit import Passphrase, echo_rows, fail_cleanly, keys_option, load_keys, passphrase_options, quiet
from .inspect import inspect_model, verify_model
from .model import load_model
from .seal import PlainTensor, format_size, plaintext_report, seal_model, summarize_plain


@click.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False), help="Sealed model to write.")
@keys_option
@passphrase_options
@click.option("--min-bytes", default=1024, show_default=True,
              help="Seal constant tensors (initializers and Constant nodes) of at least this many bytes.")
@click.option("--include", metavar="REGEX", help="Seal only constant tensors whose name matches.")
@click.option("--exclude", metavar="REGEX", help="Leave constant tensors whose name matches plaintext.")
@click.option("--no-sign", is_flag=True, help="Do not sign (devices that trust a publisher key will refuse it).")
@click.option("--inline", is_flag=True, help="Keep sealed payloads inside the model file (models under 2 GiB).")
@click.option("--model-name", metavar="NAME", help="The model's identity in its signed manifest (default: SRC's stem).")
@click.option("--release", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Release number in the signed manifest; devices can refuse older ones (--min-release).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@fail_cleanly
def seal(src: str, dst: str, keys_path: str, passphrase: Passphrase, min_bytes: int, include: str | None,
         exclude: str | None, no_sign: bool, inline: bool, model_name: str | None, release: int,
         overwrite: bool) -> None:
    """Seal the weights of SRC (initializers and Constant nodes) into a new model (payloads in <output>.data)."""
    keys = load_keys(keys_path, passphrase)
    summary = seal_model(src, dst, keys, min_bytes=min_bytes, include=include, exclude=exclude, sign=not no_sign,
                         external_data=not inline, model_name=model_name, release=release, overwrite=overwrite,
                         progress=not quiet())
    data = f" + {summary.data_file}" if summary.data_file else ""
    click.echo(f"sealed {len(summary.sealed)} tensors ({format_size(summary.plaintext_bytes)}) -> {summary.model}{data}")
    click.echo(summarize_plain(summary.left_plain) + ("" if not summary.left_plain else
                                                      f"; list them with: ortseal inspect {summary.model}"))


def print_plain(left: list[PlainTensor]) -> None:
    """What a model holds in plaintext, a line per tensor, then the summary by reason."""
    if left:
        echo_rows([("plaintext", "scope", "from", "size", "why")] + [
            (p.name, p.scope or "/", p.source, "?" if p.nbytes is None else format_size(p.nbytes),
             f"{p.reason} ({p.detail})" if p.detail else p.reason) for p in left])
    click.echo(summarize_plain(left))


def print_table(infos: list) -> None:
    """The human-readable table of ``ortseal inspect``."""
    rows = [("tensor", "scope", "from", "dtype", "shape", "size", "sealed", "key id", "signer", "v")]
    rows += [(i.name, i.scope, i.source, i.dtype, "x".join(map(str, i.shape)) or "scalar",
              format_size(i.plaintext_bytes), format_size(i.sealed_bytes), i.key_id, i.signer or "(unsigned)",
              str(i.format_version)) for i in infos]
    echo_rows(rows)
    total = sum(i.plaintext_bytes for i in infos)
    click.echo(f"{len(infos)} sealed tensors, {format_size(total)}; model {infos[0].model!r}, release {infos[0].release}, "
               f"manifest signer {infos[0].signer or '(unsigned)'} (not verified: use ortseal verify)")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for tools instead of a table.")
@fail_cleanly
def inspect(model: str, as_json: bool) -> None:
    """Show which tensors of MODEL are sealed (sizes, key ids, signer) and which are left plaintext, and why
    (no keys needed)."""
    infos = inspect_model(model)
    left = plaintext_report(load_model(model).model) if infos else []
    if as_json:
        click.echo(json.dumps({"model": model, "sealed": [i.as_dict() for i in infos],
                               "left_plain": [asdict(p) for p in left]}, indent=2))
    elif not infos:
        click.echo(f"{model}: no sealed tensors")
    else:
        print_table(infos)
        print_plain(left)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@keys_option
@passphrase_options
@click.option("--min-release", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Refuse a model whose signed release is older.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (on failure too).")
def verify(model: str, keys_path: str, passphrase: Passphrase, min_release: int, as_json: bool) -> None:
    """Check MODEL as a device opens it: signed manifest, release, graph binding, every sealed blob, and (with
    content keys) decryption and ONNX Runtime opening the graph. Keeps no plaintext. Exit 0 or 1."""
    keys = load_keys(keys_path, passphrase)  # a missing or unreadable keyset is reported as such
    try:
        report = verify_model(model, keys, min_release=min_release)
    except Exception as exc:  # noqa: BLE001 - any failure is a failed verification, reported on one line
        if as_json:
            click.echo(json.dumps({"ok": False, "path": model, "error": type(exc).__name__, "message": str(exc)}))
        else:
            click.echo(f"FAILED {model}: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"ok": True, "path": model, **report.as_dict()}, indent=2))
        return
    signer = f"signed by {report.signer}" if report.signer else "unsigned (this keyset allows it)"
    click.echo(f"ok {model}: model {report.model!r} release {report.release}, {signer}; graph binding and "
               f"{report.sealed_tensors} sealed tensors ({format_size(report.sealed_bytes)}) verified")
    if report.decrypted:
        click.echo("decrypted in memory and opened by ONNX Runtime (CPU EP): it opens on a device with this keyset")
    else:
        click.echo("decryption NOT checked: this keyset holds no content key (public keys only); the stored bytes "
                   "match what was signed")
    click.echo(summarize_plain(report.left_plain))
