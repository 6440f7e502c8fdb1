"""The ``ai.ortseal::Unseal`` kernel for a plain ``onnxruntime.InferenceSession`` (slow fallback).

ORT never constant-folds a custom-domain node, and an onnxruntime-extensions Python kernel copies its
output element by element on every ``run()``: each run pays for the size of every sealed weight. Use
``ortseal.InferenceSession`` wherever you can; this path exists for code that must keep a plain session.

The kernel decrypts nothing. :func:`fallback_session_options` verifies the whole model (manifest
signature, release, graph binding, every blob) and opens its tensors when it is called; the kernel only
hands out tensors of models verified that way, looked up by their blob's random salt. onnxruntime-extensions
turns any exception raised by a Python kernel into ``std::terminate``, so the kernel never raises: a blob
nobody verified gets zeros of its declared shape and an error on the ``ortseal`` logger, never plaintext.
"""

from __future__ import annotations

import json
import logging
import os
import threading

import numpy as np
from .._runtime import onnxruntime as ort
from onnx import helper

from ..blob import parse_header
from ..errors import FormatError
from ..keys import KeySet, as_keyset
from .binding import check_model, open_tensor
from .model import load_model
from .schema import DOMAIN, FALLBACK_TYPES, OP_TYPE

log = logging.getLogger("ortseal")
_lock = threading.Lock()
_opened: dict[tuple[bytes, str], np.ndarray] = {}  # (blob salt, tensor identity) -> verified plaintext
_state = {"registered": False, "warned": False}


def _zeros(identity: str) -> np.ndarray:
    try:
        spec = json.loads(identity)
        return np.zeros(spec["shape"], helper.tensor_dtype_to_np_dtype(spec["dtype"]))
    except Exception:  # noqa: BLE001 - never raise into onnxruntime-extensions
        return np.zeros(0, np.float32)


def _unseal(sealed: np.ndarray, like: np.ndarray, dtype: int = 0, tensor: str = "", fallback_supported: int = 0
            ) -> np.ndarray:
    try:
        salt = parse_header(np.ascontiguousarray(sealed).reshape(-1)[:256].tobytes(), kind="model").salt
    except Exception:  # noqa: BLE001
        salt = b""
    with _lock:
        opened = _opened.get((salt, tensor))
        if opened is not None and not _state["warned"]:
            _state["warned"] = True
            log.warning("ortseal: running sealed weights through the Unseal fallback kernel; every run() copies "
                        "every sealed weight, so per-run cost grows with weight size. Open the model with "
                        "ortseal.InferenceSession instead: it decrypts once and runs at plain-model speed.")
    if opened is None:
        log.error("ortseal: the Unseal fallback kernel refused a sealed tensor %s of a model nobody verified with "
                  "ortseal.fallback_session_options(keys, model=...); it returned zeros, so this run's outputs are "
                  "meaningless", tensor[:200])
        return _zeros(tensor)
    return opened


def _register_kernel() -> str:
    """Register the Python kernel once per process; returns the extensions library to load."""
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op  # only the fallback needs it

    with _lock:
        if _state["registered"]:
            return get_library_path()
        _state["registered"] = True
    onnx_op(op_type=f"{DOMAIN}::{OP_TYPE}", inputs=[PyCustomOpDef.dt_uint8, PyCustomOpDef.undefined],
            outputs=[PyCustomOpDef.undefined],
            attrs={"dtype": PyCustomOpDef.dt_int64, "tensor": PyCustomOpDef.dt_string,
                   # absent on float16/bfloat16 nodes: ORT then refuses the session cleanly
                   "fallback_supported": PyCustomOpDef.dt_int64})(_unseal)
    return get_library_path()


def fallback_session_options(keys: KeySet | str | os.PathLike[str], sess_options: ort.SessionOptions | None = None, *,
                             model: str | os.PathLike[str] | bytes, min_release: int = 0) -> ort.SessionOptions:
    """SessionOptions with the Unseal Python kernel registered, so a plain ``onnxruntime.InferenceSession``
    can run the sealed ``model``.

    ``model`` is verified in full now (manifest signature and release, graph binding, every blob) and its
    tensors are opened into this process's memory for the life of the process. The kernel serves only
    tensors opened this way. Limits, by the nature of a kernel that sees only its own node: a session that
    loads an *edited copy* of a verified model in this same process (for example one that adds a sealed
    weight as a graph output) obtains that weight. ``ortseal.InferenceSession`` has no such limit.
    """
    keys = as_keyset(keys)  # a KeySet, or a keyset file's path
    loaded, base_dir = load_model(model)
    checked = check_model(loaded, base_dir, keys, min_release=min_release)
    for st in checked.sealed:
        if st.dtype not in FALLBACK_TYPES:
            raise FormatError(f"sealed tensor {st.name!r} is {helper.tensor_dtype_to_string(st.dtype)}, which the "
                              "fallback kernel cannot return; use ortseal.InferenceSession")
    opened = {}
    for st in checked.sealed:
        with open_tensor(checked, st, keys) as opener:
            out = np.empty(st.shape, helper.tensor_dtype_to_np_dtype(st.dtype))
            opener.decrypt_into(memoryview(out.reshape(-1).view(np.uint8)))
            out.setflags(write=False)
            opened[(opener.header.salt, st.identity)] = out
    library = _register_kernel()
    with _lock:
        _opened.update(opened)
    so = sess_options if sess_options is not None else ort.SessionOptions()
    so.register_custom_ops_library(library)
    return so
