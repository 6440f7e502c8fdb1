"""Deprecated: ``ortseal.ops`` moved to ``ortseal.model`` (sealed models); import the public names from
``ortseal`` itself. This alias only re-exports them and will be removed."""

import warnings

from ..model.fallback import FallbackModel, fallback_session_options
from ..model.report import SealedTensorInfo, VerifyReport, inspect_model, verify_model
from ..model.schema import DOMAIN, OP_TYPE, register_schema
from ..model.seal import PlainTensor, SealSummary, plaintext_report, seal_model
from ..model.session import InferenceSession

warnings.warn("ortseal.ops is deprecated: import from ortseal (or ortseal.model.*)", DeprecationWarning, stacklevel=2)

__all__ = ["seal_model", "SealSummary", "PlainTensor", "plaintext_report", "InferenceSession",
           "fallback_session_options", "FallbackModel", "inspect_model", "SealedTensorInfo", "verify_model",
           "VerifyReport", "register_schema", "DOMAIN", "OP_TYPE"]
