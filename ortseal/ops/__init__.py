"""Sealed weights: sealing a model, opening it at session start, the Unseal op and its fallback kernel."""

from .fallback import FallbackModel, fallback_session_options
from .inspect import SealedTensorInfo, VerifyReport, inspect_model, verify_model
from .schema import DOMAIN, OP_TYPE, register_schema
from .seal import PlainTensor, SealSummary, plaintext_report, seal_model
from .session import InferenceSession

__all__ = ["seal_model", "SealSummary", "PlainTensor", "plaintext_report", "InferenceSession",
           "fallback_session_options", "FallbackModel", "inspect_model", "SealedTensorInfo", "verify_model", "VerifyReport",
           "register_schema", "DOMAIN", "OP_TYPE"]
