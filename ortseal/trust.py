"""Trust bundles: which signers a device trusts (with their scopes), which it must refuse, signed by a root
key the device pins (spec: ``docs/format.md``, "Trust bundle v1").

Publisher (the root key stays offline or in a token)::

    bundle = TrustBundle.initial(root_public)                       # version 1, no signers
    bundle = bundle.with_signer(signer_public, scope=["model:*"])   # version 2
    data = bundle.sign(root_signer)                                  # bytes to ship

Device::

    trust = install_bundle(data, root=pinned_root_public, state="/var/lib/app/ortseal-trust.json")
    keys = KeySet.merge(device_content_keys, trust.keyset())        # open models with it

``install_bundle`` refuses a bundle not signed by the pinned root (or by the root it rotated to), one older
than the last accepted, and one with the last accepted version but other content; the accepted version,
payload digest and root are kept in the state file. A key a bundle revokes is refused by the keyset it
gives even where another keyset merged with it trusts that key.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._atomic import atomic_write_bytes
from .errors import FormatError, RollbackError, TamperedError
from .keys import KeySet, _check_scope
from .signing import Signer, as_public_key, check_signer_id, raw_public, signer_id

BUNDLE_FORMAT = "ortseal-trust-bundle"
BUNDLE_VERSION = 1  # of the format; the bundle's own number is ``serial``
STATE_FORMAT = "ortseal-trust-state"
SIGNATURE_LABEL = b"ortseal trust bundle v1\x00"
MAX_BUNDLE_BYTES = 1 << 20
MAX_SERIAL = (1 << 53) - 1  # exact in every JSON reader (RFC 8785 numbers are IEEE doubles)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"trust bundle: {what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise FormatError(f"trust bundle: {what} is not valid base64") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two readers that keep different copies of a repeated name would see two bundles under one signature.
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise FormatError(f"trust bundle repeats the member {name!r}")
        out[name] = value
    return out


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{what} is not valid JSON: {exc}") from None


def _public(entry: object, what: str) -> tuple[str, Ed25519PublicKey]:
    """``(id, key)`` of a ``{"id", "public"}`` object, its id checked to be its key's."""
    if not isinstance(entry, dict):
        raise FormatError(f"trust bundle: {what} must be an object")
    raw = _unb64(entry.get("public"), f"{what} public key")
    if len(raw) != 32:
        raise FormatError(f"trust bundle: {what} public key is not 32 bytes")
    key = Ed25519PublicKey.from_public_bytes(raw)
    if entry.get("id") != signer_id(key):
        raise FormatError(f"trust bundle: {what} id {entry.get('id')!r} does not match its key")
    return signer_id(key), key


@dataclass(frozen=True)
class TrustedSigner:
    """One signer a bundle trusts, for the purposes its scope names."""

    key: Ed25519PublicKey
    scope: tuple[str, ...]

    @property
    def key_id(self) -> str:
        return signer_id(self.key)


