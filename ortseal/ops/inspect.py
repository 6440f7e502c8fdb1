"""``inspect_model`` (no keys: what is sealed, and how) and ``verify_model`` (full check, no plaintext kept)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from onnx import helper

from ..errors import FormatError, OrtsealError
from ..keys import KeySet, as_keyset
from .binding import check_model, open_tensor
from .manifest import read_manifest
from .model import find_sealed, load_model, read_blob_header
from .seal import PlainTensor, plaintext_report


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
    # the manifest's, the same for every tensor of a model (a tensor's blob is bound by the signed manifest,
    # not signed itself); the signer is the one the manifest names, not verified here
    model: str
    release: int
    manifest_signer: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def inspect_model(path_or_bytes: str | os.PathLike[str] | bytes) -> list[SealedTensorInfo]:
    """The sealed tensors of a model, read from its manifest and blob headers (no keys needed, nothing
    decrypted or verified: the signer shown is the one the manifest names). What it holds in plaintext:
    :func:`ortseal.ops.seal.plaintext_report`."""
    model, base_dir = load_model(path_or_bytes)
    sealed = find_sealed(model)
    if not sealed:
        return []
    manifest, _, _ = read_manifest(model)
    infos = []
    for st in sealed:
        header, size = read_blob_header(st, base_dir)
        infos.append(SealedTensorInfo(st.name, st.scope, "Constant" if st.constant else "initializer",
                                      helper.tensor_dtype_to_string(st.dtype).split(".")[-1], st.shape,
                                      header.plaintext_length, size, header.key_id, header.version, manifest.model,
                                      manifest.release, manifest.signer))
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


def verify_model(path_or_bytes: str | os.PathLike[str] | bytes, keys: KeySet | str | os.PathLike[str], *, min_release: int = 0,
                 sess_options: Any = None) -> VerifyReport:
    """Check a sealed model as a device would open it, and keep nothing.

    With content keys: exactly what ``ortseal.InferenceSession`` does (manifest signature and release,
    graph binding, every blob against its signed digest, decryption into RAM) and then ONNX Runtime
    opening the graph on the CPU EP (``sess_options``, for custom op libraries), so it fails exactly when
    opening would. With public keys only: the manifest signature and release, the graph binding, and every
    blob's stored bytes against the signed digests (hashing only: decryption is not checked).

    Raises ``TamperedError`` (``RollbackError``), ``KeyNotFoundError`` or ``FormatError`` naming what failed.
    """
    keys = as_keyset(keys)  # a KeySet, or a keyset file's path
    model, base_dir = load_model(path_or_bytes)
    checked = check_model(model, base_dir, keys, min_release=min_release)
    decrypted = keys.has_content_keys
    if decrypted:
        _open_like_a_session(path_or_bytes, keys, min_release, sess_options)
    else:
        for st in checked.sealed:
            with open_tensor(checked, st, keys, need_key=False) as opener:
                opener.verify_stored()
    manifest = checked.manifest
    return VerifyReport(manifest.model, manifest.release, manifest.signer if checked.signature_checked else None,
                        len(checked.sealed), sum(st.plaintext_bytes for st in checked.sealed), decrypted,
                        plaintext_report(model))


def _open_like_a_session(path_or_bytes: str | os.PathLike[str] | bytes, keys: KeySet, min_release: int,
                         sess_options: Any) -> None:
    from .session import InferenceSession  # imports onnxruntime: only verification that opens needs it

    try:
        InferenceSession(path_or_bytes, sess_options, providers=["CPUExecutionProvider"], keys=keys,
                         min_release=min_release)
    except OrtsealError:
        raise
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types
        raise FormatError(f"the model verifies, but ONNX Runtime cannot open its graph: {exc}") from exc
