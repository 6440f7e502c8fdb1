"""Keys: :class:`KeySet` holds AES-256 content keys, Ed25519 signing keys and trusted public keys.

A keyset file is JSON (spec: ``docs/format.md``, section "Keyset file")::

    ks = KeySet.generate()
    ks.save("keys.json", passphrase="correct horse")       # secrets wrapped with scrypt + AES-GCM
    device = KeySet.merge(ks.without_signing(), ks.public())  # can open and verify, cannot sign
    hsm = KeySet.from_provider(lambda key_id: fetch_from_kms(key_id), seal_key_id="prod-2026")
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ._atomic import atomic_write_bytes
from .errors import FormatError, KeyNotFoundError, TamperedError

KEYSET_FORMAT = "ortseal-keyset"
KEYSET_VERSION = 1
CONTENT_KEY_SIZE = 32
MAX_KEY_ID_LENGTH = 64
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAX_N = 2**20  # refuse files asking for more than ~1 GiB of scrypt memory
_WRAP_AAD = b"ortseal keyset v1"

KeyProvider = Callable[[str], "bytes | None"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise FormatError(f"keyset: {what} is not valid base64") from exc


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signer_id(key: Ed25519PublicKey) -> str:
    """The key id of an Ed25519 public key: the first 8 bytes of SHA-256 of its raw form, in hex."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def check_key_id(key_id: str) -> str:
    """Return ``key_id`` if it is 1..64 printable ASCII characters, else raise ``ValueError``."""
    if not isinstance(key_id, str) or not 0 < len(key_id) <= MAX_KEY_ID_LENGTH:
        raise ValueError(f"key id must be a str of 1 to {MAX_KEY_ID_LENGTH} characters, got {key_id!r}")
    if not all(0x21 <= ord(c) <= 0x7E for c in key_id):
        raise ValueError(f"key id must be printable ASCII without spaces, got {key_id!r}")
    return key_id


def _check_content_key(key: bytes, key_id: str) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != CONTENT_KEY_SIZE:
        raise ValueError(f"content key {key_id!r} must be {CONTENT_KEY_SIZE} bytes")
    return bytes(key)


