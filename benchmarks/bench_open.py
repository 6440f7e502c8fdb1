"""Opening a model with external data: plain ORT vs ortseal vs the no-crypto floors vs the naive way.

    python benchmarks/bench_open.py [--mib 1024] [--rounds 3] [--shape tanh|chain|both] [--ways ortseal,floor-parallel]
        [--providers CUDAExecutionProvider,CPUExecutionProvider]

Every measurement runs in a fresh child process (so peak RSS is that open's alone), the ways alternating,
in one run; the table gives medians and ratios to plain ORT. Two model shapes of 4096x4096 float32
weights: ``tanh`` (MatMul + Tanh per layer) and ``chain`` (a pure chain of MatMuls), saved as one external
data file like ``onnx.save(..., save_as_external_data=True)`` does.

- plain:          ``onnxruntime.InferenceSession`` on the unsealed model;
- floor:          no crypto: the plaintext weights copied into ONE fresh RAM (tmpfs) file, then opened.
                  Writes into one tmpfs file are serialized by its inode lock: page allocation on one core;
- floor-parallel: no crypto: each tensor copied into its own RAM file by a thread pool, then opened: the
                  least work any route that decrypts before ORT sees the graph must do (fill fresh memory
                  with the weights) done on every core. The row ortseal is measured against;
- ortseal:        ``ortseal.InferenceSession`` on the sealed copy: the file read once, its signature checked,
                  every blob decrypted while its signed digest is recomputed in the same pass, all before
                  ORT is created (verify first, the only order);
- naive:          what a user does without ortseal: the weights file encrypted with AES-256-GCM (in 1 GiB
                  chunks: ``AESGCM`` takes at most 2**31-1 bytes), decrypted into memory, then
                  ``add_external_initializers_from_files_in_memory``.

Run latency: the first ``run()`` and the 20 after it, per fresh process: their mean, worst and median.

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


def build(folder: Path, mib: int, shape: str = "tanh") -> None:
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
            if shape == "tanh":
                nodes += [helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"m{i}"]),
                          helper.make_node("Tanh", [f"m{i}"], [f"x{i + 1}"])]
            else:
                nodes.append(helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"x{i + 1}"]))
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, DIM])],
                              [helper.make_tensor_value_info(f"x{layers}", TensorProto.FLOAT, [1, DIM])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
              str(folder / "model.onnx"))


def _copy_per_tensor(folder: Path, ram: Path) -> None:
    """The floor-parallel route without crypto: each external tensor into its own RAM file, by a pool."""
    from concurrent.futures import ThreadPoolExecutor

    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    src = os.open(folder / "model.onnx.data", os.O_RDONLY)

    def copy(item: tuple[int, onnx.TensorProto]) -> None:
        i, t = item
        info = {e.key: int(e.value) for e in t.external_data if e.key in ("offset", "length")}
        fd = os.open(ram / f"t{i}.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        buf = bytearray(1 << 20)  # one reused buffer, as ortseal decrypts through one per thread
        try:
            done = 0
            while done < info["length"]:
                view = memoryview(buf)[:min(len(buf), info["length"] - done)]
                os.preadv(src, [view], info["offset"] + done)
                done += os.pwrite(fd, view, done)
        finally:
            os.close(fd)
        del t.external_data[:]
        for key, value in (("location", f"t{i}.bin"), ("offset", "0"), ("length", str(info["length"]))):
            t.external_data.add(key=key, value=value)

    try:
        with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
            list(pool.map(copy, enumerate(model.graph.initializer)))
    finally:
        os.close(src)
    onnx.save(model, str(ram / "model.onnx"))


def child(way: str, folder: Path, providers: list[str]) -> None:
    """One open in this fresh process; prints JSON."""
    import onnxruntime as ort

    import ortseal

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if way == "plain":
        sess = ort.InferenceSession(str(folder / "model.onnx"), providers=providers)
    elif way in ("floor", "floor-parallel"):
        ram = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            if way == "floor":
                shutil.copyfile(folder / "model.onnx", ram / "model.onnx")
                shutil.copyfile(folder / "model.onnx.data", ram / "model.onnx.data")
            else:
                _copy_per_tensor(folder, ram)
            sess = ort.InferenceSession(str(ram / "model.onnx"), providers=providers)
        finally:
            shutil.rmtree(ram)
    elif way == "ortseal":
        keys = ortseal.KeySet.load(folder / "keys.json")
        sess = ortseal.InferenceSession(str(folder / "sealed" / "model.onnx"), providers=providers, keys=keys)
    else:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = (folder / "naive.key").read_bytes()
        aead = AESGCM(key)
        weights = bytearray((folder / "model.onnx.data").stat().st_size)
        done = 0
        with open(folder / "naive" / "model.onnx.data.enc", "rb") as fh:
            while header := fh.read(16):
                nonce, length = header[:12], int.from_bytes(header[12:], "little")
                plain = aead.decrypt(nonce, fh.read(length), None)
                weights[done:done + len(plain)] = plain
                done += len(plain)
                del plain
        so = ort.SessionOptions()
        so.add_external_initializers_from_files_in_memory(["model.onnx.data"], [weights], [len(weights)])
        sess = ort.InferenceSession(str(folder / "naive" / "model.onnx"), so, providers=providers)
        del weights
    open_s = time.perf_counter() - t
    x = np.random.default_rng(1).standard_normal((1, DIM)).astype(np.float32)
    name = sess.get_inputs()[0].name
    runs = []
    for _ in range(21):  # the first run and the 20 after it: slow early runs show in the mean and the worst
        t = time.perf_counter()
        sess.run(None, {name: x})
        runs.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"open_s": open_s, "run_mean_ms": 1000 * statistics.mean(runs), "run_max_ms": 1000 * max(runs),
                      "run_ms": 1000 * statistics.median(runs), "peak_mib": peak / 1024, "base_mib": base_rss / 1024}))


WAYS = ["plain", "floor", "floor-parallel", "ortseal", "naive"]


def encrypt_naive(folder: Path) -> None:
    """The naive way's file: the weights encrypted with AES-256-GCM in 1 GiB chunks (nonce, length, ct)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = AESGCM.generate_key(bit_length=256)
    (folder / "naive.key").write_bytes(key)
    (folder / "naive").mkdir()
    (folder / "naive" / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
    with open(folder / "model.onnx.data", "rb") as src, open(folder / "naive" / "model.onnx.data.enc", "wb") as out:
        while chunk := src.read(1 << 30):
            nonce = os.urandom(12)
            ct = AESGCM(key).encrypt(nonce, chunk, None)
            out.write(nonce + len(ct).to_bytes(4, "little") + ct)


def bench_shape(shape: str, args: argparse.Namespace) -> None:
    import ortseal

    with tempfile.TemporaryDirectory(prefix="ortseal-bench-") as tmp:
        folder = Path(tmp)
        build(folder, args.mib, shape)
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
        encrypt_naive(folder)
        results: dict[str, list[dict]] = {way: [] for way in WAYS if way in args.ways.split(",") or way == "plain"}
        for _ in range(args.rounds):
            for way in results:
                out = subprocess.run([sys.executable, __file__, "--child", way, "--dir", tmp,
                                      "--providers", args.providers], capture_output=True, text=True, check=True)
                results[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in results.items()}
    p = med["plain"]
    print(f"\nshape {shape!r}: {size / 2**30:.2f} GiB of float32 weights in external data; sealing "
          f"{size / 1e9 / seal_s:.2f} GB/s ({seal_s:.2f} s), {seal_s / copy_s:.2f}x a plain copy with fsync")
    print(f"{'way':<15}{'open s':>8}{'x plain':>8}{'x fl-par':>9}{'peak MiB':>10}{'x plain':>8}"
          f"{'run mean':>9}{'x plain':>8}{'run max':>9}{'run med':>9}{'x plain':>8}")
    fp = med.get("floor-parallel", p)
    for way, m in med.items():
        print(f"{way:<15}{m['open_s']:8.3f}{m['open_s'] / p['open_s']:8.2f}{m['open_s'] / fp['open_s']:9.2f}"
              f"{m['peak_mib']:10.0f}{m['peak_mib'] / p['peak_mib']:8.2f}{m['run_mean_ms']:9.2f}"
              f"{m['run_mean_ms'] / p['run_mean_ms']:8.2f}{m['run_max_ms']:9.2f}{m['run_ms']:9.2f}"
              f"{m['run_ms'] / p['run_ms']:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="model size, up to 4096 and beyond")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shape", choices=["tanh", "chain", "both"], default="both")
    ap.add_argument("--providers", default="CPUExecutionProvider", help="comma-separated ORT providers")
    ap.add_argument("--ways", default=",".join(WAYS), help="comma-separated rows to run (plain always runs)")
    ap.add_argument("--child", choices=WAYS)
    ap.add_argument("--dir")
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.dir), args.providers.split(","))
        return
    import onnxruntime as ort

    print(f"{len(os.sched_getaffinity(0))} cores, onnxruntime {ort.__version__} ({args.providers}), "
          f"{args.rounds} rounds, medians")
    for shape in (["tanh", "chain"] if args.shape == "both" else [args.shape]):
        bench_shape(shape, args)


if __name__ == "__main__":
    main()
