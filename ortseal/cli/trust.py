"""``ortseal trust``: make, sign, inspect and install trust bundles (a thin shell over :mod:`ortseal.trust`).

Publisher: ``init`` (serial 1 under a root key), ``add-signer``, ``revoke`` and ``rotate-root`` each write
the next serial, signed by the root (``--root-key``: a keyset file or a ``pkcs11:`` URI); ``show`` prints a
bundle. Device: ``install`` checks a bundle against the pinned root and the state file and records it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._kit import Command, Group, Passphrase, echo_json, json_option, passphrase_options
from ._signing import SigningKeySpec, signing_key_options

if TYPE_CHECKING:
    from ..signing import Signer


def _root_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = passphrase_options(fn)
    return signing_key_options(required=True, option="--root-key",
                               help_text="The root key that signs the bundle: a keyset file or a pkcs11: URI.")(fn)


def _write(bundle: Any, output: str, overwrite: bool, as_json: bool, *signers: Signer) -> None:
    from .._atomic import atomic_write_bytes

    atomic_write_bytes(output, bundle.sign(*signers), mode=0o644, overwrite=overwrite)
    info = bundle.describe()
    if as_json:
        echo_json({"ok": True, "path": output, **info})
    else:
        click.echo(f"wrote {output}: serial {info['serial']}, root {info['root']}, {len(info['signers'])} signer(s), "
                   f"{len(info['revoked'])} revoked")


def _current(path: str, root: Signer) -> Any:
    """The bundle at ``path``, verified against the root key that will sign its successor."""
    from ..trust import read_bundle

    return read_bundle(Path(path).read_bytes(), root.public_key())


@click.group(cls=Group)
def trust() -> None:
    """Trust bundles: the signers devices trust and the keys they refuse, signed by a root key they pin.

    \b
    Example:
      ortseal trust init -o bundle.json --root-key root.json
      ortseal trust add-signer bundle.json --key trusted.json --scope 'model:*' --root-key root.json
      ortseal trust install bundle.json --root root.public.json --state /var/lib/app/trust-state.json
    """


@trust.command(cls=Command)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Bundle file to write.")
@_root_options
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@json_option
def init(output: str, signing: SigningKeySpec, passphrase: Passphrase, overwrite: bool, as_json: bool) -> None:
    """Write serial 1 of a bundle under the root key, trusting nobody yet.

    \b
    Example:
      ortseal trust init -o bundle.json --root-key root.json
    """
    from ..trust import TrustBundle

    root = signing.signer(passphrase, "--root-key")
    _write(TrustBundle.initial(root.public_key()), output, overwrite, as_json, root)


@trust.command("add-signer", cls=Command)
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True))
@click.option("--key", "key_source", required=True, metavar="PUBLIC",
              help="The signer's public key: a public keyset file holding one key (ortseal pubkey).")
@click.option("--scope", multiple=True, metavar="PATTERN",
              help="What it may sign: model:<name pattern>, engine, blob (repeat; default: everything).")
@_root_options
@json_option
def add_signer(bundle: str, key_source: str, scope: tuple[str, ...], signing: SigningKeySpec, passphrase: Passphrase,
               as_json: bool) -> None:
    """Trust a signer (or set its scope) in BUNDLE: writes the next serial in its place.

    \b
    Example:
      ortseal trust add-signer bundle.json --key trusted.json --scope 'model:detector*' --root-key root.json
    """
    from ..trust import load_root

    root = signing.signer(passphrase, "--root-key")
    _write(_current(bundle, root).with_signer(load_root(key_source), scope or ("*",)), bundle, True, as_json, root)


@trust.command(cls=Command)
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True))
@click.argument("key_id")
@_root_options
@json_option
def revoke(bundle: str, key_id: str, signing: SigningKeySpec, passphrase: Passphrase, as_json: bool) -> None:
    """Revoke signer KEY_ID in BUNDLE: devices refuse all it signed. Writes the next serial in its place.

    \b
    Example:
      ortseal trust revoke bundle.json bc2aeaf81fe26cae --root-key root.json
    """
    root = signing.signer(passphrase, "--root-key")
    _write(_current(bundle, root).revoking(key_id), bundle, True, as_json, root)


@trust.command("rotate-root", cls=Command)
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True))
@click.option("--new-root-key", required=True, metavar="KEY",
              help="The new root: a keyset file or a pkcs11: URI (same token options as --root-key).")
@_root_options
@json_option
def rotate_root(bundle: str, new_root_key: str, signing: SigningKeySpec, passphrase: Passphrase, as_json: bool) -> None:
    """Move BUNDLE to a new root key, signed by the old root and the new one (devices accept a new root only
    so). Writes the next serial in its place.

    \b
    Example:
      ortseal trust rotate-root bundle.json --root-key old-root.json --new-root-key new-root.json
    """
    old = signing.signer(passphrase, "--root-key")
    new = SigningKeySpec(new_root_key, signing.module, signing.pin_env, signing.pin_file,
                         signing.pin_fd).signer(passphrase, "--new-root-key")
    _write(_current(bundle, old).with_root(new.public_key()), bundle, True, as_json, old, new)


@trust.command(cls=Command)
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True))
@click.option("--root", "root_path", required=True, metavar="ROOT",
              help="The pinned root public key (a public keyset file holding one key).")
@json_option
def show(bundle: str, root_path: str, as_json: bool) -> None:
    """Verify BUNDLE against ROOT (no state: no rollback check) and print what it trusts.

    \b
    Example:
      ortseal trust show bundle.json --root root.public.json
    """
    from ..trust import load_root, read_bundle

    info = read_bundle(Path(bundle).read_bytes(), load_root(root_path)).describe()
    if as_json:
        echo_json({"ok": True, **info})
        return
    click.echo(f"{bundle}: serial {info['serial']}, root {info['root']}, digest {info['digest'][:16]}...")
    for kid, scope in info["signers"].items():
        click.echo(f"  trusts  {kid} for {', '.join(scope)}")
    for kid in info["revoked"]:
        click.echo(f"  revoked {kid}")


@trust.command(cls=Command)
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True))
@click.option("--root", "root_path", required=True, metavar="ROOT", help="The root public key this device pins.")
@click.option("--state", required=True, type=click.Path(dir_okay=False),
              help="This device's trust state file (last accepted serial, digest and root; mode 0600).")
@json_option
def install(bundle: str, root_path: str, state: str, as_json: bool) -> None:
    """Accept BUNDLE on this device: signed by its root, not older than the last one, recorded in STATE.

    \b
    Example:
      ortseal trust install bundle.json --root root.public.json --state /var/lib/app/trust-state.json
    """
    from ..trust import install_bundle, load_root

    installed = install_bundle(Path(bundle).read_bytes(), root=load_root(root_path), state=state)
    info = installed.describe()
    if as_json:
        echo_json({"ok": True, "state": state, **info})
    else:
        click.echo(f"installed {bundle}: serial {info['serial']}, {len(info['signers'])} signer(s), "
                   f"{len(info['revoked'])} revoked; state {state}")


def trust_bundle_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--trust-bundle``, ``--trust-root`` and ``--trust-state`` for commands that open or verify: the command
    receives ``trust_bundle: tuple[str | None, str | None, str | None]`` for :func:`with_trust_bundle`."""

    @click.option("--trust-state", metavar="STATE", help="This device's trust state file (with --trust-bundle).")
    @click.option("--trust-root", metavar="ROOT", help="The root public key this device pins (with --trust-bundle).")
    @click.option("--trust-bundle", metavar="BUNDLE",
                  help="Trust the signers of this trust bundle (installed as ortseal trust install does) and refuse "
                       "what its revoked keys signed.")
    @functools.wraps(fn)
    def wrapper(*args: Any, trust_bundle: str | None, trust_root: str | None, trust_state: str | None,
                **kwargs: Any) -> Any:
        return fn(*args, trust_bundle=(trust_bundle, trust_root, trust_state), **kwargs)

    return wrapper


def with_trust_bundle(keys: Any, given: tuple[str | None, str | None, str | None], *, device: bool = True) -> Any:
    """``keys`` merged with the verified bundle's trust (its signers, scopes and revocations), if one is given.
    A device installs it (the state is required: rollback checks); the publisher (``device=False``, e.g.
    reseal) may give no state and then only verifies the bundle against the root."""
    bundle, root, state = given
    if bundle is None and root is None and state is None:
        return keys
    if bundle is None or root is None or (device and state is None):
        raise click.UsageError("--trust-bundle, --trust-root and --trust-state go together" if device else
                               "--trust-bundle and --trust-root go together (--trust-state is optional here)")
    from ..keys import KeySet
    from ..trust import install_bundle, load_root, read_bundle

    data, pinned = Path(bundle).read_bytes(), load_root(root)
    installed = read_bundle(data, pinned) if state is None else install_bundle(data, root=pinned, state=state)
    return KeySet.merge(keys, installed.keyset())
