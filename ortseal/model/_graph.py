"""The structure of an ONNX model as ortseal reads it: its file read once, its graphs walked, its sealed
tensors found, its external data files opened once.

Shared by sealing, opening, the fallback kernel, ``inspect`` and ``verify``. Spec: ``docs/sealed-models.md``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import rfc8785
from google.protobuf.message import DecodeError

from .._files import ReadPolicy, open_checked
from .._onnx_proto import AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, TensorProto
from ..blob import BlobSource
from ..errors import FormatError, OrtsealError, TamperedError
from .schema import (
    DOMAIN,
    ENCODINGS,
    OP_TYPE,
    RAW,
    SEALABLE_TYPES,
    SPARSE_TENSOR_PROTO,
    TENSOR_PROTO,
    kind_name,
    raw_length,
)

CONTEXT_LABEL = b"ortseal/tensor/v3\x00"
MAX_MODEL_FILE = (1 << 31) - 1  # protobuf's limit for one message
MODEL_FILE = ReadPolicy("model file", FormatError)
DATA_FILE = ReadPolicy("data file", FormatError)
MAX_OFFSET = (1 << 63) - 1
SEALED_SUFFIX = ".ortseal_sealed"
LIKE_PREFIX = "ortseal.like."
METADATA_KEY = "ortseal.sealed"
SELECTION_KEY = "ortseal.selection"  # the seal's --min-bytes/--include/--exclude, for inspect
NOTE_KEY = "ortseal.open_with"  # OPEN_WITH, where Netron and onnx tools show it; informational, signed as stored
PLAIN_ORT_ERROR = "ai.ortseal:Unseal(-1) is not a registered function/op"  # what a plain loader says
OPEN_WITH = ("Sealed by ortseal: its weights are encrypted and the whole file is signed. A plain ONNX Runtime (or "
             f"any loader that calls it) fails on it with '{PLAIN_ORT_ERROR}'. Open it with "
             "ortseal.InferenceSession(path, keys=<device keyset>) (pip install ortseal); optimum and "
             "sentence-transformers: ortseal.hf.")

# What one walk of a sealed model may meet (docs/format.md, "Limits"): a file the keyset trusts can still be
# hostile (a publisher's build gone wrong, or any holder of the content key for an unsigned model), and the
# walk's cost grows with these counts, not with the file's size (an empty node is two bytes).
MAX_NODES = 1 << 20  # nodes of every graph, subgraph and function together
MAX_ATTRIBUTES = 1 << 22  # node attributes, all nodes together
MAX_INITIALIZERS = 1 << 20  # dense and sparse initializers, all graphs together
MAX_GRAPH_NESTING = 24  # subgraphs (If/Loop/Scan bodies) inside subgraphs (protobuf parses up to 32)


def iter_graphs(graph: GraphProto, scope: str = "") -> Iterator[tuple[str, GraphProto]]:
    """``(scope, graph)`` for ``graph`` and every subgraph (If/Loop/Scan bodies), depth first.

    A subgraph's scope is its parent's scope, ``/``, the owning node's name (or its first output when
    unnamed, which stays stable when nodes are inserted) and ``.attribute``.
    """
    yield scope, graph
    yield from _subgraphs(graph.node, scope)


def _subgraphs(nodes: Iterable[NodeProto], scope: str) -> Iterator[tuple[str, GraphProto]]:
    """Every subgraph owned by ``nodes`` (and theirs), scoped as :func:`iter_graphs` says."""
    for node in nodes:
        owner = node.name or (node.output[0] if node.output else node.op_type)
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from iter_graphs(attr.g, f"{scope}/{owner}.{attr.name}")
            elif attr.type == AttributeProto.GRAPHS:
                for j, sub in enumerate(attr.graphs):
                    yield from iter_graphs(sub, f"{scope}/{owner}.{attr.name}[{j}]")


Body = GraphProto | FunctionProto


def iter_bodies(model: ModelProto) -> Iterator[tuple[str, Body]]:
    """``(scope, body)`` for every node list of ``model``: its graphs (see :func:`iter_graphs`), then each
    local function (scope ``fn:<domain>:<name>``, plus ``:<overload>`` when set) and its subgraphs."""
    yield from iter_graphs(model.graph)
    for fn in model.functions:
        scope = f"fn:{fn.domain}:{fn.name}" + (f":{fn.overload}" if fn.overload else "")
        yield scope, fn
        yield from _subgraphs(fn.node, scope)


def body(model: ModelProto, scope: str) -> Body:
    """The graph or function of ``model`` at ``scope`` (looked up afresh: editing a node list copies its
    subgraphs, so references taken before an edit go stale)."""
    for s, b in iter_bodies(model):
        if s == scope:
            return b
    raise KeyError(scope)


def is_unseal(node: NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


def constant_value(node: NodeProto) -> TensorProto | None:
    """The ``value`` tensor of a Constant node (None for other nodes and other attribute kinds)."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    for a in node.attribute:
        if a.name == "value" and a.type == AttributeProto.TENSOR:
            return a.t
    return None


