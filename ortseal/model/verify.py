"""File bytes -> one verified sealed model (spec: ``docs/format.md``, "Sealed model v3", "Opening").

:func:`verify_sealed` takes a model file read once (:class:`~ortseal.model._graph.LoadedModel`) and checks, in
order and before any content key is used for decryption: the seal record at the end of the file over every
other byte of it (signature by a trusted key, or the HMAC of an unsigned model), the release, then, in one
walk of the graph, that the sealed tensors are exactly those the manifest names and the plain external tensors
exactly those it lists. The :class:`VerifiedModel` it returns holds the bytes, the manifest and every tensor's
place; its blobs and plain external bytes are checked against their signed digests as they are read, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field

from onnx import ModelProto, TensorProto

from ..blob import BlobSource, Opener
from ..errors import FormatError, TamperedError
from ..keys import KeySet
from ._graph import (
    DataFiles,
    LoadedModel,
    SealedTensor,
    external_initializers,
    find_sealed,
    is_external,
    stored_tensors,
    tensor_context,
)
from ._record import (
    MANIFEST_KEY,
    MODEL_FORMAT_VERSION,
    RECORD_KEY,
    RESEAL,
    ExternalEntry,
    Manifest,
    body_digest,
    check_record,
    read_record,
)


@dataclass
class VerifiedModel(contextlib.AbstractContextManager):
    """A sealed model whose seal record, release and structure passed. Its data files stay open (once each)
    until the block ends; :meth:`opener` and :meth:`read_external` check each blob and plain tensor against
    the manifest as it is read."""

    loaded: LoadedModel
    manifest: Manifest
    signer: str | None  # the signer whose signature was checked; None for an unsigned (HMAC) model
    sealed: list[SealedTensor]
    # plain external tensors, by (scope, name), and what the manifest says of each
    externals: list[tuple[tuple[str, str], TensorProto, ExternalEntry]]
    files: DataFiles = field(repr=False)

    @property
    def model(self) -> ModelProto:
        return self.loaded.model

    def context(self, st: SealedTensor) -> bytes:
        return tensor_context(self.manifest.seal_id, st.identity)

    def opener(self, st: SealedTensor, keys: KeySet, *, need_key: bool = True) -> Opener:
        """An :class:`Opener` for one sealed tensor, its header read once and checked to name the manifest's
        key and size before any key is asked for; decrypting recomputes the blob's content digest against the
        manifest's in the same pass.
        ``need_key=False`` (public keys only) gives an opener that can hash the stored bytes but not decrypt."""
        entry = self.manifest.tensors[st.identity]
        source = self.files.source(st.blob) if is_external(st.blob) else BlobSource(st.blob.raw_data)
        with naming(st.name):
            return Opener(source, keys, context=self.context(st), expected_digest=entry.digest, kind="model",
                          need_key=need_key, key_id=self.manifest.key_id, plaintext_length=entry.plaintext_bytes)

    def external_chunks(self, tensor: TensorProto, entry: ExternalEntry) -> Iterator[bytes]:
        """The bytes of a plain external tensor, read once in chunks and hashed as they go; the last chunk
        is yielded only after the whole digest matched the manifest's (TamperedError otherwise), so a caller
        that stops at an error has accepted nothing."""
        h = hashlib.sha256()
        pending = None
        for chunk in self.files.chunks(tensor):
            h.update(chunk)
            if pending is not None:
                yield pending
            pending = chunk
        if not hmac.compare_digest(h.digest(), entry.sha256):
            raise TamperedError(f"plain tensor {tensor.name!r}: the bytes in {entry.location!r} differ from those "
                                "that were signed (the data file was changed after sealing)")
        if pending is not None:
            yield pending

    def read_external(self, tensor: TensorProto, entry: ExternalEntry) -> bytes:
        return b"".join(self.external_chunks(tensor, entry))

    def __exit__(self, *exc: object) -> None:
        self.files.__exit__(*exc)


def verify_sealed(loaded: LoadedModel, keys: KeySet, *, min_release: int = 0,
                  model_name: str | None = None) -> VerifiedModel:
    """Check a sealed model file: seal record over the body, release, the model's name when ``model_name`` is
    given (a publisher's other signed model put in this one's place is then refused), and the tensors it
    holds against its manifest. Raises FormatError, TamperedError (RollbackError) or KeyNotFoundError
    naming what failed."""
    model = loaded.model
    props = [p for p in model.metadata_props]
    manifests = [p.value for p in props if p.key == MANIFEST_KEY]
    records = [p for p in props if p.key == RECORD_KEY]
    record = read_record(loaded.data)
    if records and (record is None or len(records) != 1 or props[-1].key != RECORD_KEY):
        raise TamperedError("the sealed model file was rewritten after sealing: its seal record is no longer the "
                            "last thing in the file")
    if record is None:
        if not find_sealed(model):  # (which names format v1, whose Unseal nodes have another shape)
            raise FormatError("the model holds no sealed tensor (it is not sealed by ortseal)")
        if not records and len(manifests) == 1 and '"version":2' in manifests[0]:
            raise FormatError(f"this model was sealed by ortseal model format v2, which is refused (its signature "
                              f"does not cover the whole file); {RESEAL}")
        raise FormatError(f"the model holds Unseal nodes but does not end with an ortseal v{MODEL_FORMAT_VERSION} "
                          f"seal record: it was damaged, edited, or sealed by an older ortseal; {RESEAL}")
    if len(manifests) != 1:
        raise FormatError("the sealed model does not hold exactly one ortseal manifest")
    manifest = Manifest.from_json(manifests[0])
    body = memoryview(loaded.data)[:len(loaded.data) - record.size]
    check_record(record, body_digest(body), manifest, keys, min_release=min_release)
    if model_name is not None and manifest.model != model_name:
        raise TamperedError(f"this is the publisher's model {manifest.model!r}, not {model_name!r}: another signed "
                            "model was put in its place")
    sealed = find_sealed(model)
    blobs = {id(st.blob) for st in sealed}
    externals = [(scope, t) for scope, t in external_initializers(model) if id(t) not in blobs]
    plain_externals = {id(t) for _, t in externals}
    if any(is_external(t) and id(t) not in blobs and id(t) not in plain_externals for t in stored_tensors(model)):
        raise FormatError("a sealed model keeps only initializers as external data: one of its sparse or attribute "
                          "tensors is external")
    identities = [st.identity for st in sealed]
    if not sealed or len(set(identities)) != len(identities) or set(identities) != set(manifest.tensors):
        raise TamperedError("the model's sealed tensors differ from those its manifest names")
    for st in sealed:
        if manifest.tensors[st.identity].plaintext_bytes != st.plaintext_bytes:
            raise TamperedError(f"sealed tensor {st.name!r}: the manifest's size differs from its shape's")
    if len(externals) != len(manifest.external):
        raise TamperedError("the model's plain external tensors differ from those its manifest lists")
    files = DataFiles(loaded.base_dir, sealed=True)
    paired = []
    for (scope, t), entry in zip(externals, manifest.external, strict=False):
        info = {e.key: e.value for e in t.external_data}
        if (info.get("location"), info.get("offset", "0"), info.get("length")) != \
                (entry.location, str(entry.offset), str(entry.length)):
            raise TamperedError(f"plain external tensor {t.name!r} is not where the manifest says")
        paired.append(((scope, t.name), t, entry))
    return VerifiedModel(loaded, manifest, record.signer_id, sealed, paired, files)


@contextlib.contextmanager
def naming(tensor: str) -> Iterator[None]:
    """Prefix a TamperedError (or RollbackError) with the sealed tensor it is about."""
    try:
        yield
    except TamperedError as exc:
        raise type(exc)(f"sealed tensor {tensor!r}: {exc}") from None
