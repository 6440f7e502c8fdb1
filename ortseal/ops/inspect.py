"""``inspect_model`` (no keys: what is sealed, and how) and ``verify_model`` (full check, no plaintext kept)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from onnx import helper

from ..keys import KeySet
from .model import find_sealed, load_model, open_blob, read_blob_header
from .opening import check_binding


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

    def as_dict(self) -> dict:
        return asdict(self)


def inspect_model(path_or_bytes: str | os.PathLike[str] | bytes) -> list[SealedTensorInfo]:
    """The sealed tensors of a model, read from headers only (no keys needed, nothing decrypted)."""
    model, base_dir = load_model(path_or_bytes)
    infos = []
    for st in find_sealed(model):
        header, size = read_blob_header(st, base_dir)
        infos.append(SealedTensorInfo(st.name, st.scope or "/", helper.tensor_dtype_to_string(st.dtype).split(".")[-1],
                                      st.shape, header.plaintext_length, size, header.key_id, header.signer_id,
                                      header.version))
    return infos


def verify_model(path_or_bytes: str | os.PathLike[str] | bytes, keys: KeySet) -> int:
    """Check graph binding, signatures and every blob of a sealed model without keeping plaintext.

    Returns the number of sealed tensors checked; raises ``TamperedError``, ``KeyNotFoundError`` or
    ``FormatError`` naming what failed.
    """
    model, base_dir = load_model(path_or_bytes)
    sealed, digest = check_binding(model, base_dir)
    for st in sealed:
        with open_blob(st, base_dir, keys, digest) as opener:
            opener.verify()
    return len(sealed)
