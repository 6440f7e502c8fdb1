"""File bytes -> one verified sealed model (spec: ``docs/format.md``, "Opening a sealed model").

:func:`verify_sealed` takes a model file read once (:class:`~ortseal.model._graph.LoadedModel`, not parsed)
and checks, in the spec's order and before any content key is used for decryption: the seal record found at
the end of the bytes and its signature (or the HMAC of an unsigned model) over every other byte, before
anything is parsed; the manifest, read from the body's top-level fields, with the signer's exact scope and
the release; then, in one parse and one walk (:func:`~ortseal.model._graph.walk`), that the sealed tensors
are exactly those the manifest names and the plain external tensors exactly those it lists. The
:class:`VerifiedModel` it returns holds the bytes, the manifest and every tensor's place; its blobs and
plain external bytes are checked against their signed digests as they are read, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterator

from .._onnx_proto import ModelProto, TensorProto
from ..blob import BlobSource, Opener
from ..errors import FormatError, TamperedError
from ..keys import KeySet
from ._census import check_counts
from ._graph import METADATA_KEY, DataFiles, LoadedModel, Places, SealedTensor, is_external, tensor_context, walk
from ._record import (
    MODEL_FORMAT_VERSION,
    RECORD_KEY,
    RESEAL,
    ExternalEntry,
    Manifest,
    check_manifest,
    check_seal,
    find_manifest,
    metadata_entries,
    read_record,
)


class VerifiedModel(contextlib.AbstractContextManager):
    """A sealed model whose seal record, release and structure passed. Its data files stay open (once each)
    until the block ends; :meth:`opener` and :meth:`read_external` check each blob and plain tensor against
    the manifest as it is read."""

    def __init__(self, loaded: LoadedModel, manifest: Manifest, signer: str | None, places: Places,
                 externals: list[tuple[TensorProto, ExternalEntry]], files: DataFiles) -> None:
        self.loaded, self.manifest = loaded, manifest
        self.signer = signer  # the signer whose signature was checked; None for an unsigned (HMAC) model
        self.places = places  # where each sealed and plain tensor sits in ``model``
        self.externals = externals  # each plain external tensor (in ``model``) with what the manifest says of it
        self.files = files

    @property
    def sealed(self) -> list[SealedTensor]:
        return self.places.sealed

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
    """Check a sealed model file in the order of docs/format.md, "Opening a sealed model": the seal record at
    the end of the bytes and its signature (or HMAC) over the body, before anything is parsed; the manifest,
    read from the body's top-level fields, with the release and the model's name when ``model_name`` is given
    (a publisher's other signed model put in this one's place is then refused); then one parse and one walk,
    which must find exactly the tensors the manifest names. Raises FormatError, TamperedError (RollbackError)
    or KeyNotFoundError naming what failed."""
    record = read_record(loaded.data)
    if record is None:
        raise _unrecorded(loaded)
    body = memoryview(loaded.data)[:len(loaded.data) - record.size]
    digest, mac_key = check_seal(record, body, keys)
    manifest = find_manifest(body)
    check_manifest(record, digest, manifest, keys, mac_key, min_release=min_release)
    if model_name is not None and manifest.model != model_name:
        raise TamperedError(f"this is the publisher's model {manifest.model!r}, not {model_name!r}: another signed "
                            "model was put in its place")
    check_counts(loaded.data, len(body))  # before the parse builds what they count
    places = walk(loaded.parsed(body))  # the body parses as the file does, less the record's metadata entry
    if places.stray_external:
        raise FormatError("a sealed model keeps only initializers as external data: one of its sparse or attribute "
                          "tensors is external")
    identities = [st.identity for st in places.sealed]
    if not identities or len(set(identities)) != len(identities) or set(identities) != set(manifest.tensors):
        raise TamperedError("the model's sealed tensors differ from those its manifest names")
    for st in places.sealed:
        if manifest.tensors[st.identity].plaintext_bytes != st.plaintext_bytes:
            raise TamperedError(f"sealed tensor {st.name!r}: the manifest's size differs from its shape's")
    if len(places.plain_external) != len(manifest.external):
        raise TamperedError("the model's plain external tensors differ from those its manifest lists")
    # The manifest lists them in the walk's order (docs/format.md): each entry is the tensor at its index.
    externals = []
    for (_, t), entry in zip(places.plain_external, manifest.external, strict=True):
        info = {e.key: e.value for e in t.external_data}
        if (info.get("location"), info.get("offset", "0"), info.get("length")) != \
                (entry.location, str(entry.offset), str(entry.length)):
            raise TamperedError(f"plain external tensor {t.name!r} is not where the manifest says")
        externals.append((t, entry))
    return VerifiedModel(loaded, manifest, record.signer_id, places, externals, DataFiles(loaded.base_dir, sealed=True))


def _unrecorded(loaded: LoadedModel) -> Exception:
    """The error for a model without a seal record at its end: one rewritten after sealing, sealed by an
    older format, or not sealed at all. Told from the metadata's wire format alone: a file that has no
    record is trusted by nobody, so its graph is never parsed."""
    entries = metadata_entries(loaded.data)
    if any(key == RECORD_KEY.encode("ascii") for key, _ in entries):
        return TamperedError("the sealed model file was rewritten after sealing: its seal record is no longer the "
                             "last thing in the file")
    formats = [value for key, value in entries if key == METADATA_KEY.encode("ascii")]
    if not formats:
        return FormatError("the model holds no sealed tensor (it is not sealed by ortseal)")
    if formats[-1] in (b"1", b"2"):
        why = "its signatures do not commit to the content" if formats[-1] == b"1" else \
            "its signature does not cover the whole file"
        return FormatError(f"this model was sealed by ortseal model format v{formats[-1].decode()}, which is refused "
                           f"({why}); {RESEAL}")
    return FormatError(f"the model is marked sealed but does not end with an ortseal v{MODEL_FORMAT_VERSION} "
                       f"seal record: it was damaged, edited, or sealed by an older ortseal; {RESEAL}")


@contextlib.contextmanager
def naming(tensor: str) -> Iterator[None]:
    """Prefix a TamperedError (or RollbackError) with the sealed tensor it is about."""
    try:
        yield
    except TamperedError as exc:
        raise type(exc)(f"sealed tensor {tensor!r}: {exc}") from None