def external_initializers(model: ModelProto) -> list[tuple[str, TensorProto]]:
    """``(scope, tensor)`` of every initializer stored as external data, in every graph and subgraph of the
    model and of its local functions, in walk order (:func:`iter_bodies`)."""
    return [(scope, t) for scope, b in iter_bodies(model) if isinstance(b, GraphProto) for t in b.initializer
            if is_external(t)]


def is_sealed_model(model: ModelProto) -> bool:
    """True if any graph or function of ``model`` holds an Unseal node."""
    return any(is_unseal(n) for _, b in iter_bodies(model) for n in b.node)


def blob_tensors(b: Body) -> dict[str, tuple[TensorProto, bool]]:
    """``{name: (tensor, held by a Constant node)}`` of every tensor an Unseal node of ``b`` reads as its
    blob: an initializer, or the ``value`` of a Constant node (how sealed Constant weights are held)."""
    wanted = {n.input[0] for n in b.node if is_unseal(n) and n.input}
    found: dict[str, tuple[TensorProto, bool]] = {}
    if isinstance(b, GraphProto):
        found.update((t.name, (t, False)) for t in b.initializer if t.name in wanted)
    for n in b.node:
        value = constant_value(n)
        if value is not None and n.output[0] in wanted:
            if n.output[0] in found:
                raise FormatError(f"sealed blob {n.output[0]!r} is defined twice")
            found[n.output[0]] = (value, True)
    return found


def tensor_identity(scope: str, name: str, dtype: int, shape: list[int]) -> str:
    """RFC 8785 JSON naming a sealed tensor: the ``tensor`` attribute and the tail of its blob context."""
    return rfc8785.dumps({"dtype": dtype, "name": name, "scope": scope, "shape": list(shape)}).decode("utf-8")


def tensor_context(seal_id: str, identity: str) -> bytes:
    """The sealed-blob context of one tensor: bound to its seal and to the tensor's identity."""
    return CONTEXT_LABEL + seal_id.encode("ascii") + b"\x00" + identity.encode("utf-8")


class SealedTensor(NamedTuple):
    """One Unseal node of a sealed model, with the blob initializer it reads."""

    scope: str
    blob: TensorProto
    name: str
    dtype: int
    shape: list[int]
    identity: str
    constant: bool = False  # sealed from (and opened as) a Constant node rather than an initializer
    encoding: str = RAW  # how the payload becomes the tensor (schema.ENCODINGS)
    payload_bytes: int | None = None  # the payload's length, for encodings other than RAW
    node: NodeProto | None = None  # its Unseal node
    body: Body | None = None  # the graph or function holding that node

    @property
    def sparse(self) -> bool:
        return self.encoding == SPARSE_TENSOR_PROTO

    @property
    def plaintext_bytes(self) -> int:
        """The payload's length: the exact ONNX raw bytes of the shape, or the serialized tensor's length."""
        return raw_length(self.dtype, self.shape) if self.payload_bytes is None else self.payload_bytes


def _attr(node: NodeProto, name: str) -> AttributeProto:
    for a in node.attribute:
        if a.name == name:
            return a
    raise FormatError(f"Unseal node {node.name!r} has no {name!r} attribute: the sealed model is damaged")


