"""The ``ai.ortseal::Unseal`` operator (version 1): its ONNX schema, registered with ``onnx.defs``.

``Unseal(sealed: uint8[n], like: T[0]) -> T`` with attributes ``dtype`` (TensorProto data type of T),
``shape`` (dims of T), ``tensor`` (canonical JSON naming the tensor: the binding context's tail), and
``fallback_supported`` = 1 on tensors whose
type the onnxruntime-extensions fallback kernel can return. ``like`` is an empty tensor of type T: it
lets runtimes that type outputs from inputs (onnxruntime-extensions kernels) give the output its type.
Spec: ``docs/sealed-models.md``.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, defs
from onnx.defs import OpSchema

DOMAIN = "ai.ortseal"
OP_TYPE = "Unseal"
OPSET_VERSION = 2  # version 1 (format v1, with a graph_digest attribute) is refused

# Fixed-size numeric and boolean types: what can be sealed as raw little-endian bytes.
SEALABLE_TYPES = {
    TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16,
    TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
    TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64, TensorProto.BOOL,
}


# What onnxruntime-extensions' Python kernels can return: the fallback kernel serves these only. Nodes of
# other types carry no ``fallback_supported`` attribute, so the fallback fails cleanly at session start
# (onnxruntime-extensions aborts the process when it meets a float16 or bfloat16 tensor).
FALLBACK_TYPES = {
    TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT8, TensorProto.INT16, TensorProto.INT32,
    TensorProto.INT64, TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
    TensorProto.BOOL,
}


def _infer(ctx) -> None:
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
        type_constraints=[("T", types, "sealable tensor types")],
        attributes=[
            OpSchema.Attribute("dtype", OpSchema.AttrType.INT, "TensorProto data type of the output"),
            OpSchema.Attribute("shape", OpSchema.AttrType.INTS, "shape of the output"),
            OpSchema.Attribute("tensor", OpSchema.AttrType.STRING, "canonical JSON identity of the tensor"),
            OpSchema.Attribute("fallback_supported", OpSchema.AttrType.INT,
                               "1 when the onnxruntime-extensions fallback kernel can return this type",
                               required=False),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer)
    defs.register_schema(schema)
