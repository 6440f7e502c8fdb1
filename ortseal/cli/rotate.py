"""``ortseal rotate-content-key`` and ``ortseal reseal``: content key rotation, on the publisher's side."""

from __future__ import annotations

import click

from ._kit import Command, Passphrase, echo_json, json_option, keys_option, load_keys, passphrase_options, quiet, refuse_dash
from ._signing import SigningKeySpec, signing_key_options, with_signer
from .trust import trust_bundle_options, with_trust_bundle


@click.command("rotate-content-key", cls=Command)
@click.argument("keyset", type=click.Path(dir_okay=False, exists=True))
@passphrase_options
@json_option
def rotate_content_key(keyset: str, passphrase: Passphrase, as_json: bool) -> None:
    """Add a fresh content key to KEYSET (rewritten in place, same passphrase) that seals from now on; the old
    keys stay, so what they sealed still opens. Then: ortseal reseal each model, ortseal device-keys.

    \b
    Example:
      ortseal rotate-content-key keys.json
    """
    refuse_dash(keyset, "KEYSET", "the keyset is rewritten in place")
    secret = passphrase.given()
    rotated = load_keys(keyset, passphrase, "KEYSET").with_new_content_key()
    rotated.save(keyset, secret, overwrite=True)
    new = rotated.content_key_ids[0]
    if as_json:
        echo_json({"ok": True, "path": keyset, "sealing_key": new, "content_keys": rotated.content_key_ids})
    else:
        click.echo(f"{keyset}: new content key {new} seals from now on; kept {', '.join(rotated.content_key_ids[1:])}")


@click.command(cls=Command)
@click.argument("src", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False), help="Re-sealed model to write.")
@keys_option
@passphrase_options
@click.option("--release", type=click.IntRange(0, 2**63 - 1), help="Release number of the new file (default: SRC's).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@signing_key_options(help_text="Sign with this key instead of the keyset's: a pkcs11: URI or a keyset file.")
@trust_bundle_options
@json_option
def reseal(src: str, dst: str, keys_path: str, passphrase: Passphrase, release: int | None, overwrite: bool,
           signing: SigningKeySpec, trust_bundle: tuple[str | None, str | None, str | None], as_json: bool) -> None:
    """Re-seal the sealed model SRC under the keyset's sealing content key (after rotate-content-key), signed
    again; its weights are decrypted only in memory, never written in clear. Give the current trust bundle
    (--trust-bundle, --trust-root) so that a model a revoked key signed is refused, not signed again.

    \b
    Example:
      ortseal reseal model.sealed.onnx -o model.v5.sealed.onnx --keys keys.json --release 5
    """
    from ..model.reseal import reseal_model

    keys = with_trust_bundle(with_signer(load_keys(keys_path, passphrase), signing), trust_bundle, device=False)
    summary = reseal_model(src, dst, keys, release=release, overwrite=overwrite, progress=not quiet() and not as_json)
    assert summary.manifest is not None
    if as_json:
        echo_json({"ok": True, "model": str(summary.model), "data_file": summary.data_file and str(summary.data_file),
                   "content_key": summary.manifest.key_id, "sealed": summary.sealed})
    else:
        data = f" + {summary.data_file}" if summary.data_file else ""
        click.echo(f"resealed {len(summary.sealed)} tensors under content key {summary.manifest.key_id} -> "
                   f"{summary.model}{data}")
