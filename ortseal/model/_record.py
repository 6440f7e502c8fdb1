"""What a sealed model's publisher signs (spec: ``docs/format.md``, "Sealed model v3").

A sealed model file is ``body || seal record``. The body is an ordinary ONNX ``ModelProto`` serialization
whose ``metadata_props`` hold the manifest (``ortseal.manifest``: RFC 8785 canonical JSON naming the model,
its release, a random seal id, the content key id, every sealed tensor's blob digest and every plain
external tensor's SHA-256). The seal record is one more ``metadata_props`` entry appended as the file's last
top-level field, of fixed layout, so a reader finds it at the end of the file without parsing protobuf and
the whole file still parses as ONNX. It holds an Ed25519 signature (or, for keysets that explicitly allow
unsigned models, an HMAC under the content key) over ``SHA-256("ortseal v3 model\\0" || body)``: every byte
of the file but the record itself, graph, metadata, doc strings and inline blobs alike, as stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from typing import NamedTuple

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..blob import DIGEST_SIZE, MAX_RELEASE
from ..errors import FormatError, RollbackError, TamperedError
from ..keys import KeySet, check_key_id

MODEL_FORMAT_VERSION = 3
MANIFEST_KEY = "ortseal.manifest"
RECORD_KEY = "ortseal.signature"
MANIFEST_FORMAT = "ortseal-model-manifest"
MAX_MANIFEST_BYTES = 64 << 20
# Sealed tensors plus plain external tensors. A canonical entry is at least 96 bytes ({"bytes":0,"digest":
# <64 hex>,"tensor":""}), so 64 MiB holds about 699,000: the entry limit sits below that, where it binds.
MAX_MANIFEST_ENTRIES = 1 << 19
MAX_TOP_LEVEL_FIELDS = 1 << 16  # fields of the ModelProto itself (its graph is one), read before the parse
MAX_ENTRY_FIELDS = 8  # fields of one metadata_props entry (a writer gives two: key, value), read before the parse
METADATA_FIELD = 14  # ModelProto.metadata_props
BODY_LABEL = b"ortseal v3 model\x00"
SIGNATURE_LABEL = b"ortseal v3 model signature\x00"
MAC_LABEL = b"ortseal v3 model mac\x00"
MAC_KEY_INFO = b"ortseal v3 model mac key\x00"
SIGNED_PREFIX = b"ed25519:"
UNSIGNED_PREFIX = b"hmac-sha256:"
RESEAL = "re-seal the original model with this ortseal (seal_model)"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SEAL_ID = re.compile(r"[0-9a-f]{32}")
_SIGNED_VALUE = re.compile(rb"ed25519:([0-9a-f]{16}):([A-Za-z0-9+/]{86}==)")
_UNSIGNED_VALUE = re.compile(rb"hmac-sha256:([A-Za-z0-9+/]{43}=)")
# The manifest as Manifest.to_json writes it (RFC 8785: keys sorted, no spaces, integers as plain digits,
# strings escaping only '"', '\\' and control characters), matched by ``re`` in C before json.loads builds
# a single object: whatever a hostile manifest holds, what json.loads then builds is this schema's entries,
# counted first. Integers: any of 0..2^63-1 in plain digits (range checked after the parse).
_J_STR = r'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-f]{4})[^"\\\x00-\x1f]*)*"'  # runs between escapes: 4x faster
_J_INT = r"(?:0|[1-9][0-9]{0,18})"
_J_HEX = r'"[0-9a-f]{64}"'
_J_TENSOR = rf'\{{"bytes":{_J_INT},"digest":{_J_HEX},"tensor":{_J_STR}\}}'
_J_EXTERNAL = rf'\{{"length":{_J_INT},"location":{_J_STR},"offset":{_J_INT},"sha256":{_J_HEX}\}}'
_CANONICAL_MANIFEST = re.compile(
    rf'\{{"external":\[(?:{_J_EXTERNAL}(?:,{_J_EXTERNAL})*)?\],"format":"{MANIFEST_FORMAT}","key_id":{_J_STR},'
    rf'"model":{_J_STR},"release":{_J_INT},"seal_id":"[0-9a-f]{{32}}",'
    rf'"tensors":\[(?:{_J_TENSOR}(?:,{_J_TENSOR})*)?\],"version":{MODEL_FORMAT_VERSION}\}}')
_ANY_VERSION = re.compile(r'"version":([0-9]{1,6})[,}]')


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _record(value: bytes) -> bytes:
    """The seal record: ModelProto field 14 (``metadata_props``, tag byte 0x72) holding one
    StringStringEntryProto ``{key: "ortseal.signature", value: value}``."""
    key = RECORD_KEY.encode("ascii")
    entry = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value
    return b"\x72" + _varint(len(entry)) + entry


# The two record layouts: everything before the variable bytes of the value is fixed.
SIGNED_RECORD_SIZE = len(_record(b"ed25519:" + b"0" * 16 + b":" + b"A" * 86 + b"=="))  # 137
UNSIGNED_RECORD_SIZE = len(_record(b"hmac-sha256:" + b"A" * 43 + b"="))  # 79
_SIGNED_HEAD = _record(b"ed25519:" + b"0" * 16 + b":" + b"A" * 86 + b"==")[:SIGNED_RECORD_SIZE - 113]
_UNSIGNED_HEAD = _record(b"hmac-sha256:" + b"A" * 43 + b"=")[:UNSIGNED_RECORD_SIZE - 56]


class SealRecord(NamedTuple):
    """The record at the end of a sealed model file: a signature by ``signer_id``, or (``signer_id`` None)
    an HMAC tag. ``size`` is its length in bytes; the body is the file without it."""

    signer_id: str | None
    tag: bytes
    size: int


def read_record(data: bytes | memoryview) -> SealRecord | None:
    """The seal record at the end of ``data``, or None when the file does not end with one."""
    view = memoryview(data)
    for size, head, pattern in ((SIGNED_RECORD_SIZE, _SIGNED_HEAD, _SIGNED_VALUE),
                                (UNSIGNED_RECORD_SIZE, _UNSIGNED_HEAD, _UNSIGNED_VALUE)):
        if len(view) <= size or bytes(view[-size:-size + len(head)]) != head:
            continue
        match = pattern.fullmatch(bytes(view[-size + len(head):]))
        if match is None:
            continue
        if pattern is _SIGNED_VALUE:
            return SealRecord(match[1].decode("ascii"), base64.b64decode(match[2]), size)
        return SealRecord(None, base64.b64decode(match[1]), size)
    return None


def read_varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    """The protobuf varint at ``data[at]`` and the offset after it; FormatError if truncated or overlong."""
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    raise FormatError("not an ONNX model: a truncated or overlong protobuf varint")


def _fields(data: memoryview, limit: int) -> Iterator[tuple[int, int, memoryview | None]]:
    """``(field number, wire type, bytes of a length-delimited field)`` of one protobuf message, without
    descending into any field; FormatError after ``limit`` fields or on bytes that are not protobuf."""
    at = count = 0
    while at < len(data):
        count += 1
        if count > limit:
            raise FormatError(f"the model has more than {limit} protobuf fields in one message read before the parse "
                              "(docs/format.md, limits)")
        key, at = read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, at = read_varint(data, at)
            yield number, wire, None
            continue
        size = {1: 8, 5: 4}.get(wire)
        if size is None:
            if wire != 2:
                raise FormatError(f"not an ONNX model: protobuf wire type {wire} in field {number}")
            size, at = read_varint(data, at)
        if number == 0 or at + size > len(data):
            raise FormatError("not an ONNX model: a protobuf field runs past the end of the file")
        yield number, wire, data[at:at + size] if wire == 2 else None
        at += size


def metadata_entries(body: bytes | memoryview) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of every ``metadata_props`` entry of a serialized ModelProto, in file order, read
    from the wire format without parsing the graph (which is one field, skipped by its length): what
    protobuf's parse would give (in an entry, the last ``key`` and ``value`` win)."""
    entries = []
    for number, _, field_bytes in _fields(memoryview(body), MAX_TOP_LEVEL_FIELDS):
        if number == METADATA_FIELD and field_bytes is not None:
            got = {1: b"", 2: b""}
            for inner, _, value in _fields(field_bytes, MAX_ENTRY_FIELDS):
                if inner in got and value is not None:
                    got[inner] = bytes(value)
            entries.append((got[1], got[2]))
    return entries


