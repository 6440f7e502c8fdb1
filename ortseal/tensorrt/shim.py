"""Finding and loading the compiled shim library (``libortseal_shim.so``) with ctypes."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from ..errors import SetupError

DECRYPT_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_size_t))
ENCRYPT_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t)
ABI_VERSION = 1


SHIM_FILE = "libortseal_shim.so"


def shim_path() -> str:
    """Absolute path of the shim library, as ``trt_engine_decryption_lib_path`` wants it."""
    candidate = Path(__file__).resolve().parent / SHIM_FILE
    if candidate.is_file():
        return str(candidate)
    raise SetupError(f"the ortseal shim library {candidate} is missing; install ortseal from its wheel, or "
                       "build it with pip install . (needs a C compiler)")


@functools.lru_cache(maxsize=1)
def load_shim() -> ctypes.CDLL:
    """The shim loaded in this process (the same handle ORT's dlopen gets)."""
    lib = ctypes.CDLL(shim_path())
    lib.ortseal_shim_register.argtypes = [DECRYPT_CALLBACK, ENCRYPT_CALLBACK, ctypes.c_void_p]
    lib.ortseal_shim_register.restype = ctypes.c_int
    lib.ortseal_shim_unregister.argtypes = []
    lib.ortseal_shim_unregister.restype = None
    if lib.ortseal_shim_abi_version() != ABI_VERSION:
        raise SetupError(f"shim library {shim_path()} has ABI {lib.ortseal_shim_abi_version()}, expected "
                           f"{ABI_VERSION}; rebuild it with pip install -e .")
    return lib
