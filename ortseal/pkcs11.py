"""Signing with an Ed25519 key that never leaves a PKCS#11 token (an HSM, a smart card, SoftHSM2).

The key is named by an RFC 7512 URI; the module (the vendor's PKCS#11 library) and the user PIN come from
arguments, environment variables or the URI's ``module-path`` / ``pin-source`` (a file), never from the
URI's ``pin-value`` (a PIN in clear on a command line or in a build log)::

    signer = TokenSigner("pkcs11:token=release;object=model-signing?module-path=/usr/lib/softhsm/libsofthsm2.so",
                         pin=read_pin())
    publisher = KeySet.merge(KeySet(signing_keys=[signer]), content_keys)
    ortseal.seal_model("model.onnx", "model.sealed.onnx", publisher)

Signatures are CKM_EDDSA (pure Ed25519) made in the token and, like every :class:`~ortseal.signing.Signer`'s,
checked against the token's public key before they are used.

Binding: python-pkcs11 (``pip install ortseal[pkcs11]``), chosen over PyKCS11 (measured here, 0.10.1 vs
1.5.20, both with cp310-cp314 wheels and CKM_EDDSA): it maps every CKR_* code to its own exception class
(``PinIncorrect``, ``DeviceRemoved``, ``NoSuchKey``...), which our typed errors are built from, finds objects
by attribute templates, and its wheels need glibc 2.17 (PyKCS11's 2.24). It costs 8.8 MB installed with
asn1crypto (PyKCS11 5.4 MB) and ~80 ms to import (PyKCS11 ~12 ms), paid only when a ``pkcs11:`` key is used.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import (
    OrtsealError,
    SignerError,
    TokenKeyTypeError,
    TokenObjectNotFoundError,
    TokenPinError,
    TokenUnavailableError,
)
from .signing import PUBLIC_KEY_SIZE, Signer, as_public_key, signer_id

URI_SCHEME = "pkcs11:"
MODULE_ENV = "ORTSEAL_PKCS11_MODULE"  # the PKCS#11 module's path when neither module= nor module-path names it
PIN_ENV = "ORTSEAL_PKCS11_PIN"  # the user PIN when neither pin= nor pin-source gives it
# RFC 7512 path attributes this signer understands; "type" must be "private" when given.
_PATH_ATTRS = {"token", "manufacturer", "serial", "model", "object", "id", "type"}
_QUERY_ATTRS = {"module-path", "pin-source", "module-name"}
# CKA_EC_PARAMS of an Ed25519 key: the OID 1.3.101.112, or the curve's PrintableString name (PKCS#11 3.0)
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), b"\x13\x0cedwards25519")
_LOCK = threading.Lock()
_LIBS: dict[str, Any] = {}


def is_pkcs11_uri(value: object) -> bool:
    """True for a string that is a ``pkcs11:`` URI (RFC 7512)."""
    return isinstance(value, str) and value.startswith(URI_SCHEME)


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI a signer uses (values percent-decoded)."""

    path: dict[str, bytes] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        value = self.path.get(name)
        return value.decode("utf-8") if value is not None else None

    def redacted(self) -> str:
        """The URI for messages: path attributes only (nothing from the query, where a PIN file is named)."""
        parts = [f"{k}={v.hex() if k == 'id' else v.decode('utf-8', 'replace')}" for k, v in self.path.items()]
        return URI_SCHEME + ";".join(parts)


def parse_uri(uri: str) -> Pkcs11Uri:
    """Parse a ``pkcs11:`` URI; ValueError for anything malformed, unknown, or a ``pin-value`` (a PIN in clear)."""
    if not is_pkcs11_uri(uri):
        raise ValueError(f"not a pkcs11: URI (RFC 7512): {uri!r}")
    rest = uri[len(URI_SCHEME):]
    path_text, _, query_text = rest.partition("?")
    path: dict[str, bytes] = {}
    for part in filter(None, path_text.split(";")):
        name, eq, value = part.partition("=")
        if not eq or name not in _PATH_ATTRS or name in path:
            raise ValueError(f"pkcs11 URI: unknown, repeated or empty path attribute {name!r} (known: "
                             f"{', '.join(sorted(_PATH_ATTRS))})")
        path[name] = unquote_to_bytes(value)
    query: dict[str, str] = {}
    for part in filter(None, query_text.split("&")):
        name, eq, value = part.partition("=")
        if name == "pin-value":
            raise ValueError("pkcs11 URI: pin-value puts the PIN in clear in the URI; give it with pin-source=FILE, "
                             f"the {PIN_ENV} environment variable, or pass pin=")
        if not eq or name not in _QUERY_ATTRS or name in query:
            raise ValueError(f"pkcs11 URI: unknown, repeated or empty query attribute {name!r} (known: "
                             f"{', '.join(sorted(_QUERY_ATTRS))})")
        query[name] = unquote_to_bytes(value).decode("utf-8")
    if path.get("type", b"private") not in (b"private", b"public"):
        raise ValueError("pkcs11 URI: type must be private (the signing key) or public")
    if "object" not in path and "id" not in path:
        raise ValueError("pkcs11 URI names no key: give object=LABEL or id=%XX (e.g. pkcs11:token=release;object=signing)")
    return Pkcs11Uri(path, query)


