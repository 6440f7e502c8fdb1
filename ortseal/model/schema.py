"""The ``ai.ortseal::Unseal`` operator (version 1): its ONNX schema, registered with ``onnx.defs``.

``Unseal(sealed: uint8[n], like: T[0]) -> T`` with attributes ``dtype`` (TensorProto data type of T),
``shape`` (dims of T), ``tensor`` (canonical JSON naming the tensor: the binding context's tail), and
``fallback_supported`` = 1 on tensors whose
type the onnxruntime-extensions fallback kernel can return, and for STRING and sparse tensors ``encoding``
(:data:`TENSOR_PROTO` or :data:`SPARSE_TENSOR_PROTO`) with ``payload_bytes``. ``like`` is an empty tensor of type T: it
lets runtimes that type outputs from inputs (onnxruntime-extensions kernels) give the output its type.
Spec: ``docs/sealed-models.md``.
"""

from __future__ import annotations

from .._onnx_proto import TensorProto

DOMAIN = "ai.ortseal"
OP_TYPE = "Unseal"
OPSET_VERSION = 2  # version 1 (format v1, with a graph_digest attribute) is refused

# How an Unseal node's payload becomes its tensor (its ``encoding`` attribute; absent means RAW). The
# payloads themselves: ``ortseal.model.tensors``.
RAW = "raw"  # the tensor's exact ONNX raw_data bytes
TENSOR_PROTO = "tensor_proto"  # a serialized TensorProto (STRING tensors)
SPARSE_TENSOR_PROTO = "sparse_tensor_proto"  # a serialized SparseTensorProto (sparse tensors of any kind)
ENCODINGS = (RAW, TENSOR_PROTO, SPARSE_TENSOR_PROTO)

# Bits per element of every kind held as raw bytes: every kind of onnx.TensorProto but STRING.
ELEMENT_BITS: dict[int, int] = {
    TensorProto.FLOAT: 32, TensorProto.UINT8: 8, TensorProto.INT8: 8, TensorProto.UINT16: 16,
    TensorProto.INT16: 16, TensorProto.INT32: 32, TensorProto.INT64: 64, TensorProto.BOOL: 8,
    TensorProto.FLOAT16: 16, TensorProto.DOUBLE: 64, TensorProto.UINT32: 32, TensorProto.UINT64: 64,
    TensorProto.COMPLEX64: 64, TensorProto.COMPLEX128: 128, TensorProto.BFLOAT16: 16,
    TensorProto.FLOAT8E4M3FN: 8, TensorProto.FLOAT8E4M3FNUZ: 8, TensorProto.FLOAT8E5M2: 8,
    TensorProto.FLOAT8E5M2FNUZ: 8, TensorProto.FLOAT8E8M0: 8, TensorProto.FLOAT6E2M3: 6, TensorProto.FLOAT6E3M2: 6,
    TensorProto.UINT4: 4, TensorProto.INT4: 4, TensorProto.FLOAT4E2M1: 4, TensorProto.UINT2: 2, TensorProto.INT2: 2,
}

# Every kind that can be sealed: all of onnx.TensorProto's (UNDEFINED is no kind).
SEALABLE_TYPES = frozenset(ELEMENT_BITS) | {TensorProto.STRING}


def kind_name(dtype: int) -> str:
    """``FLOAT``, ``INT4``, ... (``data type 99`` for a number onnx does not know)."""
    try:
        return TensorProto.DataType.Name(dtype)
    except ValueError:
        return f"data type {dtype}"


def raw_length(dtype: int, dims: list[int]) -> int:
    """The exact ONNX raw_data length of a ``dtype`` tensor of shape ``dims``: ``ceil(n * bits / 8)``."""
    n = 1
    for d in dims:
        n *= d
    return (n * ELEMENT_BITS[dtype] + 7) // 8


# What onnxruntime-extensions' Python kernels can return: the fallback kernel serves these only. Nodes of
# other types carry no ``fallback_supported`` attribute, so the fallback fails cleanly at session start
# (onnxruntime-extensions aborts the process when it meets a float16 or bfloat16 tensor).
FALLBACK_TYPES = {
    TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT8, TensorProto.INT16, TensorProto.INT32,
    TensorProto.INT64, TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
    TensorProto.BOOL,
}


def _infer(ctx) -> None:  # noqa: ANN001 - onnx's InferenceContext
    import onnx

    dtype = ctx.get_attribute("dtype")
    shape = ctx.get_attribute("shape")
    out = onnx.TypeProto()
    out.tensor_type.elem_type = dtype.i
    out.tensor_type.shape.SetInParent()
    for d in shape.ints:
        out.tensor_type.shape.dim.add().dim_value = d
    ctx.set_output_type(0, out)


def register_schema() -> None:
    """Register the Unseal schema with onnx (idempotent), so the checker and shape inference know it."""
    import onnx  # sealing and onnx's checker need it; opening a sealed model does not
    from onnx import defs
    from onnx.defs import OpSchema

    if defs.has(OP_TYPE, OPSET_VERSION, DOMAIN):
        return
    types = sorted(f"tensor({onnx.helper.tensor_dtype_to_string(t)[len('TensorProto.'):].lower()})"
                   for t in SEALABLE_TYPES)
    schema = OpSchema(
        OP_TYPE, DOMAIN, OPSET_VERSION,
        doc="Opens a sealed initializer: verifies and decrypts an ortseal sealed blob (see ortseal docs).",
        inputs=[OpSchema.FormalParameter("sealed", "tensor(uint8)", "the sealed blob"),
                OpSchema.FormalParameter("like", "T", "an empty tensor of the output type")],
        outputs=[OpSchema.FormalParameter("output", "T", "the opened tensor")],
        type_constraints=[("T", types, "every ONNX tensor type")],
        attributes=[
            OpSchema.Attribute("dtype", OpSchema.AttrType.INT, "TensorProto data type of the output"),
            OpSchema.Attribute("shape", OpSchema.AttrType.INTS, "shape of the output"),
            OpSchema.Attribute("tensor", OpSchema.AttrType.STRING, "canonical JSON identity of the tensor"),
            OpSchema.Attribute("fallback_supported", OpSchema.AttrType.INT,
                               "1 when the onnxruntime-extensions fallback kernel can return this type",
                               required=False),
            OpSchema.Attribute("encoding", OpSchema.AttrType.STRING,
                               f"how the payload becomes the tensor: {', '.join(ENCODINGS[1:])} (absent: raw)",
                               required=False),
            OpSchema.Attribute("payload_bytes", OpSchema.AttrType.INT,
                               "the payload's length, for encodings other than raw", required=False),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer)
    defs.register_schema(schema)
