#!/usr/bin/env python3
"""GPU smoke test of the sealed TensorRT engine cache, for users with an NVIDIA GPU.

    pip install -e ".[gpu]"
    python tools/gpu_smoke.py [--workdir DIR]

First the preflight (can ORT's TensorRT EP load here; exit 2 naming what is missing), then:
Builds a small model, runs it through ONNX Runtime's TensorRT EP with ``ortseal.tensorrt_provider`` twice
(cold: engine built and sealed; warm: loaded from the sealed cache), checks outputs against the CPU EP,
checks the cache holds no plaintext engine, then flips a byte and checks the session fails closed.
Exit code 0 when every check passes. Not a CI test: CI has no GPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import ortseal


def build_model(path: Path) -> None:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((256, 512)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((512, 64)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "smoke", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 64])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="keep files here instead of a temporary folder")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    import onnxruntime as ort

    from ortseal.tensorrt.preflight import tensorrt_preflight

    try:
        print(f"preflight: {tensorrt_preflight()}")
    except ortseal.ProviderUnavailableError as exc:
        print(f"preflight FAILED: {exc}")
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ortseal-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.onnx"
    build_model(model)
    keys = ortseal.KeySet.generate()
    cache = work / "trt_cache"
    x = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    failures = []

    def session():
        provider = ortseal.tensorrt_provider(keys, {"trt_engine_cache_path": str(cache)})
        # ortseal's session: TensorRT or an error, never ORT's silent fallback to CUDA/CPU
        return ortseal.InferenceSession(str(model), providers=[provider, "CPUExecutionProvider"])

    for label in ("cold (build + seal)", "warm (load sealed)"):
        t = time.perf_counter()
        out = session().run(None, {"x": x})[0]
        ok = np.allclose(out, expected, rtol=1e-3, atol=1e-3)
        print(f"{label}: {time.perf_counter() - t:.2f}s, matches CPU EP: {ok}")
        if not ok:
            failures.append(f"{label} output differs from the CPU EP")
    engines = sorted(cache.glob("*.engine.encrypted"))
    plain = sorted(cache.glob("*.engine"))
    print(f"cache: {[p.name for p in engines]}")
    if not engines:
        failures.append("no sealed engine was written")
    if plain:
        failures.append(f"plaintext engine files found: {plain}")
    for path in engines:
        ortseal.tensorrt.verify_engine_file(path, keys)
        data = path.read_bytes()
        if b"ftrt" in data[:4096] or b"ptrt" in data[:4096]:
            failures.append(f"{path.name} looks like a plaintext TensorRT engine")
    if engines:
        blob = bytearray(engines[0].read_bytes())
        blob[len(blob) // 2] ^= 0x01
        engines[0].write_bytes(blob)
        try:
            session().run(None, {"x": x})
            failures.append("a session loaded a tampered engine cache")
        except Exception as exc:  # noqa: BLE001 - ORT raises its own error types
            print(f"tampered cache refused: {type(exc).__name__}: {str(exc)[:160]}")
    for f in failures:
        print(f"FAIL: {f}")
    print("gpu smoke: " + ("FAILED" if failures else "passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