def _import_pkcs11() -> Any:
    try:
        import pkcs11  # noqa: PLC0415 - only where a token is used
    except ImportError as exc:
        raise TokenUnavailableError("signing with a PKCS#11 token needs python-pkcs11: pip install 'ortseal[pkcs11]'") from exc
    return pkcs11


def _module_path(uri: Pkcs11Uri, module: str | os.PathLike[str] | None) -> str:
    given = module if module is not None else uri.query.get("module-path") or os.environ.get(MODULE_ENV)
    if not given:
        raise TokenUnavailableError(f"no PKCS#11 module named: pass module=, put "
                                    f"module-path=/path/to/module.so in the URI, or set {MODULE_ENV}")
    path = Path(given)
    if not path.is_file():
        raise TokenUnavailableError(f"PKCS#11 module {path} does not exist: install the token's library (SoftHSM2: "
                                    "apt-get install softhsm2, /usr/lib/softhsm/libsofthsm2.so) or fix the path")
    return str(path)


def _load_library(path: str) -> Any:
    """The PKCS#11 module at ``path``, initialized once per process (C_Initialize may be called only once)."""
    pkcs11 = _import_pkcs11()
    with _LOCK:
        lib = _LIBS.get(path)
        if lib is None:
            try:
                lib = _LIBS[path] = pkcs11.lib(path)
            except (pkcs11.PKCS11Error, OSError, RuntimeError) as exc:
                raise TokenUnavailableError(f"cannot load PKCS#11 module {path}: {type(exc).__name__} {exc}".rstrip()) from exc
        return lib


