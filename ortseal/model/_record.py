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
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class SealRecord:
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


@dataclass(frozen=True)
class TensorEntry:
    """One sealed tensor as the manifest names it."""

    digest: bytes  # content digest of its blob (docs/format.md)
    plaintext_bytes: int


@dataclass(frozen=True)
class ExternalEntry:
    """One plain (unsealed) external tensor: where its bytes are and their SHA-256."""

    location: str
    offset: int
    length: int
    sha256: bytes


@dataclass
class Manifest:
    """What the publisher signed for one sealed model, beside the graph itself."""

    model: str
    release: int
    seal_id: str
    key_id: str
    tensors: dict[str, TensorEntry] = field(default_factory=dict)  # tensor identity -> entry
    external: list[ExternalEntry] = field(default_factory=list)

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
        return "{" + ",".join(f"{_jcs(k)}:{v if k == 'release' else _jcs(v)}" for k, v in sorted(doc.items())) + "}"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        if len(text) > MAX_MANIFEST_BYTES:
            raise FormatError("the model manifest is too large")
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
                raise FormatError("the model's ortseal manifest is not a manifest")
            if doc.get("version") != MODEL_FORMAT_VERSION:
                raise FormatError(f"this model was sealed by ortseal model format v{doc.get('version')!r}, which this "
                                  f"ortseal refuses (it reads v{MODEL_FORMAT_VERSION}: the signature covers the whole "
                                  f"file); {RESEAL}")
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


def check_record(record: SealRecord, digest: bytes, manifest: Manifest, keys: KeySet, *, min_release: int = 0) -> bool:
    """Check the seal record over the body ``digest``, then the release. A signed model must be signed by a
    key ``keys`` trusts for ``model:<name>``; an unsigned one is accepted only by a keyset made with
    ``allow_unsigned=True``, and only with a valid HMAC under the manifest's content key. Returns True when a
    signature was checked. Raises TamperedError or RollbackError naming what failed."""
    if record.signer_id is not None:
        public = keys.trusted_key(record.signer_id, manifest.purpose)
        if public is None:
            raise TamperedError(keys.untrusted(f"the model {manifest.model!r}", record.signer_id, manifest.purpose))
        try:
            public.verify(record.tag, SIGNATURE_LABEL + digest)
        except InvalidSignature:
            raise TamperedError(f"the model's signature by {record.signer_id!r} does not verify: the model file was "
                                "altered after sealing") from None
    else:
        if keys.requires_signature:
            raise TamperedError(f"the model {manifest.model!r} is unsigned, but this keyset requires a signature from "
                                "a trusted key (KeySet(allow_unsigned=True) accepts unsigned models)")
        want = hmac.new(_mac_key(keys.content_key(manifest.key_id)), MAC_LABEL + digest, hashlib.sha256).digest()
        if not hmac.compare_digest(want, record.tag):
            raise TamperedError("the unsigned model's MAC does not verify: the model file was altered after sealing, "
                                "or this is not the content key it was sealed with")
    if manifest.release < min_release:
        raise RollbackError(f"the model {manifest.model!r} is release {manifest.release}, older than the minimum "
                            f"release {min_release} this deployment accepts (an older model put in place of a newer one?)")
    return record.signer_id is not None

