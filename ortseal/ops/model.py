"""The structure of a sealed model: finding sealed tensors, the graph-binding digest, blob access.

Shared by sealing, opening, the fallback kernel, ``inspect`` and ``verify``. Spec: ``docs/sealed-models.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, TensorProto

from ..blob import BlobSource, Header, read_header
from ..errors import FormatError
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
    register_schema,
)

register_schema()

DIGEST_LABEL = b"ortseal graph v2\x00"
CONTEXT_LABEL = b"ortseal/initializer/v2\x00"
SEALED_SUFFIX = ".ortseal_sealed"
LIKE_PREFIX = "ortseal.like."
METADATA_KEY = "ortseal.sealed"
SELECTION_KEY = "ortseal.selection"  # the seal's --min-bytes/--include/--exclude, for inspect (not signed)


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
    """Canonical JSON naming a sealed tensor: the ``tensor`` attribute and the tail of its blob context."""
    return json.dumps({"dtype": dtype, "name": name, "scope": scope, "shape": list(shape)},
                      sort_keys=True, separators=(",", ":"))


def tensor_context(seal_id: str, digest_hex: str, identity: str) -> bytes:
    """The sealed-blob context of one tensor: bound to the seal, the graph digest and the tensor's identity."""
    return (CONTEXT_LABEL + seal_id.encode("ascii") + b"\x00" + digest_hex.encode("ascii") + b"\x00"
            + identity.encode("utf-8"))


@dataclass
class SealedTensor:
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


def find_sealed(model: ModelProto) -> list[SealedTensor]:
    """Every sealed tensor of ``model`` (all graphs), checked for a consistent Unseal node."""
    found = []
    for scope, b in iter_bodies(model):
        blobs = blob_tensors(b)
        for node in b.node:
            if not is_unseal(node):
                continue
            if len(node.input) != 2 or len(node.output) != 1 or node.input[0] not in blobs:
                raise FormatError(f"Unseal node {node.name!r} does not read a sealed blob of its own graph")
            if any(a.name == "graph_digest" for a in node.attribute):
                raise FormatError("this model was sealed by ortseal format v1, which is refused (its signatures do "
                                  "not commit to the content); re-seal the original model: "
                                  "ortseal seal ORIGINAL.onnx -o SEALED.onnx --keys KEYS")
            dtype, shape = _attr(node, "dtype").i, list(_attr(node, "shape").ints)
            identity = _attr(node, "tensor").s.decode("utf-8")
            if identity != tensor_identity(scope, node.output[0], dtype, shape):
                raise FormatError(f"Unseal node for {node.output[0]!r}: attributes do not match its tensor identity")
            blob, constant = blobs[node.input[0]]
            if blob.data_type != TensorProto.UINT8:
                raise FormatError(f"sealed blob {node.input[0]!r} is not uint8")
            encoding, payload_bytes = _encoding(node, dtype)
            found.append(SealedTensor(scope, blob, node.output[0], dtype, shape, identity, constant, encoding,
                                      payload_bytes))
    return found


def external_location(tensor: TensorProto, base_dir: str | os.PathLike[str] | None) -> tuple[Path, int, int]:
    """``(file, offset, length)`` of an external-data tensor (a missing length runs to the end of the file),
    refusing paths outside ``base_dir``."""
    if base_dir is None:
        raise FormatError(f"tensor {tensor.name!r} is stored in an external file; open the model from its path")
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    base = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(base, location))
    if not location or os.path.isabs(location) or not path.startswith(base.rstrip("/") + "/"):
        raise FormatError(f"tensor {tensor.name!r} has an external-data location outside the model folder: {location!r}")
    offset = int(info.get("offset", 0))
    length = int(info["length"]) if "length" in info else os.stat(path).st_size - offset
    return Path(path), offset, length


