"""``seal_model``: turn selected initializers of an ONNX model into sealed blobs read by Unseal nodes.

    ortseal.seal_model("model.onnx", "model.sealed.onnx", keys)      # payloads in model.sealed.onnx.data
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import rfc8785
from onnx import (
    AttributeProto,
    FunctionProto,
    GraphProto,
    ModelProto,
    NodeProto,
    SparseTensorProto,
    TensorProto,
    helper,
    numpy_helper,
)

from .._atomic import atomic_writer, output_lock
from .._progress import ByteProgress
from ..blob import DEFAULT_SEGMENT_SIZE, BlobWriter, check_release, sealed_length
from ..errors import FormatError
from ..keys import KeySet
from ._graph import (
    LIKE_PREFIX,
    METADATA_KEY,
    NOTE_KEY,
    OPEN_WITH,
    SEALED_SUFFIX,
    SELECTION_KEY,
    DataFiles,
    blob_tensors,
    body,
    external_initializers,
    is_external,
    is_sealed_model,
    iter_bodies,
    load_inline,
    load_model,
    malformed_is_format_error,
    set_external,
    tensor_context,
    tensor_identity,
)
from ._record import MANIFEST_KEY, MODEL_FORMAT_VERSION, ExternalEntry, Manifest, TensorEntry, body_digest, make_record
from .schema import (
    DOMAIN,
    FALLBACK_TYPES,
    OP_TYPE,
    OPSET_VERSION,
    RAW,
    SEALABLE_TYPES,
    kind_name,
    raw_length,
    register_schema,
)
from .tensors import Value, encoding_of, proto_payload, raw_payload

register_schema()  # onnx's checker and shape inference then know the Unseal nodes sealing writes

PLAIN_ALIGNMENT = 4096  # plain external tensors copied to the data file stay page-aligned for mmap


REASON_SMALL = "below min_bytes"
REASON_EXCLUDED = "excluded"  # by exclude=, or not matched by include=


@dataclass
class PlainTensor:
    """A constant tensor that :func:`seal_model` left plaintext, and why."""

    name: str
    scope: str
    source: str  # "initializer" or "Constant"
    nbytes: int | None  # what it would be sealed as (tensors.py); None where a kind is not known
    reason: str
    detail: str = ""


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
    """A constant tensor of the source model: an initializer (dense or sparse), or a Constant node's value."""

    scope: str
    name: str
    tensor: Value
    constant: bool
    nbytes: int | None = None  # its payload's length, once _select has checked its kind

    @property
    def dtype(self) -> int:
        return self.tensor.values.data_type if isinstance(self.tensor, SparseTensorProto) else self.tensor.data_type


@dataclass
class _Selected:
    candidate: _Candidate
    blob: TensorProto
    identity: str
    nbytes: int


def _nbytes(t: Value) -> int:
    """The length of what ``t`` is sealed as (``tensors.py``); FormatError for a kind that cannot be sealed."""
    if encoding_of(t) == RAW:
        return raw_length(t.data_type, list(t.dims))
    return len(proto_payload(t, None))


def _tensor_bytes(t: Value, files: DataFiles, nbytes: int, stack: contextlib.ExitStack) -> memoryview:
    """What ``t`` is sealed as: its exact raw bytes (mapped from its external file where it has one), or
    for STRING and sparse tensors its serialization."""
    if encoding_of(t) == RAW:
        assert isinstance(t, TensorProto)
        return raw_payload(t, files, nbytes, stack)
    return memoryview(proto_payload(t, files))


_LIST_ATTRS = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}


def _constant_tensor(node: NodeProto) -> Value:
    """A Constant node's value as a dense or sparse tensor (list and string attributes converted: a
    ``value_float(s)`` / ``value_int(s)`` list to float32 / int64, ``value_string(s)`` to STRING)."""
    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name == "sparse_value":
            return a.sparse_tensor
        if a.name in _LIST_ATTRS:
            value = helper.get_attribute_value(a)
            return numpy_helper.from_array(np.asarray(value, _LIST_ATTRS[a.name]), node.output[0])
        if a.name == "value_string":
            return TensorProto(name=node.output[0], data_type=TensorProto.STRING, dims=[], string_data=[a.s])
        if a.name == "value_strings":
            return TensorProto(name=node.output[0], data_type=TensorProto.STRING, dims=[len(a.strings)],
                               string_data=list(a.strings))
    raise FormatError(f"Constant node {node.name or node.output[0]!r} has no value attribute ortseal knows")