def sealed_format(data: bytes | memoryview) -> bytes | None:
    """The ``ortseal.sealed`` metadata value of a serialized ModelProto (``b"3"`` for this format; every
    format ortseal ever wrote has one), read from the wire format without parsing the graph; None when the
    model has none or the bytes are not protobuf (an ORT-format file)."""
    if b"ortseal.sealed" not in data:
        return None
    try:
        values = [value for key, value in metadata_entries(data) if key == b"ortseal.sealed"]
    except FormatError:
        return None
    return values[-1] if values else None


def find_manifest(body: bytes | memoryview) -> Manifest:
    """The manifest of a sealed model's body, read from its wire format (:func:`metadata_entries`), before
    the graph is parsed. The body must hold exactly one manifest and no seal record (the file's record is
    the one at its end: TamperedError when another one is in the body, as when a tool re-saved the file)."""
    entries = metadata_entries(body)
    if any(key == RECORD_KEY.encode("ascii") for key, _ in entries):
        raise TamperedError("the sealed model file was rewritten after sealing: its seal record is no longer the "
                            "last thing in the file")
    manifests = [value for key, value in entries if key == MANIFEST_KEY.encode("ascii")]
    if len(manifests) != 1:
        raise FormatError("the sealed model does not hold exactly one ortseal manifest")
    if len(manifests[0]) > MAX_MANIFEST_BYTES:
        raise FormatError("the model manifest is too large")
    try:
        text = manifests[0].decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("the model's ortseal manifest is not UTF-8") from None
    return Manifest.from_json(text)


