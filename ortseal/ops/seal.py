"""``seal_model``: turn selected initializers of an ONNX model into sealed blobs read by Unseal nodes.

    ortseal.seal_model("model.onnx", "model.sealed.onnx", keys)      # payloads in model.sealed.onnx.data
"""

from __future__ import annotations

import contextlib
import io
import json
import mmap
import os
import re
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnx import AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper
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
    SELECTION_KEY,
    blob_tensors,
    body,
    external_location,
    graph_digest,
    is_external,
    is_sealed_model,
    iter_bodies,
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


REASON_SMALL = "below --min-bytes"
REASON_EXCLUDED = "excluded"  # by --exclude, or not matched by --include
REASON_KIND = "a kind ortseal cannot seal"


@dataclass
class PlainTensor:
    """A constant tensor that :func:`seal_model` left plaintext, and why."""

    name: str
    scope: str
    source: str  # "initializer" or "Constant"
    nbytes: int | None  # None where the size is not a fixed byte count (strings, sparse tensors)
    reason: str
    detail: str = ""  # for REASON_KIND: the kind


@dataclass
class SealSummary:
    """What :func:`seal_model` did: the tensors it sealed and those it left plaintext."""

    model: Path
    data_file: Path | None
    sealed: list[str] = field(default_factory=list)
    plaintext_bytes: int = 0
    manifest: Manifest | None = None
    left_plain: list[PlainTensor] = field(default_factory=list)


@dataclass
class _Candidate:
    """A constant tensor of the source model: an initializer, or a Constant node's value."""

    scope: str
    name: str
    tensor: TensorProto | None  # None: a kind that cannot be sealed
    constant: bool
    kind: str = ""  # what it is when it cannot be sealed

    @property
    def nbytes(self) -> int | None:
        return None if self.tensor is None else _nbytes(self.tensor)


@dataclass
class _Selected:
    candidate: _Candidate
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


_LIST_ATTRS = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}


def _constant_tensor(node: NodeProto) -> tuple[TensorProto | None, str]:
    """A Constant node's value as a tensor (list-valued attributes converted), or ``(None, kind)``."""
    for a in node.attribute:
        if a.name == "value":
            return a.t, ""
        if a.name in _LIST_ATTRS:
            value = helper.get_attribute_value(a)
            return numpy_helper.from_array(np.asarray(value, _LIST_ATTRS[a.name]), node.output[0]), ""
        if a.name in ("value_string", "value_strings", "sparse_value"):
            return None, a.name
    return None, "a Constant node without a value"


def _is_constant(node: NodeProto) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1


def _ortseal_own(name: str) -> bool:
    """A sealed blob or a ``like`` tensor: ortseal's own, never a candidate."""
    return name.endswith(SEALED_SUFFIX) or name.startswith(LIKE_PREFIX)


def _candidates(model: ModelProto) -> Iterator[_Candidate]:
    """Every constant tensor of every graph, subgraph and local function (ortseal's own left out)."""
    for scope, b in iter_bodies(model):
        if isinstance(b, GraphProto):
            for t in b.initializer:
                if not _ortseal_own(t.name):
                    yield _Candidate(scope, t.name, t, False, helper.tensor_dtype_to_string(t.data_type).split(".")[-1])
            for sp in b.sparse_initializer:
                yield _Candidate(scope, sp.values.name, None, False, "sparse tensor")
        for n in b.node:
            if _is_constant(n) and not _ortseal_own(n.output[0]):
                t, kind = _constant_tensor(n)
                if t is not None and _nbytes(t) is None:
                    kind = helper.tensor_dtype_to_string(t.data_type).split(".")[-1]
                yield _Candidate(scope, n.output[0], t, True, kind)


def _copy(t: TensorProto) -> TensorProto:
    copy = TensorProto()
    copy.CopyFrom(t)
    return copy


