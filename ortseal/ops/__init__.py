"""Sealed weights: sealing a model, opening it at session start, the Unseal op and its fallback kernel.

``InferenceSession`` and ``fallback_session_options`` import ONNX Runtime, so they are imported on first
use: sealing and inspecting need only ``onnx``.
"""

from typing import Any

from .inspect import SealedTensorInfo, VerifyReport, inspect_model, verify_model
from .schema import DOMAIN, OP_TYPE, register_schema
from .seal import PlainTensor, SealSummary, plaintext_report, seal_model

__all__ = ["seal_model", "SealSummary", "PlainTensor", "plaintext_report", "InferenceSession",
           "fallback_session_options", "FallbackModel", "inspect_model", "SealedTensorInfo", "verify_model", "VerifyReport",
           "register_schema", "DOMAIN", "OP_TYPE"]


def __getattr__(name: str) -> Any:
    if name == "InferenceSession":
        from .session import InferenceSession

        return InferenceSession
    if name in ("fallback_session_options", "FallbackModel"):
        from . import fallback

        return getattr(fallback, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
