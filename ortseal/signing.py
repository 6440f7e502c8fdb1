"""Signers: the Ed25519 key that signs models, blobs and engines, wherever its private half lives.

A :class:`Signer` is what a :class:`~ortseal.keys.KeySet` signs with: a key from a keyset file
(:class:`KeySigner`), a PKCS#11 token (:class:`ortseal.pkcs11.TokenSigner`) or a callback into a KMS or
cloud HSM (:class:`CallbackSigner`). Every signature a signer returns is checked against the public key it
was set up with before ortseal uses it, so a faulty token, a KMS that signed with another key or a callback
that returned garbage fails with :class:`~ortseal.errors.SignerError` and nothing is written::

    signer = CallbackSigner(lambda message: kms.sign("prod-2026", message), public_key=pinned_public)
    publisher = KeySet(content_keys={...}, signing_keys=[signer])
    ortseal.seal_model("model.onnx", "model.sealed.onnx", publisher)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import SignerError

SIGNATURE_SIZE = 64  # Ed25519 (RFC 8032)
PUBLIC_KEY_SIZE = 32


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes_raw()


def signer_id(key: Ed25519PublicKey) -> str:
    """The key id of an Ed25519 public key: the first 8 bytes of SHA-256 of its raw form, in hex."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def check_signer_id(key_id: object) -> str:
    """``key_id`` if it is written as :func:`signer_id` writes ids (16 lowercase hex digits), else ValueError:
    an id spelled otherwise names no key, so a revocation of it would revoke nothing."""
    if not isinstance(key_id, str) or len(key_id) != 16 or any(c not in "0123456789abcdef" for c in key_id):
        raise ValueError(f"a signer id is 16 lowercase hex digits (as ortseal pubkey and trust show prints it), got "
                         f"{key_id!r}")
    return key_id


def as_public_key(key: Ed25519PublicKey | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key, from the key itself or its 32 raw bytes."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == PUBLIC_KEY_SIZE:
        return Ed25519PublicKey.from_public_bytes(bytes(key))
    raise TypeError("public_key must be an Ed25519PublicKey or its 32 raw bytes")


class Signer:
    """One Ed25519 signing key. Subclasses implement :meth:`_sign`; :meth:`sign` checks what it returns."""

    def __init__(self, public_key: Ed25519PublicKey | bytes, *, source: str) -> None:
        self._public = as_public_key(public_key)
        self.key_id = signer_id(self._public)
        self.source = source  # where the private key is, for messages: "keyset", "callback", "pkcs11:..."

    def public_key(self) -> Ed25519PublicKey:
        """The public key every signature is checked against (what devices trust)."""
        return self._public

    def _sign(self, message: bytes) -> bytes:
        raise NotImplementedError

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature over ``message``, checked against :meth:`public_key` before it is returned."""
        message = bytes(message)
        try:
            returned = self._sign(message)
        except SignerError:
            raise
        except Exception as exc:  # noqa: BLE001 - a callback's own failure, named and typed
            raise SignerError(f"signing key {self.key_id} ({self.source}) failed to sign: "
                              f"{type(exc).__name__}: {exc}") from exc
        # Read the returned value once into bytes ortseal owns: what is checked is what is used (a bytearray
        # the callback keeps, or a bytes subclass with its own __bytes__, cannot swap it after the check).
        signature = bytes(memoryview(returned)) if isinstance(returned, (bytes, bytearray)) else None
        if signature is None or len(signature) != SIGNATURE_SIZE:
            got = f"{len(signature)} bytes" if signature is not None else type(returned).__name__
            raise SignerError(f"signing key {self.key_id} ({self.source}) returned {got}, not a {SIGNATURE_SIZE}-byte "
                              "Ed25519 signature; nothing was written")
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            raise SignerError(f"the signature from {self.source} does not verify against public key {self.key_id}: "
                              "it signed with another key, or signed other bytes; nothing was written (check "
                              "which key the signer uses, and that its public key is the one given here)") from None
        return signature

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key_id}, {self.source})"


class KeySigner(Signer):
    """A signing key held in memory (from a keyset file or generated). The only kind a keyset file saves."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError(f"a signing key must be an Ed25519PrivateKey or a Signer, got {type(private_key).__name__}")
        super().__init__(private_key.public_key(), source="keyset")
        self.private_key = private_key

    def _sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


class CallbackSigner(Signer):
    """Signs through ``sign(message) -> signature`` (a KMS, a cloud HSM, a signing service).

    ``public_key`` is the key the caller trusts this signer to hold, taken from a pinned file and not from
    the service itself: every signature the callback returns is checked against it before anything is
    written. ``sign`` gets the exact bytes to sign (a domain label and a SHA-256 digest, under 64 bytes)
    and must return the 64-byte Ed25519 signature over them (pure Ed25519, RFC 8032; not Ed25519ph).
    """

    def __init__(self, sign: Callable[[bytes], bytes], public_key: Ed25519PublicKey | bytes, *,
                 source: str = "callback") -> None:
        if not callable(sign):
            raise TypeError("CallbackSigner needs a callable message -> signature")
        super().__init__(public_key, source=source)
        self._callback = sign

    def _sign(self, message: bytes) -> bytes:
        return self._callback(message)


def as_signer(key: Ed25519PrivateKey | Signer) -> Signer:
    """``key`` as a :class:`Signer` (a private key is wrapped in a :class:`KeySigner`)."""
    return key if isinstance(key, Signer) else KeySigner(key)