def body_digest(body: bytes | memoryview) -> bytes:
    """``SHA-256("ortseal v3 model\\0" || body)``: what the seal record commits to."""
    h = hashlib.sha256(BODY_LABEL)
    h.update(body)
    return h.digest()


def _mac_key(content_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MAC_KEY_INFO).derive(content_key)


def make_record(digest: bytes, keys: KeySet, *, sign: bool, key_id: str) -> bytes:
    """The seal record for a body with ``digest``: signed with the keyset's signing key, or an HMAC under
    content key ``key_id`` when not ``sign``."""
    if sign:
        signer = keys.signing_key()
        if signer is None:
            raise ValueError("this keyset has no signing key")
        signature = signer[1].sign(SIGNATURE_LABEL + digest)
        return _record(SIGNED_PREFIX + signer[0].encode("ascii") + b":" + base64.b64encode(signature))
    tag = hmac.new(_mac_key(keys.content_key(key_id)), MAC_LABEL + digest, hashlib.sha256).digest()
    return _record(UNSIGNED_PREFIX + base64.b64encode(tag))


class TensorEntry(NamedTuple):
    """One sealed tensor as the manifest names it."""

    digest: bytes  # content digest of its blob (docs/format.md)
    plaintext_bytes: int


class ExternalEntry(NamedTuple):
    """One plain (unsealed) external tensor: where its bytes are and their SHA-256."""

    location: str
    offset: int
    length: int
    sha256: bytes


