"""The TensorRT engine-cache shim: a keyless C library ORT loads, the in-process vault it forwards to,
and :func:`tensorrt_provider`, which builds the provider options."""

from .provider import tensorrt_provider
from .shim import shim_path
from .vault import verify_engine_file

__all__ = ["tensorrt_provider", "shim_path", "verify_engine_file"]
