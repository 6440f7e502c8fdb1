"""Command-line options that name a signing key: ``--signing-key`` (a keyset file or a ``pkcs11:`` URI),
``--pkcs11-module`` and the PIN options (``--pin-env``, ``--pin-file``, ``--pin-fd``; never the PIN itself).

Used by ``ortseal seal``, ``ortseal pubkey`` and the ``ortseal trust`` commands; calls only the library.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._kit import Passphrase, load_keys

if TYPE_CHECKING:  # keys and signers (cryptography) are imported by the commands that use them
    from ..keys import KeySet
    from ..signing import Signer


@dataclass
class SigningKeySpec:
    """Where a signing key is: a ``pkcs11:`` URI or a keyset file, with how to reach it."""

    spec: str | None
    module: str | None = None
    pin_env: str | None = None
    pin_file: str | None = None
    pin_fd: int | None = None

    def pin(self) -> str | None:
        """The PIN from the one option given (read once), or None (the library then tries its own sources)."""
        given = [s for s in (self.pin_env, self.pin_file, self.pin_fd) if s is not None]
        if len(given) > 1:
            raise click.ClickException("give the PIN one way: --pin-env, --pin-file or --pin-fd")
        if self.pin_env is not None:
            value = os.environ.get(self.pin_env)
            if not value:
                raise click.ClickException(f"--pin-env {self.pin_env}: the environment variable is not set or empty")
            return value
        if self.pin_file is not None:
            try:
                return Path(self.pin_file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise click.ClickException(f"--pin-file {self.pin_file}: {exc.strerror}") from exc
        if self.pin_fd is not None:
            try:
                with os.fdopen(self.pin_fd, "r", closefd=False) as fh:
                    return fh.read().rstrip("\r\n")
            except OSError as exc:
                raise click.ClickException(f"--pin-fd {self.pin_fd}: {exc.strerror}") from exc
        return None

    def signer(self, passphrase: Passphrase | None = None, what: str = "--signing-key") -> Signer:
        """The signer named: a token's key (``pkcs11:``) or the first signing key of a keyset file."""
        from ..pkcs11 import TokenSigner, is_pkcs11_uri  # noqa: PLC0415 - python-pkcs11 only when a token is used

        if self.spec is None:
            raise click.UsageError(f"{what} is required")
        if is_pkcs11_uri(self.spec):
            return TokenSigner(self.spec, module=self.module, pin=self.pin())
        keys = load_keys(self.spec, passphrase or Passphrase(), what)
        signing = keys.signing_key()
        if signing is None:
            raise click.ClickException(f"{what} {self.spec} holds no signing key")
        return signing[1]


def signing_key_options(required: bool = False, option: str | None = "--signing-key",
                        help_text: str = "Sign with this key: a pkcs11: URI (RFC 7512) or a keyset file.") \
        -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding ``option`` (none: only the token options) and the token options; the command
    receives them as one ``signing: SigningKeySpec`` argument."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--pkcs11-module", metavar="PATH",
                      help="The token's PKCS#11 library (else the URI's module-path, else $ORTSEAL_PKCS11_MODULE).")
        @click.option("--pin-env", metavar="VAR", help="Read the token's user PIN from this environment variable.")
        @click.option("--pin-file", metavar="PATH", help="Read the token's user PIN from this file (first line).")
        @click.option("--pin-fd", type=int, metavar="FD", help="Read the token's user PIN from this file descriptor.")
        @functools.wraps(fn)
        def wrapper(*args: Any, pkcs11_module: str | None, pin_env: str | None, pin_file: str | None,
                    pin_fd: int | None, signing_spec: str | None = None, **kwargs: Any) -> Any:
            spec = SigningKeySpec(signing_spec, pkcs11_module, pin_env, pin_file, pin_fd)
            return fn(*args, signing=spec, **kwargs)

        if option is None:
            return wrapper
        return click.option(option, "signing_spec", required=required, metavar="KEY", help=help_text)(wrapper)

    return decorate


token_options = signing_key_options(option=None)


def with_signer(keys: KeySet, signing: SigningKeySpec, passphrase: Passphrase | None = None) -> KeySet:
    """``keys`` signing with the key ``signing`` names (when it names one), ahead of the keyset's own."""
    if signing.spec is None:
        return keys
    from ..keys import KeySet

    return KeySet.merge(KeySet(signing_keys=[signing.signer(passphrase)]), keys)


def public_keys(source: str, passphrase: Passphrase, token: SigningKeySpec) -> KeySet:
    """The public keyset of ``source``: a keyset file (``-``, ``env:VAR``), or a ``pkcs11:`` URI (the public key
    of the token's signing key, checked to be Ed25519 and in the token)."""
    from ..keys import KeySet
    from ..pkcs11 import is_pkcs11_uri  # noqa: PLC0415

    if is_pkcs11_uri(source):
        signer = SigningKeySpec(source, token.module, token.pin_env, token.pin_file, token.pin_fd).signer()
        try:
            return KeySet(trusted_keys=[signer.public_key()])
        finally:
            getattr(signer, "close", lambda: None)()
    return load_keys(source, passphrase, "KEYSET").public()
