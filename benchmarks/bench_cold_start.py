"""Cold start: a fresh process, to the first ``run()`` of a 1 MB model, sealed vs plain, side by side.

    python benchmarks/bench_cold_start.py [--rounds 7] [--kib 1024]

- plain:   ``onnxruntime.InferenceSession`` on the unsealed model (``import onnxruntime``, build, run);
- dependencies: plain, after importing what opening imports of other packages (cryptography's primitives,
           protobuf's upb backend, json, hashlib, threading, rfc8785): the floor of this design in Python;
- ortseal: ``ortseal.InferenceSession`` on the sealed copy, its weights inline (``import ortseal``, the keyset
           loaded, the file read and its signature checked, opened, built, run).

Each round starts both in fresh interpreters, alternating; a child reports the time from its first import
to the end of its first ``run()`` (``import``) and the parent the whole process's wall time (``process``,
interpreter start-up and exit included) and CPU time (user + system, less disturbed by a loaded machine).
The children run with byte-code caching on, in a folder of this run's own (``PYTHONPYCACHEPREFIX``), after one
warm-up round, as an installed package runs (pip writes the ``.pyc`` files at install): a machine that sets
``PYTHONDONTWRITEBYTECODE`` would otherwise time compiling every module. Also printed: whether the ortseal
child imported ``onnx`` or ``ml_dtypes`` (opening needs neither). Medians. Results for this machine:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import ortseal

CHILD = """
import json, sys, time
started = time.perf_counter()
import numpy as np
if sys.argv[1] == "plain":
    import onnxruntime
    sess = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
elif sys.argv[1] == "dependencies":  # what opening imports of other packages, then plain ORT
    import onnxruntime
    import base64, hashlib, hmac, json, struct, threading, rfc8785
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from google.protobuf.message import DecodeError
    from google._upb import _message  # what ortseal/_onnx_proto.py makes the classes with
    sess = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
else:
    import ortseal
    sess = ortseal.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"], keys=sys.argv[3])
sess.run(None, {"x": np.ones((1, %(n)d), np.float32)})
print(json.dumps({"seconds": time.perf_counter() - started,
                  "onnx": sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "ml_dtypes"))[:3]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--kib", type=int, default=1024, help="weights, KiB (one square float32 MatMul)")
    args = ap.parse_args()
    n = int((args.kib * 1024 / 4) ** 0.5)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                                  [numpy_helper.from_array(w, "W")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
                  str(d / "plain.onnx"))
        keys = ortseal.KeySet.generate()
        keys.save(d / "keys.json")
        ortseal.seal_model(d / "plain.onnx", d / "sealed.onnx", keys, external_data=False, progress=False)
        child = CHILD % {"n": n}
        ways = {"plain": [sys.executable, "-c", child, "plain", str(d / "plain.onnx")],
                "dependencies": [sys.executable, "-c", child, "dependencies", str(d / "plain.onnx")],
                "ortseal": [sys.executable, "-c", child, "ortseal", str(d / "sealed.onnx"), str(d / "keys.json")]}
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(d / "pycache")
        for command in ways.values():  # the warm-up round: writes the byte code
            subprocess.run(command, capture_output=True, check=True, env=env)
        got: dict[str, dict[str, list[float]]] = {w: {"import": [], "process": [], "cpu": []} for w in ways}
        imported: list[str] = []
        for _ in range(args.rounds):
            for way, command in ways.items():
                before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
                got[way]["process"].append(time.perf_counter() - started)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                got[way]["cpu"].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                report = json.loads(out.stdout.strip().splitlines()[-1])
                got[way]["import"].append(report["seconds"])
                if way == "ortseal":
                    imported = report["onnx"]
        size = (d / "sealed.onnx").stat().st_size
    plain = {k: statistics.median(v) for k, v in got["plain"].items()}
    print(f"model: {n}x{n} float32 MatMul ({size / 1e6:.2f} MB sealed, weights inline), {args.rounds} rounds, medians")
    print("| way | first import to first run() ms | whole process ms | process CPU ms | x plain (process) |")
    print("|---|---|---|---|---|")
    for way in ways:
        med = {k: statistics.median(v) for k, v in got[way].items()}
        print(f"| {way} | {med['import'] * 1e3:.0f} | {med['process'] * 1e3:.0f} | {med['cpu'] * 1e3:.0f} | "
              f"{med['process'] / plain['process']:.2f} |")
    sealed = {k: statistics.median(v) for k, v in got["ortseal"].items()}
    deps = {k: statistics.median(v) for k, v in got["dependencies"].items()}
    print(f"sealed - plain: {(sealed['process'] - plain['process']) * 1e3:.0f} ms wall, "
          f"{(sealed['cpu'] - plain['cpu']) * 1e3:.0f} ms CPU; of which the dependencies' imports "
          f"{(deps['process'] - plain['process']) * 1e3:.0f} ms wall, {(deps['cpu'] - plain['cpu']) * 1e3:.0f} ms CPU; "
          f"onnx/ml_dtypes imported when opening: {imported or 'none'}")


if __name__ == "__main__":
    main()
