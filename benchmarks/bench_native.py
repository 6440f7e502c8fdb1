"""Opening a sealed model from C++ (libortseal + ORT's C API) against plain ORT from the same C++ host,
side by side in one run: open time (median of --runs, each in a fresh process) and peak RSS.

    python benchmarks/bench_native.py            # 1 MiB and 1 GiB models
    python benchmarks/bench_native.py --mib 1    # the small model only

Plain: ORT's CreateSession on the model path (weights read from its external data file). Sealed: load the
keyset, read and verify the sealed model (signature over the file, every blob's digest), decrypt the weights,
CreateSessionFromArray. Two sealed ways: "memory" (ORTSEAL_ROUTE_MEMORY: the weights handed over with
AddExternalInitializersFromFilesInMemory, which ORT copies) and "auto", the default (models with 16 MiB of
large tensors or more: one file per tensor in a private RAM folder, given to ORT as its external-data folder;
smaller ones as "memory"). $ORTSEAL_RUNTIME_DIR picks the RAM folder's base as for the library.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import ortseal  # noqa: E402
from bench_open import build  # noqa: E402
from native_host import build as build_native  # noqa: E402


def small(folder: Path) -> None:
    """A 1 MiB model: one 512x512 float32 MatMul weight in external data."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "small",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data")


def measure(cmd: list[str], route: str | None = None) -> tuple[float, int, int]:
    env = {**os.environ, "ORTSEAL_HOST_ROUTE": route} if route else None
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.split()
    return (float(out[out.index("open_s") + 1]), int(out[out.index("maxrss_kb") + 1]),
            int(out[out.index("rss_after_kb") + 1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, nargs="*", default=[1, 1024])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    host = str(build_native(ort=True) / "ortseal_ort_host")
    keys = ortseal.KeySet.generate()
    ways = {"plain ORT": None, "sealed, memory": "memory", "sealed, auto": "auto"}
    print("| model | way | open (s) | x plain | peak RSS (MiB) | x plain | RSS after open (MiB) | x plain |")
    print("|---|---|---|---|---|---|---|---|")
    for mib in args.mib:
        with tempfile.TemporaryDirectory(dir=HERE.parent / "build") as tmp:
            folder = Path(tmp)
            small(folder) if mib <= 1 else build(folder, mib)
            (folder / "keys.json").write_text(keys.to_json())
            ortseal.seal_model(folder / "model.onnx", folder / "sealed.onnx", keys, progress=False)
            got: dict[str, list[tuple[float, int, int]]] = {way: [] for way in ways}
            for _ in range(args.runs):  # alternate, so every way sees the same machine
                for way, route in ways.items():
                    cmd = [host, "time-plain", str(folder / "model.onnx")] if route is None else \
                        [host, "time-sealed", str(folder / "keys.json"), str(folder / "sealed.onnx")]
                    got[way].append(measure(cmd, route))
            rows = {way: (statistics.median(t for t, _, _ in runs), max(r for _, r, _ in runs) / 1024,
                          max(a for _, _, a in runs) / 1024) for way, runs in got.items()}
            p_t, p_r, p_a = rows["plain ORT"]
            for way, (t, r, a) in rows.items():
                print(f"| {mib} MiB | {way} | {t:.3f} | {t / p_t:.2f}x | {r:.0f} | {r / p_r:.2f}x | {a:.0f} | {a / p_a:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
