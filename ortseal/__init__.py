"""ortseal: ONNX Runtime model weights and TensorRT engine caches sealed at rest.

Public API::

    import ortseal
    keys = ortseal.KeySet.generate()
    blob = ortseal.seal_bytes(b"weights", keys, context="my-tensor")
    assert ortseal.unseal_bytes(blob, keys, context="my-tensor") == b"weights"
"""

import logging

from ._runtime import check_ort_distribution

check_ort_distribution()  # before anything imports onnxruntime: exactly one distribution must provide it
logging.getLogger("ortseal").addHandler(logging.NullHandler())  # a library logs; the application decides where

from ._version import __version__  # noqa: E402
from .blob import plaintext_size, seal_bytes, unseal_bytes, unseal_into  # noqa: E402
from .ep_plugin import tensorrt_provider  # noqa: E402
from .errors import (  # noqa: E402
    FormatError,
    KeyNotFoundError,
    OrtsealError,
    ProviderUnavailableError,
    RollbackError,
    TamperedError,
    UnsafeOptionError,
)
from .keys import KeySet  # noqa: E402
from .ops import InferenceSession, fallback_session_options, inspect_model, seal_model, verify_model  # noqa: E402

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
    "ProviderUnavailableError",
    "tensorrt_provider",
    "seal_model",
    "InferenceSession",
    "fallback_session_options",
    "inspect_model",
    "verify_model",
]