@dataclass(frozen=True)
class TrustBundle:
    """The content of a trust bundle: its serial (higher is newer), its root key, signers, revoked ids."""

    serial: int
    root: Ed25519PublicKey
    signers: dict[str, TrustedSigner] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()

    # -- building (publisher) -------------------------------------------------------------------
    @classmethod
    def initial(cls, root: Ed25519PublicKey | bytes) -> TrustBundle:
        """Serial 1, signed by ``root``, trusting nobody yet."""
        return cls(1, as_public_key(root))

    def _next(self, **changes: Any) -> TrustBundle:
        if self.serial >= MAX_SERIAL:
            raise ValueError("the bundle serial cannot grow further")
        return replace(self, serial=self.serial + 1, **changes)

    def with_signer(self, key: Ed25519PublicKey | bytes, scope: Sequence[str] = ("*",)) -> TrustBundle:
        """The next bundle, trusting ``key`` for ``scope`` (replacing its scope if already trusted)."""
        key = as_public_key(key)
        kid = signer_id(key)
        if kid in self.revoked:
            raise ValueError(f"key {kid} is revoked in this bundle; a revoked key is never trusted again: make a new one")
        if kid == signer_id(self.root):
            raise ValueError("the root key signs bundles only: give content a signing key of its own")
        return self._next(signers={**self.signers, kid: TrustedSigner(key, _check_scope(list(scope)))})

    def revoking(self, key_id: str) -> TrustBundle:
        """The next bundle, with ``key_id`` removed from the signers and listed as revoked (ValueError unless
        it is a signer id as ortseal writes them: one spelled otherwise would revoke nothing)."""
        check_signer_id(key_id)
        if key_id == signer_id(self.root):
            raise ValueError("the root is not revoked but replaced: rotate it (with_root) with the old root's signature")
        return self._next(signers={k: v for k, v in self.signers.items() if k != key_id},
                          revoked=self.revoked | {key_id})

    def with_root(self, new_root: Ed25519PublicKey | bytes) -> TrustBundle:
        """The next bundle under a new root: sign it with both the old and the new root (:meth:`sign`)."""
        new_root = as_public_key(new_root)
        if signer_id(new_root) in self.signers or signer_id(new_root) in self.revoked:
            raise ValueError("the new root must be a key of its own (not a signer, not revoked)")
        return self._next(root=new_root)

    def payload(self) -> bytes:
        """The signed bytes: RFC 8785 canonical JSON of the bundle's content."""
        doc: dict[str, Any] = {
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "serial": self.serial,
            "root": {"id": signer_id(self.root), "public": _b64(raw_public(self.root))},
            "signers": [{"id": kid, "public": _b64(raw_public(s.key)), "scope": list(s.scope)}
                        for kid, s in sorted(self.signers.items())],
            "revoked": sorted(self.revoked),
        }
        return rfc8785.dumps(doc)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the payload: what a device remembers of the bundle it accepted."""
        return hashlib.sha256(self.payload()).digest()

    def sign(self, *signers: Signer) -> bytes:
        """The bundle file: the payload and a signature by each of ``signers`` (the root; when the root
        changes, the previous root and the new one)."""
        payload = self.payload()
        message = SIGNATURE_LABEL + payload
        signatures = [{"id": s.key_id, "signature": _b64(s.sign(message))} for s in signers]
        if len({s["id"] for s in signatures}) != len(signatures):
            raise ValueError("each key signs a bundle once")
        doc = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "payload": _b64(payload), "signatures": signatures}
        return (json.dumps(doc, indent=2) + "\n").encode()

    # -- using (device) -------------------------------------------------------------------------
    def keyset(self) -> KeySet:
        """The trusted keys with their scopes, and the revoked ids: merge it with the device's content keys."""
        return KeySet(trusted_keys=[s.key for s in self.signers.values()],
                      trust_scopes={kid: s.scope for kid, s in self.signers.items()}, revoked=self.revoked)

    def describe(self) -> dict[str, Any]:
        """What ``ortseal trust show`` prints."""
        return {"serial": self.serial, "root": signer_id(self.root), "digest": self.digest.hex(),
                "signers": {kid: list(s.scope) for kid, s in sorted(self.signers.items())},
                "revoked": sorted(self.revoked)}


# -- reading a bundle file --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Envelope:
    payload: bytes
    signatures: dict[str, bytes]


def _envelope(data: bytes) -> _Envelope:
    if len(data) > MAX_BUNDLE_BYTES:
        raise FormatError(f"trust bundle is over {MAX_BUNDLE_BYTES} bytes")
    doc = _json(data, "trust bundle")
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise FormatError(f"not an ortseal trust bundle (missing \"format\": \"{BUNDLE_FORMAT}\")")
    if type(doc.get("version")) is not int or doc["version"] != BUNDLE_VERSION:
        raise FormatError(f"trust bundle format version {doc.get('version')!r} is not supported (this ortseal reads "
                          f"{BUNDLE_VERSION})")
    if set(doc) != {"format", "version", "payload", "signatures"}:
        raise FormatError("trust bundle has unknown or missing members")
    entries = doc["signatures"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) and set(e) == {"id", "signature"} for e in entries):
        raise FormatError("trust bundle signatures must be a list of {\"id\", \"signature\"} objects")
    signatures: dict[str, bytes] = {}
    for e in entries:
        if not isinstance(e["id"], str) or e["id"] in signatures:
            raise FormatError("trust bundle lists a signature id twice, or one that is not a string")
        signatures[e["id"]] = _unb64(e["signature"], "signature")
    return _Envelope(_unb64(doc["payload"], "payload"), signatures)


