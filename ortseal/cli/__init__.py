"""The ``ortseal`` command line: a thin shell over the public API.

Every command exits 0 on success and 1 with a one-line ``error: ...`` otherwise (2: a command line that
does not parse); no command prints a traceback (``ortseal.cli._kit.ErrorBoundary``).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from .._version import __version__
from ._kit import (
    LOG_LEVELS,
    Group,
    Passphrase,
    echo_json,
    json_option,
    load_keys,
    open_keyset,
    passphrase_options_for,
    read_keyset,
    refuse_dash,
    say,
    setup_logging,
)
from ._signing import SigningKeySpec, public_keys, token_options
from .cache import cache
from .compiled import compiled
from .model import inspect, seal, verify
from .rotate import reseal, rotate_content_key
from .trust import trust

if TYPE_CHECKING:
    from ..keys import KeySet

SECRET_OUTPUT = "a keyset with secret keys is written only to a file (mode 0600)"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ortseal")
@click.option("-q", "--quiet", is_flag=True, help="Errors only: no progress bars, no warnings.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="warning", show_default=True,
              help="What the ortseal logger prints on stderr (debug: with the traceback of an unexpected error).")
@click.pass_context
def main(ctx: click.Context, quiet: bool, log_level: str) -> None:
    """Keep ONNX Runtime model weights and TensorRT engine caches sealed at rest.

    The publisher keeps keys.json (ortseal keygen) and seals models with it; each device gets device.json
    (ortseal device-keys keys.json -o device.json): it opens and verifies, and cannot sign a model.
    --quiet and --log-level may also come after the command.

    \b
    Example:
      ortseal keygen -o keys.json --protect
      ortseal seal model.onnx -o model.sealed.onnx --keys keys.json --release 4
      ortseal device-keys keys.json -o device.json
      ortseal verify model.sealed.onnx --keys device.json --quiet
    """
    ctx.obj = {"quiet": quiet}
    setup_logging(log_level, quiet)


def _key_report(path: str, keys: KeySet, protected: bool) -> dict:
    return {"ok": True, "path": path, "protected": protected, "content_keys": keys.content_key_ids,
            "signing_keys": keys.signing_key_ids, "trusted_keys": keys.trusted_key_ids,
            "roles": {role: able for role, (able, _) in _roles(keys).items()}}


@main.command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Keyset file to write (mode 0600).")
@passphrase_options_for("", "passphrase", "the new keyset (it is protected with it)")
@click.option("--protect", is_flag=True, help="Protect the keyset with a passphrase typed at a prompt.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@json_option
def keygen(output: str, passphrase: Passphrase, protect: bool, overwrite: bool, as_json: bool) -> None:
    """Make the publisher's keyset: one AES-256 content key and one Ed25519 signing key (protected by a
    passphrase when one is given, or with --protect). Keep it off devices: give them ortseal device-keys.

    \b
    Example:
      ortseal keygen -o keys.json --protect
      ortseal keygen -o keys.json --passphrase-file secret.txt
    """
    refuse_dash(output, "--output", SECRET_OUTPUT)
    from ..keys import KeySet

    ks = KeySet.generate()
    secret = passphrase.for_new_keyset(protect)
    ks.save(output, secret, overwrite=overwrite)
    if as_json:
        echo_json(_key_report(output, ks, secret is not None))
    else:
        say(f"wrote {output}: content key {ks.content_key_ids[0]}, signing key {ks.signing_key_ids[0]}")


@main.command()
@click.argument("keyset", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Public keyset file to write (- for stdout).")
@passphrase_options_for("", "passphrase", "KEYSET (the keyset read)")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@token_options
@json_option
def pubkey(keyset: str, output: str, passphrase: Passphrase, overwrite: bool, signing: SigningKeySpec,
           as_json: bool) -> None:
    """Export the public key(s) of KEYSET (- for stdin; or a pkcs11: URI: the token key's public key): what a
    machine needs to check signatures only.

    \b
    Example:
      ortseal pubkey keys.json -o trusted.json
    """
    public = public_keys(keyset, passphrase, signing)
    if output == "-":
        if as_json:
            raise click.UsageError("--json and -o - both print on stdout: choose one")
        click.echo(public.to_json(), nl=False)
        return
    public.save(output, overwrite=overwrite)
    if as_json:
        echo_json(_key_report(output, public, False))
    else:
        say(f"wrote {output}: trusted keys {', '.join(public.trusted_key_ids)}")


@main.command("device-keys")
@click.argument("keyset", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Device keyset file to write (mode 0600).")
@click.option("--engine-signing-key", is_flag=True,
              help="Add a fresh signing key of the device's own, trusted only for TensorRT engines: for devices "
                   "that build and seal their engine cache.")
@passphrase_options_for("", "passphrase", "KEYSET (the publisher's keyset read, not the one written)")
@passphrase_options_for("device-", "device_passphrase", "the device keyset written (-o)")
@click.option("--protect", is_flag=True, help="Protect the device keyset with a passphrase typed at a prompt.")
@click.option("--no-protect", is_flag=True,
              help="Write the device keyset without a passphrase, on purpose (a device that starts unattended).")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@json_option
def device_keys(keyset: str, output: str, engine_signing_key: bool, passphrase: Passphrase,
                device_passphrase: Passphrase, protect: bool, no_protect: bool, overwrite: bool, as_json: bool) -> None:
    """Write the keyset a device holds, from the publisher's KEYSET: the content keys and the trusted
    publisher key, never the publisher's signing key. The device opens and verifies sealed models and
    engines and cannot sign one it would accept (--engine-signing-key: engines only).

    \b
    Example:
      ortseal device-keys keys.json -o device.json --device-passphrase-file device-secret.txt
      ortseal device-keys keys.json -o device.json --passphrase-file secret.txt --no-protect
    """
    refuse_dash(output, "--output", SECRET_OUTPUT)
    publisher = load_keys(keyset, passphrase, "KEYSET")
    if not publisher.has_content_keys:
        raise click.ClickException(f"{keyset} holds no content key: a device keyset is made from the publisher's "
                                   "keyset (ortseal keygen), not from a public one")
    protecting = protect or device_passphrase.given() is not None
    if no_protect and protecting:
        raise click.UsageError("--no-protect writes the device keyset without a passphrase: drop it, or drop "
                               "--protect / --device-passphrase-*")
    if passphrase.given() is not None and not protecting and not no_protect:
        raise click.UsageError("--passphrase-* unlocks KEYSET (the publisher's keyset read), not the device keyset "
                               "written: protect that with --device-passphrase-env/-file/-fd or --protect, or write "
                               "it without a passphrase with --no-protect")
    device = publisher.for_device(engine_signing_key=engine_signing_key)
    secret = device_passphrase.for_new_keyset(protect)
    device.save(output, secret, overwrite=overwrite)
    if as_json:
        echo_json(_key_report(output, device, secret is not None))
        return
    engine = f", engine signing key {device.signing_key_ids[0]} (engines only)" if engine_signing_key else ""
    trusted = [k for k in device.trusted_key_ids if k not in device.signing_key_ids]
    say(f"wrote {output}{' (passphrase-protected)' if secret else ' (NOT passphrase-protected)'}: content key(s) "
               f"{', '.join(device.content_key_ids)}, trusts {', '.join(trusted)}{engine}; no publisher signing key")


@main.command("inspect-keys")
@click.argument("keyset", type=click.Path(dir_okay=False, allow_dash=True))
@passphrase_options_for("", "passphrase", "KEYSET")
@json_option
def inspect_keys(keyset: str, passphrase: Passphrase, as_json: bool) -> None:
    """Show which roles KEYSET (- for stdin) can play: seal and sign models (publisher), open models on a
    device, verify only, seal engines on a device; and the keys it holds.

    \b
    Example:
      ortseal inspect-keys device.json --json
    """
    text = read_keyset(keyset, "KEYSET")
    try:
        doc = json.loads(text)
        protected = isinstance(doc, dict) and "wrapped_secrets" in doc
    except (ValueError, TypeError, RecursionError):
        protected = False  # open_keyset names what is wrong with it
    locked = protected and passphrase.given() is None and (keyset == "-" or not sys.stdin.isatty())
    if locked:  # no way to ask: show what the readable part says, and that the secrets were not read
        doc = json.loads(text)
        doc.pop("wrapped_secrets")
        keys = open_keyset(json.dumps(doc).encode(), keyset, passphrase, "KEYSET")
    else:
        keys = open_keyset(text, keyset, passphrase, "KEYSET")
    report = _key_report(keyset, keys, protected)
    report["locked"] = locked
    if locked:
        report.update(content_keys=None, signing_keys=None, roles=None)
    report["trust_scopes"] = {kid: list(keys.trust_scope(kid)) for kid in keys.trusted_key_ids}
    report["allow_unsigned"] = keys.allow_unsigned
    if as_json:
        echo_json(report)
        return
    state = "passphrase-protected" if protected else "not passphrase-protected"
    click.echo(f"{keyset}: {state}" + ("; its secret keys were NOT read (give --passphrase-file, -fd or -env)"
                                       if locked else ""))
    if not locked:
        click.echo(f"  content keys: {', '.join(keys.content_key_ids) or 'none'}")
        click.echo(f"  signing keys: {', '.join(_scoped(keys, k) for k in keys.signing_key_ids) or 'none'}")
    others = [k for k in keys.trusted_key_ids if k not in keys.signing_key_ids]
    click.echo(f"  trusts:       {', '.join(_scoped(keys, k) for k in others) or 'only its own signing keys'}"
               + ("; accepts UNSIGNED content (allow_unsigned)" if keys.allow_unsigned else ""))
    if locked:
        click.echo("roles: unknown until unlocked (they depend on the secret keys)")
        return
    click.echo("roles:")
    for role, (able, why) in _roles(keys).items():
        click.echo(f"  {'yes' if able else 'no '}  {role}: {why}")


def _signs(keys: KeySet, key_id: str, purpose: str) -> bool:
    """True if ``key_id``'s scope lets it sign for ``purpose`` (``"model"``: some model, ``"engine"``)."""
    scope = keys.trust_scope(key_id)
    if purpose == "model":
        return any(_may_match_a_model(p) for c in scope for p in c.strip("()").split("|"))
    return keys.trusted_key(key_id, purpose) is not None


def _may_match_a_model(pattern: str) -> bool:
    """True if ``pattern`` (``*`` the only wildcard) matches some purpose ``model:<name>``: its literal text
    before the first ``*`` and ``model:`` agree as far as both go."""
    head = pattern.split("*", 1)[0]
    return head.startswith("model:") if "*" not in pattern else ("model:".startswith(head) or head.startswith("model:"))


def _roles(keys: KeySet) -> dict[str, tuple[bool, str]]:
    """What a keyset can do, role by role, with the reason."""
    content = keys.has_content_keys
    model_signers = [k for k in keys.signing_key_ids if _signs(keys, k, "model")]
    engine_signers = [k for k in keys.signing_key_ids if _signs(keys, k, "engine")]
    trusts_models = keys.allow_unsigned or any(_signs(keys, k, "model") for k in keys.trusted_key_ids)
    no_content = "no content key"
    return {
        "seal and sign models (publisher)": (
            content and bool(model_signers),
            (f"content key and signing key {model_signers[0]}; keep this file off devices (give them: ortseal "
             "device-keys)") if content and model_signers else
            no_content if not content else "no signing key for models"),
        "open models on a device": (
            content and trusts_models,
            ("decrypts, and checks the signature of " + ("its own signing key" if model_signers else "a trusted key"))
            if content and trusts_models else no_content if not content else "trusts no key for models"),
        "verify models": (
            trusts_models,
            "verify only: checks signatures and the stored bytes (ortseal verify), cannot decrypt"
            if trusts_models and not content else "and decrypts" if trusts_models else "trusts no key for models"),
        "seal engines on a device": (
            content and bool(engine_signers),
            f"content key and signing key {engine_signers[0]} for engines" if content and engine_signers else
            no_content if not content else "no signing key for engines (ortseal device-keys --engine-signing-key)"),
    }


def _scoped(keys: KeySet, key_id: str) -> str:
    scope = keys.trust_scope(key_id)
    return key_id if scope == ("*",) else f"{key_id} (for {', '.join(scope)})"


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="Work in this folder instead of a temporary one.")
def demo(workdir: str | None) -> None:
    """Show the kit's main job step by step, with a fresh key in a temporary folder.

    \b
    Example:
      ortseal demo --workdir demo-work
    """
    from .demo import run_demo

    sys.exit(run_demo(workdir))


for command in (seal, inspect, verify, cache, compiled, trust, reseal, rotate_content_key):
    main.add_command(command)