def _encoding(node: NodeProto, dtype: int) -> tuple[str, int | None]:
    """``(encoding, payload_bytes)`` of an Unseal node, checked against its type: STRING tensors are
    TENSOR_PROTO, other dense ones RAW; only serialized encodings carry a payload length."""
    given = {a.name: a for a in node.attribute}
    encoding = given["encoding"].s.decode("utf-8", "replace") if "encoding" in given else RAW
    if dtype not in SEALABLE_TYPES:
        raise FormatError(f"Unseal node {node.name!r} declares {kind_name(dtype)}, which is not an ONNX tensor kind")
    if encoding not in ENCODINGS or (encoding != SPARSE_TENSOR_PROTO
                                     and (encoding == TENSOR_PROTO) != (dtype == TensorProto.STRING)):
        raise FormatError(f"Unseal node {node.name!r}: encoding {encoding!r} does not fit {kind_name(dtype)}")
    if encoding == RAW:
        if "payload_bytes" in given:
            raise FormatError(f"Unseal node {node.name!r}: a raw payload's length follows from its shape")
        return encoding, None
    length = _attr(node, "payload_bytes").i
    if length < 0:
        raise FormatError(f"Unseal node {node.name!r} declares a negative payload length")
    return encoding, length


def _sealed_tensor(scope: str, b: Body, node: NodeProto, blobs: dict[str, tuple[TensorProto, bool]]) -> SealedTensor:
    """The sealed tensor of one Unseal node of ``b``, the node checked to be consistent."""
    if len(node.input) != 2 or len(node.output) != 1 or node.input[0] not in blobs:
        raise FormatError(f"Unseal node {node.name!r} does not read a sealed blob of its own graph")
    if any(a.name == "graph_digest" for a in node.attribute):
        raise FormatError("this model was sealed by ortseal format v1, which is refused (its signatures do "
                          "not commit to the content); re-seal the original model with this ortseal (seal_model)")
    dtype, shape = _attr(node, "dtype").i, list(_attr(node, "shape").ints)
    try:
        identity = _attr(node, "tensor").s.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"Unseal node {node.name!r}: its tensor attribute is not UTF-8") from None
    if identity != tensor_identity(scope, node.output[0], dtype, shape):
        raise FormatError(f"Unseal node for {node.output[0]!r}: attributes do not match its tensor identity")
    blob, constant = blobs[node.input[0]]
    if blob.data_type != TensorProto.UINT8:
        raise FormatError(f"sealed blob {node.input[0]!r} is not uint8")
    encoding, payload_bytes = _encoding(node, dtype)
    return SealedTensor(scope, blob, node.output[0], dtype, shape, identity, constant, encoding, payload_bytes,
                        node, b)


class Places:
    """Where each tensor ortseal reads or replaces sits in one parsed model, found by one walk
    (:func:`walk`): references into that model, valid while it lives and no node list above them is rebuilt.
    (Plain classes here and in the other records of the opening path: a dataclass costs about 1 ms of
    start-up each, ``dataclasses`` itself 2 ms.)"""

    def __init__(self) -> None:
        self.sealed: list[SealedTensor] = []  # every Unseal node's tensor, in walk order
        # (scope, tensor) of each plain external initializer, in the order docs/format.md gives the manifest's
        # ``external`` list
        self.plain_external: list[tuple[str, TensorProto]] = []
        self.stray_external: list[TensorProto] = []  # external tensors that are neither: sparse or attribute tensors
        self.bodies: list[tuple[str, Body]] = []  # every graph and function, in walk order


def _tensors_of(a: AttributeProto) -> Iterator[TensorProto]:
    if a.type == AttributeProto.TENSOR:
        yield a.t
    yield from a.tensors
    if a.type == AttributeProto.SPARSE_TENSOR:
        yield from (a.sparse_tensor.values, a.sparse_tensor.indices)
    for sp in a.sparse_tensors:
        yield from (sp.values, sp.indices)