class KeySet:
    """Content keys (first one seals), signing keys (first one signs) and trusted public keys.

    A keyset that holds trusted public keys, its own signing keys' included, refuses any blob
    that lacks a valid signature from one of them. Build one with :meth:`generate`, :meth:`load`,
    :meth:`from_env`, :meth:`from_provider` or :meth:`merge`; the constructor takes already-made keys.
    """

    def __init__(
        self,
        *,
        content_keys: Mapping[str, bytes] | None = None,
        signing_keys: Iterable[Ed25519PrivateKey] = (),
        trusted_keys: Iterable[Ed25519PublicKey] = (),
        providers: Iterable[KeyProvider] = (),
        seal_key_id: str | None = None,
    ) -> None:
        self._content = {check_key_id(k): _check_content_key(v, k) for k, v in (content_keys or {}).items()}
        self._signing = {signer_id(k.public_key()): k for k in signing_keys}
        self._trusted = {signer_id(k): k for k in trusted_keys}
        for kid, key in self._signing.items():
            self._trusted.setdefault(kid, key.public_key())
        self._providers = list(providers)
        self._seal_key_id = check_key_id(seal_key_id) if seal_key_id else next(iter(self._content), None)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def generate(cls) -> KeySet:
        """A new keyset with one random AES-256 content key and one Ed25519 signing key."""
        return cls(
            content_keys={secrets.token_hex(8): AESGCM.generate_key(bit_length=256)},
            signing_keys=[Ed25519PrivateKey.generate()],
        )

    @classmethod
    def from_provider(cls, fn: KeyProvider, *, seal_key_id: str | None = None) -> KeySet:
        """Content keys fetched on demand: ``fn(key_id)`` returns the 32-byte key, or None if unknown.

        ``fn`` is called each time a key is needed (no caching here: cache in ``fn`` if your KMS is slow).
        ``seal_key_id`` names the key new blobs are sealed with. Combine with signing or trusted keys
        through :meth:`merge`.
        """
        if not callable(fn):
            raise TypeError("from_provider needs a callable key_id -> bytes")
        return cls(providers=[fn], seal_key_id=seal_key_id)

    @classmethod
    def merge(cls, *keysets: KeySet) -> KeySet:
        """One keyset holding every key of ``keysets``; the first keyset's sealing and signing keys lead."""
        content: dict[str, bytes] = {}
        signing: list[Ed25519PrivateKey] = []
        trusted: list[Ed25519PublicKey] = []
        providers: list[KeyProvider] = []
        seal_key_id = None
        for ks in keysets:
            if not isinstance(ks, KeySet):
                raise TypeError(f"merge takes KeySet objects, got {type(ks).__name__}")
            for kid, key in ks._content.items():
                content.setdefault(kid, key)
            signing += ks._signing.values()
            trusted += ks._trusted.values()
            providers += ks._providers
            seal_key_id = seal_key_id or ks._seal_key_id
        return cls(content_keys=content, signing_keys=signing, trusted_keys=trusted,
                   providers=providers, seal_key_id=seal_key_id)

    def public(self) -> KeySet:
        """Only the public keys: what a device needs to check this publisher's signatures."""
        return KeySet(trusted_keys=self._trusted.values())

    def without_signing(self) -> KeySet:
        """Content and trusted keys without the signing keys: opens and verifies, cannot sign."""
        return KeySet(content_keys=self._content, trusted_keys=self._trusted.values(),
                      providers=self._providers, seal_key_id=self._seal_key_id)

    # -- what the sealed-blob format asks of a keyset ------------------------------------------
    @property
    def content_key_ids(self) -> list[str]:
        """Ids of the content keys held in memory (provider keys are not listed)."""
        return list(self._content)

    @property
    def signing_key_ids(self) -> list[str]:
        return list(self._signing)

    @property
    def trusted_key_ids(self) -> list[str]:
        return list(self._trusted)

    @property
    def requires_signature(self) -> bool:
        """True when this keyset trusts public keys, and so refuses unsigned or foreign-signed blobs."""
        return bool(self._trusted)

    def content_key(self, key_id: str) -> bytes:
        """The content key ``key_id``; raises :class:`KeyNotFoundError` when neither memory nor a provider has it."""
        key = self._content.get(key_id)
        for provider in self._providers:
            if key is not None:
                break
            key = provider(key_id)
        if key is None:
            raise KeyNotFoundError(
                f"no content key with id {key_id!r} in this keyset (it holds {self.content_key_ids or 'none'}); "
                "load the keyset the blob was sealed with")
        return _check_content_key(key, key_id)

    def sealing_key(self) -> tuple[str, bytes]:
        """``(key_id, key)`` that new blobs are sealed with."""
        if self._seal_key_id is None:
            raise KeyNotFoundError("this keyset has no content key to seal with (a public-only keyset "
                                   "can verify but not seal; a provider keyset needs seal_key_id=)")
        return self._seal_key_id, self.content_key(self._seal_key_id)

    def signing_key(self) -> tuple[str, Ed25519PrivateKey] | None:
        """``(key_id, private_key)`` that new blobs are signed with, or None."""
        return next(iter(self._signing.items()), None)

    def trusted_key(self, key_id: str) -> Ed25519PublicKey | None:
        return self._trusted.get(key_id)

    # -- files -----------------------------------------------------------------------------------
    def to_json(self, passphrase: str | bytes | None = None) -> str:
        """The keyset as the JSON document :meth:`save` writes. Provider keys are never exported."""
        secret = {
            "content_keys": [{"id": k, "key": _b64(v)} for k, v in self._content.items()],
            "signing_keys": [{"id": k, "private": _b64(v.private_bytes_raw())} for k, v in self._signing.items()],
        }
        own = set(self._signing)
        doc: dict = {
            "format": KEYSET_FORMAT,
            "version": KEYSET_VERSION,
            "trusted_keys": [{"id": k, "public": _b64(_raw_public(v))} for k, v in self._trusted.items() if k not in own],
        }
        if passphrase is None:
            doc.update(secret)
        else:
            doc["wrapped_secrets"] = _wrap(json.dumps(secret).encode(), passphrase, _trusted_aad(doc["trusted_keys"]))
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, passphrase: str | bytes | None = None) -> KeySet:
        """Parse a keyset JSON document (see :meth:`to_json`)."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"keyset is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != KEYSET_FORMAT:
            raise FormatError("not an ortseal keyset (missing \"format\": \"ortseal-keyset\")")
        if doc.get("version") != KEYSET_VERSION:
            raise FormatError(f"keyset version {doc.get('version')!r} is not supported (this ortseal reads {KEYSET_VERSION})")
        trusted = doc.get("trusted_keys", [])
        if "wrapped_secrets" in doc:
            if passphrase is None:
                raise KeyNotFoundError("this keyset is passphrase-protected: pass passphrase= (CLI: --passphrase-env VAR)")
            secret = json.loads(_unwrap(doc["wrapped_secrets"], passphrase, _trusted_aad(trusted)))
        else:
            secret = doc
        try:
            content = {check_key_id(e["id"]): _unb64(e["key"], "content key") for e in secret.get("content_keys", [])}
            signing = [Ed25519PrivateKey.from_private_bytes(_unb64(e["private"], "signing key"))
                       for e in secret.get("signing_keys", [])]
            public = [Ed25519PublicKey.from_public_bytes(_unb64(e["public"], "public key")) for e in trusted]
            ks = cls(content_keys=content, signing_keys=signing, trusted_keys=public)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"keyset entry is malformed: {exc}") from exc
        for e in secret.get("signing_keys", []) + trusted:
            if e["id"] not in ks._trusted:
                raise FormatError(f"keyset key id {e['id']!r} does not match its key")
        return ks

    def save(self, path: str | os.PathLike[str], passphrase: str | bytes | None = None, *, overwrite: bool = False) -> None:
        """Write the keyset to ``path`` (mode 0600, atomically); refuses to replace a file unless ``overwrite``."""
        atomic_write_bytes(path, self.to_json(passphrase).encode(), mode=0o600, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: str | bytes | None = None) -> KeySet:
        """Read a keyset file written by :meth:`save`."""
        return cls.from_json(Path(path).read_bytes(), passphrase)

    @classmethod
    def from_env(cls, name: str, passphrase: str | bytes | None = None) -> KeySet:
        """Read the keyset JSON from environment variable ``name``."""
        text = os.environ.get(name)
        if not text:
            raise KeyNotFoundError(f"environment variable {name} is not set or empty; it should hold a keyset's JSON")
        return cls.from_json(text, passphrase)

    def __repr__(self) -> str:
        return (f"KeySet(content={self.content_key_ids}, signing={self.signing_key_ids}, "
                f"trusted={self.trusted_key_ids}, providers={len(self._providers)})")


def _trusted_aad(trusted: list) -> bytes:
    # The trusted public keys stay readable but are bound to the wrapped secrets, so nobody can
    # slip their own key into a protected keyset's trust list.
    return _WRAP_AAD + json.dumps(trusted, sort_keys=True).encode()


def _passphrase_key(passphrase: str | bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _wrap(secret: bytes, passphrase: str | bytes, aad: bytes) -> dict:
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _passphrase_key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return {"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt),
            "cipher": "AES-256-GCM", "nonce": _b64(nonce),
            "ciphertext": _b64(AESGCM(key).encrypt(nonce, secret, aad))}


def _unwrap(wrapped: dict, passphrase: str | bytes, aad: bytes) -> bytes:
    try:
        n, r, p = int(wrapped["n"]), int(wrapped["r"]), int(wrapped["p"])
        if wrapped.get("kdf") != "scrypt" or wrapped.get("cipher") != "AES-256-GCM":
            raise FormatError("keyset wraps its secrets with an unknown kdf or cipher")
        if not (2 <= n <= SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
            raise FormatError("keyset asks for scrypt parameters outside the accepted range")
        salt, nonce = _unb64(wrapped["salt"], "salt"), _unb64(wrapped["nonce"], "nonce")
        ciphertext = _unb64(wrapped["ciphertext"], "ciphertext")
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"keyset wrapped_secrets is malformed: {exc}") from exc
    key = _passphrase_key(passphrase, salt, n, r, p)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as exc:
        raise TamperedError("cannot unwrap keyset: wrong passphrase, or the file was altered") from exc
