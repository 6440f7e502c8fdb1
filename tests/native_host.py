"""Builds libortseal (native/) with CMake once per test session and runs its command-line host
(native/tests/host.c), for tests/test_native*.py. Skips when cmake, a compiler or OpenSSL 3 are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
BUILD = Path(os.environ.get("ORTSEAL_NATIVE_BUILD", ROOT / "build" / "native-tests"))


@dataclass
class Result:
    code: int  # the ortseal_code the host returned
    name: str  # its name ("ok", "format", "tampered", ...)
    message: str


CODES = {"ok": 0, "format": 1, "tampered": 2, "rollback": 3, "key_not_found": 4, "unsafe_option": 5, "io": 6,
         "misuse": 7, "nomem": 8, "runtime": 9}
# The Python exception each code stands for.
PYTHON_ERRORS = {"FormatError": "format", "TamperedError": "tampered", "RollbackError": "rollback",
                 "KeyNotFoundError": "key_not_found", "UnsafeOptionError": "unsafe_option"}


def build(extra: tuple[str, ...] = ()) -> Path:
    """Configure and build native/ into BUILD; return the folder holding ortseal_host."""
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed (apt-get install cmake libssl-dev)")
    configure = ["cmake", "-S", str(NATIVE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=RelWithDebInfo", *extra]
    for cmd in (configure, ["cmake", "--build", str(BUILD), "-j2"]):
        done = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True)
        if done.returncode:
            if "OpenSSL" in done.stdout + done.stderr and cmd is configure:
                pytest.skip("OpenSSL 3 development files are not installed (apt-get install libssl-dev)")
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return BUILD


class Host:
    def __init__(self, folder: Path) -> None:
        self.exe = folder / "ortseal_host"

    def __call__(self, *args: str | os.PathLike[str], timeout: float = 600) -> Result:
        done = subprocess.run([str(self.exe), *map(str, args)], capture_output=True, text=True, timeout=timeout)
        assert done.returncode >= 0, f"host crashed with signal {-done.returncode}: {done.stderr}"
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        assert done.returncode in CODES.values(), f"host exited {done.returncode}: {done.stdout} {done.stderr}"
        if last == "ok":
            return Result(0, "ok", "")
        assert last.startswith("error "), done.stdout
        name, _, message = last[len("error "):].partition(": ")
        assert CODES[name] == done.returncode
        return Result(done.returncode, name, message)

    def lines(self, *args: str | os.PathLike[str]) -> list[str]:
        done = subprocess.run([str(self.exe), *map(str, args)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.splitlines()
