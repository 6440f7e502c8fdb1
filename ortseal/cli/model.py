"""``ortseal seal``, ``ortseal inspect`` and ``ortseal verify``.

Each command imports the sealed-model modules (and so onnx) when it runs, not when the CLI starts: ``ortseal
--help`` and the key and cache commands never pay for them.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..model.report import SealedTensorInfo
    from ..model.seal import PlainTensor
from ._kit import (
    Command,
    Passphrase,
    cli_words,
    describe,
    echo_json,
    echo_rows,
    json_option,
    keys_option,
    load_keys,
    passphrase_options_for,
    quiet,
    read_bounded,
    say,
)
from ._signing import SigningKeySpec, signing_key_options, with_signer
from .trust import trust_bundle_options, with_trust_bundle

MAIN_GRAPH = "(main graph)"  # how the tables show scope "" (the main graph; docs/sealed-models.md)


@click.command(cls=Command)
@click.argument("src", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Sealed model to write (- for stdout: implies --inline).")
@keys_option
@passphrase_options_for("", "passphrase", "the --keys keyset (the publisher's)")
@click.option("--min-bytes", default=1024, show_default=True,
              help="Seal constant tensors (initializers and Constant nodes) of at least this many bytes.")
@click.option("--include", metavar="REGEX", help="Seal only constant tensors whose name matches.")
@click.option("--exclude", metavar="REGEX", help="Leave constant tensors whose name matches plaintext.")
@click.option("--no-sign", is_flag=True, help="Do not sign (devices that trust a publisher key will refuse it).")
@click.option("--inline", is_flag=True, help="Keep sealed payloads inside the model file (models under 2 GiB).")
@click.option("--model-name", metavar="NAME",
              help="The model's identity in its signed manifest (default: SRC's stem; needed when SRC is -).")
@click.option("--release", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Release number in the signed manifest; devices can refuse older ones (--min-release).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@signing_key_options(help_text="Sign with this key instead of the keyset's: a pkcs11: URI (RFC 7512; the key "
                               "stays in the token) or a keyset file.")
@json_option
def seal(src: str, dst: str, keys_path: str, passphrase: Passphrase, min_bytes: int, include: str | None,
         exclude: str | None, no_sign: bool, inline: bool, model_name: str | None, release: int,
         overwrite: bool, signing: SigningKeySpec, as_json: bool) -> None:
    """Seal the weights of SRC (initializers and Constant nodes) into a new model (payloads in <output>.data).
    SRC - reads a model without external data from stdin; -o - writes the sealed model to stdout (inline).

    \b
    Example:
      ortseal seal model.onnx -o model.sealed.onnx --keys keys.json --release 4
      cat small.onnx | ortseal seal - -o - --keys keys.json --model-name small > small.sealed.onnx
    """
    from ..model._graph import MAX_MODEL_FILE
    from ..model.seal import format_size, seal_model, summarize_plain

    if src == "-" and keys_path == "-":
        raise click.UsageError("SRC and --keys cannot both come from stdin")
    if dst == "-" and as_json:
        raise click.UsageError("--json and -o - both print on stdout: choose one")
    keys = with_signer(load_keys(keys_path, passphrase), signing)
    source = read_bounded(sys.stdin.buffer, MAX_MODEL_FILE, "SRC - (stdin)") if src == "-" else src
    out = sys.stdout.buffer if dst == "-" else dst
    summary = seal_model(source, out, keys, min_bytes=min_bytes, include=include, exclude=exclude, sign=not no_sign,
                         external_data=not inline and dst != "-", model_name=model_name, release=release,
                         overwrite=overwrite, progress=not quiet() and not as_json)
    if as_json:
        echo_json({"ok": True, "model": str(summary.model), "data_file": summary.data_file and str(summary.data_file),
                   "sealed": list(summary.sealed), "sealed_bytes": summary.plaintext_bytes,
                   "left_plain_summary": cli_words(summarize_plain(summary.left_plain))})
        return
    if dst == "-":
        return  # stdout holds the model: nothing else goes there
    data = f" + {summary.data_file}" if summary.data_file else ""
    say(f"sealed {len(summary.sealed)} tensors ({format_size(summary.plaintext_bytes)}) -> {summary.model}{data}")
    say(cli_words(summarize_plain(summary.left_plain)) + ("" if not summary.left_plain else
                                                          f"; list them with: ortseal inspect {summary.model}"))


def shown_plain(left: list[PlainTensor], show_all: bool) -> list[PlainTensor]:
    """The plaintext tensors listed one by one: all with ``--all``, else all but those below --min-bytes
    (a real model has scores of 4-8 byte Constants; the summary line counts them)."""
    from ..model.seal import REASON_SMALL

    return list(left) if show_all else [p for p in left if p.reason != REASON_SMALL]


def print_plain(left: list[PlainTensor], show_all: bool = False) -> None:
    """What a model holds in plaintext, a line per tensor (below --min-bytes only with ``show_all``), then
    the summary by reason."""
    from ..model.seal import format_size, summarize_plain

    shown = shown_plain(left, show_all)
    if shown:
        echo_rows([("plaintext", "scope", "from", "size", "why")] + [
            (p.name, p.scope or MAIN_GRAPH, p.source, "?" if p.nbytes is None else format_size(p.nbytes),
             cli_words(f"{p.reason} ({p.detail})" if p.detail else p.reason)) for p in shown])
    hidden = len(left) - len(shown)
    not_listed = f" ({hidden} below --min-bytes not listed: --all lists them)" if hidden else ""
    click.echo(cli_words(summarize_plain(left)) + not_listed)


def print_table(infos: list[SealedTensorInfo]) -> None:
    """The sealed tensors as ``ortseal inspect`` shows them, then the manifest line (the only signature: the
    tensors' blobs are bound by the signed manifest, not signed one by one)."""
    from ..model.seal import format_size

    rows = [("tensor", "scope", "from", "dtype", "shape", "size", "sealed", "key id", "v")]
    rows += [(i.name, i.scope or MAIN_GRAPH, i.source, i.dtype, "x".join(map(str, i.shape)) or "scalar",
              format_size(i.plaintext_bytes), format_size(i.sealed_bytes), i.key_id, str(i.format_version))
             for i in infos]
    echo_rows(rows)
    total = sum(i.plaintext_bytes for i in infos)
    first = infos[0]
    click.echo(f"{len(infos)} sealed tensors, {format_size(total)}; manifest: model {first.model!r}, release "
               f"{first.release}, signed by {first.manifest_signer or '(unsigned)'} (not verified here: use ortseal "
               "verify)")


def _plain_json(left: list[PlainTensor], show_all: bool) -> dict:
    from ..model.seal import summarize_plain

    shown = shown_plain(left, show_all)
    return {"left_plain": [asdict(p) for p in shown], "left_plain_not_listed": len(left) - len(shown),
            "left_plain_summary": cli_words(summarize_plain(left))}


def _model_arg(model: str) -> str | bytes:
    """A model path, or the bytes of a model given on stdin as ``-`` (one without external data, read up to
    the 2 GiB a model file can be)."""
    from ..model._graph import MAX_MODEL_FILE

    return read_bounded(sys.stdin.buffer, MAX_MODEL_FILE, "MODEL - (stdin)") if model == "-" else model


@click.command(cls=Command)
@click.argument("model", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--all", "show_all", is_flag=True, help="List every plaintext tensor, the small ones too.")
@json_option
def inspect(model: str, show_all: bool, as_json: bool) -> None:
    """Show which tensors of MODEL (- for stdin: a model without external data) are sealed (sizes, key ids,
    the manifest's signer) and which are left plaintext, and why (no keys needed).

    \b
    Example:
      ortseal inspect model.sealed.onnx --all
    """
    from ..model._graph import PLAIN_ORT_ERROR, load_model
    from ..model.report import inspect_model
    from ..model.seal import plaintext_report

    source = _model_arg(model)
    infos = inspect_model(source)
    left = plaintext_report(load_model(source).model) if infos else []
    if as_json:
        manifest = {"model": infos[0].model, "release": infos[0].release,
                    "signer": infos[0].manifest_signer} if infos else None
        echo_json({"model": model, "manifest": manifest, "sealed": [
            {k: v for k, v in i.as_dict().items() if k not in ("model", "release", "manifest_signer")} for i in infos],
            **_plain_json(left, show_all)})
    elif not infos:
        click.echo(f"{model}: no sealed tensors")
    else:
        print_table(infos)
        print_plain(left, show_all)
        click.echo(f"open with: ortseal.InferenceSession(path, keys=...) (optimum, sentence-transformers: ortseal.hf); "
                   f"a plain loader fails with '{PLAIN_ORT_ERROR}'")


@click.command(cls=Command)
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@keys_option
@passphrase_options_for("", "passphrase", "the --keys keyset")
@click.option("--min-release", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Refuse a model whose signed release is older.")
@click.option("--model-name", metavar="NAME", help="Refuse any model but the one sealed under this name.")
@click.option("--all", "show_all", is_flag=True, help="List every plaintext tensor in --json, the small ones too.")
@trust_bundle_options
@json_option
def verify(models: tuple[str, ...], keys_path: str, passphrase: Passphrase, min_release: int, model_name: str | None,
           show_all: bool, trust_bundle: tuple[str | None, str | None, str | None], as_json: bool) -> None:
    """Check each MODEL (- for stdin: a model without external data) as a device opens it: the signature over
    the whole file, release, every sealed and plain external tensor, and (with content keys) decryption and
    ONNX Runtime opening the graph. Keeps no plaintext. A line per model; exit 1 if any fails.

    \b
    Example:
      ortseal verify model.sealed.onnx --keys device.json --min-release 4
      ortseal verify models/*.sealed.onnx --keys device.json --json
    """
    from ..model.report import verify_model

    if "-" in models and (keys_path == "-" or models.count("-") > 1):
        raise click.UsageError("stdin can be read once: give - for one MODEL or for --keys")
    keys = with_trust_bundle(load_keys(keys_path, passphrase, device=True), trust_bundle)  # bad: the error boundary
    docs = [_verify_one(verify_model, model, keys, min_release, model_name, show_all, as_json) for model in models]
    if as_json:
        echo_json(docs[0] if len(docs) == 1 else {"ok": all(d["ok"] for d in docs), "models": docs})
    if not all(d["ok"] for d in docs):
        sys.exit(1)


def _verify_one(verify_model: Any, model: str, keys: Any, min_release: int, model_name: str | None, show_all: bool,
                as_json: bool) -> dict:
    """Verify one model; its line (unless ``as_json``) and its JSON document."""
    from ..model.seal import format_size, summarize_plain

    try:
        report = verify_model(_model_arg(model), keys, min_release=min_release, model_name=model_name)
    except Exception as exc:  # noqa: BLE001 - any failure fails this model, on one line
        message = exc.format_message() if isinstance(exc, click.ClickException) else cli_words(describe(exc))
        if not as_json:
            click.echo(f"FAILED {model}: {message}", err=True)
        return {"ok": False, "path": model, "error": type(exc).__name__, "message": message}
    if not as_json:
        signer = f"signed by {report.signer}" if report.signer else "unsigned, its MAC checked (this keyset allows it)"
        say(f"ok {model}: model {report.model!r} release {report.release}, {signer}; the whole file and "
            f"{report.sealed_tensors} sealed tensors ({format_size(report.sealed_bytes)}) verified")
        if report.decrypted:
            say("  decrypted in memory and opened by ONNX Runtime (CPU EP): it opens on a device with this keyset")
        else:
            say("  decryption NOT checked: this keyset holds no content key (public keys only); the stored bytes "
                "match what was signed")
        say("  " + cli_words(summarize_plain(report.left_plain)))
    doc = {k: v for k, v in report.as_dict().items() if k != "left_plain"}
    return {"ok": True, "path": model, **doc, **_plain_json(report.left_plain, show_all)}
