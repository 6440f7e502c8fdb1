"""ONNX's protobuf message classes (``ModelProto``, ``TensorProto``...) without importing the ``onnx`` package.

Opening a sealed model needs to parse and re-serialize a ``ModelProto`` and nothing else of onnx. ``import
onnx`` runs its package init, which loads its C++ extension, its op schemas and ``ml_dtypes`` (1.1-1.8 s
here, ``ml_dtypes`` 0.7's extension alone 1.1 s): more than ORT takes to build a small session. The classes
live in onnx's generated ``onnx_ml_pb2.py``, which imports only ``google.protobuf``; executed on its own it
takes about 40 ms. Measured against the alternative of a wire-format walker of our own: protobuf's upb parser
is C, a walker in Python would be slower on every real model, and a second parser is a second truth.

The file is loaded under this module's own name, without running ``onnx/__init__``. Protobuf keeps one
descriptor pool and one class per message descriptor, so when ``onnx`` is imported later (sealing,
``inspect``, a user's own code) its ``onnx.ModelProto`` *is* the class loaded here: messages pass freely
between the two. Where ``onnx`` is already imported, its module is used directly.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from .errors import OrtsealError


def _load() -> ModuleType:
    loaded = sys.modules.get("onnx.onnx_ml_pb2")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("onnx")  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise OrtsealError("the onnx package is not installed (pip install onnx): ortseal reads ONNX models "
                           "with its protobuf definitions")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "onnx_ml_pb2.py")
    pb2_spec = importlib.util.spec_from_file_location(f"{__name__}._onnx_ml_pb2", path)
    if pb2_spec is None or pb2_spec.loader is None:
        raise OrtsealError(f"the onnx package has no protobuf module at {path}")
    module = importlib.util.module_from_spec(pb2_spec)
    pb2_spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:  # the checker reads onnx's stubs for the same classes
    from onnx.onnx_ml_pb2 import (
        AttributeProto,
        FunctionProto,
        GraphProto,
        ModelProto,
        NodeProto,
        SparseTensorProto,
        StringStringEntryProto,
        TensorProto,
        TypeProto,
        ValueInfoProto,
    )
else:
    _pb2 = _load()
    AttributeProto = _pb2.AttributeProto
    FunctionProto = _pb2.FunctionProto
    GraphProto = _pb2.GraphProto
    ModelProto = _pb2.ModelProto
    NodeProto = _pb2.NodeProto
    SparseTensorProto = _pb2.SparseTensorProto
    StringStringEntryProto = _pb2.StringStringEntryProto
    TensorProto = _pb2.TensorProto
    TypeProto = _pb2.TypeProto
    ValueInfoProto = _pb2.ValueInfoProto

__all__ = ["AttributeProto", "FunctionProto", "GraphProto", "ModelProto", "NodeProto", "SparseTensorProto",
           "StringStringEntryProto", "TensorProto", "TypeProto", "ValueInfoProto"]
