"""The signed model manifest (spec: ``docs/sealed-models.md``, "Manifest").

One Ed25519 signature per sealed model covers a canonical JSON document naming the model, its release,
a random seal id, the graph-binding digest, and every sealed tensor with its content key id and the
content digest of its blob. It lives in two ``metadata_props`` entries of the sealed model. Splicing a
tensor from another seal, editing the graph, or putting an older release in place all fail against it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from onnx import ModelProto

from ..blob import DIGEST_SIZE, MAX_RELEASE
from ..errors import FormatError, RollbackError, TamperedError
from ..keys import KeySet, check_key_id

MANIFEST_KEY = "ortseal.manifest"
SIGNATURE_KEY = "ortseal.manifest.signature"
MANIFEST_FORMAT = "ortseal-model-manifest"
MANIFEST_VERSION = 2
SIGNATURE_LABEL = b"ortseal v2 manifest\x00"
MAX_MANIFEST_BYTES = 64 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SEAL_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class TensorEntry:
    """One sealed tensor as the manifest names it."""

    key_id: str
    digest: bytes
    plaintext_bytes: int


@dataclass
class Manifest:
    """What the publisher signed for one sealed model."""

    model: str
    release: int
    seal_id: str
    graph_digest: str
    tensors: dict[str, TensorEntry] = field(default_factory=dict)  # tensor identity -> entry
    signer: str | None = None

    @property
    def purpose(self) -> str:
        """What a trusted key must be scoped for to sign this model."""
        return f"model:{self.model}"

    def to_json(self) -> str:
        doc = {
            "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "model": self.model, "release": self.release,
            "seal_id": self.seal_id, "graph_digest": self.graph_digest, "signer": self.signer,
            "tensors": [{"tensor": identity, "key_id": e.key_id, "digest": e.digest.hex(), "bytes": e.plaintext_bytes}
                        for identity, e in sorted(self.tensors.items())],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        if len(text) > MAX_MANIFEST_BYTES:
            raise FormatError("the model manifest is too large")
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
                raise FormatError("the model's ortseal manifest is not a manifest")
            if doc.get("version") != MANIFEST_VERSION:
                raise FormatError(f"model manifest version {doc.get('version')!r} is not supported (this ortseal "
                                  f"reads {MANIFEST_VERSION})")
            model, release, seal_id, digest = doc["model"], doc["release"], doc["seal_id"], doc["graph_digest"]
            signer = doc["signer"]
            if not (isinstance(model, str) and model and type(release) is int and 0 <= release <= MAX_RELEASE
                    and isinstance(seal_id, str) and _SEAL_ID.fullmatch(seal_id)
                    and isinstance(digest, str) and _HEX64.fullmatch(digest)):
                raise FormatError("the model manifest has a malformed model, release, seal id or graph digest")
            if signer is not None:
                check_key_id(signer)
            tensors: dict[str, TensorEntry] = {}
            for e in doc["tensors"]:
                raw = bytes.fromhex(e["digest"])
                if not isinstance(e["tensor"], str) or len(raw) != DIGEST_SIZE or type(e["bytes"]) is not int \
                        or e["bytes"] < 0 or e["tensor"] in tensors:
                    raise FormatError("the model manifest has a malformed or repeated tensor entry")
                tensors[e["tensor"]] = TensorEntry(check_key_id(e["key_id"]), raw, e["bytes"])
        except FormatError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise FormatError(f"the model's ortseal manifest is malformed ({type(exc).__name__})") from exc
        return cls(model, release, seal_id, digest, tensors, signer)


def _signature_input(manifest_json: str) -> bytes:
    return SIGNATURE_LABEL + manifest_json.encode("utf-8")


def write_manifest(model: ModelProto, manifest: Manifest, keys: KeySet, sign: bool) -> None:
    """Store ``manifest`` (signed with the keyset's signing key when ``sign``) in ``model``'s metadata."""
    signer = keys.signing_key() if sign else None
    manifest.signer = signer[0] if signer else None
    text = manifest.to_json()
    props = {p.key: p for p in model.metadata_props}
    entries = {MANIFEST_KEY: text}
    if signer:
        entries[SIGNATURE_KEY] = base64.b64encode(signer[1].sign(_signature_input(text))).decode("ascii")
    elif SIGNATURE_KEY in props:
        model.metadata_props.remove(props.pop(SIGNATURE_KEY))
    for key, value in entries.items():
        (props[key] if key in props else model.metadata_props.add(key=key)).value = value


def read_manifest(model: ModelProto) -> tuple[Manifest, str, bytes | None]:
    """The manifest, its exact stored text, and its raw signature (None if unsigned); not verified."""
    props = {p.key: p.value for p in model.metadata_props}
    if MANIFEST_KEY not in props:
        raise FormatError("the model holds Unseal nodes but no ortseal manifest: it was sealed by ortseal format v1 "
                          "(refused), or damaged; re-seal the original model: "
                          "ortseal seal ORIGINAL.onnx -o SEALED.onnx --keys KEYS")
    manifest = Manifest.from_json(props[MANIFEST_KEY])
    signature = None
    if SIGNATURE_KEY in props:
        try:
            signature = base64.b64decode(props[SIGNATURE_KEY], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TamperedError("the model manifest's signature is not valid base64") from exc
    if (signature is None) != (manifest.signer is None):
        raise TamperedError("the model manifest's signer and signature do not agree (a signature was removed?)")
    return manifest, props[MANIFEST_KEY], signature


def verify_manifest(model: ModelProto, keys: KeySet, *, min_release: int = 0) -> tuple[Manifest, bool]:
    """Read the manifest and check its signature (unless ``keys`` allows unsigned models) and release.

    Returns ``(manifest, signature_checked)``. Raises TamperedError or RollbackError naming what failed.
    """
    manifest, text, signature = read_manifest(model)
    checked = False
    if signature is not None and (keys.requires_signature or keys.trusted_key(manifest.signer, manifest.purpose)):
        public = keys.trusted_key(manifest.signer, manifest.purpose)  # type: ignore[arg-type]
        if public is None:
            raise TamperedError(f"the model {manifest.model!r} is signed by {manifest.signer!r}, which this keyset "
                                f"does not trust for {manifest.purpose!r}")
        try:
            public.verify(signature, _signature_input(text))
        except InvalidSignature:
            raise TamperedError(f"the model manifest's signature by {manifest.signer!r} does not verify: the "
                                "manifest was altered") from None
        checked = True
    elif keys.requires_signature:
        raise TamperedError(f"the model {manifest.model!r} is unsigned, but this keyset requires a signature from a "
                            "trusted key (KeySet(allow_unsigned=True) accepts unsigned models)")
    if manifest.release < min_release:
        raise RollbackError(f"the model {manifest.model!r} is release {manifest.release}, older than the minimum "
                            f"release {min_release} this deployment accepts (an older model put in place of a newer one?)")
    return manifest, checked