def iter_external(tensor: TensorProto, base_dir: str | None, chunk: int = 1 << 22) -> Iterator[bytes]:
    """The bytes of an external-data tensor, in chunks; FormatError if the file is shorter."""
    path, offset, length = external_location(tensor, base_dir)
    with open(path, "rb") as fh:
        fh.seek(offset)
        while length > 0:
            data = fh.read(min(chunk, length))
            if not data:
                raise FormatError(f"tensor {tensor.name!r}: external data file {path} is shorter than the tensor")
            length -= len(data)
            yield data


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
    """Each external data file opened once, however many blobs it holds (a model can seal thousands of
    tensors into one file: one descriptor per blob would run out of descriptors)."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def fd(self, path: Path) -> int:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@contextlib.contextmanager
def blob_source(st: SealedTensor, base_dir: str | None, files: DataFiles | None = None) -> Iterator[BlobSource]:
    """The bytes of ``st``'s blob: inline, or read from its external file with ``pread`` (never mapped),
    through ``files`` when given (else a descriptor of its own)."""
    if not is_external(st.blob):
        yield BlobSource(st.blob.raw_data)
        return
    path, offset, length = external_location(st.blob, base_dir)
    with contextlib.ExitStack() as own:
        yield BlobSource(fd=(files or own.enter_context(DataFiles())).fd(path), offset=offset, length=length)


def read_blob_header(st: SealedTensor, base_dir: str | None) -> tuple[Header, int]:
    """``(header, blob length)`` of a sealed tensor's blob, without keys."""
    with blob_source(st, base_dir) as source:
        return read_header(source, kind="model"), source.size


def load_inline(tensor: TensorProto, base_dir: str | None) -> None:
    """Move an external-data tensor's bytes into the tensor itself."""
    data = b"".join(iter_external(tensor, base_dir))
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
    tensor.raw_data = data


def _content_digest(tensor: TensorProto, base_dir: str | None) -> bytes:
    h = hashlib.sha256()
    for chunk in iter_external(tensor, base_dir) if is_external(tensor) else [tensor.raw_data]:
        h.update(chunk)
    return h.digest()


def graph_digest(model: ModelProto, base_dir: str | None) -> str:
    """Hex SHA-256 binding digest of a sealed model's structure.

    Covers ir_version, opsets, functions, and every graph's nodes, attributes, inputs, outputs and plain
    initializers (their raw bytes by SHA-256, whether inline or external). Leaves out what sealing cannot
    know in advance or what does not change behaviour: the sealed blobs' bytes (the signed manifest names
    their digests), value_info, and model metadata (where the manifest lives).
    """
    canon = ModelProto()
    canon.ir_version = model.ir_version
    canon.opset_import.extend(model.opset_import)
    canon.functions.extend(model.functions)
    canon.graph.CopyFrom(model.graph)
    for _, b in iter_bodies(canon):
        for t, _ in blob_tensors(b).values():
            for field in ("raw_data", "external_data", "data_location"):
                t.ClearField(field)
    for _, graph in iter_graphs(canon.graph):
        graph.ClearField("value_info")
        blobs = {n.input[0] for n in graph.node if is_unseal(n) and n.input}
        for t in graph.initializer:
            if t.name in blobs:
                continue
            if is_external(t) or t.HasField("raw_data"):
                # Bound by content, wherever it is stored (sealing may move a tensor inline or out).
                content = _content_digest(t, base_dir)
                t.ClearField("external_data")
                t.ClearField("data_location")
                t.raw_data = b"sha256:" + content
    return hashlib.sha256(DIGEST_LABEL + canon.SerializeToString(deterministic=True)).hexdigest()


def load_model(path_or_bytes: str | os.PathLike[str] | bytes) -> tuple[ModelProto, str | None]:
    """Load an ONNX model without its external data; returns ``(model, base_dir or None)``."""
    try:
        if isinstance(path_or_bytes, (bytes, bytearray)):
            model, base = onnx.load_model_from_string(bytes(path_or_bytes)), None
        else:
            path = Path(path_or_bytes)
            if not path.is_file():
                raise FileNotFoundError(f"no model file at {path}")
            model, base = onnx.load(str(path), load_external_data=False), str(path.resolve().parent)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types on garbage
        raise FormatError(f"not an ONNX model: {path_or_bytes if not isinstance(path_or_bytes, bytes) else '<bytes>'}"
                          f" ({type(exc).__name__})") from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise FormatError(f"not an ONNX model: {path_or_bytes if not isinstance(path_or_bytes, bytes) else '<bytes>'}")
    return model, base
