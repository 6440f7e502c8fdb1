"""The TensorRT engine-cache shim: a keyless C library ORT loads, the in-process vault it forwards to,
and :func:`tensorrt_provider`, which builds the provider options.

Imported on first use, so that ``ortseal.ops.options`` can import the shim's path without the provider
(which imports it back)."""

from typing import Any

__all__ = ["tensorrt_provider", "shim_path", "verify_engine_file"]


def __getattr__(name: str) -> Any:
    if name == "tensorrt_provider":
        from .provider import tensorrt_provider

        return tensorrt_provider
    if name == "shim_path":
        from .shim import shim_path

        return shim_path
    if name == "verify_engine_file":
        from .vault import verify_engine_file

        return verify_engine_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
