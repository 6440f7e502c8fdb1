"""Cold start of the ``ortseal`` command: fresh-process wall time of commands that need no model, side by side
with the floors they cannot beat, alternating in one run.

    python benchmarks/bench_cli.py [--rounds 15] [--against DIR]

- python:        ``python -c pass``: the interpreter's own start;
- click:         ``python -c "import click"``: the interpreter plus the CLI toolkit;
- --help:        ``python -m ortseal --help``;
- keygen:        ``python -m ortseal keygen -o ...`` (needs cryptography, never onnx);
- import onnx:   ``python -c "import onnx"``: what every command paid before the commands imported their
                 modules when they run (issue 20), for scale;
- --help DIR:    with ``--against DIR`` (a source tree of another ortseal, e.g. ``git archive`` of an older
                 commit with its built shim): ``--help`` of that tree, in the same run.

The table gives medians (ms) and ratios to ``python``. Results for this machine: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAYS = {
    "python": ["-c", "pass"],
    "click": ["-c", "import click"],
    "--help": ["-m", "ortseal", "--help"],
    "keygen": ["-m", "ortseal", "keygen", "--overwrite", "-o", "{tmp}/keys.json"],
    "import onnx": ["-c", "import onnx"],
}


def timed(args: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of ``python ARGS`` in a fresh process; ``env["PYTHONPATH"]``, when given, is also its working
    directory (``python -m`` looks there first)."""
    cwd = env["PYTHONPATH"] if env else None
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   cwd=cwd)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--against", metavar="DIR", help="also time --help of the ortseal source tree in DIR")
    opts = parser.parse_args()
    rounds = opts.rounds
    ways: dict[str, tuple[list[str], dict[str, str] | None]] = {way: (args, None) for way, args in WAYS.items()}
    if opts.against:
        env = {**os.environ, "PYTHONPATH": os.path.abspath(opts.against)}
        ways[f"--help {os.path.basename(os.path.abspath(opts.against))}"] = (WAYS["--help"], env)
    times: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for way, (args, env) in ways.items():  # one warm-up each: the page cache, .pyc files
            timed([a.replace("{tmp}", tmp) for a in args], env)
        for _ in range(rounds):
            for way, (args, env) in ways.items():
                times[way].append(timed([a.replace("{tmp}", tmp) for a in args], env))
        assert Path(tmp, "keys.json").exists()
    floor = statistics.median(times["python"])
    print(f"{'way':<12} {'median ms':>10} {'x python':>9}   ({rounds} rounds, fresh process each)")
    for way, values in times.items():
        median = statistics.median(values)
        print(f"{way:<12} {median * 1e3:>10.1f} {median / floor:>9.2f}")


if __name__ == "__main__":
    main()
