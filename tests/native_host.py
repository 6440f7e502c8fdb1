"""Builds libortseal (native/) with CMake once per test session and runs its command-line host
(native/tests/host.c), for tests/test_native*.py. Skips when cmake, a compiler or OpenSSL 3 are missing."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


ORT_HEADERS_NPM = "com.github.asus4.onnxruntime@0.4.9"  # ORT 1.29's C API headers (API version 29)


def ort_headers() -> Path | None:
    """ORT's C API headers, fetched the way a user would (native/tools/fetch-ort-headers.sh: npm pack), or
    $ORTSEAL_ORT_INCLUDE_DIR; None when neither is available."""
    given = os.environ.get("ORTSEAL_ORT_INCLUDE_DIR")
    if given:
        return Path(given)
    folder = BUILD.parent / "ort-headers"
    if not (folder / "onnxruntime_c_api.h").is_file() and shutil.which("npm"):
        subprocess.run(["sh", str(NATIVE / "tools" / "fetch-ort-headers.sh"), str(folder)], capture_output=True)
    return folder if (folder / "onnxruntime_c_api.h").is_file() else None


def ort_library() -> Path:
    """The libonnxruntime the onnxruntime wheel ships (onnxruntime/capi/libonnxruntime.so.1.NN.0)."""
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    found = sorted(capi.glob("libonnxruntime.so.1*")) or sorted(capi.glob("onnxruntime.dll"))
    if not found:
        pytest.skip("this onnxruntime wheel ships no libonnxruntime shared library")
    return found[0]


def shim_dir_arg() -> str:
    """The CMake argument naming the shim source of the ortseal these tests import (the sources, or the
    installed wheel's package data, which the packaging test runs the suite against)."""
    import ortseal.tensorrt

    return f"-DORTSEAL_SHIM_DIR={Path(ortseal.tensorrt.__file__).parent}"


def build(extra: tuple[str, ...] = (), *, ort: bool = False) -> Path:
    """Configure and build native/ into BUILD; return the folder holding ortseal_host (and, with ``ort``,
    ortseal_ort_host, linked with the wheel's libonnxruntime)."""
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed (apt-get install cmake libssl-dev)")
    if ort:
        headers = ort_headers()
        if headers is None:
            pytest.skip("ONNX Runtime's C headers are not available (npm pack failed; set ORTSEAL_ORT_INCLUDE_DIR)")
        extra = (*extra, f"-DORTSEAL_ORT_INCLUDE_DIR={headers}", f"-DORTSEAL_ORT_LIBRARY={ort_library()}")
    sanitize = tuple(os.environ.get("ORTSEAL_NATIVE_CMAKE_ARGS", "").split())  # .ci/run: -DORTSEAL_SANITIZE=ON
    extra = (*extra, shim_dir_arg())
    configure = ["cmake", "-S", str(NATIVE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=RelWithDebInfo", *sanitize, *extra]
    for cmd in (configure, ["cmake", "--build", str(BUILD), "-j2"]):
        done = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True)
        if done.returncode:
            if "OpenSSL" in done.stdout + done.stderr and cmd is configure:
                pytest.skip("OpenSSL 3 development files are not installed (apt-get install libssl-dev)")
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return BUILD


class Host:
    def __init__(self, folder: Path, exe: str = "ortseal_host") -> None:
        self.exe = folder / exe

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


def write_tensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The test hosts' tensor file: u32 count; per tensor u32 name length, name, i32 ONNX type, u32 rank,
    i64 dims, u64 byte count, bytes."""
    from onnx import helper

    out = bytearray(struct.pack("<I", len(tensors)))
    for name, value in tensors.items():
        a = np.ascontiguousarray(value)
        raw = name.encode()
        out += struct.pack("<I", len(raw)) + raw + struct.pack("<iI", helper.np_dtype_to_tensor_dtype(a.dtype), a.ndim)
        out += struct.pack(f"<{a.ndim}q", *a.shape) + struct.pack("<Q", a.nbytes) + a.tobytes()
    path.write_bytes(bytes(out))


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    from onnx import helper

    data, at, out = path.read_bytes(), 4, {}
    for _ in range(struct.unpack_from("<I", data)[0]):
        (n,) = struct.unpack_from("<I", data, at)
        name = data[at + 4:at + 4 + n].decode()
        at += 4 + n
        dtype, rank = struct.unpack_from("<iI", data, at)
        at += 8
        dims = struct.unpack_from(f"<{rank}q", data, at)
        at += 8 * rank
        (size,) = struct.unpack_from("<Q", data, at)
        at += 8
        out[name] = np.frombuffer(data[at:at + size], helper.tensor_dtype_to_np_dtype(dtype)).reshape(dims)
        at += size
    return out