def _select(model: ModelProto, min_bytes: int, include: str | None,
            exclude: str | None) -> tuple[list[_Candidate], list[PlainTensor]]:
    """The constant tensors to seal, and those left plaintext with the reason."""
    inc, exc = _regex("include", include), _regex("exclude", exclude)
    chosen, plain = [], []
    for c in _candidates(model):
        source = "Constant" if c.constant else "initializer"
        nbytes = c.nbytes
        if (inc and not inc.search(c.name)) or (exc and exc.search(c.name)):
            plain.append(PlainTensor(c.name, c.scope, source, nbytes, REASON_EXCLUDED))
        elif nbytes is None:
            if inc:
                raise FormatError(f"--include selects {source} {c.name!r} ({c.kind}), which cannot be sealed: only "
                                  "fixed-size numeric and bool tensors can; narrow --include or --exclude it")
            plain.append(PlainTensor(c.name, c.scope, source, None, REASON_KIND, c.kind))
        elif nbytes < min_bytes:
            plain.append(PlainTensor(c.name, c.scope, source, nbytes, REASON_SMALL))
        else:
            if c.constant and c.tensor is not None:
                c.tensor = _copy(c.tensor)  # its node is replaced when sealed: keep the value
            chosen.append(c)
    return chosen, plain


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


def _blob_constant(name: str, length: int) -> NodeProto:
    """The Constant node that holds a sealed Constant's blob (its data is written later)."""
    blob = TensorProto(name=name + SEALED_SUFFIX, data_type=TensorProto.UINT8, dims=[length])
    return helper.make_node("Constant", [], [blob.name], name=f"ortseal.blob/{name}", value=blob)


def _names(b: GraphProto | FunctionProto) -> set[str]:
    names = {o for n in b.node for o in n.output}
    if isinstance(b, GraphProto):
        names |= {t.name for t in b.initializer} | {i.name for i in b.input}
    else:
        names |= set(b.input)
    return names


def _rewrite_nodes(model: ModelProto, scope: str, items: list[_Candidate], lengths: dict[int, int]) -> None:
    """Insert the Unseal nodes of one graph or function: sealed initializers get theirs first; each sealed
    Constant node is replaced in place by a Constant holding its blob and an Unseal node."""
    b = body(model, scope)
    taken = _names(b)
    for c in items:
        if c.name + SEALED_SUFFIX in taken:
            raise FormatError(f"cannot seal {c.name!r}: the name {c.name + SEALED_SUFFIX!r} is already used")

    def unseal(c: _Candidate) -> NodeProto:
        assert c.tensor is not None
        return _unseal_node(c.name, c.tensor.data_type, list(c.tensor.dims),
                            tensor_identity(c.scope, c.name, c.tensor.data_type, list(c.tensor.dims)))

    nodes = [unseal(c) for c in items if not c.constant]
    constants = {c.name: c for c in items if c.constant}
    if isinstance(b, FunctionProto):  # no initializers in a function: its ``like`` inputs are Constants too
        for dtype in sorted({c.tensor.data_type for c in constants.values() if c.tensor is not None}):
            if _like_name(dtype) not in taken:
                nodes.append(helper.make_node("Constant", [], [_like_name(dtype)], name=_like_name(dtype),
                                              value=TensorProto(name=_like_name(dtype), data_type=dtype, dims=[0])))
        if not any(o.domain == DOMAIN for o in b.opset_import):
            b.opset_import.append(helper.make_opsetid(DOMAIN, OPSET_VERSION))
    for n in b.node:
        if _is_constant(n) and n.output[0] in constants:
            nodes += [_blob_constant(n.output[0], lengths[id(constants[n.output[0]])]), unseal(constants[n.output[0]])]
        else:
            nodes.append(n)
    b.ClearField("node")
    b.node.extend(nodes)


