"""Finding and loading the compiled shim library (``_ortseal_shim*.so``) with ctypes."""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
from pathlib import Path

from ..errors import OrtsealError

DECRYPT_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_size_t))
ENCRYPT_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t)
ABI_VERSION = 1


def shim_path() -> str:
    """Absolute path of the shim library, as ``trt_engine_decryption_lib_path`` wants it."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"_ortseal_shim{suffix}"
        if candidate.is_file():
            return str(candidate)
    raise OrtsealError(f"the ortseal shim library is not built in {here}; reinstall with pip install -e . "
                       "(a C compiler is needed)")


@functools.lru_cache(maxsize=1)
def load_shim() -> ctypes.CDLL:
    """The shim loaded in this process (the same handle ORT's dlopen gets)."""
    lib = ctypes.CDLL(shim_path())
    lib.ortseal_shim_register.argtypes = [DECRYPT_CALLBACK, ENCRYPT_CALLBACK, ctypes.c_void_p]
    lib.ortseal_shim_register.restype = ctypes.c_int
    lib.ortseal_shim_unregister.argtypes = []
    lib.ortseal_shim_unregister.restype = None
    if lib.ortseal_shim_abi_version() != ABI_VERSION:
        raise OrtsealError(f"shim library {shim_path()} has ABI {lib.ortseal_shim_abi_version()}, expected "
                           f"{ABI_VERSION}; rebuild it with pip install -e .")
    return lib
