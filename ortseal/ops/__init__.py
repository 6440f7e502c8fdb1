"""Sealed initializers: sealing a model, opening it at session start, the Unseal op and its fallback kernel."""

from .fallback import fallback_session_options
from .inspect import inspect_model, verify_model
from .schema import DOMAIN, OP_TYPE, register_schema
from .seal import SealSummary, seal_model
from .session import InferenceSession

__all__ = ["seal_model", "SealSummary", "InferenceSession", "fallback_session_options", "inspect_model",
           "verify_model", "register_schema", "DOMAIN", "OP_TYPE"]
