"""Keys: :class:`KeySet` holds AES-256 content keys, Ed25519 signing keys and trusted public keys.

A keyset file is JSON (spec: ``docs/format.md``, section "Keyset file")::

    ks = KeySet.generate()
    ks.save("keys.json", passphrase="correct horse")       # secrets wrapped with scrypt + AES-GCM
    device = KeySet.merge(ks.without_signing(), ks.public())  # can open and verify, cannot sign
    hsm = KeySet.from_provider(lambda key_id: fetch_from_kms(key_id), seal_key_id="prod-2026",
                               sign=lambda message: kms_sign(message), public_key=pinned_public_key)

Signing keys are :class:`ortseal.signing.Signer` objects: a key from the file, a PKCS#11 token
(:mod:`ortseal.pkcs11`) or a callback; every signature is checked against the signer's public key.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import FormatError, KeyNotFoundError, RevokedError, TamperedError
from .signing import CallbackSigner, KeySigner, Signer, as_signer, raw_public, signer_id

KEYSET_FORMAT = "ortseal-keyset"
KEYSET_VERSION = 1
CONTENT_KEY_SIZE = 32
MAX_KEY_ID_LENGTH = 64
SCRYPT_N = 2**17  # ~0.6 s and 128 MiB per guess here
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MIN_N = 2**15
SCRYPT_MAX_N = 2**18  # a file may demand at most 256 MiB and ~1.3 s of scrypt work
WILDCARD = "*"
ANY_SCOPE = (WILDCARD,)  # what trust_scope shows for a key trusted for every purpose
ENGINE_SCOPE = ("engine",)  # a device's own engine-signing key signs TensorRT engine cache files only
_WRAP_AAD = b"ortseal keyset v1"

KeyProvider = Callable[[str], "bytes | None"]
# A trust scope as held in memory: every constraint must accept the purpose; a constraint accepts it when
# any of its patterns matches. () accepts every purpose. One constraint per keyset that trusted the key
# (merge intersects them); see docs/format.md, "Trust scopes".
Scope = tuple[tuple[str, ...], ...]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)  # type: ignore[arg-type]  # a non-str is a TypeError
    except (ValueError, TypeError) as exc:
        raise FormatError(f"keyset: {what} is not valid base64") from exc


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


def _check_scope(scope: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(scope, (list, tuple)) or not scope or not all(isinstance(p, str) and p for p in scope):
        raise ValueError(f"a trust scope is a non-empty list of purpose patterns, e.g. ['model:*'], got {scope!r}")
    return tuple(scope)


def scope_matches(pattern: str, purpose: str) -> bool:
    """True if ``purpose`` matches the scope ``pattern``: literal text in which ``*`` matches any run of
    characters (none included); nothing else is special (``?``, ``[`` and ``\\`` are literal)."""
    parts = pattern.split(WILDCARD)
    if len(parts) == 1:
        return purpose == pattern
    head, *middle, tail = parts
    if len(purpose) < len(head) + len(tail) or not purpose.startswith(head) or not purpose.endswith(tail):
        return False
    at, end = len(head), len(purpose) - len(tail)
    for part in middle:  # leftmost match of each literal run is optimal when only '*' is special
        found = purpose.find(part, at, end)
        if found < 0:
            return False
        at = found + len(part)
    return True


def _intersect_patterns(a: str, b: str) -> tuple[str, ...] | None:
    """The purposes both patterns match, as patterns: ``(a,)`` if ``a``'s are all ``b``'s, ``()`` if they
    share none, None when that takes more than one pattern of this grammar."""
    for small, large in ((a, b), (b, a)):
        if WILDCARD not in small:  # a literal: the one purpose it names is in large or not
            return (small,) if scope_matches(large, small) else ()
        if scope_matches(large, small):  # large's '*' absorb small's: every expansion of small matches large
            return (small,)
    heads = a.split(WILDCARD)[0], b.split(WILDCARD)[0]
    tails = a.split(WILDCARD)[-1], b.split(WILDCARD)[-1]
    if not (heads[0].startswith(heads[1]) or heads[1].startswith(heads[0])) or \
            not (tails[0].endswith(tails[1]) or tails[1].endswith(tails[0])):
        return ()
    return None


def _intersect_scopes(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...] | None:
    """One constraint accepting exactly what both accept (possibly empty), or None if none can."""
    out: list[str] = []
    for x in a:
        for y in b:
            both = _intersect_patterns(x, y)
            if both is None:
                return None
            out += both
    return tuple(dict.fromkeys(out))


def _normalize(constraints: Sequence[tuple[str, ...]]) -> Scope:
    """The same trust, as few constraints as this grammar allows: constraints that accept everything are
    dropped, and pairs are folded into one wherever their intersection is a list of patterns."""
    kept: list[tuple[str, ...]] = []
    for c in constraints:
        if any(set(p) == {WILDCARD} for p in c):
            continue
        for i, k in enumerate(kept):
            if set(k) <= set(c):  # k accepts no more than c: c adds nothing
                break
            if set(c) < set(k):
                kept[i] = tuple(dict.fromkeys(c))
                break
            both = _intersect_scopes(k, c)
            if both is not None:
                kept[i] = both
                break
        else:
            kept.append(tuple(dict.fromkeys(c)))
    return tuple(kept)


class KeySet:
    """Content keys (first one seals), signing keys (first one signs) and trusted public keys.

    Every blob and sealed model must carry a valid signature by a key this keyset trusts (its own signing
    keys count, for any purpose unless scoped), unless the keyset was made with ``allow_unsigned=True``. A
    trusted key can be scoped to purposes: patterns over ``"model:<name>"``, ``"engine"``, ``"blob"`` in which
    ``*`` matches any run of characters and nothing else is special (:func:`scope_matches`).
    Signing keys are :class:`ortseal.signing.Signer` objects (a private key given is wrapped in one), so a
    key may stay in a token or a KMS. ``revoked`` key ids (from a verified trust bundle, :mod:`ortseal.trust`)
    are never trusted, whatever else trusts them, and survive :meth:`merge`.
    Build one with :meth:`generate`, :meth:`load`, :meth:`from_env`, :meth:`from_provider` or :meth:`merge`;
    the constructor takes already-made keys.
    """

    def __init__(
        self,
        *,
        content_keys: Mapping[str, bytes] | None = None,
        signing_keys: Iterable[Ed25519PrivateKey | Signer] = (),
        trusted_keys: Iterable[Ed25519PublicKey] = (),
        trust_scopes: Mapping[str, Sequence[str]] | None = None,
        providers: Iterable[KeyProvider] = (),
        seal_key_id: str | None = None,
        allow_unsigned: bool = False,
        revoked: Iterable[str] = (),
    ) -> None:
        self._content = {check_key_id(k): _check_content_key(v, k) for k, v in (content_keys or {}).items()}
        self._signing: dict[str, Signer] = {}
        for signer in map(as_signer, signing_keys):
            self._signing.setdefault(signer.key_id, signer)
        self._trusted = {signer_id(k): k for k in trusted_keys}
        for kid, key in self._signing.items():
            self._trusted.setdefault(kid, key.public_key())  # its own signing keys: trusted, for any purpose
        self._scopes: dict[str, Scope] = {check_key_id(k): _normalize([_check_scope(v)])
                                          for k, v in (trust_scopes or {}).items()}  # ...unless scoped here
        unknown = set(self._scopes) - set(self._trusted)
        if unknown:
            raise ValueError(f"trust_scopes names keys that are not trusted: {sorted(unknown)}")
        self._providers = list(providers)
        self._seal_key_id = check_key_id(seal_key_id) if seal_key_id else next(iter(self._content), None)
        if not isinstance(allow_unsigned, bool):
            raise TypeError("allow_unsigned must be a bool")
        self._allow_unsigned = allow_unsigned
        # Key ids a verified trust bundle revokes (ortseal.trust): never trusted, whatever else trusts them.
        self._revoked = frozenset(check_key_id(k) for k in revoked)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def generate(cls) -> KeySet:
        """A new keyset with one random AES-256 content key and one Ed25519 signing key."""
        return cls(
            content_keys={os.urandom(8).hex(): AESGCM.generate_key(bit_length=256)},
            signing_keys=[Ed25519PrivateKey.generate()],
        )

    @classmethod
    def from_provider(cls, fn: KeyProvider | None = None, *, seal_key_id: str | None = None,
                      sign: Callable[[bytes], bytes] | None = None,
                      public_key: Ed25519PublicKey | bytes | None = None) -> KeySet:
        """Content keys fetched on demand: ``fn(key_id)`` returns the 32-byte key, or None if unknown;
        and/or a signing key held elsewhere: ``sign(message)`` returns the Ed25519 signature of ``message``
        by the key whose public half is ``public_key`` (pinned by the caller, not asked of the service).
        Every signature ``sign`` returns is checked against ``public_key`` before anything is written
        (:class:`ortseal.signing.CallbackSigner`); a bad one raises :class:`~ortseal.errors.SignerError`.

        ``fn`` is called each time a key is needed (no caching here: cache in ``fn`` if your KMS is slow).
        For signed content it is called only after the signature (or the signed manifest naming the blob)
        verified, so ids chosen by a forged file never reach it; for an unsigned (MAC) model, or unsigned
        content under ``allow_unsigned=True``, it is called to check the MAC, with an id read from bytes
        not yet authenticated. ``seal_key_id`` names the key new blobs are sealed with. Combine
        with signing or trusted keys through :meth:`merge`.
        """
        if fn is None and sign is None:
            raise TypeError("from_provider needs fn (key_id -> content key), sign (message -> signature), or both")
        if fn is not None and not callable(fn):
            raise TypeError("from_provider needs a callable key_id -> bytes")
        if (sign is None) != (public_key is None):
            raise TypeError("from_provider: sign= needs public_key= (the key its signatures are checked against)")
        signers = [CallbackSigner(sign, public_key)] if sign is not None and public_key is not None else []
        return cls(providers=[fn] if fn is not None else [], seal_key_id=seal_key_id, signing_keys=signers)

    @classmethod
    def merge(cls, *keysets: KeySet) -> KeySet:
        """One keyset holding every key of ``keysets``; the first keyset's sealing and signing keys lead.

        Merging never widens trust: a key trusted by several keysets is trusted for a purpose only if every
        one of them that trusts it accepts that purpose (the scopes are intersected). The result allows
        unsigned blobs only if every keyset merged does.
        """
        content: dict[str, bytes] = {}
        signing: list[Signer] = []
        revoked: set[str] = set()
        trusted: dict[str, Ed25519PublicKey] = {}
        constraints: dict[str, list[tuple[str, ...]]] = {}
        providers: list[KeyProvider] = []
        seal_key_id = None
        for ks in keysets:
            if not isinstance(ks, KeySet):
                raise TypeError(f"merge takes KeySet objects, got {type(ks).__name__}")
            for kid, key in ks._content.items():
                content.setdefault(kid, key)
            signing += ks._signing.values()
            for kid, pub in ks._trusted.items():
                trusted.setdefault(kid, pub)
                constraints.setdefault(kid, []).extend(ks._scope(kid))
            providers += ks._providers
            revoked |= ks._revoked
            seal_key_id = seal_key_id or ks._seal_key_id
        merged = cls(content_keys=content, signing_keys=signing, trusted_keys=trusted.values(), providers=providers,
                     seal_key_id=seal_key_id, allow_unsigned=bool(keysets) and all(ks._allow_unsigned for ks in keysets),
                     revoked=revoked)
        return merged._scoped({kid: _normalize(c) for kid, c in constraints.items()})

    def _scoped(self, scopes: Mapping[str, Scope]) -> KeySet:
        """This keyset with these trust scopes (already normalized) in place of its own."""
        self._scopes = {kid: scope for kid, scope in scopes.items() if scope}
        return self

    def public(self, scope: Sequence[str] | None = None) -> KeySet:
        """Only the public keys: what a device needs to check this publisher's signatures.

        ``scope`` limits what the device will accept them for, e.g. ``["model:detector*"]``; it narrows a
        key's present scope, never widens it.
        """
        extra = [_check_scope(scope)] if scope is not None else []
        return KeySet(trusted_keys=self._trusted.values(), revoked=self._revoked)._scoped(
            {kid: _normalize([*self._scope(kid), *extra]) for kid in self._trusted})

    def for_device(self, *, engine_signing_key: bool = False) -> KeySet:
        """What a device holds: the content keys and every key this keyset trusts (the publisher's own
        signing keys as public keys), never a signing key of this keyset. So a device opens and verifies
        the publisher's models and engines and cannot sign anything the publisher's keys vouch for.

        ``engine_signing_key=True`` adds a fresh signing key of the device's own, trusted only for
        ``"engine"``: a device that builds TensorRT engines seals and signs its engine cache with it, and
        still accepts no model signed by it.
        """
        device = self.without_signing()
        if not engine_signing_key:
            return device
        own = Ed25519PrivateKey.generate()
        return KeySet(content_keys=device._content, signing_keys=[own], trusted_keys=device._trusted.values(),
                      providers=device._providers, seal_key_id=device._seal_key_id,
                      allow_unsigned=device._allow_unsigned, revoked=device._revoked)._scoped(
            {**device._scopes, signer_id(own.public_key()): _normalize([ENGINE_SCOPE])})

    def with_new_content_key(self, key_id: str | None = None) -> KeySet:
        """This keyset with a fresh random content key that seals from now on; every key it held is kept, so
        files sealed before still open (content key rotation: re-seal with ``reseal_model``, then give
        devices the new key beside the old one, ``for_device``)."""
        kid = check_key_id(key_id) if key_id is not None else os.urandom(8).hex()
        if kid in self._content:
            raise ValueError(f"this keyset already holds a content key {kid!r}")
        fresh = KeySet(content_keys={kid: AESGCM.generate_key(bit_length=256)}, seal_key_id=kid,
                       allow_unsigned=self._allow_unsigned)
        return KeySet.merge(fresh, self)

    def without_signing(self) -> KeySet:
        """Content and trusted keys without the signing keys: opens and verifies, cannot sign. Its former
        signing keys stay trusted with the scope they had (any purpose, unless scoped)."""
        return KeySet(content_keys=self._content, trusted_keys=self._trusted.values(), providers=self._providers,
                      seal_key_id=self._seal_key_id, allow_unsigned=self._allow_unsigned,
                      revoked=self._revoked)._scoped(self._scopes)

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
    def allow_unsigned(self) -> bool:
        """True only when the keyset was made with ``allow_unsigned=True``."""
        return self._allow_unsigned

    @property
    def requires_signature(self) -> bool:
        """True unless the keyset explicitly allows unsigned content."""
        return not self._allow_unsigned

    @property
    def has_content_keys(self) -> bool:
        """True if this keyset can decrypt anything (keys in memory or a provider)."""
        return bool(self._content or self._providers)

    def _scope(self, key_id: str) -> Scope:
        return self._scopes.get(key_id, ())

    def trust_scope(self, key_id: str) -> tuple[str, ...]:
        """The purpose patterns a trusted key is trusted for (``("*",)``: every purpose). A key merged from
        keysets with different scopes must match one pattern of each: shown as ``"(a|b)"`` per scope."""
        if key_id not in self._trusted:
            raise KeyNotFoundError(f"this keyset does not trust a key with id {key_id!r}")
        scope = self._scope(key_id)
        if not scope:
            return ANY_SCOPE
        return scope[0] if len(scope) == 1 else tuple(f"({'|'.join(c)})" for c in scope)

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

    @property
    def revoked_key_ids(self) -> list[str]:
        """Key ids revoked by a trust bundle merged into this keyset: never trusted for anything."""
        return sorted(self._revoked)

    def signing_key(self) -> tuple[str, Signer] | None:
        """``(key_id, signer)`` that new blobs are signed with, or None. ``signer.sign(message)`` checks
        each signature against the signer's public key (:class:`ortseal.signing.Signer`)."""
        return next(iter(self._signing.items()), None)

    def trusted_key(self, key_id: str, purpose: str) -> Ed25519PublicKey | None:
        """The public key ``key_id`` if this keyset trusts it for ``purpose``, else None; raises
        :class:`~ortseal.errors.RevokedError` for a key a trust bundle revoked."""
        self._refuse_revoked(key_id)
        key = self._trusted.get(key_id)
        if key is None or not all(any(scope_matches(p, purpose) for p in c) for c in self._scope(key_id)):
            return None
        return key

    def trusted_key_for_some(self, key_id: str, purpose_pattern: str) -> Ed25519PublicKey | None:
        """The public key ``key_id`` unless this keyset trusts it for no purpose matching ``purpose_pattern``
        (such as ``model:*``), so that a signature can be checked, or refused, before anything it signed is
        read. A key returned may still be trusted for none of those purposes: :meth:`trusted_key` gives the
        exact answer for one purpose. Raises :class:`~ortseal.errors.RevokedError` as :meth:`trusted_key` does."""
        self._refuse_revoked(key_id)
        key = self._trusted.get(key_id)
        if key is None or any(_intersect_scopes(c, (purpose_pattern,)) == () for c in self._scope(key_id)):
            return None
        return key

    def _refuse_revoked(self, key_id: str) -> None:
        if key_id in self._revoked:
            raise RevokedError(f"signing key {key_id} is revoked by the trust bundle this keyset holds: content it "
                               "signed is refused, even with a valid signature (re-seal it with a current key)")

    @property
    def has_providers(self) -> bool:
        """True if content keys may also come from a provider (:meth:`from_provider`), which lists none."""
        return bool(self._providers)

    def untrusted(self, what: str, signer_id: str, purpose: str) -> str:
        """Why :meth:`trusted_key` gave None, as a sentence about ``what`` (for the refusal's message): a signer
        this keyset does not know at all usually means the wrong keyset; a known one is scoped elsewhere."""
        if signer_id not in self._trusted:
            return f"{what} is signed by {signer_id}, which this keyset does not trust (wrong keyset?)"
        return (f"{what} is signed by {signer_id}, which this keyset does not trust for {purpose!r} (it trusts that key "
                "for other purposes only)")

    # -- files -----------------------------------------------------------------------------------
    def _public_doc(self) -> dict[str, Any]:
        own = {kid for kid, s in self._signing.items() if isinstance(s, KeySigner)}  # saved with the file
        if self._revoked:
            raise ValueError("this keyset holds revocations from a trust bundle, which a keyset file cannot express: "
                             "save the device's keys and keep the bundle beside them (ortseal.trust)")
        trusted = []
        for kid, pub in self._trusted.items():
            scope = self._scope(kid)
            if kid in own and not scope:
                continue  # a keyset's own signing keys are trusted without being listed
            if () in scope:  # the scopes merged share no purpose: trusted for nothing
                if kid in own:
                    raise ValueError(f"this keyset's own signing key {kid} is trusted for no purpose (keysets whose "
                                     "scopes for it share none were merged), which a keyset file cannot express; "
                                     "save the keysets separately and merge them after loading")
                continue  # listing it for nothing is the same as not listing it
            entry: dict[str, Any] = {"id": kid, "public": _b64(raw_public(pub))}
            if len(scope) > 1:
                raise ValueError(f"key {kid} is trusted only for purposes matching all of {[list(c) for c in scope]} "
                                 "(keysets with different scopes for it were merged), which one scope list cannot "
                                 "express; save the keysets separately and merge them after loading, or give the "
                                 "key one scope with public(scope=[...]) before merging")
            if scope:
                entry["scope"] = list(scope[0])
            trusted.append(entry)
        doc: dict[str, Any] = {"format": KEYSET_FORMAT, "version": KEYSET_VERSION, "trusted_keys": trusted}
        if self._allow_unsigned:
            doc["allow_unsigned"] = True
        return doc

    def to_json(self, passphrase: str | bytes | None = None) -> str:
        """The keyset as the JSON document :meth:`save` writes. Provider keys and signing keys held in a
        token or behind a callback are never exported (their public keys are listed as trusted keys)."""
        secret = {
            "content_keys": [{"id": k, "key": _b64(v)} for k, v in self._content.items()],
            # a token's or a callback's key never leaves where it is: only keys held in memory are saved
            "signing_keys": [{"id": k, "private": _b64(v.private_key.private_bytes_raw())}
                             for k, v in self._signing.items() if isinstance(v, KeySigner)],
        }
        doc = self._public_doc()
        if passphrase is None:
            doc.update(secret)
        else:
            doc["wrapped_secrets"] = _wrap(json.dumps(secret).encode(), passphrase, _policy_aad(doc))
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, passphrase: str | bytes | None = None) -> KeySet:
        """Parse a keyset JSON document (see :meth:`to_json`); any malformed file raises FormatError."""
        try:
            doc = json.loads(text)
        except UnicodeDecodeError as exc:
            raise FormatError("keyset is not valid JSON: it is not UTF-8 text (a model or another binary file?)") from exc
        except (ValueError, RecursionError) as exc:
            where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            raise FormatError(f"keyset is not valid JSON{where}") from exc
        if not isinstance(doc, dict) or doc.get("format") != KEYSET_FORMAT:
            raise FormatError("not an ortseal keyset (missing \"format\": \"ortseal-keyset\")")
        if type(doc.get("version")) is not int or doc.get("version") != KEYSET_VERSION:
            raise FormatError(f"keyset version {doc.get('version')!r} is not supported (this ortseal reads {KEYSET_VERSION})")
        try:
            return cls._from_doc(doc, passphrase)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"keyset entry is malformed: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def _from_doc(cls, doc: dict[str, Any], passphrase: str | bytes | None) -> KeySet:
        trusted = doc.get("trusted_keys", [])
        allow_unsigned = doc.get("allow_unsigned", False)
        if not isinstance(trusted, list) or not all(isinstance(e, dict) for e in trusted):
            raise FormatError("keyset trusted_keys must be a list of objects")
        if not isinstance(allow_unsigned, bool):
            raise FormatError("keyset allow_unsigned must be true or false")
        if "wrapped_secrets" in doc:
            if passphrase is None:
                raise KeyNotFoundError("this keyset is passphrase-protected: pass passphrase=")
            policy = {"trusted_keys": trusted, **({"allow_unsigned": True} if allow_unsigned else {})}
            try:
                secret = json.loads(_unwrap(doc["wrapped_secrets"], passphrase, _policy_aad(policy)))
            except (ValueError, UnicodeDecodeError) as exc:
                raise FormatError("keyset wrapped secrets are not valid JSON") from exc
        else:
            secret = doc
        if not isinstance(secret, dict):
            raise FormatError("keyset secrets must be an object")
        content_entries, signing_entries = secret.get("content_keys", []), secret.get("signing_keys", [])
        if not all(isinstance(x, list) and all(isinstance(e, dict) for e in x) for x in (content_entries, signing_entries)):
            raise FormatError("keyset content_keys and signing_keys must be lists of objects")
        content = {check_key_id(e["id"]): _unb64(e["key"], "content key") for e in content_entries}
        signing = [Ed25519PrivateKey.from_private_bytes(_unb64(e["private"], "signing key")) for e in signing_entries]
        public = [Ed25519PublicKey.from_public_bytes(_unb64(e["public"], "public key")) for e in trusted]
        # Each entry's id must be its own key's (an id names the key it is: no entry may borrow another's
        # scope or trust), and each id appears once per list.
        for entries, keys in ((signing_entries, [k.public_key() for k in signing]), (trusted, public)):
            ids = [e["id"] for e in entries]
            if len(set(ids)) != len(ids):
                raise FormatError("keyset lists a key id twice")
            for e, key in zip(entries, keys, strict=False):
                if e["id"] != signer_id(key):
                    raise FormatError(f"keyset key id {e['id']!r} does not match its key")
        if len(content) != len(content_entries):
            raise FormatError("keyset lists a content key id twice")
        scopes = {e["id"]: e["scope"] for e in trusted if "scope" in e}
        return cls(content_keys=content, signing_keys=signing, trusted_keys=public, trust_scopes=scopes,
                   allow_unsigned=allow_unsigned)

    def save(self, path: str | os.PathLike[str], passphrase: str | bytes | None = None, *, overwrite: bool = False) -> None:
        """Write the keyset to ``path`` (mode 0600, atomically); refuses to replace a file unless ``overwrite``."""
        from ._atomic import atomic_write_bytes  # saving only: tempfile, shutil

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
                f"trusted={self.trusted_key_ids}, providers={len(self._providers)}, "
                f"allow_unsigned={self._allow_unsigned}" + (f", revoked={self.revoked_key_ids}" if self._revoked else "")
                + ")")


