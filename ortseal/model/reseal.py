"""``reseal_model``: move a sealed model to a new content key without its weights ever on disk in clear.

    publisher = KeySet.load("keys.json").with_new_content_key()     # the new key seals; the old one stays
    reseal_model("model.sealed.onnx", "model.v2.sealed.onnx", publisher)

The source is verified as a device verifies it (signature, manifest, every blob's digest); each sealed
tensor is then decrypted into memory ortseal owns, sealed again under the new key as it is written, and
its plaintext buffer zeroed. The graph stays as it was; the manifest gets a new seal id and key id, and the
file is signed again. Devices that hold both keys (``for_device`` of the rotated keyset) open old and new
files while the fleet changes over.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from pathlib import Path

from .._atomic import atomic_writer
from .._progress import ByteProgress
from ..blob import DEFAULT_SEGMENT_SIZE, BlobWriter, check_release
from ..keys import KeySet
from ._graph import METADATA_KEY, SELECTION_KEY, is_external, read_model, set_external, tensor_context
from ._record import MANIFEST_KEY, ExternalEntry, Manifest, TensorEntry, body_digest, make_record
from .seal import PLAIN_ALIGNMENT, SealSummary, _set_metadata
from .verify import verify_sealed


def reseal_model(src: str | os.PathLike[str], dst: str | os.PathLike[str], keys: KeySet, *,
                 release: int | None = None, overwrite: bool = False, progress: bool = True,
                 segment_size: int = DEFAULT_SEGMENT_SIZE) -> SealSummary:
    """Re-seal the sealed model ``src`` into ``dst`` under ``keys``' sealing content key, signed by its
    signing key. ``keys`` must also hold (or fetch) the content key ``src`` was sealed with and trust its
    signer. ``release`` defaults to the source's. Sealed payloads go where they were (``<dst>.data`` or
    inline); plain external tensors are copied, checked against the signed manifest as they are read.
    Raises what opening raises for a source that does not verify, and ValueError when the sealing key is
    the one ``src`` already uses (add a new one: :meth:`KeySet.with_new_content_key`)."""
    src_path, dst_path = Path(src), Path(dst)
    if dst_path.resolve() == src_path.resolve():
        raise ValueError("dst must differ from src")
    key_id, _ = keys.sealing_key()
    if keys.signing_key() is None:
        raise ValueError("reseal signs the new file: use the publisher's keyset (with its signing key)")
    loaded = read_model(src_path)
    with verify_sealed(loaded, keys) as verified:
        old = verified.manifest
        if old.key_id == key_id:
            raise ValueError(f"{src_path} is already sealed with content key {key_id!r}: add a new content key first "
                             "(KeySet.with_new_content_key(); CLI: ortseal rotate-content-key)")
        release = old.release if release is None else check_release(release)
        manifest = Manifest(old.model, release, secrets.token_hex(16), key_id)
        external = any(is_external(st.blob) for st in verified.sealed) or bool(verified.externals)
        data_path = dst_path.with_name(dst_path.name + ".data") if external else None
        for existing in (dst_path, data_path):
            if existing is not None and not overwrite and existing.exists():
                raise FileExistsError(f"{existing} exists; choose another output, or replace it (overwrite=True)")
        total = sum(st.plaintext_bytes for st in verified.sealed)
        model = verified.model
        bar = ByteProgress(total, f"resealing {src_path.name}", enabled=progress)
        with bar, contextlib.ExitStack() as stack:
            inline = io.BytesIO()
            data = stack.enter_context(atomic_writer(data_path, mode=0o644, overwrite=overwrite)) if data_path else inline
            writers = {out: stack.enter_context(BlobWriter(out, keys, segment_size=segment_size))
                       for out in dict.fromkeys((data, inline))}
            for st in verified.sealed:
                out = data if is_external(st.blob) else inline
                plain = bytearray(st.plaintext_bytes)  # memory ortseal owns, zeroed whatever happens
                try:
                    verified.opener(st, keys).decrypt_into(memoryview(plain))
                    offset = out.tell()
                    info = writers[out].write(plain, sign=False, release=release, progress=bar.update,
                                              context=tensor_context(manifest.seal_id, st.identity))
                finally:
                    plain[:] = bytes(len(plain))
                manifest.tensors[st.identity] = TensorEntry(info.digest, st.plaintext_bytes)
                del st.blob.dims[:]
                st.blob.dims.append(info.length)
                if out is inline:
                    st.blob.raw_data = inline.getbuffer()[offset:offset + info.length].tobytes()
                else:
                    assert data_path is not None
                    set_external(st.blob, data_path.name, offset, info.length)
            for tensor, entry in verified.externals:  # plain ones: copied page-aligned, checked as read
                assert data_path is not None
                data.write(b"\0" * (-data.tell() % PLAIN_ALIGNMENT))
                start = data.tell()
                for chunk in verified.external_chunks(tensor, entry):
                    data.write(chunk)
                set_external(tensor, data_path.name, start, entry.length)
                manifest.external.append(ExternalEntry(data_path.name, start, entry.length, entry.sha256))
            meta = {p.key: p.value for p in model.metadata_props}
            _set_metadata(model, {METADATA_KEY: meta[METADATA_KEY], MANIFEST_KEY: manifest.to_json(),
                                  **({SELECTION_KEY: meta[SELECTION_KEY]} if SELECTION_KEY in meta else {})})
            body = model.SerializeToString()
            record = make_record(body_digest(body), keys, sign=True, key_id=key_id)
    with atomic_writer(dst_path, mode=0o644, overwrite=overwrite) as fh:
        fh.write(body)
        fh.write(record)
    return SealSummary(dst_path, data_path, [st.name for st in verified.sealed], total, manifest, [])
