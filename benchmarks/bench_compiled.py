"""Starting a session on a compiling EP: no cache vs ORT's plaintext EPContext file vs ortseal's sealed cache.

    python benchmarks/bench_compiled.py [--mib 64] [--rounds 3] [--ep OpenVINOExecutionProvider]

Same model (a chain of 2048x2048 float32 MatMul + Relu layers), same EP and device, side by side in one run;
every measurement in a fresh child process (so peak RSS is that start's alone), the ways alternating; the
table gives medians and ratios to the plaintext EPContext start.

- compile:          ``InferenceSession(model)`` on the EP: it compiles at every start (no cache);
- epctx-plain:      ORT's own EPContext model, compiled once beforehand with ``ModelCompiler(...,
                    embed_compiled_data_into_model=True).compile_to_file()``: a plaintext file on disk, loaded
                    with ``InferenceSession(path)``;
- ortseal-first:    ``CompiledModelCache.start`` on an empty cache: compile in memory, seal, write, start;
- ortseal-warm:     ``CompiledModelCache.start`` again: read the entry once, check its signature, decrypt in
                    memory, start from the bytes, no compile;
- ortseal-sealed-*: the same two with the source model sealed (``seal_model``): the first start verifies and
                    opens it in memory before compiling; the warm start only verifies its seal record.

"open" is the wall time of the call that yields the session, inside the child (imports excluded). Peak RSS
is the child's peak resident memory during that call less its resident memory just before it (the peak is
reset first through ``/proc/self/clear_refs``, so the imports' own transient peak does not hide it). Results for this
machine: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DIM = 2048
ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
way, folder, ep = sys.argv[1], sys.argv[2], sys.argv[3]
import onnxruntime as ort
from ortseal import KeySet
from ortseal.compiled import CompiledModelCache, ep_target
target = ep_target(ep)
keys = KeySet.load(folder + "/device.json")
def so():
    s = ort.SessionOptions(); target.add_to(s); return s
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # resets the peak (VmHWM) to the present RSS: what follows is measured alone
before = status("VmRSS")
t = time.perf_counter()
if way == "compile":
    ort.InferenceSession(folder + "/model.onnx", so())
elif way == "epctx-plain":
    ort.InferenceSession(folder + "/model_ctx.onnx", so())
else:
    sealed = "sealed" in way
    start = CompiledModelCache(folder + ("/cache-sealed" if sealed else "/cache"), keys).start(
        folder + ("/model.sealed.onnx" if sealed else "/model.onnx"), target)
    assert start.compiled == way.endswith("first"), (way, start.compiled)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rss": status("VmHWM") - before}))
"""

WAYS = ("compile", "epctx-plain", "ortseal-first", "ortseal-warm", "ortseal-sealed-first", "ortseal-sealed-warm")


def build(folder: Path, mib: int) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layers = max(1, mib * (1 << 20) // (DIM * DIM * 4))
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((DIM, DIM)).astype(np.float32) / DIM ** 0.5, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]), helper.make_node("Relu", [f"h{i}"], [f"r{i}"])]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, DIM])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [8, DIM])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), folder / "model.onnx")


def prepare(folder: Path, mib: int, ep: str) -> None:
    import onnxruntime as ort

    import ortseal
    from ortseal.compiled import ep_target

    build(folder, mib)
    publisher = ortseal.KeySet.generate()
    ortseal.seal_model(folder / "model.onnx", folder / "model.sealed.onnx", publisher)
    publisher.for_device(engine_signing_key=True).save(folder / "device.json")
    so = ort.SessionOptions()
    ep_target(ep).add_to(so)
    ort.ModelCompiler(so, str(folder / "model.onnx"), embed_compiled_data_into_model=True).compile_to_file(
        str(folder / "model_ctx.onnx"))


def child(way: str, folder: Path, ep: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, way, str(folder), ep], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=900)
    if r.returncode:
        raise SystemExit(f"{way} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ep", default="OpenVINOExecutionProvider")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ortseal-bench-compiled-"))
    try:
        prepare(folder, args.mib, args.ep)
        results: dict[str, list[dict]] = {w: [] for w in WAYS}
        for _ in range(args.rounds):
            for way in WAYS:
                if way.endswith("first"):  # an empty cache each time
                    shutil.rmtree(folder / ("cache-sealed" if "sealed" in way else "cache"), ignore_errors=True)
                results[way].append(child(way, folder, args.ep))
        ref = statistics.median(r["seconds"] for r in results["epctx-plain"])
        model_mib = (folder / "model.onnx").stat().st_size / (1 << 20)
        entry = next((folder / "cache").glob("*.epctx.sealed"))
        print(f"model {model_mib:.0f} MiB, EPContext {(folder / 'model_ctx.onnx').stat().st_size / (1 << 20):.0f} MiB, "
              f"sealed entry {entry.stat().st_size / (1 << 20):.0f} MiB; {args.ep}; median of {args.rounds}")
        print(f"{'way':<22} {'open s':>8} {'x epctx-plain':>14} {'peak RSS MiB':>13}")
        for way in WAYS:
            s = statistics.median(r["seconds"] for r in results[way])
            rss = statistics.median(r["rss"] for r in results[way]) / (1 << 20)
            print(f"{way:<22} {s:>8.3f} {s / ref:>14.2f} {rss:>13.0f}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
