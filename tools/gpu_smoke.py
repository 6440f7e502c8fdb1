#!/usr/bin/env python3
"""GPU smoke test of the sealed TensorRT engine cache, for users with an NVIDIA GPU.

    pip install -e ".[gpu]"                  # add onnxruntime-ep-nv-tensorrt-rtx for the NV TensorRT RTX EP
    python tools/gpu_smoke.py [--workdir DIR] [--compiled]

First the preflight (can ORT's TensorRT EP load here; exit 2 naming what is missing), then:
Builds a small model, runs it through ONNX Runtime's TensorRT EP with ``ortseal.tensorrt_provider`` twice
(cold: engine built and sealed; warm: loaded from the sealed cache), checks outputs against the CPU EP,
checks the cache holds no plaintext engine, then flips a byte and checks the session fails closed.
With ``--compiled`` it then checks the sealed compiled-model cache (docs/compiled-cache.md) on each of the
classic TensorRT EP and the NV TensorRT RTX plugin EP that is available (EPContext, embed mode): the first
start compiles and seals, the second opens the entry without compiling, outputs match the CPU EP, the cache
folder holds no plaintext weight, a flipped byte is refused and, with ``on_tamper="rebuild"``, quarantined
and rebuilt. Exit code 0 when every check passes. Not a CI test: CI has no GPU.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
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


def _gpu_identity() -> str | None:
    """The GPU's name, UUID and driver (nvidia-smi), bound into entries of the classic TensorRT EP, for which
    ONNX Runtime cannot say which device it runs on."""
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,uuid,driver_version", "--format=csv,noheader", "-i", "0"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def compiled_checks(work: Path, model: Path, x: np.ndarray, expected: np.ndarray, failures: list[str]) -> None:
    """The sealed compiled-model cache on each TensorRT EP available here (EPContext, embed mode)."""
    from ortseal.compiled import CompiledModelCache, ep_target

    keys = ortseal.KeySet.generate().for_device(engine_signing_key=True)
    w1 = numpy_helper.to_array(onnx.load(str(model)).graph.initializer[0]).tobytes()
    targets = []
    for name, options, device in (("TensorrtExecutionProvider", {"trt_fp16_enable": "False"}, _gpu_identity()),
                                  ("NvTensorRTRTXExecutionProvider", {}, None)):
        try:
            targets.append(ep_target(name, options, device=device) if device else ep_target(name, options))
        except ortseal.ProviderUnavailableError as exc:
            print(f"compiled cache, {name}: skipped: {exc}")
    for target in targets:
        label = f"compiled cache, {target.name} {target.version}"
        cache_dir = work / f"compiled-{target.name}"
        try:
            starts = [CompiledModelCache(cache_dir, keys).start(model, target) for _ in range(2)]
        except ortseal.OrtsealError as exc:
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        print(f"{label}: first start {starts[0].seconds:.2f}s (compiled: {starts[0].compiled}), second "
              f"{starts[1].seconds:.2f}s (compiled: {starts[1].compiled}), entry {starts[0].entry.name}")
        if not starts[0].compiled or starts[1].compiled:
            failures.append(f"{label}: the second start compiled again, or the first did not compile")
        for start in starts:
            if not np.allclose(start.session.run(None, {"x": x})[0], expected, rtol=1e-2, atol=1e-2):
                failures.append(f"{label}: outputs differ from the CPU EP")
        for path in cache_dir.rglob("*"):
            data = path.read_bytes() if path.is_file() else b""
            if any(w1[i:i + 64] in data for i in range(0, len(w1) - 64, len(w1) // 8)):
                failures.append(f"{label}: {path} holds plaintext weights")
        entry = starts[0].entry
        blob = bytearray(entry.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        entry.write_bytes(bytes(blob))
        try:
            CompiledModelCache(cache_dir, keys).start(model, target)
            failures.append(f"{label}: a tampered entry was loaded")
        except ortseal.TamperedError as exc:
            print(f"{label}: tampered entry refused: {str(exc)[:120]}")
        rebuilt = CompiledModelCache(cache_dir, keys, on_tamper="rebuild").start(model, target)
        if not (rebuilt.compiled and rebuilt.quarantined):
            failures.append(f"{label}: on_tamper='rebuild' did not quarantine and rebuild")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="keep files here instead of a temporary folder")
    ap.add_argument("--compiled", action="store_true", help="also check the sealed compiled-model cache (EPContext)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    import onnxruntime as ort

    from ortseal.tensorrt.preflight import tensorrt_preflight

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ortseal-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.onnx"
    build_model(model)
    x = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    failures: list[str] = []
    if args.compiled:  # first: the NV TensorRT RTX plugin EP needs no classic TensorRT EP
        compiled_checks(work, model, x, expected, failures)
    try:
        print(f"preflight: {tensorrt_preflight()}")
    except ortseal.ProviderUnavailableError as exc:
        print(f"preflight FAILED: {exc}")
        for f in failures:
            print(f"FAIL: {f}")
        return 2
    keys = ortseal.KeySet.generate()
    cache = work / "trt_cache"

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