def _verify(envelope: _Envelope, key: Ed25519PublicKey, role: str) -> None:
    kid = signer_id(key)
    signature = envelope.signatures.get(kid)
    if signature is None:
        raise TamperedError(f"trust bundle is not signed by the {role} {kid} (signed by: "
                            f"{', '.join(envelope.signatures) or 'nobody'})")
    try:
        key.verify(signature, SIGNATURE_LABEL + envelope.payload)
    except InvalidSignature:
        raise TamperedError(f"trust bundle's signature by the {role} {kid} does not verify: the bundle was "
                            "changed after it was signed") from None


def _parse_payload(payload: bytes) -> TrustBundle:
    """The bundle the (already verified) payload describes; FormatError unless it is exactly canonical."""
    doc = _json(payload, "trust bundle payload")
    try:
        if rfc8785.dumps(doc) != payload:
            raise FormatError("trust bundle payload is not RFC 8785 canonical JSON")
    except (TypeError, ValueError, rfc8785.CanonicalizationError) as exc:
        raise FormatError(f"trust bundle payload cannot be canonicalized: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "version", "serial", "root", "signers", "revoked"}:
        raise FormatError("trust bundle payload has unknown or missing members")
    if doc["format"] != BUNDLE_FORMAT or doc["version"] != BUNDLE_VERSION:
        raise FormatError("trust bundle payload names another format or version")
    serial = doc["serial"]
    if type(serial) is not int or not 1 <= serial <= MAX_SERIAL:
        raise FormatError(f"trust bundle serial must be an integer in [1, 2**53 - 1], got {serial!r}")
    _, root = _public(doc["root"], "root")
    if set(doc["root"]) != {"id", "public"}:
        raise FormatError("trust bundle root has unknown members")
    signers: dict[str, TrustedSigner] = {}
    if not isinstance(doc["signers"], list) or not isinstance(doc["revoked"], list):
        raise FormatError("trust bundle signers and revoked must be lists")
    for i, e in enumerate(doc["signers"]):
        kid, key = _public(e, f"signer {i}")
        if set(e) != {"id", "public", "scope"} or kid in signers:
            raise FormatError(f"trust bundle signer {kid} is repeated or has unknown members")
        try:
            signers[kid] = TrustedSigner(key, _check_scope(e["scope"]))
        except ValueError as exc:
            raise FormatError(f"trust bundle signer {kid}: {exc}") from None
    revoked = doc["revoked"]
    try:
        ids = [check_signer_id(k) for k in revoked]
    except ValueError as exc:
        raise FormatError(f"trust bundle revoked list: {exc}") from None
    if len(set(ids)) != len(ids) or set(ids) & set(signers) or signer_id(root) in set(ids) | set(signers):
        raise FormatError("trust bundle lists a key twice, both trusted and revoked, or the root as a signer")
    return TrustBundle(serial, root, signers, frozenset(ids))


def read_bundle(data: bytes, root: Ed25519PublicKey | bytes) -> TrustBundle:
    """Verify a bundle file against ``root`` alone (no state: no rollback check) and return its content.
    A bundle whose payload names another root must carry that root's signature too."""
    root = as_public_key(root)
    envelope = _envelope(data)
    _verify(envelope, root, "root")
    bundle = _parse_payload(envelope.payload)  # parsed only once its signature verified
    if signer_id(bundle.root) != signer_id(root):
        _verify(envelope, bundle.root, "new root")  # rotation: the new root proves it holds its key too
    return bundle


# -- the device's state ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustState:
    """What a device keeps of the last bundle it accepted: serial, payload digest, and its root."""

    serial: int
    digest: bytes
    root: Ed25519PublicKey

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"format": STATE_FORMAT, "version": 1, "serial": self.serial, "digest": self.digest.hex(),
               "root": {"id": signer_id(self.root), "public": _b64(raw_public(self.root))}}
        return rfc8785.dumps(doc) + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> TrustState:
        doc = _json(data, "trust state")
        try:
            if doc["format"] != STATE_FORMAT or doc["version"] != 1 or type(doc["serial"]) is not int:
                raise FormatError("not an ortseal trust state file")
            _, root = _public(doc["root"], "state root")
            digest = bytes.fromhex(doc["digest"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"trust state file is malformed ({type(exc).__name__})") from None
        if len(digest) != 32:
            raise FormatError("trust state digest is not 32 bytes")
        return cls(doc["serial"], digest, root)


def _check_folder(path: str | os.PathLike[str]) -> None:
    """Refuse a state whose folder another user could change: one who can write it can delete or rename the
    state away, and the device then takes any old bundle the root signed as its first."""
    folder = Path(path).parent
    try:
        st = os.stat(folder)
    except OSError as exc:
        raise TamperedError(f"trust state folder {folder}: {exc.strerror}") from None
    if st.st_uid not in (os.geteuid(), 0) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
        raise TamperedError(f"trust state folder {folder} can be changed by another user (owner uid {st.st_uid}, mode "
                            f"{stat.S_IMODE(st.st_mode):o}): they could delete the state and roll the device's trust "
                            "back; keep the state in a folder of this user writable only by it")


@contextlib.contextmanager
def _locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock for one read-check-write of the state at ``path`` (the file ``.<name>.lock``
    beside it), so that two installs at once cannot both read the old state and the older one write last."""
    target = Path(path)
    lock = target.with_name(f".{target.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise TamperedError(f"trust state lock {lock}: cannot open it safely ({exc.strerror}; a link is refused)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
        yield
    finally:
        os.close(fd)


def read_state(path: str | os.PathLike[str]) -> TrustState | None:
    """The state at ``path``, or None when there is none yet. Refuses a state file another user could
    have written or removed: a link, not a regular file, not owned by this user, writable by group or
    others, or in a folder another user can write (unless sticky, as /tmp)."""
    _check_folder(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TamperedError(f"trust state {path}: cannot open it safely ({exc.strerror}; a link is refused)") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise TamperedError(f"trust state {path} is not a regular file of this user writable only by it "
                                "(someone else could roll the device's trust back): fix its owner and mode (0600)")
        return TrustState.from_json(fh.read(1 << 16))


def install_bundle(data: bytes, *, root: Ed25519PublicKey | bytes, state: str | os.PathLike[str]) -> TrustBundle:
    """Verify bundle bytes for this device and record them as the last accepted (state file ``state``).

    The bundle must be signed by the device's root: the one recorded in ``state`` once a bundle was
    accepted (it follows root rotations), else the pinned ``root``. Refused: an older serial than the
    state's (:class:`~ortseal.errors.RollbackError`), the same serial with other content, a bad or missing
    signature, a malformed bundle (TamperedError / FormatError). Installing the accepted bundle again is
    a no-op. The state is written (0600, atomically) only after every check passed, under a lock held from
    reading the state to writing it (``.<state name>.lock`` beside it), so concurrent installs serialize.
    """
    pinned = as_public_key(root)
    _check_folder(state)
    with _locked(state):
        return _install_locked(data, pinned, state)


def _install_locked(data: bytes, pinned: Ed25519PublicKey, state: str | os.PathLike[str]) -> TrustBundle:
    last = read_state(state)
    current_root = last.root if last is not None else pinned
    bundle = read_bundle(data, current_root)
    if last is not None:
        if bundle.serial < last.serial:
            raise RollbackError(f"trust bundle serial {bundle.serial} is older than the serial {last.serial} this "
                                "device accepted: an old bundle put back in place of the current one")
        if bundle.serial == last.serial and not hmac.compare_digest(bundle.digest, last.digest):
            raise TamperedError(f"trust bundle serial {bundle.serial} differs from the serial-{last.serial} bundle "
                                "this device accepted: two bundles with one serial (the root signed both, or its "
                                "key leaked)")
        if bundle.serial == last.serial:
            return bundle
    atomic_write_bytes(state, TrustState(bundle.serial, bundle.digest, bundle.root).to_json(), mode=0o600,
                       overwrite=True)
    return bundle


def load_root(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The root public key pinned in a public keyset file holding exactly one key (ortseal pubkey)."""
    keys = KeySet.load(Path(path))
    if len(keys.trusted_key_ids) != 1:
        raise FormatError(f"{path} must hold exactly one public key (the root), not {len(keys.trusted_key_ids)}")
    key = keys.trusted_key(keys.trusted_key_ids[0], "bundle")
    if key is None:
        raise FormatError(f"{path}: its key is scoped; a root key is pinned without a scope")
    return key