def _is_constant(node: NodeProto) -> bool:
    """A Constant node whose value is in the model (not a local function's attribute reference)."""
    return (node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1
            and not any(a.ref_attr_name for a in node.attribute))


def _ortseal_own(name: str) -> bool:
    """A sealed blob or a ``like`` tensor: ortseal's own, never a candidate."""
    return name.endswith(SEALED_SUFFIX) or name.startswith(LIKE_PREFIX)


def _candidates(model: ModelProto) -> Iterator[_Candidate]:
    """Every constant tensor of every graph, subgraph and local function (ortseal's own left out)."""
    for scope, b in iter_bodies(model):
        if isinstance(b, GraphProto):
            for t in b.initializer:
                if not _ortseal_own(t.name):
                    yield _Candidate(scope, t.name, t, False)
            for sp in b.sparse_initializer:
                yield _Candidate(scope, sp.values.name, sp, False)
        for n in b.node:
            if _is_constant(n) and not _ortseal_own(n.output[0]):
                yield _Candidate(scope, n.output[0], _constant_tensor(n), True)


def _copy(t: Value) -> Value:
    copy = type(t)()
    copy.CopyFrom(t)
    return copy


def _select(model: ModelProto, min_bytes: int, include: str | None,
            exclude: str | None) -> tuple[list[_Candidate], list[PlainTensor]]:
    """The constant tensors to seal, and those left plaintext with the reason."""
    inc, exc = _regex("include", include), _regex("exclude", exclude)
    chosen, plain = [], []
    for c in _candidates(model):
        source = "Constant" if c.constant else "initializer"
        if (inc and not inc.search(c.name)) or (exc and exc.search(c.name)):
            nbytes = _nbytes(c.tensor) if c.dtype in SEALABLE_TYPES else None
            plain.append(PlainTensor(c.name, c.scope, source, nbytes, REASON_EXCLUDED))
            continue
        try:
            nbytes = c.nbytes = _nbytes(c.tensor)
        except FormatError as err:
            raise FormatError(f"{source} {c.name!r} (scope {c.scope or '/'!r}) cannot be sealed: {err}; leave it "
                              "plaintext with exclude=") from None
        if nbytes < min_bytes:
            plain.append(PlainTensor(c.name, c.scope, source, nbytes, REASON_SMALL))
        else:
            if c.constant:
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


def _unseal_node(c: _Candidate, identity: str) -> NodeProto:
    """``c.name = Unseal(c.name.ortseal_sealed, like)``; STRING and sparse tensors also name their encoding
    and payload length, raw ones of the fallback kernel's types say it can serve them."""
    encoding = encoding_of(c.tensor)
    extra: dict[str, str | int] = {"fallback_supported": 1} if encoding == RAW and c.dtype in FALLBACK_TYPES else {}
    if encoding != RAW:
        assert c.nbytes is not None  # set when it was selected
        extra = {"encoding": encoding, "payload_bytes": c.nbytes}
    node = helper.make_node(OP_TYPE, [c.name + SEALED_SUFFIX, _like_name(c.dtype)], [c.name],
                            name=f"ortseal.unseal/{c.name}", domain=DOMAIN, dtype=c.dtype, tensor=identity,
                            **extra)  # type: ignore[arg-type]  # onnx types **kwargs as the doc_string's type
    # built explicitly: onnx cannot infer the type of an empty list (a scalar's shape)
    node.attribute.append(helper.make_attribute("shape", list(c.tensor.dims), attr_type=AttributeProto.INTS))
    return node


def _like_name(dtype: int) -> str:
    return LIKE_PREFIX + kind_name(dtype).lower()