def walk(model: ModelProto) -> Places:
    """One walk of every graph, subgraph and local function of ``model`` (the order of :func:`iter_bodies`),
    recording every sealed tensor (its Unseal node checked), every plain external initializer and every
    other external tensor, and refusing (FormatError) a model past the limits of docs/format.md."""
    places = Places()
    nodes = attributes = initializers = 0
    functions = [(f"fn:{fn.domain}:{fn.name}" + (f":{fn.overload}" if fn.overload else ""), fn, 0)
                 for fn in model.functions]
    stack: list[tuple[str, Body, int]] = [*reversed(functions), ("", model.graph, 0)]
    while stack:
        scope, b, depth = stack.pop()
        places.bodies.append((scope, b))
        nodes += len(b.node)
        if nodes > MAX_NODES:
            raise FormatError(f"the model has more than {MAX_NODES} nodes (docs/format.md, limits)")
        unseal: list[NodeProto] = []
        constants: dict[str, list[TensorProto]] = {}
        subgraphs: list[tuple[str, GraphProto]] = []
        for node in b.node:
            if is_unseal(node):
                unseal.append(node)
            attributes += len(node.attribute)
            if attributes > MAX_ATTRIBUTES:
                raise FormatError(f"the model has more than {MAX_ATTRIBUTES} node attributes (docs/format.md, limits)")
            value = constant_value(node)
            if value is not None:
                constants.setdefault(node.output[0], []).append(value)
            owner = node.name or (node.output[0] if node.output else node.op_type)
            held = value is not None  # the Constant's value (its first ``value`` tensor): judged below
            for a in node.attribute:
                if a.type == AttributeProto.GRAPH:
                    subgraphs.append((f"{scope}/{owner}.{a.name}", a.g))
                elif a.type == AttributeProto.GRAPHS:
                    subgraphs += [(f"{scope}/{owner}.{a.name}[{j}]", sub) for j, sub in enumerate(a.graphs)]
                if held and a.name == "value" and a.type == AttributeProto.TENSOR:
                    held = False
                    places.stray_external += [t for t in list(_tensors_of(a))[1:] if is_external(t)]
                    continue
                places.stray_external += [t for t in _tensors_of(a) if is_external(t)]
        if subgraphs and depth >= MAX_GRAPH_NESTING:
            raise FormatError(f"the model nests subgraphs more than {MAX_GRAPH_NESTING} deep (docs/format.md, limits)")
        stack += [(sub_scope, sub, depth + 1) for sub_scope, sub in reversed(subgraphs)]
        wanted = {n.input[0] for n in unseal if n.input}
        blobs: dict[str, tuple[TensorProto, bool]] = {}
        if isinstance(b, GraphProto):
            initializers += len(b.initializer) + len(b.sparse_initializer)
            if initializers > MAX_INITIALIZERS:
                raise FormatError(f"the model has more than {MAX_INITIALIZERS} initializers (docs/format.md, limits)")
            for t in b.initializer:
                if t.name in wanted:
                    if t.name in blobs:
                        raise FormatError(f"sealed blob {t.name!r} is defined twice")
                    blobs[t.name] = t, False
                elif is_external(t):
                    if t.name.startswith(LIKE_PREFIX):  # an opened model drops these: never plain data
                        places.stray_external.append(t)
                    else:
                        places.plain_external.append((scope, t))
            for sp in b.sparse_initializer:
                places.stray_external += [t for t in (sp.values, sp.indices) if is_external(t)]
        for name, values in constants.items():
            if name in wanted:
                if len(values) > 1 or name in blobs:
                    raise FormatError(f"sealed blob {name!r} is defined twice")
                blobs[name] = values[0], True
            else:
                places.stray_external += [v for v in values if is_external(v)]
        places.sealed += [_sealed_tensor(scope, b, node, blobs) for node in unseal]
    return places


def find_sealed(model: ModelProto) -> list[SealedTensor]:
    """Every sealed tensor of ``model`` (all graphs and functions)."""
    return walk(model).sealed


@contextlib.contextmanager
def malformed_is_format_error(what: str) -> Iterator[None]:
    """Any error but an OrtsealError raised while reading the structure of an untrusted model becomes a
    FormatError naming ``what`` (protobuf hands back bytes for a name that is not UTF-8, an offset may not
    fit, a field may be missing): every bad input gives a typed error."""
    try:
        yield
    except OrtsealError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else is a malformed model
        raise FormatError(f"{what} is a malformed ONNX model: {type(exc).__name__}: {exc}") from exc


