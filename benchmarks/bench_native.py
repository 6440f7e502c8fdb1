"""Opening a sealed model from C++ (libortseal + ORT's C API) against plain ORT from the same C++ host,
side by side in one run: open time (median of --runs, each in a fresh process) and peak RSS.

    python benchmarks/bench_native.py            # 1 MiB and 1 GiB models
    python benchmarks/bench_native.py --mib 1    # the small model only

Plain: ORT's CreateSession on the model path (weights read from its external data file). Sealed: load the
keyset, read and verify the sealed model (signature over the file, every blob's digest), decrypt the weights
into memory, CreateSessionFromArray with AddExternalInitializersFromFilesInMemory.
"""

from __future__ import annotations

import argparse
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


def measure(cmd: list[str]) -> tuple[float, int, int]:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return (float(out[out.index("open_s") + 1]), int(out[out.index("maxrss_kb") + 1]),
            int(out[out.index("rss_after_kb") + 1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, nargs="*", default=[1, 1024])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    host = str(build_native(ort=True) / "ortseal_ort_host")
    keys = ortseal.KeySet.generate()
    print("| model | plain open (s) | sealed open (s) | open ratio | peak RSS plain / sealed (MiB) | peak ratio "
          "| RSS after open plain / sealed (MiB) | after ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for mib in args.mib:
        with tempfile.TemporaryDirectory(dir=HERE.parent / "build") as tmp:
            folder = Path(tmp)
            small(folder) if mib <= 1 else build(folder, mib)
            (folder / "keys.json").write_text(keys.to_json())
            ortseal.seal_model(folder / "model.onnx", folder / "sealed.onnx", keys, progress=False)
            plain, sealed = [], []
            for _ in range(args.runs):  # alternate, so both see the same machine
                plain.append(measure([host, "time-plain", str(folder / "model.onnx")]))
                sealed.append(measure([host, "time-sealed", str(folder / "keys.json"), str(folder / "sealed.onnx")]))
            p_t, s_t = statistics.median(t for t, _, _ in plain), statistics.median(t for t, _, _ in sealed)
            p_r, s_r = max(r for _, r, _ in plain) / 1024, max(r for _, r, _ in sealed) / 1024
            p_a, s_a = max(a for _, _, a in plain) / 1024, max(a for _, _, a in sealed) / 1024
            print(f"| {mib} MiB | {p_t:.3f} | {s_t:.3f} | {s_t / p_t:.2f}x | {p_r:.0f} / {s_r:.0f} | {s_r / p_r:.2f}x "
                  f"| {p_a:.0f} / {s_a:.0f} | {s_a / p_a:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