def _like(dtype: int) -> TensorProto:
    """An empty tensor of ``dtype`` (no raw_data for STRING, which has none)."""
    like = TensorProto(name=_like_name(dtype), data_type=dtype, dims=[0])
    if dtype != TensorProto.STRING:
        like.raw_data = b""
    return like


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
        return _unseal_node(c, tensor_identity(c.scope, c.name, c.dtype, list(c.tensor.dims)))

    nodes = [unseal(c) for c in items if not c.constant]
    constants = {c.name: c for c in items if c.constant}
    if isinstance(b, FunctionProto):  # no initializers in a function: its ``like`` inputs are Constants too
        for dtype in sorted({c.dtype for c in constants.values()}):
            if _like_name(dtype) not in taken:
                nodes.append(helper.make_node("Constant", [], [_like_name(dtype)], name=_like_name(dtype),
                                              value=_like(dtype)))
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
    """Turn one graph's chosen initializers into uint8 blobs (dense ones in place, sparse ones moved to the
    end of ``graph.initializer``) and add its ``like`` initializers."""
    wanted = {c.name: c for c in items if not c.constant}
    existing = {t.name for t in graph.initializer}
    for t in graph.initializer:
        if t.name in wanted:
            c = wanted[t.name]
            c.tensor = _copy(t)
            t.Clear()
            t.name, t.data_type = c.name + SEALED_SUFFIX, TensorProto.UINT8
            t.dims.append(lengths[id(c)])
    sparse = [sp for sp in graph.sparse_initializer if sp.values.name in wanted]
    for sp in sparse:
        c = wanted[sp.values.name]
        c.tensor = _copy(sp)
        graph.sparse_initializer.remove(sp)
        graph.initializer.add(name=c.name + SEALED_SUFFIX, data_type=TensorProto.UINT8, dims=[lengths[id(c)]])
    likes = sorted({c.dtype for c in items})
    for dtype in likes:
        if _like_name(dtype) not in existing:
            graph.initializer.append(_like(dtype))
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
    key_id = keys.sealing_key()[0]  # tensor blobs are unsigned: the signed manifest commits to them
    lengths = {id(c): sealed_length(c.nbytes or 0, key_id=key_id, segment_size=segment_size) for c in chosen}
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
            selected.append(_Selected(c, blobs[c.name + SEALED_SUFFIX],
                                      tensor_identity(scope, c.name, c.dtype, list(c.tensor.dims)), c.nbytes or 0))
    return selected