def _policy_aad(doc: Mapping[str, Any]) -> bytes:
    # The trust list and the signature policy stay readable but are bound to the wrapped secrets, so
    # nobody can slip their own key into a protected keyset, widen a scope, or switch signatures off.
    policy = {"trusted_keys": doc["trusted_keys"], **({"allow_unsigned": True} if doc.get("allow_unsigned") else {})}
    return _WRAP_AAD + json.dumps(policy, sort_keys=True).encode()


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    if not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be str or bytes")
    return passphrase


def _scrypt(phrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    """The wrapping key a passphrase gives (imported here: only passphrase-protected keysets need scrypt)."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(phrase)


def _wrap(secret: bytes, passphrase: str | bytes, aad: bytes) -> dict:
    phrase = _passphrase_bytes(passphrase)
    if not phrase:
        raise ValueError("passphrase must not be empty")
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _scrypt(phrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return {"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt),
            "cipher": "AES-256-GCM", "nonce": _b64(nonce),
            "ciphertext": _b64(AESGCM(key).encrypt(nonce, secret, aad))}


def _unwrap(wrapped: Any, passphrase: str | bytes, aad: bytes) -> bytes:
    phrase = _passphrase_bytes(passphrase)
    if not phrase:
        raise KeyNotFoundError("the passphrase given is empty; this keyset needs its passphrase")
    if not isinstance(wrapped, dict):
        raise FormatError("keyset wrapped_secrets must be an object")
    if wrapped.get("kdf") != "scrypt" or wrapped.get("cipher") != "AES-256-GCM":
        raise FormatError("keyset wraps its secrets with an unknown kdf or cipher")
    n, r, p = wrapped.get("n"), wrapped.get("r"), wrapped.get("p")
    if type(n) is not int or type(r) is not int or type(p) is not int:
        raise FormatError("keyset scrypt parameters must be integers")
    if not (SCRYPT_MIN_N <= n <= SCRYPT_MAX_N and n & (n - 1) == 0 and r == SCRYPT_R and p == SCRYPT_P):
        raise FormatError(f"keyset asks for scrypt n={n}, r={r}, p={p}; accepted: n a power of two in "
                          f"[2**15, 2**18], r=8, p=1")
    salt, nonce = _unb64(wrapped.get("salt"), "salt"), _unb64(wrapped.get("nonce"), "nonce")
    ciphertext = _unb64(wrapped.get("ciphertext"), "ciphertext")
    if len(salt) < 16 or len(nonce) != 12:
        raise FormatError("keyset wrapped_secrets salt or nonce has the wrong size")
    key = _scrypt(phrase, salt, n, r, p)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as exc:
        raise TamperedError("cannot unwrap keyset: wrong passphrase, or the file was altered") from exc


def as_keyset(keys: KeySet | str | os.PathLike[str], passphrase: str | bytes | None = None) -> KeySet:
    """``keys`` itself when it is a :class:`KeySet`; else the keyset file at that path (``"env:VAR"``: the
    keyset JSON held in environment variable ``VAR``), unlocked with ``passphrase`` when protected."""
    if isinstance(keys, KeySet):
        return keys
    if isinstance(keys, str) and keys.startswith("env:"):
        return KeySet.from_env(keys[4:], passphrase)
    if isinstance(keys, (str, os.PathLike)):
        return KeySet.load(keys, passphrase)
    raise TypeError(f"keys must be an ortseal.KeySet or the path of a keyset file, got {type(keys).__name__}")
