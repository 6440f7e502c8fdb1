"""``inspect_model`` (no keys: what is sealed, and how) and ``verify_model`` (full check, no plaintext kept)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..blob import BlobSource, check_release, read_header
from ..errors import FormatError
from ..keys import KeySet, as_keyset
from ._gate import check_session
from ._graph import DataFiles, LoadedModel, find_sealed, is_external, load_model, malformed_is_format_error, read_model
from ._record import MANIFEST_KEY, Manifest, read_record
from .open import open_sealed_model
from .schema import kind_name
from .verify import verify_sealed

VERIFY_PROVIDERS = ["CPUExecutionProvider"]  # verification opens the graph on the CPU EP alone

if TYPE_CHECKING:
    from .seal import PlainTensor


@dataclass
class SealedTensorInfo:
    """One sealed tensor as ``ortseal inspect`` shows it."""

    name: str
    scope: str
    source: str  # "initializer" or "Constant"
    dtype: str
    shape: list[int]
    plaintext_bytes: int
    sealed_bytes: int
    key_id: str
    format_version: int
    # the model's, the same for every tensor (a tensor's blob is not signed itself: the model's seal record
    # signs the manifest naming its digest); the signer is the one the seal record names, not verified here
    model: str
    release: int
    manifest_signer: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def inspect_model(path_or_bytes: str | os.PathLike[str] | bytes) -> list[SealedTensorInfo]:
    """The sealed tensors of a model, read from its manifest, seal record and blob headers (no keys needed,
    nothing decrypted or verified: the signer shown is the one the seal record names). What it holds in
    plaintext: :func:`ortseal.model.seal.plaintext_report`."""
    loaded = load_model(path_or_bytes)
    with malformed_is_format_error(loaded.name):
        return _inspect(loaded)


def _inspect(loaded: LoadedModel) -> list[SealedTensorInfo]:
    sealed = find_sealed(loaded.model)
    if not sealed:
        return []
    manifests = [p.value for p in loaded.model.metadata_props if p.key == MANIFEST_KEY]
    if len(manifests) != 1:
        raise FormatError("the sealed model does not hold exactly one ortseal manifest")
    manifest = Manifest.from_json(manifests[0])
    record = read_record(loaded.data)
    infos = []
    with DataFiles(loaded.base_dir) as files:
        for st in sealed:
            source = files.source(st.blob) if is_external(st.blob) else BlobSource(st.blob.raw_data)
            header = read_header(source, kind="model")
            infos.append(SealedTensorInfo(st.name, st.scope, "Constant" if st.constant else "initializer",
                                          kind_name(st.dtype), st.shape,
                                          header.plaintext_length, source.size, header.key_id, header.version,
                                          manifest.model, manifest.release, record.signer_id if record else None))
    return infos


@dataclass
class VerifyReport:
    """What :func:`verify_model` checked on a sealed model that passed."""

    model: str  # the name in the signed manifest
    release: int
    signer: str | None
    sealed_tensors: int
    sealed_bytes: int  # plaintext bytes of the sealed tensors
    decrypted: bool  # every tensor decrypted and the graph opened by ONNX Runtime (False: public keys only)
    left_plain: list[PlainTensor]

    def as_dict(self) -> dict:
        return asdict(self)


def verify_model(path_or_bytes: str | os.PathLike[str] | bytes, keys: KeySet | str | os.PathLike[str], *,
                 min_release: int = 0, sess_options: Any = None, data_dir: str | None = None,
                 model_name: str | None = None) -> VerifyReport:
    """Check a sealed model as a device opens it, and keep nothing.

    The file is read once and checked in the order ``ortseal.InferenceSession`` checks it (signature over the
    whole file, release, every sealed and plain external tensor against the signed digests). With content
    keys, every tensor is then decrypted into RAM and ONNX Runtime opens the graph on the CPU EP
    (``sess_options``, for custom op libraries), so it fails exactly when opening would. With public keys
    only, the stored bytes are hashed against the signed digests (decryption is not checked). ``data_dir``:
    where the external data of a model given as bytes lives.

    Raises ``TamperedError`` (``RollbackError``), ``KeyNotFoundError`` or ``FormatError`` naming what failed.
    """
    from .seal import plaintext_report  # (it needs onnx)

    min_release = check_release(min_release, "min_release")  # as InferenceSession: -1 or True is a mistake
    keys = as_keyset(keys)  # a KeySet, or a keyset file's path
    check_session(VERIFY_PROVIDERS, None, sess_options, sealed_model=True)  # before a byte is read
    loaded = read_model(path_or_bytes, data_dir)  # parsed once its seal record is checked
    decrypted = keys.has_content_keys
    with malformed_is_format_error(loaded.name), verify_sealed(loaded, keys, min_release=min_release,
                                                                           model_name=model_name) as verified:
        left_plain = plaintext_report(verified.model)  # before opening turns the verified model plain
        if decrypted:
            with open_sealed_model(verified, keys) as opened:
                _ort_opens(opened.path or opened.model_bytes, sess_options)
        else:
            for st in verified.sealed:
                verified.opener(st, keys, need_key=False).verify_stored()
            for t, entry in verified.externals:
                for _ in verified.external_chunks(t, entry):
                    pass
    manifest = verified.manifest
    return VerifyReport(manifest.model, manifest.release, verified.signer, len(verified.sealed),
                        sum(st.plaintext_bytes for st in verified.sealed), decrypted, left_plain)


def _ort_opens(model: str | bytes | None, sess_options: Any) -> None:
    from .._runtime import onnxruntime as ort  # only verification that opens needs ONNX Runtime

    try:
        ort.InferenceSession(model, sess_options, providers=VERIFY_PROVIDERS)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types
        raise FormatError(f"the model verifies, but ONNX Runtime cannot open its graph: {exc}") from exc
