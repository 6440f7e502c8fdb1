"""``inspect_model`` (no keys: what is sealed, and how) and ``verify_model`` (full check, no plaintext kept)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from onnx import helper

from ..keys import KeySet
from .binding import check_model, open_tensor
from .manifest import read_manifest
from .model import find_sealed, load_model, read_blob_header


@dataclass
class SealedTensorInfo:
    """One sealed tensor as ``ortseal inspect`` shows it."""

    name: str
    scope: str
    dtype: str
    shape: list[int]
    plaintext_bytes: int
    sealed_bytes: int
    key_id: str
    signer: str | None
    format_version: int
    model: str
    release: int

    def as_dict(self) -> dict:
        return asdict(self)


def inspect_model(path_or_bytes: str | os.PathLike[str] | bytes) -> list[SealedTensorInfo]:
    """The sealed tensors of a model, read from its manifest and blob headers (no keys needed, nothing
    decrypted or verified: the signer shown is the one the manifest names)."""
    model, base_dir = load_model(path_or_bytes)
    sealed = find_sealed(model)
    if not sealed:
        return []
    manifest, _, _ = read_manifest(model)
    infos = []
    for st in sealed:
        header, size = read_blob_header(st, base_dir)
        infos.append(SealedTensorInfo(st.name, st.scope or "/", helper.tensor_dtype_to_string(st.dtype).split(".")[-1],
                                      st.shape, header.plaintext_length, size, header.key_id, manifest.signer,
                                      header.version, manifest.model, manifest.release))
    return infos


def verify_model(path_or_bytes: str | os.PathLike[str] | bytes, keys: KeySet, *, min_release: int = 0) -> int:
    """Check the manifest's signature and release, the graph binding, and every blob of a sealed model
    (its digest against the signed one, every segment's authentication) without keeping plaintext.

    Returns the number of sealed tensors checked; raises ``TamperedError`` (``RollbackError``),
    ``KeyNotFoundError`` or ``FormatError`` naming what failed.
    """
    model, base_dir = load_model(path_or_bytes)
    checked = check_model(model, base_dir, keys, min_release=min_release)
    for st in checked.sealed:
        with open_tensor(checked, st, keys) as opener:
            opener.verify()
    return len(checked.sealed)