def seal_model(src: str | os.PathLike[str] | bytes, dst: str | os.PathLike[str] | BinaryIO, keys: KeySet, *,
               min_bytes: int = 1024,
               include: str | None = None, exclude: str | None = None, sign: bool = True,
               external_data: bool = True, progress: bool = True, model_name: str | None = None,
               release: int = 0, overwrite: bool = False, segment_size: int = DEFAULT_SEGMENT_SIZE) -> SealSummary:
    """Seal the constant tensors of ``src`` into ``dst``.

    Selected: every constant tensor, of any ONNX kind, dense or sparse, whose payload (``tensors.py``) is
    at least ``min_bytes`` (initializers, and the values of Constant nodes, in every graph, subgraph and local
    function) and whose name matches ``include`` (regex) and not ``exclude``. Each becomes a uint8 sealed
    blob (an initializer, or a Constant node for Constants) plus an ``ai.ortseal::Unseal`` node, bound to
    this seal and to the tensor's identity. ``SealSummary.left_plain`` lists what stayed plaintext and why;
    a tensor of no ONNX kind is an error unless excluded. A manifest naming the model (``model_name``,
    default the file's stem), its ``release`` (an int you increase with each release; devices can refuse
    older ones), every blob's digest and every plain external tensor's SHA-256 goes into the model, and the
    whole file is signed (model format v3) when ``sign``; else (keysets that allow unsigned models) it gets
    an HMAC under the content key. With
    ``progress`` shows a bar on a terminal (never when stderr is redirected). With
    ``external_data`` (default) blobs go to ``<dst>.data`` beside ``dst``; both files are written
    atomically, and existing files are replaced only with ``overwrite``. Nothing is loaded whole that can be
    streamed.

    ``src`` may be a model's bytes (one without external data; give ``model_name``) and ``dst`` a binary
    stream (with ``external_data=False``: the sealed model is written to it whole, nothing else is written).
    """
    in_memory, to_stream = isinstance(src, bytes), hasattr(dst, "write")
    src_path = Path("<bytes>") if in_memory else Path(src)  # type: ignore[arg-type]
    dst_path = None if to_stream else Path(dst)  # type: ignore[arg-type]
    check_release(release)
    if model_name is None and in_memory:
        raise ValueError("a model given as bytes has no file name: give model_name=NAME")
    model_name = src_path.stem if model_name is None else model_name
    if not isinstance(model_name, str) or not model_name:
        raise ValueError("model_name must be a non-empty string")
    if to_stream and external_data:
        raise ValueError("a sealed model written to a stream keeps its payloads inline: pass external_data=False")
    loaded = load_model(src if in_memory else src_path)
    model = loaded.model
    if is_sealed_model(model):
        raise FormatError(f"{loaded.name} is already sealed by ortseal")
    if dst_path is not None and not in_memory and dst_path.resolve() == src_path.resolve():
        raise ValueError("dst must differ from src")
    for existing in (dst_path, dst_path.with_name(dst_path.name + ".data") if dst_path and external_data else None):
        if existing is not None and not overwrite and existing.exists():
            raise FileExistsError(f"{existing} exists; choose another output, or replace it (overwrite=True)")
    if min_bytes < 0:
        raise ValueError("min_bytes must be >= 0")
    key_id, _ = keys.sealing_key()
    if sign and keys.signing_key() is None:
        raise ValueError("this keyset has no signing key; seal with the publisher's keyset, or with sign=False for "
                         "devices whose keyset allows unsigned models")
    if not sign and keys.requires_signature:
        raise ValueError("sign=False writes a model this keyset could never open, since it "
                         "requires signatures; sign it, or use a keyset made with allow_unsigned=True")
    # one writer at a time for this model and its data file: two seals to one output must not pair one's
    # model with the other's data; and what a killed seal left (its temp files) goes first
    with output_lock(dst_path) if dst_path is not None else contextlib.nullcontext():
        with DataFiles(loaded.base_dir) as files:
            _inline_attribute_tensors(model, files)
            chosen, left_plain = _select(model, min_bytes, include, exclude)
            if not chosen:
                raise ValueError(_nothing_to_seal(src_path, min_bytes, include, exclude, left_plain))
            selected = _rewrite(model, chosen, keys, segment_size)
            if not any(o.domain == DOMAIN for o in model.opset_import):
                model.opset_import.append(helper.make_opsetid(DOMAIN, OPSET_VERSION))
            manifest = Manifest(model_name, release, secrets.token_hex(16), key_id)
            total = sum(s.nbytes for s in selected)
            if not external_data and total > (1 << 31) - (64 << 20):
                raise ValueError("sealed payloads over 2 GiB need external_data=True")
            data_path = dst_path.with_name(dst_path.name + ".data") if dst_path and external_data else None
            bar = ByteProgress(total, f"sealing {src_path.name}", enabled=progress)
            with bar, contextlib.ExitStack() as stack:
                inline = io.BytesIO()
                data = stack.enter_context(atomic_writer(data_path, mode=0o644, overwrite=overwrite)) if data_path else inline
                blobs = stack.enter_context(BlobWriter(data, keys, segment_size=segment_size))
                for s in selected:
                    with contextlib.ExitStack() as source:
                        offset = data.tell()
                        tensor = s.candidate.tensor
                        assert tensor is not None
                        info = blobs.write(_tensor_bytes(tensor, files, s.nbytes, source), sign=False, release=release,
                                           context=tensor_context(manifest.seal_id, s.identity), progress=bar.update)
                    manifest.tensors[s.identity] = TensorEntry(info.digest, s.nbytes)
                    if data_path:
                        set_external(s.blob, data_path.name, offset, info.length)
                    else:
                        s.blob.raw_data = inline.getbuffer()[offset:offset + info.length].tobytes()
                manifest.external = _move_plain_external(model, files, data if data_path else None,
                                                         data_path.name if data_path else "")
                _set_metadata(model, {METADATA_KEY: str(MODEL_FORMAT_VERSION), MANIFEST_KEY: manifest.to_json(),
                                      SELECTION_KEY: rfc8785.dumps({"min_bytes": min_bytes, "include": include,
                                                                     "exclude": exclude}).decode("utf-8"),
                                      NOTE_KEY: OPEN_WITH})
                # the model's description, as Netron and onnxruntime's get_modelmeta() show it: the fix comes first
                model.doc_string = OPEN_WITH + (f"\n\n{model.doc_string}" if model.doc_string else "")
                body = model.SerializeToString()
                record = make_record(body_digest(body), keys, sign=sign, key_id=key_id)
        if dst_path is None:
            stream = cast(BinaryIO, dst)
            stream.write(body)
            stream.write(record)
        else:
            with atomic_writer(dst_path, mode=0o644, overwrite=overwrite) as fh:
                fh.write(body)
                fh.write(record)
        return SealSummary(dst_path or Path("-"), data_path, [s.candidate.name for s in selected], total, manifest, left_plain)