class Manifest:
    """What the publisher signed for one sealed model, beside the graph itself."""

    def __init__(self, model: str, release: int, seal_id: str, key_id: str,
                 tensors: dict[str, TensorEntry] | None = None, external: list[ExternalEntry] | None = None) -> None:
        self.model, self.release, self.seal_id, self.key_id = model, release, seal_id, key_id
        self.tensors: dict[str, TensorEntry] = {} if tensors is None else tensors  # tensor identity -> entry
        self.external: list[ExternalEntry] = [] if external is None else external

    def __repr__(self) -> str:
        return (f"Manifest(model={self.model!r}, release={self.release}, seal_id={self.seal_id!r}, "
                f"key_id={self.key_id!r}, {len(self.tensors)} tensors, {len(self.external)} external)")

    @property
    def purpose(self) -> str:
        """What a trusted key must be scoped for to sign this model."""
        return f"model:{self.model}"

    def to_json(self) -> str:
        doc = {
            "format": MANIFEST_FORMAT, "version": MODEL_FORMAT_VERSION, "model": self.model, "release": self.release,
            "seal_id": self.seal_id, "key_id": self.key_id,
            "tensors": [{"tensor": identity, "digest": e.digest.hex(), "bytes": e.plaintext_bytes}
                        for identity, e in sorted(self.tensors.items())],
            "external": [{"location": e.location, "offset": e.offset, "length": e.length, "sha256": e.sha256.hex()}
                         for e in self.external],
        }
        # RFC 8785 writes numbers as IEEE doubles, so it refuses integers above 2**53 - 1; a release goes up to
        # 2**63 - 1 and is written as its exact digits (the same text JCS gives for every smaller one).
        text = "{" + ",".join(f"{_jcs(k)}:{v if k == 'release' else _jcs(v)}" for k, v in sorted(doc.items())) + "}"
        if len(self.tensors) + len(self.external) > MAX_MANIFEST_ENTRIES or len(text.encode("utf-8")) > MAX_MANIFEST_BYTES:
            raise FormatError(f"the model has more tensors than a manifest may name ({MAX_MANIFEST_ENTRIES} entries, "
                              f"{MAX_MANIFEST_BYTES >> 20} MiB: docs/format.md, limits)")
        return text

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        if len(text) > MAX_MANIFEST_BYTES:
            raise FormatError("the model manifest is too large")
        if _CANONICAL_MANIFEST.fullmatch(text) is None:
            # Only then is it worth saying why; nothing of it is parsed. An older format's manifest has
            # another schema: its "version" (a key of the top-level object, first found at the end) says so.
            version = _ANY_VERSION.findall(text[-64:]) if text.startswith('{"') else []
            if MANIFEST_FORMAT in text[:4096] and version and int(version[-1]) != MODEL_FORMAT_VERSION:
                raise FormatError(f"this model was sealed by ortseal model format v{int(version[-1])}, which this "
                                  f"ortseal refuses (it reads v{MODEL_FORMAT_VERSION}: the signature covers the "
                                  f"whole file); {RESEAL}")
            raise FormatError("the model's ortseal manifest is not a canonical v3 manifest (docs/format.md)")
        # Matched, a string cannot hold an unescaped '"': each entry's opening is found exactly once.
        entries = text.count('{"bytes":') + text.count('{"length":')
        if entries > MAX_MANIFEST_ENTRIES:
            raise FormatError(f"the model manifest names more than {MAX_MANIFEST_ENTRIES} tensors "
                              "(docs/format.md, limits)")
        try:
            doc = json.loads(text)
            model, release, seal_id = doc["model"], doc["release"], doc["seal_id"]
            if not (isinstance(model, str) and model and _int(release, MAX_RELEASE)
                    and isinstance(seal_id, str) and _SEAL_ID.fullmatch(seal_id)):
                raise FormatError("the model manifest has a malformed model, release or seal id")
            manifest = cls(model, release, seal_id, check_key_id(doc["key_id"]))
            for e in doc["tensors"]:
                if not (isinstance(e["tensor"], str) and isinstance(e["digest"], str) and _HEX64.fullmatch(e["digest"])
                        and _int(e["bytes"])) or e["tensor"] in manifest.tensors:
                    raise FormatError("the model manifest has a malformed or repeated tensor entry")
                manifest.tensors[e["tensor"]] = TensorEntry(bytes.fromhex(e["digest"]), e["bytes"])
            for e in doc["external"]:
                if not (isinstance(e["location"], str) and _int(e["offset"]) and _int(e["length"])
                        and isinstance(e["sha256"], str) and _HEX64.fullmatch(e["sha256"])):
                    raise FormatError("the model manifest has a malformed external tensor entry")
                manifest.external.append(ExternalEntry(e["location"], e["offset"], e["length"], bytes.fromhex(e["sha256"])))
        except FormatError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise FormatError(f"the model's ortseal manifest is malformed ({type(exc).__name__})") from exc
        assert all(len(e.digest) == DIGEST_SIZE for e in manifest.tensors.values())
        return manifest


