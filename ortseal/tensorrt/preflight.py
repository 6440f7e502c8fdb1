"""Can ONNX Runtime's TensorRT EP run here? Checked before a session exists, so that TensorRT is never
silently off (ORT's Python API would print "EP Error ... Falling back" and run on CUDA or CPU, with the
sealed engine cache never used)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import re
from pathlib import Path

from .._policy import TENSORRT
from .._runtime import ort_distributions
from ..errors import ProviderUnavailableError

PROVIDER = TENSORRT  # the name ORT gives the TensorRT EP
PROVIDER_LIBRARY = "libonnxruntime_providers_tensorrt.so"
SHARED_LIBRARY = "libonnxruntime_providers_shared.so"
TENSORRT_MAJOR = 10  # the libnvinfer.so.N that ONNX Runtime 1.20-1.32's TensorRT EP links
# the [gpu] extra's packages, named as such: the advice fits a wheel install and a source checkout alike
GPU_PACKAGES = '"onnxruntime-gpu>=1.31,<1.32" "tensorrt-cu13>=10.13,<11"'
TENSORRT_HINT = (f"install TensorRT {TENSORRT_MAJOR} for your CUDA: pip install {GPU_PACKAGES} (what ortseal's [gpu] "
                 f"extra installs), or put TensorRT {TENSORRT_MAJOR}'s lib folder on LD_LIBRARY_PATH")
_MISSING = re.compile(r"([\w.+-]+\.so[.\d]*): cannot open shared object file")


@functools.lru_cache(maxsize=1)
def tensorrt_preflight() -> str:
    """Check that this process can run ORT's TensorRT EP: the ORT build has it, its provider library is
    there, and that library loads with every library it needs (TensorRT, CUDA). Returns what was found;
    raises :class:`ProviderUnavailableError` naming what is missing and what to install."""
    from .._runtime import onnxruntime as ort

    found = ort_distributions()
    dists = ", ".join(f"{n} {v}" for n, v in found) or "onnxruntime"
    available = ort.get_available_providers()
    if PROVIDER not in available:
        names = " ".join(n for n, _ in found) or "onnxruntime"
        raise ProviderUnavailableError(f"{dists} has no TensorRT execution provider (it offers {', '.join(available)}): "
                                       f"TensorRT needs onnxruntime-gpu and an NVIDIA GPU: pip uninstall -y {names} "
                                       f"&& pip install {GPU_PACKAGES}")
    capi = Path(ort.__file__).resolve().parent / "capi"
    library = capi / PROVIDER_LIBRARY
    if not library.is_file():
        raise ProviderUnavailableError(f"{dists} lists {PROVIDER} but {library} is missing: reinstall onnxruntime-gpu")
    load_provider_library(library, capi / SHARED_LIBRARY)
    return f"{PROVIDER} can load: {library} ({dists})"


def load_provider_library(library: Path, shared: Path | None = None) -> None:
    """Load an EP library the way ORT will (after ORT's shared provider library, global); on failure try
    once more after loading the TensorRT and CUDA libraries that pip wheels keep in their own folders.
    Raises :class:`ProviderUnavailableError` naming the library that could not be found."""
    try:
        if shared is not None and shared.is_file():
            ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(library))
        return
    except OSError:
        _preload_pip_libraries()
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        missing = _MISSING.search(str(exc))
        what = missing.group(1) if missing else None
        if what and what.startswith(("libnvinfer", "libnvonnxparser")):
            hint = TENSORRT_HINT
        elif what and what.startswith(("libcud", "libcublas", "libcufft", "libcurand")):
            hint = "install the CUDA runtime libraries your onnxruntime-gpu build needs (see its release notes)"
        else:
            hint = "see docs/support-matrix.md"
        raise ProviderUnavailableError(f"ONNX Runtime's TensorRT EP ({library.name}) cannot load here: "
                                       f"{what or exc} {'is missing' if what else ''}; {hint}") from None


def _preload_pip_libraries() -> None:
    """TensorRT and CUDA wheels keep their libraries in site-packages folders the loader does not search;
    importing them (and ORT's own ``preload_dlls``) loads them into the process."""
    for module in ("tensorrt_libs", "tensorrt"):
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    with contextlib.suppress(Exception):
        from .._runtime import onnxruntime as ort

        ort.preload_dlls()
