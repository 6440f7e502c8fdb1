"""ortseal: ONNX Runtime model weights and TensorRT engine caches sealed at rest.

Public API::

    import ortseal
    ortseal.seal_model("model.onnx", "model.sealed.onnx", ortseal.KeySet.load("keys.json"))
    ortseal.verify_model("model.sealed.onnx", "device.json")
    sess = ortseal.InferenceSession("model.sealed.onnx", providers=["CPUExecutionProvider"], keys="device.json")

``import ortseal`` needs no ONNX Runtime: the names that do (``InferenceSession``,
``fallback_session_options``, ``tensorrt_provider``...) are imported on first use, which checks that
exactly one ONNX Runtime distribution is installed (``ortseal/_runtime.py``).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ._version import __version__
from .blob import plaintext_size, seal_bytes, unseal_bytes, unseal_into
from .errors import (
    FormatError,
    KeyNotFoundError,
    OrtsealError,
    ProviderUnavailableError,
    RollbackError,
    TamperedError,
    UnsafeOptionError,
)
from .keys import KeySet, as_keyset

logging.getLogger("ortseal").addHandler(logging.NullHandler())  # a library logs; the application decides where

# name -> module that defines it, imported on first use (some import onnxruntime, some onnx)
_LAZY = {
    "InferenceSession": ".model.session",
    "fallback_session_options": ".model.fallback",
    "tensorrt_provider": ".tensorrt.provider",
    "seal_model": ".model.seal",
    "inspect_model": ".model.report",
    "verify_model": ".model.report",
}

__all__ = [
    "__version__",
    "KeySet",
    "as_keyset",
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
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
