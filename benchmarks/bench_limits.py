"""What the limits of docs/format.md cost on a normal open: the wire-format census of nodes (``_census.py``)
and the canonical-manifest match (``Manifest.from_json``), side by side with the open they are part of.

    python benchmarks/bench_limits.py [--rounds 7] [MODEL.onnx ...]

Each model (default: a generated 1 MB model, every model of the test corpus already in
``~/.cache/ortseal/corpus``, and a generated model of 10^5 nodes) is sealed into one file (weights inline);
then, in this process, best of ``--rounds``: the protobuf parse of the body, the census alone, the manifest
read alone, and ``ortseal.InferenceSession`` (CPU) with the census and with the census skipped (the open
before the limits were checked first). Results for this machine: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _generated(folder: Path, nodes: int, mib: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph_nodes, inits, prev = [], [], "x"
    length = max(256, (mib << 20) // 4 // max(1, nodes // 4))  # floats per initializer: a quarter of the nodes add one
    for i in range(nodes):
        out = f"/blocks.{i}/output_0"
        if i % 4 == 1:
            w = f"blocks.{i}.weight"
            inits.append(numpy_helper.from_array(rng.standard_normal(length).astype(np.float32), w))
            graph_nodes.append(helper.make_node("Add", [prev, w], [out], name=f"/blocks.{i}/Add"))
        elif i % 4 == 2:
            graph_nodes.append(helper.make_node("Transpose", [prev], [out], name=f"/blocks.{i}/Transpose", perm=[0]))
        else:
            graph_nodes.append(helper.make_node("Relu", [prev], [out], name=f"/blocks.{i}/Relu"))
        prev = out
    graph = helper.make_graph(graph_nodes, "generated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [length])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [length])], inits)
    path = folder / f"generated-{nodes}-nodes.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    import ortseal
    from ortseal._onnx_proto import ModelProto
    from ortseal.model import _census, verify
    from ortseal.model._record import find_manifest, read_record

    keys = ortseal.KeySet.generate()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = [Path(m) for m in args.models] or [
            _generated(folder, 40, 1),
            *sorted(Path(p) for p in glob.glob(os.path.expanduser("~/.cache/ortseal/corpus/*/*.onnx"))),
            _generated(folder, 10_000, 0),
            _generated(folder, 100_000, 0)]
        print("| model | sealed MB | nodes | parse ms | census ms | manifest ms | open ms, census skipped | open ms | ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for model in models:
            sealed = folder / f"{model.parent.name}-{model.stem}.sealed.onnx"
            try:
                ortseal.seal_model(model, sealed, keys, external_data=False, progress=False, min_bytes=1024)
            except (ortseal.OrtsealError, ValueError) as exc:
                print(f"| {model.name} | not sealed: {exc} |", file=sys.stderr)
                continue
            data = sealed.read_bytes()
            body = memoryview(data)[:len(data) - read_record(data).size]
            parsed = ModelProto()
            parse_ms = _best(lambda: parsed.ParseFromString(body), args.rounds)
            census_ms = _best(lambda: _census.check_counts(data, len(body)), args.rounds)
            manifest_ms = _best(lambda: find_manifest(body), args.rounds)

            def open_() -> None:
                ortseal.InferenceSession(str(sealed), providers=["CPUExecutionProvider"], keys=keys)

            skipped_ms = counted_ms = float("inf")
            for _ in range(max(1, args.rounds // 2)):  # alternating, so both see the same machine
                verify.check_counts = lambda data, end: None
                skipped_ms = min(skipped_ms, _best(open_, 1))
                verify.check_counts = _census.check_counts
                counted_ms = min(counted_ms, _best(open_, 1))
            print(f"| {model.parent.name if 'corpus' in str(model) else model.stem} | {len(data) / 1e6:.1f} | "
                  f"{len(parsed.graph.node)} | {parse_ms:.2f} | {census_ms:.2f} | {manifest_ms:.2f} | "
                  f"{skipped_ms:.1f} | {counted_ms:.1f} | {counted_ms / skipped_ms:.3f} |", flush=True)


if __name__ == "__main__":
    main()
