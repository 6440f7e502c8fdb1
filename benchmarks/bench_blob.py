"""Seal and unseal throughput of a 512 MiB buffer, side by side with a plain copy of it.

    python benchmarks/bench_blob.py [--mib 512]

Prints GB/s and the ratio to the copy measured in the same run (the copy is what any
in-memory handover of the plaintext costs at least). Target: unseal_into >= 3 GB/s on two cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import ortseal


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size = args.mib << 20
    keys = ortseal.KeySet.generate()
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    blob = ortseal.seal_bytes(data, keys, context="bench")
    out = np.empty(size, np.uint8)
    copy_dst = np.empty(size, np.uint8)
    copy_dst[:] = 1
    out[:] = 1  # fault the pages in so both sides write to resident memory

    t_copy = best_of(args.repeat, lambda: np.copyto(copy_dst, data))
    t_unseal = best_of(args.repeat, lambda: ortseal.unseal_into(blob, keys, out, context="bench"))
    t_seal = best_of(args.repeat, lambda: ortseal.seal_bytes(data, keys, context="bench"))
    assert np.array_equal(out, data)
    gb = size / 1e9
    print(f"buffer {args.mib} MiB, best of {args.repeat}")
    print(f"{'operation':<28}{'GB/s':>8}{'time vs copy':>14}")
    for name, t in [("plain copy (np.copyto)", t_copy), ("unseal_into (verify+decrypt)", t_unseal),
                    ("seal_bytes (new bytes)", t_seal)]:
        print(f"{name:<28}{gb / t:8.2f}{t / t_copy:13.2f}x")


if __name__ == "__main__":
    main()
