"""Demo step: the TensorRT engine-cache round trip through the shim, called the way the TensorRT EP calls it."""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

from ..demo import DemoFailure, say
from ..keys import KeySet
from .provider import tensorrt_provider


def _ort_style_load(lib: ctypes.CDLL, path: str) -> bytes | None:
    size = ctypes.c_size_t(0)
    if not os.path.exists(path) or not lib.decrypt(path.encode(), None, ctypes.byref(size)):
        return None
    buf = ctypes.create_string_buffer(size.value)
    if not lib.decrypt(path.encode(), buf, ctypes.byref(size)):
        return None
    return buf.raw


def engine_cache_steps(work: Path, keys: KeySet) -> None:
    say("\n== 3. TensorRT engine cache through the shim (called as the TensorRT EP calls it; no GPU needed) ==")
    name, opts = tensorrt_provider(keys, {"trt_engine_cache_path": str(work / "trt_cache"), "trt_fp16_enable": True})
    say(f"  providers=[({name!r}, {{... 'trt_engine_decryption_lib_path': "
        f"'{Path(opts['trt_engine_decryption_lib_path']).name}', ...}})]")
    lib = ctypes.CDLL(opts["trt_engine_decryption_lib_path"])
    engine = os.urandom(2 << 20)  # stands in for a serialized TensorRT engine
    path = os.path.join(opts["trt_engine_cache_path"], "TensorrtExecutionProvider_TRTKernel_graph_demo_0_0_sm86.engine.encrypted")
    if not lib.encrypt(path.encode(), ctypes.create_string_buffer(engine, len(engine)), len(engine)):
        raise DemoFailure("encrypt returned 0")
    say(f"  encrypt(): engine of {len(engine)} bytes sealed to {Path(path).name} ({os.path.getsize(path)} bytes)")
    if _ort_style_load(lib, path) != engine:
        raise DemoFailure("decrypt did not give the engine back")
    say("  decrypt(NULL) for the size, then decrypt(buffer): identical engine, straight into ORT's buffer")
    swapped = path.replace("_sm86", "_sm89")
    shutil.copy(path, swapped)
    if _ort_style_load(lib, swapped) is not None:
        raise DemoFailure("an engine copied onto another GPU's file name was accepted")
    say("  engine copied onto another GPU's file name: decrypt returned 0 (refused; see the log line)")
    blob = bytearray(Path(path).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    Path(path).write_bytes(blob)
    if _ort_style_load(lib, path) is not None:
        raise DemoFailure("a flipped bit in the engine cache was accepted")
    say("  one flipped bit in the cache file: decrypt returned 0 (ORT fails closed)")
