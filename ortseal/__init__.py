"""ortseal: ONNX Runtime model weights and TensorRT engine caches sealed at rest.

Public API::

    import ortseal
    keys = ortseal.KeySet.generate()
    blob = ortseal.seal_bytes(b"weights", keys, context="my-tensor")
    assert ortseal.unseal_bytes(blob, keys, context="my-tensor") == b"weights"
"""

from ._version import __version__
from .blob import plaintext_size, seal_bytes, unseal_bytes, unseal_into
from .ep_plugin import tensorrt_provider
from .errors import FormatError, KeyNotFoundError, OrtsealError, RollbackError, TamperedError, UnsafeOptionError
from .keys import KeySet
from .ops import InferenceSession, fallback_session_options, inspect_model, seal_model, verify_model

__all__ = [
    "__version__",
    "KeySet",
    "seal_bytes",
    "unseal_bytes",
    "unseal_into",
    "plaintext_size",
    "OrtsealError",
    "TamperedError",
    "RollbackError",
    "KeyNotFoundError",
    "FormatError",
    "UnsafeOptionError",
    "tensorrt_provider",
    "seal_model",
    "InferenceSession",
    "fallback_session_options",
    "inspect_model",
    "verify_model",
]