def _int(value: object, top: int = (1 << 63) - 1) -> bool:
    return type(value) is int and 0 <= value <= top


def _jcs(value: object) -> str:
    return rfc8785.dumps(value).decode("utf-8")  # type: ignore[arg-type]  # rfc8785 types values narrowly


def check_seal(record: SealRecord, body: bytes | memoryview, keys: KeySet) -> tuple[bytes, str | None]:
    """Check the seal record over ``body`` before anything of it is parsed, and return the body's digest
    with the content key its HMAC was made under. Signed: the keyset must trust the signer for some
    ``model:`` purpose (checked before the body is even hashed) and the signature must verify. Unsigned: the
    keyset must allow unsigned models and the tag must be the HMAC under one of its content keys held in
    memory, whose id is returned (None when none matched but the keyset has key providers, which can only be
    asked for the manifest's key: :func:`check_manifest` does). Raises TamperedError naming what failed."""
    if record.signer_id is not None:
        public = keys.trusted_key_for_some(record.signer_id, "model:*")  # the exact scope: check_manifest
        if public is None:
            raise TamperedError(keys.untrusted("the model", record.signer_id, "model:*"))
        digest = body_digest(body)
        try:
            public.verify(record.tag, SIGNATURE_LABEL + digest)
        except InvalidSignature:
            raise TamperedError(f"the model's signature by {record.signer_id!r} does not verify: the model file was "
                                "altered after sealing") from None
        return digest, None
    if keys.requires_signature:
        raise TamperedError("the model is unsigned, but this keyset requires a signature from a trusted key "
                            "(KeySet(allow_unsigned=True) accepts unsigned models)")
    digest = body_digest(body)
    for key_id in keys.content_key_ids:
        if _mac_matches(keys, key_id, digest, record.tag):
            return digest, key_id
    if not keys.has_providers:
        raise TamperedError(_BAD_MAC)
    return digest, None


_BAD_MAC = ("the unsigned model's MAC does not verify: the model file was altered after sealing, or this is not "
            "the content key it was sealed with")


def _mac_matches(keys: KeySet, key_id: str, digest: bytes, tag: bytes) -> bool:
    want = hmac.new(_mac_key(keys.content_key(key_id)), MAC_LABEL + digest, hashlib.sha256).digest()
    return hmac.compare_digest(want, tag)


def check_manifest(record: SealRecord, digest: bytes, manifest: Manifest, keys: KeySet, mac_key: str | None, *,
                   min_release: int = 0) -> None:
    """What :func:`check_seal` could not check before the manifest was read: a signer trusted for exactly
    ``model:<name>``, an HMAC under the manifest's content key (``mac_key``: the key :func:`check_seal`
    found it under), then the release. Raises TamperedError or RollbackError naming what failed."""
    if record.signer_id is not None:
        if keys.trusted_key(record.signer_id, manifest.purpose) is None:
            raise TamperedError(f"the model {manifest.model!r} is signed by {record.signer_id!r}, which this keyset "
                                f"does not trust for {manifest.purpose!r}")
    elif mac_key != manifest.key_id and (mac_key is not None
                                         or not _mac_matches(keys, manifest.key_id, digest, record.tag)):
        raise TamperedError(_BAD_MAC)
    if manifest.release < min_release:
        raise RollbackError(f"the model {manifest.model!r} is release {manifest.release}, older than the minimum "
                            f"release {min_release} this deployment accepts (an older model put in place of a newer one?)")
