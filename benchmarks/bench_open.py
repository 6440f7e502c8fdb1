"""Opening a ~1 GiB model with external data: plain ORT vs ortseal vs the naive decrypt-everything way.

    python benchmarks/bench_open.py [--mib 1024] [--rounds 3]

Every measurement runs in a fresh child process (so peak RSS is that open's alone), the three ways
alternating, in one run; the table gives medians and ratios to plain ORT:

- plain:   ``onnxruntime.InferenceSession`` on the unsealed model;
- floor:   no crypto: copy the plaintext weights into a fresh RAM file and open that; the least work any
           route that decrypts before ORT sees the graph must do (writing the weights into fresh memory);
- ortseal: ``ortseal.InferenceSession`` on the sealed copy (verify, decrypt, open);
- naive:   what a user does without ortseal: the weights file encrypted whole with AES-256-GCM, decrypted
           into memory, then ``add_external_initializers_from_files_in_memory``.

Also reports sealing throughput (``seal_model``, fsync included) next to a plain durable copy of the
same weights file. Results for this machine: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 4096


def build(folder: Path, mib: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    layers = max(1, (mib << 20) // (DIM * DIM * 4))
    data = folder / "model.onnx.data"
    nodes, inits = [], []
    rng = np.random.default_rng(0)
    with open(data, "wb") as fh:
        for i in range(layers):
            w = (rng.standard_normal((DIM, DIM), dtype=np.float32) / 64).astype(np.float32)
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[DIM, DIM])
            for key, value in (("location", data.name), ("offset", str(fh.tell())), ("length", str(w.nbytes))):
                t.external_data.add(key=key, value=value)
            t.data_location = TensorProto.EXTERNAL
            fh.write(w.tobytes())
            inits.append(t)
            nodes += [helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"m{i}"]),
                      helper.make_node("Tanh", [f"m{i}"], [f"x{i + 1}"])]
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, DIM])],
                              [helper.make_tensor_value_info(f"x{layers}", TensorProto.FLOAT, [1, DIM])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
              str(folder / "model.onnx"))


def child(way: str, folder: Path) -> None:
    """One open in this fresh process; prints JSON."""
    import onnxruntime as ort

    import ortseal

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if way == "plain":
        sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    elif way == "floor":
        # No crypto at all: only copy the plaintext weights into fresh RAM (a tmpfs file) and open from
        # there. Every route that decrypts before ORT sees the graph does at least this much work.
        ram = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            shutil.copyfile(folder / "model.onnx", ram / "model.onnx")
            shutil.copyfile(folder / "model.onnx.data", ram / "model.onnx.data")
            sess = ort.InferenceSession(str(ram / "model.onnx"), providers=["CPUExecutionProvider"])
        finally:
            shutil.rmtree(ram)
    elif way == "ortseal":
        keys = ortseal.KeySet.load(folder / "keys.json")
        sess = ortseal.InferenceSession(str(folder / "sealed" / "model.onnx"), providers=["CPUExecutionProvider"],
                                        keys=keys)
    else:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = (folder / "naive.key").read_bytes()
        blob = (folder / "naive" / "model.onnx.data.enc").read_bytes()
        weights = AESGCM(key).decrypt(blob[:12], memoryview(blob)[12:], None)
        del blob
        so = ort.SessionOptions()
        so.add_external_initializers_from_files_in_memory(["model.onnx.data"], [weights], [len(weights)])
        sess = ort.InferenceSession(str(folder / "naive" / "model.onnx"), so, providers=["CPUExecutionProvider"])
        del weights
    open_s = time.perf_counter() - t
    x = np.random.default_rng(1).standard_normal((1, DIM)).astype(np.float32)
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    runs = []
    for _ in range(20):
        t = time.perf_counter()
        sess.run(None, {name: x})
        runs.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"open_s": open_s, "run_ms": 1000 * statistics.median(runs), "peak_mib": peak / 1024,
                      "base_mib": base_rss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", choices=["plain", "floor", "ortseal", "naive"])
    ap.add_argument("--dir")
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.dir))
        return
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    import ortseal

    with tempfile.TemporaryDirectory(prefix="ortseal-bench-") as tmp:
        folder = Path(tmp)
        build(folder, args.mib)
        size = (folder / "model.onnx.data").stat().st_size
        keys = ortseal.KeySet.generate()
        keys.save(folder / "keys.json")
        (folder / "sealed").mkdir()
        os.sync()  # do not charge the model just written back to disk to the sealing time
        t = time.perf_counter()
        shutil.copyfile(folder / "model.onnx.data", folder / "copy.data")  # the floor: a plain durable copy
        fd = os.open(folder / "copy.data", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        copy_s = time.perf_counter() - t
        os.unlink(folder / "copy.data")
        os.sync()
        t = time.perf_counter()
        ortseal.seal_model(folder / "model.onnx", folder / "sealed" / "model.onnx", keys, progress=False)
        seal_s = time.perf_counter() - t
        (folder / "naive").mkdir()
        key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
        (folder / "naive.key").write_bytes(key)
        (folder / "naive" / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
        (folder / "naive" / "model.onnx.data.enc").write_bytes(
            nonce + AESGCM(key).encrypt(nonce, (folder / "model.onnx.data").read_bytes(), None))
        results: dict[str, list[dict]] = {"plain": [], "floor": [], "ortseal": [], "naive": []}
        for _ in range(args.rounds):
            for way in results:
                out = subprocess.run([sys.executable, __file__, "--child", way, "--dir", tmp], capture_output=True,
                                     text=True, check=True)
                results[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in results.items()}
    p = med["plain"]
    print(f"model: {size / 2**30:.2f} GiB of float32 weights in external data; {args.rounds} rounds, medians; "
          f"{os.cpu_count()} cores")
    print(f"sealing: {size / 1e9 / seal_s:.2f} GB/s ({seal_s:.2f} s); a plain copy of the weights file with fsync: "
          f"{size / 1e9 / copy_s:.2f} GB/s; sealing takes {seal_s / copy_s:.2f}x the copy's time")
    print(f"{'way':<9}{'open s':>9}{'x plain':>9}{'peak RSS MiB':>14}{'x plain':>9}{'run ms':>9}{'x plain':>9}")
    for way, m in med.items():
        print(f"{way:<9}{m['open_s']:9.3f}{m['open_s'] / p['open_s']:9.2f}{m['peak_mib']:14.0f}"
              f"{m['peak_mib'] / p['peak_mib']:9.2f}{m['run_ms']:9.2f}{m['run_ms'] / p['run_ms']:9.2f}")


if __name__ == "__main__":
    main()
