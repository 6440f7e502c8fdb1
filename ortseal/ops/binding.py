"""Checking a sealed model before any of it is decrypted: manifest signature and release, graph binding,
the set of sealed tensors, then each blob against the digest and key id the manifest names.

Shared by opening (``InferenceSession``), ``verify_model`` and the fallback kernel's set-up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from onnx import ModelProto

from ..blob import Opener, read_header
from ..errors import FormatError, TamperedError
from ..keys import KeySet
from .manifest import Manifest, verify_manifest
from .model import DataFiles, SealedTensor, blob_source, find_sealed, graph_digest, tensor_context


@dataclass
class CheckedModel:
    """A sealed model whose manifest, binding and tensor list passed; its blobs are checked as opened."""

    model: ModelProto
    base_dir: str | None
    sealed: list[SealedTensor]
    manifest: Manifest
    graph_digest: str
    signature_checked: bool

    def context(self, st: SealedTensor) -> bytes:
        return tensor_context(self.manifest.seal_id, self.graph_digest, st.identity)


def check_model(model: ModelProto, base_dir: str | None, keys: KeySet, *, min_release: int = 0) -> CheckedModel:
    """Every check that needs no content key, in order; raises FormatError, TamperedError or RollbackError."""
    sealed = find_sealed(model)
    if not sealed:
        raise FormatError("the model holds no sealed tensor (it is not sealed by ortseal)")
    manifest, checked = verify_manifest(model, keys, min_release=min_release)
    digest = graph_digest(model, base_dir)
    if digest != manifest.graph_digest:
        raise TamperedError("the model's graph differs from the graph that was sealed (graph binding): it was "
                            "edited after sealing; re-seal the original model")
    identities = [st.identity for st in sealed]
    if len(set(identities)) != len(identities) or set(identities) != set(manifest.tensors):
        raise TamperedError("the model's sealed tensors differ from those its manifest names")
    for st in sealed:
        if manifest.tensors[st.identity].plaintext_bytes != st.plaintext_bytes:
            raise TamperedError(f"sealed tensor {st.name!r}: the manifest's size differs from its shape's")
    return CheckedModel(model, base_dir, sealed, manifest, digest, checked)


@contextlib.contextmanager
def open_tensor(checked: CheckedModel, st: SealedTensor, keys: KeySet, *, need_key: bool = True,
                files: DataFiles | None = None) -> Iterator[Opener]:
    """An :class:`Opener` for one sealed tensor, after its header matches the manifest (key id, size);
    decryption then re-computes the blob's digest against the signed one. ``need_key=False`` (public
    keys only) gives an opener that can check the stored bytes but not decrypt; ``files`` shares data-file
    descriptors between tensors."""
    entry = checked.manifest.tensors[st.identity]
    with blob_source(st, checked.base_dir, files) as source:
        header = read_header(source, kind="model")
        if header.key_id != entry.key_id:
            raise TamperedError(f"sealed tensor {st.name!r} names key {header.key_id!r}, its manifest {entry.key_id!r}")
        if header.plaintext_length != st.plaintext_bytes:
            raise TamperedError(f"sealed tensor {st.name!r} holds {header.plaintext_length} bytes, "
                                f"its shape needs {st.plaintext_bytes}")
        yield Opener(source, keys, context=checked.context(st),
                     expected_digest=entry.digest if checked.signature_checked else None, kind="model",
                     need_key=need_key)