def _set_metadata(model: ModelProto, entries: dict[str, str]) -> None:
    """Set ortseal's metadata entries, dropping any ``ortseal.*`` entry the source carried."""
    kept = [p for p in model.metadata_props if not p.key.startswith("ortseal.")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def _nothing_to_seal(src: Path, min_bytes: int, include: str | None, exclude: str | None,
                     left: list[PlainTensor]) -> str:
    """Why nothing was selected, with the option that would change it."""
    given = "".join(f", {k}={v!r}" for k, v in (("include", include), ("exclude", exclude)) if v is not None)
    base = f"no constant tensor of {src} to seal with min_bytes={min_bytes}{given}"
    if not left:
        return base + ": the model has no initializer or Constant node"
    if any(p.reason == REASON_SMALL for p in left):
        return base + "; smaller tensors are sealed with a lower min_bytes="
    fix = " or ".join(what for what, given in (("widen include=", include), ("narrow exclude=", exclude)) if given)
    return base + f"; all {len(left)} are excluded: {fix}"


def _inline_attribute_tensors(model: ModelProto, files: DataFiles) -> None:
    """Load attribute tensors and sparse tensors stored as external data (Constant values saved with
    ``convert_attribute``) into the model: sealed ones are then read like any other, plain ones are signed
    with the rest of the file (a sealed model keeps only initializers as external data)."""
    for _, b in iter_bodies(model):
        sparse = list(b.sparse_initializer) if isinstance(b, GraphProto) else []
        for n in b.node:
            for a in n.attribute:
                if a.type == AttributeProto.TENSOR and is_external(a.t):
                    load_inline(a.t, files)
                elif a.type == AttributeProto.SPARSE_TENSOR:
                    sparse.append(a.sparse_tensor)
        for t in (part for sp in sparse for part in (sp.values, sp.indices)):
            if is_external(t):
                load_inline(t, files)


def plaintext_report(model: ModelProto) -> list[PlainTensor]:
    """What a sealed model holds in plaintext, with the reason under the selection recorded at sealing
    (``ortseal.selection``; informational, not signed). A tensor that selection would have sealed is
    reported as ``not sealed``."""
    with malformed_is_format_error("the model"):
        return _plaintext_report(model)


def _plaintext_report(model: ModelProto) -> list[PlainTensor]:
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
    """``"12 tensors, 3.1 KiB, left plaintext: 10 below min_bytes (2.0 KiB), 2 ..."`` (one line)."""
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


def _move_plain_external(model: ModelProto, files: DataFiles, out: BinaryIO | None, location: str) -> list[ExternalEntry]:
    """Give plain (unsealed) external tensors a home in the sealed model: copied page-aligned into its data
    file ``out``, or inline when there is no data file. Returns their manifest entries (with SHA-256), in walk
    order."""
    entries = []
    for _, t in external_initializers(model):
        if t.name.endswith(SEALED_SUFFIX):
            continue
        if out is None:
            load_inline(t, files)
            continue
        out.write(b"\0" * (-out.tell() % PLAIN_ALIGNMENT))
        start = out.tell()
        h = hashlib.sha256()
        for chunk in files.chunks(t):
            h.update(chunk)
            out.write(chunk)
        set_external(t, location, start, out.tell() - start)
        entries.append(ExternalEntry(location, start, out.tell() - start, h.digest()))
    return entries