def _pin(uri: Pkcs11Uri, pin: str | bytes | None) -> str | None:
    if pin is not None:
        return pin.decode("utf-8") if isinstance(pin, bytes) else pin
    source = uri.query.get("pin-source")
    if source is not None:
        file = source[len("file:"):] if source.startswith("file:") else source
        try:
            return Path(file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise TokenPinError(f"pkcs11 URI pin-source {file}: {exc.strerror}") from exc
    return os.environ.get(PIN_ENV) or None


def _public_point(raw: bytes) -> bytes:
    """The 32 bytes of CKA_EC_POINT for Ed25519: raw, or DER OCTET STRING ``04 20 ...`` (both are in use)."""
    if len(raw) == PUBLIC_KEY_SIZE:
        return raw
    if len(raw) == PUBLIC_KEY_SIZE + 2 and raw[:2] == b"\x04\x20":
        return raw[2:]
    raise TokenKeyTypeError(f"the token's Ed25519 public key has an EC_POINT of {len(raw)} bytes, not 32")


class TokenSigner(Signer):
    """An Ed25519 signing key in a PKCS#11 token, named by an RFC 7512 URI.

    ``module`` is the PKCS#11 library (else the URI's ``module-path``, else ``$ORTSEAL_PKCS11_MODULE``);
    ``pin`` the user PIN (else the URI's ``pin-source`` file, else ``$ORTSEAL_PKCS11_PIN``; a token with a
    protected authentication path needs none). ``public_key``, when given, pins the key the token must hold.
    A private key the token could let out (CKA_EXTRACTABLE, or not always CKA_SENSITIVE) is refused with
    :class:`TokenKeyTypeError` unless ``allow_extractable=True``.
    The session stays open until :meth:`close` (or the end of a ``with`` block).
    Raises :class:`TokenPinError`, :class:`TokenObjectNotFoundError`, :class:`TokenKeyTypeError` or
    :class:`TokenUnavailableError`, each naming what to fix.
    """

    def __init__(self, uri: str, *, module: str | os.PathLike[str] | None = None, pin: str | bytes | None = None,
                 public_key: Ed25519PublicKey | bytes | None = None, allow_extractable: bool = False) -> None:
        parsed = parse_uri(uri)
        self.uri = parsed
        pkcs11 = _import_pkcs11()
        self._pk = pkcs11
        lib = _load_library(_module_path(parsed, module))
        where = parsed.redacted()
        tokens = self._matching_tokens(lib, parsed, where)
        if len(tokens) != 1:
            raise TokenObjectNotFoundError(
                f"{where}: {'no' if not tokens else len(tokens)} token{'s' if len(tokens) != 1 else ''} match"
                f"{'es' if len(tokens) == 1 else ''}; name exactly one with token=LABEL (and serial= where labels repeat)"
                " (the token's own tools list them: pkcs11-tool, softhsm2-util)")
        token = tokens[0]
        user_pin = _pin(parsed, pin)  # read once (a pin-source file included)
        self._pin_given = user_pin is not None
        try:
            try:
                self._session = token.open(user_pin=user_pin)
            except pkcs11.UserAlreadyLoggedIn:
                # Login is per process and token (PKCS#11 sessions share it): another signer of this process
                # logged in with a PIN the token accepted, and its session is still open.
                self._session = token.open()
        except pkcs11.PinIncorrect as exc:
            raise TokenPinError(f"{where}: the token refused the PIN (wrong PIN; tokens lock after a few tries): "
                                "give the user PIN of this token") from exc
        except pkcs11.PinLocked as exc:
            raise TokenPinError(f"{where}: the PIN is locked (too many wrong tries): the token's security officer "
                                "must unlock it") from exc
        except pkcs11.PinExpired as exc:
            raise TokenPinError(f"{where}: the PIN has expired: set a new one with the token's tools") from exc
        except (pkcs11.PinInvalid, pkcs11.PinLenRange, pkcs11.UserNotLoggedIn) as exc:
            raise TokenPinError(f"{where}: the token needs its user PIN: pass pin=, put pin-source=FILE in the URI, "
                                f"or set {PIN_ENV}") from exc
        except (pkcs11.DeviceRemoved, pkcs11.TokenNotPresent, pkcs11.TokenNotRecognised, pkcs11.DeviceError) as exc:
            raise TokenUnavailableError(f"{where}: the token is not there ({type(exc).__name__}): insert it") from exc
        try:
            self._private, public = self._find_keys(where)
        except BaseException:
            self._session.close()
            raise
        super().__init__(public, source=where)
        if not allow_extractable and (self.extractable or not self.sensitive):
            self.close()
            raise TokenKeyTypeError(f"{where}: the private key can leave the token (CKA_EXTRACTABLE set, or "
                                    "CKA_SENSITIVE / CKA_NEVER_EXTRACTABLE / CKA_ALWAYS_SENSITIVE not): make a key "
                                    "with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false, or pass allow_extractable=True "
                                    "to sign with it anyway")
        if public_key is not None and signer_id(as_public_key(public_key)) != self.key_id:
            self.close()
            raise TokenObjectNotFoundError(f"{where} holds key {self.key_id}, not the pinned key "
                                           f"{signer_id(as_public_key(public_key))}: name the right object")

    def _matching_tokens(self, lib: Any, uri: Pkcs11Uri, where: str) -> list[Any]:
        """The tokens the URI's token attributes match. A slot whose token cannot be read (SoftHSM2 after a
        token was deleted, a reader in a bad state) is skipped: it cannot be the token named."""
        pk = self._pk
        try:
            slots = lib.get_slots(token_present=True)
        except pk.PKCS11Error as exc:
            raise TokenUnavailableError(f"{where}: the PKCS#11 module cannot list its slots ({type(exc).__name__})") from exc
        wanted = {attr: uri.text(name) for attr, name in (("label", "token"), ("manufacturer_id", "manufacturer"),
                                                          ("model", "model")) if uri.text(name) is not None}
        tokens = []
        for slot in slots:
            try:
                token = slot.get_token()
            except pk.PKCS11Error:
                continue
            serial = token.serial.decode("ascii", "replace") if isinstance(token.serial, bytes) else token.serial
            if all(getattr(token, attr) == value for attr, value in wanted.items()) and \
                    uri.text("serial") in (None, serial):
                tokens.append(token)
        return tokens

    def _template(self, kind: Any) -> dict[Any, Any]:
        a = self._pk.Attribute
        template: dict[Any, Any] = {a.CLASS: kind}
        if "object" in self.uri.path:
            template[a.LABEL] = self.uri.text("object")
        if "id" in self.uri.path:
            template[a.ID] = self.uri.path["id"]
        return template

    def _find_keys(self, where: str) -> tuple[Any, bytes]:
        pk, a = self._pk, self._pk.Attribute
        found = list(self._session.get_objects(self._template(pk.ObjectClass.PRIVATE_KEY)))
        if not found and not self._pin_given:
            raise TokenPinError(f"{where}: no private key is visible without logging in: give the token's user PIN "
                                f"(pass pin=, put pin-source=FILE in the URI, or set {PIN_ENV})")
        if len(found) != 1:
            raise TokenObjectNotFoundError(
                f"{where}: {'no' if not found else len(found)} private key object{'s' if len(found) != 1 else ''} "
                "match in the token; name one with object=LABEL and/or id=%XX (the token's own tools list them, "
                "e.g. pkcs11-tool)")
        private = found[0]
        key_type = private[a.KEY_TYPE]
        if key_type != pk.KeyType.EC_EDWARDS:
            name = getattr(key_type, "name", str(key_type))
            raise TokenKeyTypeError(f"{where} is a {name} key; ortseal signs with Ed25519 only: generate an Ed25519 "
                                    "key in the token (CKM_EC_EDWARDS_KEY_PAIR_GEN; pkcs11-tool: key type "
                                    "EC:edwards25519) and name it in the URI")
        publics = list(self._session.get_objects({**self._template(pk.ObjectClass.PUBLIC_KEY),
                                                  a.ID: private[a.ID]}))
        if len(publics) != 1:
            raise TokenObjectNotFoundError(f"{where}: the token holds no single public key object with the private "
                                           "key's CKA_ID, which ortseal needs to check its signatures; store the "
                                           "public key in the token with the same id")
        public = publics[0]
        if public[a.EC_PARAMS] not in _ED25519_PARAMS:
            raise TokenKeyTypeError(f"{where} is an Edwards-curve key but not Ed25519 (Ed448?); ortseal signs with Ed25519")
        return private, _public_point(public[a.EC_POINT])

    @property
    def sensitive(self) -> bool:
        """CKA_SENSITIVE and CKA_ALWAYS_SENSITIVE of the private key: the token never reveals it in clear."""
        a = self._pk.Attribute
        return bool(self._private[a.SENSITIVE]) and bool(self._private[a.ALWAYS_SENSITIVE])

    @property
    def extractable(self) -> bool:
        """CKA_EXTRACTABLE of the private key, or not CKA_NEVER_EXTRACTABLE: it could leave the token wrapped."""
        a = self._pk.Attribute
        return bool(self._private[a.EXTRACTABLE]) or not bool(self._private[a.NEVER_EXTRACTABLE])

    def _sign(self, message: bytes) -> bytes:
        pk = self._pk
        try:
            return bytes(self._private.sign(message, mechanism=pk.Mechanism.EDDSA))
        except (pk.DeviceRemoved, pk.TokenNotPresent, pk.SessionClosed, pk.SessionHandleInvalid, pk.DeviceError,
                pk.ObjectHandleInvalid, pk.KeyHandleInvalid) as exc:
            raise TokenUnavailableError(f"{self.source}: the token went away while signing ({type(exc).__name__}): "
                                        "insert it again and re-run; nothing was written") from exc
        except pk.MechanismInvalid as exc:
            raise TokenKeyTypeError(f"{self.source}: the token does not offer CKM_EDDSA: it cannot sign with Ed25519") from exc
        except pk.PKCS11Error as exc:
            raise SignerError(f"{self.source}: the token failed to sign ({type(exc).__name__})") from exc

    def close(self) -> None:
        """Log out and close the session (the key stays in the token)."""
        session, self._session = getattr(self, "_session", None), None
        if session is not None:
            try:
                session.close()
            except (self._pk.PKCS11Error, OrtsealError):
                pass  # a removed token has no session to close

    def __enter__(self) -> TokenSigner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