def _fd_path(fd: int) -> str | None:
    """The path the kernel has for an open descriptor (Linux ``/proc``), or None where it cannot say."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def read_model_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a model file, read once from one checked descriptor into memory ortseal owns, in one
    buffer sized from ``fstat`` (a file that grows meanwhile is refused, not followed)."""
    fd, st = open_checked(path, MODEL_FILE)
    try:
        if st.st_size > MAX_MODEL_FILE:
            raise FormatError(f"model file {os.fspath(path)} is over 2 GiB: ONNX keeps large weights as external data")
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as fh:
            data = fh.read(st.st_size + 1)  # one read(2) returns a regular file whole below 2 GiB
            if len(data) < st.st_size:  # ... but need not: read the rest
                data += b"".join(iter(functools.partial(fh.read, st.st_size + 1 - len(data)), b""))
    finally:
        os.close(fd)
    if len(data) != st.st_size:
        raise FormatError(f"model file {os.fspath(path)} changed size while it was read")
    return data


def parse_model(data: bytes | memoryview, where: str) -> ModelProto:
    """``data`` parsed as an ONNX ModelProto (its external data not loaded); FormatError on anything else."""
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError, RecursionError, TypeError) as exc:
        raise FormatError(f"not an ONNX model: {where} ({type(exc).__name__})") from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise FormatError(f"not an ONNX model: {where}")
    return model


class LoadedModel:
    """A model file read once: its bytes, the folder its external data is relative to, and their parse,
    made on first use of :attr:`model` (a sealed model's seal record is checked on the bytes first)."""

    def __init__(self, data: bytes, base_dir: str | None, name: str, where: str | None = None) -> None:
        self.data = data
        self.base_dir = base_dir
        self.name = name  # the file name (``model.onnx`` for bytes), for messages and the opened copy
        self._where = where or name

    @functools.cached_property
    def model(self) -> ModelProto:
        """The bytes parsed as an ONNX ModelProto; FormatError when they are not one."""
        return parse_model(self.data, self._where)

    def parsed(self, body: memoryview | None = None) -> ModelProto:
        """:attr:`model`, parsed from ``body`` (a prefix of the bytes that serializes the same model, such as
        a sealed model's body without its record) when it was not parsed yet."""
        if "model" not in self.__dict__ and body is not None:
            self.__dict__["model"] = parse_model(body, self._where)
        return self.model


def read_model(path_or_bytes: str | os.PathLike[str] | bytes, base_dir: str | None = None) -> LoadedModel:
    """Read a model (a path: once, from one checked descriptor), not parsed yet. For bytes, ``base_dir`` is
    where their external data lives (None: they may have none)."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return LoadedModel(bytes(path_or_bytes), base_dir, "model.onnx")
    if isinstance(path_or_bytes, (str, os.PathLike)):
        path = Path(path_or_bytes)
        return LoadedModel(read_model_file(path), str(path.absolute().parent), path.name, os.fspath(path_or_bytes))
    raise TypeError(f"a model is a path or bytes, got {type(path_or_bytes).__name__}")


def load_model(path_or_bytes: str | os.PathLike[str] | bytes, base_dir: str | None = None) -> LoadedModel:
    """:func:`read_model`, parsed: FormatError for anything that is not an ONNX model."""
    loaded = read_model(path_or_bytes, base_dir)
    loaded.model  # noqa: B018 - parsed now: raises FormatError naming the file
    return loaded


class ExternalRef(NamedTuple):
    """Where an external-data tensor's bytes are: ``length`` bytes (None: to the end) of ``location`` at ``offset``."""

    location: str
    offset: int
    length: int | None


