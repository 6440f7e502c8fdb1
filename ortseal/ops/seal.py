"""``seal_model``: turn selected initializers of an ONNX model into sealed blobs read by Unseal nodes.

    ortseal.seal_model("model.onnx", "model.sealed.onnx", keys)      # payloads in model.sealed.onnx.data
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from onnx import AttributeProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper
from tqdm import tqdm

from .._atomic import atomic_writer
from ..blob import DEFAULT_SEGMENT_SIZE, BlobWriter, Sealer, check_release
from ..errors import FormatError
from ..keys import KeySet
from .manifest import Manifest, TensorEntry, write_manifest
from .model import (
    LIKE_PREFIX,
    METADATA_KEY,
    SEALED_SUFFIX,
    external_location,
    graph_digest,
    is_external,
    is_sealed_model,
    iter_external,
    iter_graphs,
    load_inline,
    load_model,
    set_external,
    tensor_context,
    tensor_identity,
)
from .schema import DOMAIN, FALLBACK_TYPES, OP_TYPE, OPSET_VERSION, SEALABLE_TYPES

PROGRESS_MIN_BYTES = 64 << 20  # no progress bar for models that seal in a blink
PLAIN_ALIGNMENT = 4096  # plain external tensors copied to the data file stay page-aligned for mmap


@dataclass
class SealSummary:
    """What :func:`seal_model` did."""

    model: Path
    data_file: Path | None
    sealed: list[str] = field(default_factory=list)
    plaintext_bytes: int = 0
    manifest: Manifest | None = None


@dataclass
class _Selected:
    tensor: TensorProto
    scope: str
    blob: TensorProto
    identity: str
    nbytes: int


def _nbytes(t: TensorProto) -> int | None:
    if t.data_type not in SEALABLE_TYPES:
        return None
    n = 1
    for d in t.dims:
        n *= d
    return n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _tensor_bytes(t: TensorProto, base_dir: str, nbytes: int, stack: contextlib.ExitStack) -> memoryview:
    """A tensor's raw little-endian bytes: a read-only mapping of its external file, or its inline data."""
    if is_external(t):
        path, offset, length = external_location(t, base_dir)
        if length != nbytes:
            raise FormatError(f"tensor {t.name!r}: external length {length} does not match its shape ({nbytes} bytes)")
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < offset + nbytes:
                raise FormatError(f"tensor {t.name!r}: external data file {path} is shorter than the tensor")
            if nbytes == 0:
                return memoryview(b"")
            mapped = stack.enter_context(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        view = memoryview(mapped)[offset:offset + nbytes]
        stack.callback(view.release)
        return view
    raw = t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()
    if len(raw) != nbytes:
        raise FormatError(f"tensor {t.name!r} holds {len(raw)} bytes but its shape needs {nbytes}")
    return memoryview(raw)


def _select(model: ModelProto, min_bytes: int, include: str | None,
            exclude: str | None) -> list[tuple[str, TensorProto, int]]:
    """``(scope, initializer, size in bytes)`` of every initializer to seal."""
    inc, exc = _regex("include", include), _regex("exclude", exclude)
    chosen = []
    for scope, graph in iter_graphs(model.graph):
        for t in graph.initializer:
            if (inc and not inc.search(t.name)) or (exc and exc.search(t.name)):
                continue
            nbytes = _nbytes(t)
            if nbytes is None:
                if inc:
                    raise FormatError(f"tensor {t.name!r} has type {helper.tensor_dtype_to_string(t.data_type)}, "
                                      "which cannot be sealed (only fixed-size numeric and bool tensors can)")
                continue
            if nbytes >= min_bytes:
                chosen.append((scope, t, nbytes))
    return chosen


def _regex(option: str, pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--{option} {pattern!r} is not a valid regular expression: {exc}") from None


def _unseal_node(name: str, dtype: int, dims: list[int], identity: str) -> NodeProto:
    node = helper.make_node(OP_TYPE, [name + SEALED_SUFFIX, _like_name(dtype)], [name], name=f"ortseal.unseal/{name}",
                            domain=DOMAIN, dtype=dtype, tensor=identity,
                            **({"fallback_supported": 1} if dtype in FALLBACK_TYPES else {}))
    # built explicitly: onnx cannot infer the type of an empty list (a scalar's shape)
    node.attribute.append(helper.make_attribute("shape", dims, attr_type=AttributeProto.INTS))
    return node


def _like_name(dtype: int) -> str:
    return LIKE_PREFIX + helper.tensor_dtype_to_string(dtype).split(".")[-1].lower()


def _rewrite(model: ModelProto, chosen: list, keys: KeySet, segment_size: int) -> list[_Selected]:
    """Replace each chosen initializer by a blob initializer and an Unseal node.

    Nodes are inserted first, graph by graph, looked up by scope each time (inserting copies nodes and so
    the subgraphs they own); the initializers are then changed in place, so the blob references returned
    stay live in ``model``.
    """
    plans: dict[str, list[tuple[str, int, list[int], int]]] = {}
    for scope, t, nbytes in chosen:
        plans.setdefault(scope, []).append((t.name, t.data_type, list(t.dims), nbytes))
    for scope, items in plans.items():
        graph = dict(iter_graphs(model.graph))[scope]
        nodes = [_unseal_node(name, dtype, dims, tensor_identity(scope, name, dtype, dims))
                 for name, dtype, dims, _ in items]
        rest = list(graph.node)
        graph.ClearField("node")
        graph.node.extend(nodes + rest)
    selected = []
    for scope, graph in iter_graphs(model.graph):
        if scope not in plans:
            continue
        wanted = {name: (dtype, dims, nbytes) for name, dtype, dims, nbytes in plans[scope]}
        existing = {t.name for t in graph.initializer}
        for t in graph.initializer:
            if t.name not in wanted:
                continue
            dtype, dims, nbytes = wanted[t.name]
            if t.name + SEALED_SUFFIX in existing:
                raise FormatError(f"cannot seal {t.name!r}: an initializer named {t.name + SEALED_SUFFIX!r} exists")
            original = TensorProto()
            original.CopyFrom(t)
            length = Sealer(keys, context=b"", length=nbytes, sign=False, segment_size=segment_size).header.blob_length
            t.Clear()
            t.name, t.data_type = original.name + SEALED_SUFFIX, TensorProto.UINT8
            t.dims.append(length)
            selected.append(_Selected(original, scope, t, tensor_identity(scope, original.name, dtype, dims), nbytes))
        likes = sorted({dtype for dtype, _, _ in wanted.values()})
        for dtype in likes:
            if _like_name(dtype) not in existing:
                graph.initializer.add(name=_like_name(dtype), data_type=dtype, dims=[0], raw_data=b"")
        # Old-style graphs (IR < 4) list initializers as inputs too: list the blobs the same way. A sealed
        # tensor itself is no longer an input, so it cannot be overridden by a feed.
        listed = [i.name for i in graph.input if i.name in wanted]
        inputs = [i for i in graph.input if i.name not in wanted]
        del graph.input[:]
        graph.input.extend(inputs)
        for s in selected:
            if s.tensor.name in listed:
                graph.input.append(helper.make_tensor_value_info(s.blob.name, TensorProto.UINT8, list(s.blob.dims)))
        if listed:
            graph.input.extend(helper.make_tensor_value_info(_like_name(t), t, [0]) for t in likes
                               if _like_name(t) not in existing)
    return selected


def seal_model(src: str | os.PathLike[str], dst: str | os.PathLike[str], keys: KeySet, *, min_bytes: int = 1024,
               include: str | None = None, exclude: str | None = None, sign: bool = True,
               external_data: bool = True, progress: bool = True, model_name: str | None = None,
               release: int = 0, overwrite: bool = False, segment_size: int = DEFAULT_SEGMENT_SIZE) -> SealSummary:
    """Seal the initializers of ``src`` into ``dst``.

    Selected: every fixed-size numeric or bool initializer of at least ``min_bytes``, in every graph and
    subgraph, whose name matches ``include`` (regex) and not ``exclude``. Each becomes a uint8 sealed blob
    plus an ``ai.ortseal::Unseal`` node, bound to this seal and to the sealed graph's digest. A manifest
    naming the model (``model_name``, default the file's stem), its ``release`` (an int you increase with
    each release; devices can refuse older ones) and every blob's digest is signed when ``sign``. With
    ``external_data`` (default) blobs go to ``<dst>.data`` beside ``dst``; both files are written
    atomically, and existing files are replaced only with ``overwrite``. Nothing is loaded whole that can be
    streamed.
    """
    src_path, dst_path = Path(src), Path(dst)
    check_release(release)
    model_name = src_path.stem if model_name is None else model_name
    if not isinstance(model_name, str) or not model_name:
        raise ValueError("model_name must be a non-empty string")
    model, base_dir = load_model(src_path)
    assert base_dir is not None
    if is_sealed_model(model):
        raise FormatError(f"{src_path} is already sealed by ortseal")
    if dst_path.resolve() == src_path.resolve():
        raise ValueError("dst must differ from src")
    for existing in (dst_path, dst_path.with_name(dst_path.name + ".data") if external_data else None):
        if existing is not None and not overwrite and existing.exists():
            raise FileExistsError(f"{existing} exists; choose another output, or replace it with --overwrite "
                                  "(Python: overwrite=True)")
    if min_bytes < 0:
        raise ValueError("min_bytes must be >= 0")
    chosen = _select(model, min_bytes, include, exclude)
    if not chosen:
        raise ValueError(f"no initializer of {src_path} to seal with --min-bytes {min_bytes}, --include {include!r}, "
                         f"--exclude {exclude!r}; smaller tensors are sealed with a lower --min-bytes")
    keys.sealing_key()
    if sign and keys.signing_key() is None:
        raise ValueError("this keyset has no signing key; seal with the publisher's keyset, or pass --no-sign "
                         "(Python: sign=False) for devices whose keyset allows unsigned models")
    if not sign and keys.requires_signature:
        raise ValueError("--no-sign (Python: sign=False) writes a model this keyset could never open, since it "
                         "requires signatures; sign it, or use a keyset made with allow_unsigned=True")
    selected = _rewrite(model, chosen, keys, segment_size)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, OPSET_VERSION))
    meta = {p.key: p for p in model.metadata_props}
    (meta[METADATA_KEY] if METADATA_KEY in meta else model.metadata_props.add(key=METADATA_KEY)).value = "2"
    digest = graph_digest(model, base_dir)
    manifest = Manifest(model_name, release, secrets.token_hex(16), digest)
    total = sum(s.nbytes for s in selected)
    if not external_data and total > (1 << 31) - (64 << 20):
        raise ValueError("sealed payloads over 2 GiB need external_data=True")
    data_path = dst_path.with_name(dst_path.name + ".data") if external_data else None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"sealing {src_path.name}", leave=False,
               disable=not progress or total < PROGRESS_MIN_BYTES)
    with bar, contextlib.ExitStack() as stack:
        inline = io.BytesIO()
        data = stack.enter_context(atomic_writer(data_path, mode=0o644, overwrite=overwrite)) if data_path else inline
        blobs = stack.enter_context(BlobWriter(data, keys, segment_size=segment_size))
        for s in selected:
            with contextlib.ExitStack() as source:
                offset = data.tell()
                info = blobs.write(_tensor_bytes(s.tensor, base_dir, s.nbytes, source), sign=False, release=release,
                                   context=tensor_context(manifest.seal_id, digest, s.identity), progress=bar.update)
            manifest.tensors[s.identity] = TensorEntry(info.header.key_id, info.digest, s.nbytes)
            if data_path:
                set_external(s.blob, data_path.name, offset, info.length)
            else:
                s.blob.raw_data = inline.getbuffer()[offset:offset + info.length].tobytes()
        _move_plain_external(model, base_dir, data if data_path else None, data_path.name if data_path else "")
        write_manifest(model, manifest, keys, sign)
        serialized = model.SerializeToString()
    with atomic_writer(dst_path, mode=0o644, overwrite=overwrite) as fh:
        fh.write(serialized)
    return SealSummary(dst_path, data_path, [s.tensor.name for s in selected], total, manifest)


def _move_plain_external(model: ModelProto, base_dir: str, out, location: str) -> None:
    """Give plain (unsealed) external tensors a home in the sealed model: copied page-aligned into its data
    file ``out``, or inline when there is no data file."""
    for _, graph in iter_graphs(model.graph):
        for t in graph.initializer:
            if not is_external(t) or t.name.endswith(SEALED_SUFFIX):
                continue
            if out is None:
                load_inline(t, base_dir)
                continue
            out.write(b"\0" * (-out.tell() % PLAIN_ALIGNMENT))
            start = out.tell()
            for chunk in iter_external(t, base_dir):
                out.write(chunk)
            set_external(t, location, start, out.tell() - start)
