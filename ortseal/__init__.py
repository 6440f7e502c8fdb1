"""ortseal: ONNX Runtime model weights and TensorRT engine caches sealed at rest.

Public API::

    import ortseal
    ortseal.seal_model("model.onnx", "model.sealed.onnx", ortseal.KeySet.load("keys.json"))
    ortseal.verify_model("model.sealed.onnx", "device.json")
    sess = ortseal.InferenceSession("model.sealed.onnx", providers=["CPUExecutionProvider"], keys="device.json")

``import ortseal`` imports only the errors: every other name is imported on first use, so that a command or
an application loads what it uses. Those that need ONNX Runtime (``InferenceSession``,
``fallback_session_options``, ``tensorrt_provider``...) check on first use that exactly one ONNX Runtime
distribution is installed (``ortseal/_runtime.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    CompileError,
    FormatError,
    KeyNotFoundError,
    OrtsealError,
    ProviderUnavailableError,
    RollbackError,
    SetupError,
    TamperedError,
    UnsafeOptionError,
)

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .blob import plaintext_size, seal_bytes, unseal_bytes, unseal_into
    from .compiled.cache import CompiledModelCache
    from .compiled.target import ep_target
    from .keys import KeySet, as_keyset
    from .model.fallback import fallback_session_options
    from .model.report import inspect_model, verify_model
    from .model.seal import seal_model
    from .model.session import InferenceSession
    from .tensorrt.provider import tensorrt_provider

# name -> module that defines it, imported on first use (some import onnxruntime, some onnx; the ortseal CLI
# starts without cryptography)
_LAZY = {
    "KeySet": ".keys",
    "as_keyset": ".keys",
    "seal_bytes": ".blob",
    "unseal_bytes": ".blob",
    "unseal_into": ".blob",
    "plaintext_size": ".blob",
    "InferenceSession": ".model.session",
    "fallback_session_options": ".model.fallback",
    "tensorrt_provider": ".tensorrt.provider",
    "seal_model": ".model.seal",
    "inspect_model": ".model.report",
    "verify_model": ".model.report",
    "CompiledModelCache": ".compiled.cache",
    "ep_target": ".compiled.target",
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
    "SetupError",
    "CompileError",
    "CompiledModelCache",
    "ep_target",
    "InferenceSession",
    "fallback_session_options",
    "tensorrt_provider",
    "seal_model",
    "inspect_model",
    "verify_model",
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