def external_ref(tensor: TensorProto) -> ExternalRef:
    """The external-data entry of ``tensor``, checked: a relative location inside the model folder, integer
    offset and length in range. FormatError naming the tensor otherwise."""
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    parts = location.replace("\\", "/").split("/")
    if not location or "\x00" in location or os.path.isabs(location) or ".." in parts:
        raise FormatError(f"tensor {tensor.name!r} has an external-data location outside the model folder: {location!r}")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise FormatError(f"tensor {tensor.name!r} has a non-integer external-data offset or length") from None
    if not 0 <= offset <= MAX_OFFSET or (length is not None and not 0 <= length <= MAX_OFFSET):
        raise FormatError(f"tensor {tensor.name!r} has an external-data offset or length out of range")
    return ExternalRef(location, offset, length)


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def set_external(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    """Point ``tensor`` at ``length`` bytes of ``location`` (relative to the model) at ``offset``."""
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
    tensor.data_location = TensorProto.EXTERNAL


class DataFiles(contextlib.AbstractContextManager):
    """The external data files of one model, each opened once (however many tensors it holds: a model can
    seal thousands of tensors into one file), checked to be a regular file inside the model folder, and read
    with ``pread`` at the offsets the model names (never mapped, never re-opened by path)."""

    def __init__(self, base_dir: str | None, *, sealed: bool = False) -> None:
        self._base = base_dir
        self._files: dict[str, tuple[int, int]] = {}
        # In a sealed model a data file shorter than the model says was truncated after sealing.
        self._short: type[OrtsealError] = TamperedError if sealed else FormatError

    def _file(self, tensor: TensorProto, ref: ExternalRef) -> tuple[int, int]:
        if ref.location not in self._files:
            if self._base is None:
                raise FormatError(f"tensor {tensor.name!r} is stored in the external file {ref.location!r}: open the "
                                  "model from its path (or, for bytes, say where its data is: the session option "
                                  "session.model_external_initializers_file_folder_path)")
            path = os.path.join(self._base, ref.location)
            base = os.path.realpath(self._base)
            if not os.path.realpath(path).startswith(base.rstrip("/") + "/"):
                raise FormatError(f"tensor {tensor.name!r} has an external-data location outside the model folder: "
                                  f"{ref.location!r}")
            if not os.path.lexists(path):
                raise FormatError(f"the model names the data file {ref.location!r} (in {self._base}), which is missing; "
                                  "a sealed model's data file keeps the name it was sealed with")
            fd, st = open_checked(path, DATA_FILE)
            opened = _fd_path(fd)
            if opened is not None and not opened.startswith(base.rstrip("/") + "/"):
                os.close(fd)  # a link swapped in after the check above: what was opened is outside the folder
                raise FormatError(f"tensor {tensor.name!r} has an external-data location outside the model folder: "
                                  f"{ref.location!r}")
            self._files[ref.location] = fd, st.st_size
        return self._files[ref.location]

    def span(self, tensor: TensorProto) -> tuple[int, int, int]:
        """``(fd, offset, length)`` of an external tensor's bytes, checked to lie inside its file."""
        ref = external_ref(tensor)
        fd, size = self._file(tensor, ref)
        length = size - ref.offset if ref.length is None else ref.length
        if ref.offset + length > size or length < 0:
            raise self._short(f"tensor {tensor.name!r}: its data file {ref.location!r} is shorter than the tensor")
        return fd, ref.offset, length

    def source(self, tensor: TensorProto) -> BlobSource:
        """The bytes of an external tensor as a :class:`BlobSource` (``pread`` on the shared descriptor)."""
        fd, offset, length = self.span(tensor)
        return BlobSource(fd=fd, offset=offset, length=length)

    def chunks(self, tensor: TensorProto, chunk: int = 1 << 22) -> Iterator[bytes]:
        """The bytes of an external tensor, in chunks read once each."""
        fd, offset, length = self.span(tensor)
        end = offset + length
        while offset < end:
            data = os.pread(fd, min(chunk, end - offset), offset)
            if not data:
                raise self._short(f"tensor {tensor.name!r}: its data file is shorter than the tensor")
            offset += len(data)
            yield data

    def read(self, tensor: TensorProto) -> bytes:
        return b"".join(self.chunks(tensor))

    def __exit__(self, *exc: object) -> None:
        for fd, _ in self._files.values():
            os.close(fd)
        self._files.clear()


def set_inline(tensor: TensorProto, data: bytes) -> None:
    """Make ``data`` the bytes ``tensor`` holds itself (``raw_data``), external data or not before."""
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
    tensor.raw_data = data


def load_inline(tensor: TensorProto, files: DataFiles) -> None:
    """Move an external-data tensor's bytes into the tensor itself."""
    set_inline(tensor, files.read(tensor))