def _rewrite_initializers(graph: GraphProto, items: list[_Candidate], lengths: dict[int, int]) -> None:
    """Turn one graph's chosen initializers into uint8 blobs (in place) and add its ``like`` initializers."""
    wanted = {c.name: c for c in items if not c.constant}
    existing = {t.name for t in graph.initializer}
    for t in graph.initializer:
        if t.name in wanted:
            c = wanted[t.name]
            c.tensor = _copy(t)
            t.Clear()
            t.name, t.data_type = c.name + SEALED_SUFFIX, TensorProto.UINT8
            t.dims.append(lengths[id(c)])
    likes = sorted({c.tensor.data_type for c in items if c.tensor is not None})
    for dtype in likes:
        if _like_name(dtype) not in existing:
            graph.initializer.add(name=_like_name(dtype), data_type=dtype, dims=[0], raw_data=b"")
    # Old-style graphs (IR < 4) list initializers as inputs too: list the blobs the same way. A sealed
    # tensor itself is no longer an input, so it cannot be overridden by a feed.
    listed = [i.name for i in graph.input if i.name in wanted]
    inputs = [i for i in graph.input if i.name not in wanted]
    del graph.input[:]
    graph.input.extend(inputs)
    for name in listed:
        graph.input.append(helper.make_tensor_value_info(name + SEALED_SUFFIX, TensorProto.UINT8,
                                                         [lengths[id(wanted[name])]]))
    if listed:
        graph.input.extend(helper.make_tensor_value_info(_like_name(t), t, [0]) for t in likes
                           if _like_name(t) not in existing)


def _rewrite(model: ModelProto, chosen: list[_Candidate], keys: KeySet, segment_size: int) -> list[_Selected]:
    """Replace each chosen tensor by a sealed blob (an initializer, or a Constant node for Constants) read
    by an Unseal node; returns the blobs to fill, as live references into ``model``.

    Node lists are edited first, graph by graph, each looked up afresh by scope (editing a node list copies
    the subgraphs it owns); initializers are then changed in place, and the blobs looked up last.
    """
    lengths = {id(c): Sealer(keys, context=b"", length=c.nbytes or 0, sign=False,
                             segment_size=segment_size).header.blob_length for c in chosen}
    plans: dict[str, list[_Candidate]] = {}
    for c in chosen:
        plans.setdefault(c.scope, []).append(c)
    for scope, items in plans.items():
        _rewrite_nodes(model, scope, items, lengths)
    for scope, items in plans.items():
        b = body(model, scope)
        if isinstance(b, GraphProto):
            _rewrite_initializers(b, items, lengths)
    selected = []
    for scope, items in plans.items():
        b = body(model, scope)
        blobs = {name: t for name, (t, _) in blob_tensors(b).items()}
        for c in items:
            assert c.tensor is not None
            dims = list(c.tensor.dims)
            selected.append(_Selected(c, blobs[c.name + SEALED_SUFFIX],
                                      tensor_identity(scope, c.name, c.tensor.data_type, dims), c.nbytes or 0))
    return selected


