"""What bytes a constant tensor of any ONNX kind is sealed as, and how those bytes become the tensor again.

Every kind of ``onnx.TensorProto`` is sealed, dense or sparse, with one of three encodings (the Unseal
node's ``encoding`` attribute; spec: ``docs/sealed-models.md``):

- :data:`RAW` (no attribute): fixed-size numeric, bool, float8/float6/float4, complex and packed sub-byte
  kinds. The payload is the tensor's exact ONNX ``raw_data`` bytes: little-endian, ``ceil(n * bits / 8)``
  bytes for packed kinds (int4/uint4/float4e2m1 two to a byte, int2/uint2 four, float6 four in three).
  Opened into ``raw_data``, or into a RAM file as external data.
- :data:`TENSOR_PROTO`: STRING tensors, whose elements have no fixed size. The payload is the deterministic
  serialization of the ``TensorProto`` with its name cleared; opened inline by parsing it back.
- :data:`SPARSE_TENSOR_PROTO`: sparse tensors (``graph.sparse_initializer``, a Constant's ``sparse_value``),
  of any element kind. The payload is the deterministic serialization of the ``SparseTensorProto`` (values
  and indices inline) with its values' name cleared; opened inline, back into a sparse tensor.
"""

from __future__ import annotations

import contextlib
import mmap

from .._onnx_proto import SparseTensorProto, TensorProto
from ..errors import FormatError
from ._graph import DataFiles, is_external, load_inline
from .schema import RAW, SEALABLE_TYPES, SPARSE_TENSOR_PROTO, TENSOR_PROTO, kind_name

Value = TensorProto | SparseTensorProto


def encoding_of(value: Value) -> str:
    """The encoding a dense or sparse tensor is sealed with; FormatError for a kind that cannot be sealed."""
    dtype = value.values.data_type if isinstance(value, SparseTensorProto) else value.data_type
    if dtype not in SEALABLE_TYPES:
        raise FormatError(f"tensor {_name(value)!r} is of {kind_name(dtype)}, which ortseal cannot seal (no ONNX "
                          "tensor kind it knows)")
    if isinstance(value, SparseTensorProto):
        return SPARSE_TENSOR_PROTO
    return TENSOR_PROTO if dtype == TensorProto.STRING else RAW


def proto_payload(value: Value, files: DataFiles | None) -> bytes:
    """The payload of a STRING or sparse tensor: its deterministic serialization, external data loaded
    from ``files`` (``data_location`` cleared) and the (values') name cleared, since opening takes the name
    from the Unseal node. ``files=None``: the tensor holds its data inline (FormatError otherwise)."""
    copy = type(value)()
    copy.CopyFrom(value)
    parts = [copy.values, copy.indices] if isinstance(copy, SparseTensorProto) else [copy]
    for part in parts:
        if is_external(part):
            if files is None:
                raise FormatError(f"tensor {part.name!r} keeps its data in an external file, which cannot be read here")
            load_inline(part, files)
        part.ClearField("data_location")  # inline now, whether it always was or was loaded
    parts[0].ClearField("name")
    return copy.SerializeToString(deterministic=True)


def _unmap(mapped: mmap.mmap) -> None:
    try:
        mapped.close()
    except BufferError:  # a view of it is still held, by the traceback of the error unwinding the caller:
        pass             # the mapping (read-only) goes when that does, and this error must not replace that one


def raw_payload(t: TensorProto, files: DataFiles, nbytes: int, stack: contextlib.ExitStack) -> memoryview:
    """A raw-encoded tensor's exact ONNX raw bytes: a read-only mapping of its external file, its
    ``raw_data``, or its typed fields (``float_data``, ``int32_data``, ...) packed as ``raw_data`` would be."""
    if is_external(t):
        fd, offset, length = files.span(t)
        if length != nbytes:
            raise FormatError(f"tensor {t.name!r}: external length {length} does not match its shape ({nbytes} bytes)")
        if nbytes == 0:
            return memoryview(b"")
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        stack.callback(_unmap, mapped)
        view = memoryview(mapped)[offset:offset + nbytes]
        stack.callback(view.release)
        return view
    if t.HasField("raw_data"):
        raw = t.raw_data
    else:
        from onnx import numpy_helper  # sealing only: the typed fields packed as raw bytes

        raw = numpy_helper.from_array(numpy_helper.to_array(t)).raw_data
    if len(raw) != nbytes:
        raise FormatError(f"tensor {t.name!r} holds {len(raw)} bytes but its shape needs {nbytes}")
    return memoryview(raw)


def restore(target: Value, payload: bytes | bytearray | memoryview) -> None:
    """Make ``target`` (an empty tensor named, typed and shaped from its Unseal node) the tensor whose
    opened payload is ``payload``: raw bytes, or a serialization that must match the node's type and shape
    and hold no external data."""
    if isinstance(target, TensorProto) and target.data_type != TensorProto.STRING:
        target.raw_data = bytes(payload)
        return
    parsed = type(target)()
    try:
        parsed.ParseFromString(bytes(payload))
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types on garbage
        raise FormatError(f"sealed tensor {_name(target)!r} does not hold a serialized tensor") from exc
    name = _name(target)
    if isinstance(target, SparseTensorProto):
        ok = (list(parsed.dims) == list(target.dims) and parsed.values.data_type == target.values.data_type
              and not is_external(parsed.values) and not is_external(parsed.indices) and not parsed.values.name)
    else:
        ok = (list(parsed.dims) == list(target.dims) and parsed.data_type == target.data_type
              and not is_external(parsed) and not parsed.name)
    if not ok:
        raise FormatError(f"sealed tensor {name!r}: its opened value differs from the type and shape its Unseal "
                          "node declares")
    target.CopyFrom(parsed)
    (target.values if isinstance(target, SparseTensorProto) else target).name = name


def _name(value: Value) -> str:
    return value.values.name if isinstance(value, SparseTensorProto) else value.name


def is_raw_target(target: Value) -> bool:
    """True for a tensor opened from raw bytes (which may go to ORT as external data); STRING and sparse
    tensors are always opened inline."""
    return isinstance(target, TensorProto) and target.data_type != TensorProto.STRING
