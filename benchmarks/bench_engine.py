"""Opening a sealed 1 GiB TensorRT engine through the shim, against reading the same plaintext file.

    python benchmarks/bench_engine.py [--mib 1024]

Both sides go through the exact call sequence the TensorRT EP uses: a size query, then one
caller-owned buffer that is filled (ctypes, as ORT's ``new char[size]``). The plain side reads an
unencrypted engine file with readinto. Target: >= 3 GB/s for the sealed side on two cores.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import tempfile
from pathlib import Path

from bench_blob import best_of

import ortseal
from ortseal.tensorrt.harness import TensorrtEpHarness, harness_provider


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size = args.mib << 20
    with tempfile.TemporaryDirectory() as tmp:
        keys = ortseal.KeySet.generate()
        trt = TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": tmp}))
        engine = os.urandom(size)
        sealed = trt.engine_path()
        trt.save_engine(sealed, engine)
        plain = Path(tmp) / "plain.engine"
        plain.write_bytes(engine)
        del engine
        buf = ctypes.create_string_buffer(size)
        lib = ctypes.CDLL(ortseal.tensorrt.shim_path())

        def read_plain() -> None:
            with open(plain, "rb", buffering=0) as fh:
                fh.readinto(memoryview(buf).cast("B"))

        def open_sealed() -> None:
            n = ctypes.c_size_t(0)
            assert lib.decrypt(sealed.encode(), None, ctypes.byref(n))
            assert lib.decrypt(sealed.encode(), buf, ctypes.byref(n))

        results = {}
        for name, fn in [("read plaintext file", read_plain), ("decrypt sealed via shim", open_sealed)]:
            fn()  # warm the page cache and the buffer
            results[name] = best_of(args.repeat, fn)
        base = results["read plaintext file"]
        print(f"engine {args.mib} MiB, best of {args.repeat}, page cache warm")
        print(f"{'path':<26}{'GB/s':>8}{'time vs plain':>15}")
        for name, t in results.items():
            print(f"{name:<26}{size / 1e9 / t:8.2f}{t / base:14.2f}x")


if __name__ == "__main__":
    main()