def seal_model(src: str | os.PathLike[str], dst: str | os.PathLike[str], keys: KeySet, *, min_bytes: int = 1024,
               include: str | None = None, exclude: str | None = None, sign: bool = True,
               external_data: bool = True, progress: bool = True, model_name: str | None = None,
               release: int = 0, overwrite: bool = False, segment_size: int = DEFAULT_SEGMENT_SIZE) -> SealSummary:
    """Seal the constant tensors of ``src`` into ``dst``.

    Selected: every fixed-size numeric or bool constant of at least ``min_bytes`` (initializers, and the
    values of Constant nodes, in every graph, subgraph and local function) whose name matches ``include``
    (regex) and not ``exclude``. Each becomes a uint8 sealed blob (an initializer, or a Constant node for
    Constants) plus an ``ai.ortseal::Unseal`` node, bound to this seal and to the sealed graph's digest.
    ``SealSummary.left_plain`` lists what stayed plaintext and why; an unsealable tensor that ``include``
    selects is an error. A manifest
    naming the model (``model_name``, default the file's stem), its ``release`` (an int you increase with
    each release; devices can refuse older ones) and every blob's digest is signed when ``sign``. With
    ``progress`` shows a bar on a terminal (never when stderr is redirected). With
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
    _inline_attribute_tensors(model, base_dir)
    chosen, left_plain = _select(model, min_bytes, include, exclude)
    if not chosen:
        given = "".join(f", --{k} {v!r}" for k, v in (("include", include), ("exclude", exclude)) if v is not None)
        raise ValueError(f"no constant tensor of {src_path} to seal with --min-bytes {min_bytes}{given}; smaller "
                         "tensors are sealed with a lower --min-bytes")
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
    (meta[SELECTION_KEY] if SELECTION_KEY in meta else model.metadata_props.add(key=SELECTION_KEY)).value = \
        json.dumps({"min_bytes": min_bytes, "include": include, "exclude": exclude}, sort_keys=True)
    digest = graph_digest(model, base_dir)
    manifest = Manifest(model_name, release, secrets.token_hex(16), digest)
    total = sum(s.nbytes for s in selected)
    if not external_data and total > (1 << 31) - (64 << 20):
        raise ValueError("sealed payloads over 2 GiB need external_data=True")
    data_path = dst_path.with_name(dst_path.name + ".data") if external_data else None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"sealing {src_path.name}", leave=False,
               disable=not progress or total < PROGRESS_MIN_BYTES or not sys.stderr.isatty())
    with bar, contextlib.ExitStack() as stack:
        inline = io.BytesIO()
        data = stack.enter_context(atomic_writer(data_path, mode=0o644, overwrite=overwrite)) if data_path else inline
        blobs = stack.enter_context(BlobWriter(data, keys, segment_size=segment_size))
        for s in selected:
            with contextlib.ExitStack() as source:
                offset = data.tell()
                tensor = s.candidate.tensor
                assert tensor is not None
                info = blobs.write(_tensor_bytes(tensor, base_dir, s.nbytes, source), sign=False, release=release,
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
    return SealSummary(dst_path, data_path, [s.candidate.name for s in selected], total, manifest, left_plain)


def _inline_attribute_tensors(model: ModelProto, base_dir: str) -> None:
    """Load attribute tensors stored as external data (Constant values saved with ``convert_attribute``)
    into the model: sealed ones are then read like any other, plain ones stay where sealing binds them."""
    for _, b in iter_bodies(model):
        for n in b.node:
            for a in n.attribute:
                if a.type == AttributeProto.TENSOR and is_external(a.t):
                    load_inline(a.t, base_dir)


def plaintext_report(model: ModelProto) -> list[PlainTensor]:
    """What a sealed model holds in plaintext, with the reason under the selection recorded at sealing
    (``ortseal.selection``; informational, not signed). A tensor that selection would have sealed is
    reported as ``not sealed``."""
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        selection = json.loads(meta.get(SELECTION_KEY, "null")) or {}
        chosen, plain = _select(model, int(selection.get("min_bytes", 0)), selection.get("include"),
                                selection.get("exclude"))
    except (ValueError, TypeError, AttributeError):
        chosen, plain = _select(model, 0, None, None)
    return plain + [PlainTensor(c.name, c.scope, "Constant" if c.constant else "initializer", c.nbytes,
                                "not sealed") for c in chosen]


def summarize_plain(left: list[PlainTensor]) -> str:
    """``"12 tensors, 3.1 KiB, left plaintext: 10 below --min-bytes (2.0 KiB), 2 ..."`` (one line)."""
    if not left:
        return "nothing left plaintext"
    by_reason: dict[str, list[PlainTensor]] = {}
    for p in left:
        key = f"{p.reason} ({p.detail})" if p.detail else p.reason
        by_reason.setdefault(key, []).append(p)
    parts = [f"{len(ps)} {reason} ({format_size(sum(p.nbytes or 0 for p in ps))})"
             for reason, ps in sorted(by_reason.items())]
    return (f"{len(left)} tensor{'s' if len(left) != 1 else ''} ({format_size(sum(p.nbytes or 0 for p in left))}) "
            "left plaintext: " + ", ".join(parts))


def format_size(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.1 GiB``."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


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
