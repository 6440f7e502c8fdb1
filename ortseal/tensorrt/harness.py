"""Drives the engine-decryption library exactly as onnxruntime's TensorRT EP does (onnxruntime 1.31,
tensorrt_execution_provider.cc): dlopen the library named by ``trt_engine_decryption_lib_path``, look up
``decrypt`` (required) and ``encrypt`` (optional) by name, and call them with the same sequence and buffers.
No GPU needed: this is the exact C ABI boundary ORT crosses. Used by the tests, the demo and the benchmark."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from typing import Any

from ..keys import KeySet
from .provider import tensorrt_provider


class EngineLoadError(Exception):
    """What the TensorRT EP reports when the library returns 0."""


def harness_provider(keys: KeySet, options: Mapping[str, Any] | None = None, **kwargs: Any) -> tuple[str, dict[str, str]]:
    """``tensorrt_provider(...)`` for the harness: no ORT TensorRT EP is involved, so the check that one can
    load here (``check_runtime``) is skipped; everything else is the same."""
    return tensorrt_provider(keys, options, check_runtime=False, **kwargs)


class TensorrtEpHarness:
    """The TensorRT EP's side of the engine-cache contract, for ``tensorrt_provider(...)``'s result."""

    def __init__(self, provider: tuple[str, dict[str, str]]) -> None:
        name, options = provider
        assert name == "TensorrtExecutionProvider"
        assert options["trt_engine_decryption_enable"] in ("True", "1")
        self.cache_path = options["trt_engine_cache_path"]
        lib = ctypes.CDLL(options["trt_engine_decryption_lib_path"], mode=os.RTLD_LAZY)
        self._decrypt = lib.decrypt
        self._decrypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
        self._decrypt.restype = ctypes.c_int
        self._encrypt = getattr(lib, "encrypt", None)
        if self._encrypt is not None:
            self._encrypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
            self._encrypt.restype = ctypes.c_int

    def engine_path(self, name: str = "TensorrtExecutionProvider_TRTKernel_graph_main_1234_0_0", sm: int = 86) -> str:
        """``<engine cache path>/<prefix or node name>..._sm<cc>.engine.encrypted``, as ORT builds it."""
        return os.path.join(self.cache_path, f"{name}_sm{sm}.engine.encrypted")

    def save_engine(self, path: str, engine: bytes) -> None:
        """ORT after building an engine: encrypt(path, serialized->data(), serialized->size())."""
        data = ctypes.create_string_buffer(engine, len(engine))
        if self._encrypt is None or not self._encrypt(path.encode(), data, len(engine)):
            raise EngineLoadError("TensorRT EP could not call engine encryption function encrypt")

    def load_engine(self, path: str) -> bytes:
        """ORT loading a cached engine: exists check, size query with a NULL buffer, then its own buffer."""
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        size = ctypes.c_size_t(0)
        if not self._decrypt(path.encode(), None, ctypes.byref(size)):
            raise EngineLoadError("TensorRT EP could not get engine buffer size")
        buf = ctypes.create_string_buffer(size.value)  # ORT: new char[engine_size]
        if not self._decrypt(path.encode(), buf, ctypes.byref(size)):
            raise EngineLoadError("TensorRT EP could not call engine decryption function decrypt")
        return buf.raw[:size.value]
