"""ONNX's protobuf message classes (``ModelProto``, ``TensorProto``...) without importing the ``onnx`` package.

Opening a sealed model needs to parse and re-serialize a ``ModelProto`` and nothing else of onnx. ``import
onnx`` runs its package init, which loads its C++ extension, its op schemas and ``ml_dtypes`` (1.1-1.8 s
here, ``ml_dtypes`` 0.7's extension alone 1.1 s): more than ORT takes to build a small session. Measured
against the alternative of a wire-format walker of our own: protobuf's upb parser is C, a walker in Python
would be slower on every real model, and a second parser is a second truth.

The classes come from onnx's own schema: the serialized ``FileDescriptorProto`` that onnx's generated
``onnx_ml_pb2.py`` hands protobuf (read from that file, never executed here). With protobuf's upb backend (the
default since protobuf 4.21) it is added to upb's default pool and the classes are made by upb's metaclass:
about 10 ms, against 30-35 ms for executing ``onnx_ml_pb2.py``, whose imports pull in protobuf's pure-Python
descriptor pool, ``text_format`` and well-known types (benchmarks/bench_cold_start.py). Any other backend
executes ``onnx_ml_pb2.py`` under this module's name. Either way protobuf keeps one descriptor pool and one
class per message descriptor, so when ``onnx`` is imported later (sealing, ``inspect``, a user's own code) its
``onnx.ModelProto`` *is* the class made here: messages pass freely between the two (tests/test_route.py).
Where ``onnx`` is already imported, its module is used directly.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any

from .errors import SetupError

_NAMES = ("AttributeProto", "FunctionProto", "GraphProto", "ModelProto", "NodeProto", "SparseTensorProto",
          "StringStringEntryProto", "TensorProto", "TypeProto", "ValueInfoProto")
_ADD_FILE = b"AddSerializedFile("


def _pb2_path() -> str:
    spec = importlib.util.find_spec("onnx")  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise SetupError("the onnx package is not installed (pip install onnx): ortseal reads ONNX models "
                         "with its protobuf definitions")
    return os.path.join(next(iter(spec.submodule_search_locations)), "onnx_ml_pb2.py")


def _upb_classes(path: str) -> Any | None:
    """The classes made by upb from the schema in onnx's generated module; None where upb is not protobuf's
    backend (another backend, or ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION`` asks for one)."""
    if os.environ.get("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "upb") != "upb":
        return None
    try:
        from google._upb import _message  # type: ignore[import-untyped]  # protobuf's C backend (no stubs)
        from google.protobuf.message import Message
    except ImportError:
        return None
    with open(path, "rb") as f:
        source = f.read()
    start = source.find(_ADD_FILE)
    end = source.find(b")\n", start)
    try:  # a literal: read, never executed
        serialized = ast.literal_eval(source[start + len(_ADD_FILE):end].decode("ascii")) if start >= 0 else None
    except (ValueError, SyntaxError, UnicodeDecodeError):
        serialized = None
    if not isinstance(serialized, bytes):
        return None  # a layout of the generated file this reader does not know: execute it instead
    try:
        messages = _message.default_pool.AddSerializedFile(serialized).message_types_by_name
    except TypeError as e:  # the pool already holds another onnx-ml.proto (an onnx of another version)
        raise SetupError(f"protobuf already holds other ONNX definitions than those of {path}: {e}") from None
    # Made as the generated module makes them (its __module__ too, for repr and pickling); upb keeps the class
    # on the descriptor, so onnx's own import later finds these rather than making its own.
    return SimpleNamespace(**{name: _message.MessageMeta(name, (Message,), {
        "DESCRIPTOR": messages[name], "__module__": "onnx.onnx_ml_pb2"}) for name in _NAMES})


def _load() -> Any:
    loaded = sys.modules.get("onnx.onnx_ml_pb2")
    if loaded is not None:
        return loaded
    path = _pb2_path()
    classes = _upb_classes(path)
    if classes is not None:
        return classes
    pb2_spec = importlib.util.spec_from_file_location(f"{__name__}._onnx_ml_pb2", path)
    if pb2_spec is None or pb2_spec.loader is None:
        raise SetupError(f"the onnx package has no protobuf module at {path}")
    module: ModuleType = importlib.util.module_from_spec(pb2_spec)
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
