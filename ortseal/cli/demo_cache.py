"""Demo step: the TensorRT engine-cache round trip through the shim, called the way the TensorRT EP calls it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..keys import KeySet
from ..tensorrt.harness import EngineLoadError, TensorrtEpHarness, harness_provider
from ._demokit import DemoFailure, say


def _expect_load_refused(trt: TensorrtEpHarness, path: str, what: str) -> None:
    try:
        trt.load_engine(path)
    except EngineLoadError:
        return
    raise DemoFailure(f"{what} was accepted")


def engine_cache_steps(work: Path, keys: KeySet) -> None:
    say("\n== 3. TensorRT engine cache through the shim (called as the TensorRT EP calls it; no GPU needed) ==")
    name, opts = harness_provider(keys, {"trt_engine_cache_path": str(work / "trt_cache"), "trt_fp16_enable": True})
    say(f"  providers=[({name!r}, {{... 'trt_engine_decryption_lib_path': "
        f"'{Path(opts['trt_engine_decryption_lib_path']).name}', ...}})]")
    trt = TensorrtEpHarness((name, opts))
    engine = os.urandom(2 << 20)  # stands in for a serialized TensorRT engine
    path = trt.engine_path("TensorrtExecutionProvider_TRTKernel_graph_demo_0_0")
    trt.save_engine(path, engine)
    say(f"  encrypt(): engine of {len(engine)} bytes sealed to {Path(path).name} ({os.path.getsize(path)} bytes)")
    if trt.load_engine(path) != engine:
        raise DemoFailure("decrypt did not give the engine back")
    say("  decrypt(NULL) for the size, then decrypt(buffer): identical engine, straight into ORT's buffer")
    swapped = path.replace("_sm86", "_sm89")
    shutil.copy(path, swapped)
    _expect_load_refused(trt, swapped, "an engine copied onto another GPU's file name")
    os.remove(swapped)  # the work folder keeps only good engines: `ortseal cache verify` on it passes
    say("  engine copied onto another GPU's file name: decrypt returned 0 (refused; see the log line)")
    good = Path(path).read_bytes()
    blob = bytearray(good)
    blob[len(blob) // 2] ^= 0x01
    Path(path).write_bytes(blob)
    _expect_load_refused(trt, path, "a flipped bit in the engine cache")
    Path(path).write_bytes(good)
    say("  one flipped bit in the cache file: decrypt returned 0 (ORT fails closed)")
