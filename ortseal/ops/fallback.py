"""The ``ai.ortseal::Unseal`` kernel for a plain ``onnxruntime.InferenceSession`` (slow fallback).

ORT never constant-folds a custom-domain node, and an onnxruntime-extensions Python kernel copies its
output element by element on every ``run()``: each run pays for the size of every sealed weight. Use
``ortseal.InferenceSession`` wherever you can; this path exists for code that must keep a plain session.
"""

from __future__ import annotations

import json
import logging
import os
import threading

import numpy as np
import onnxruntime as ort
from onnx import helper

from ..blob import BlobSource, Opener
from ..errors import FormatError, KeyNotFoundError
from ..keys import KeySet
from .inspect import verify_model
from .model import find_sealed, load_model, tensor_context
from .schema import DOMAIN, FALLBACK_TYPES, OP_TYPE

log = logging.getLogger("ortseal")
_lock = threading.Lock()
_keysets: list[KeySet] = []
_cache: dict[tuple[str, str, bytes], np.ndarray] = {}
_state = {"registered": False, "warned": False}


def _open(sealed: np.ndarray, identity: str, digest: str) -> np.ndarray:
    source = BlobSource(np.ascontiguousarray(sealed).view(np.uint8).reshape(-1))
    last_missing: Exception | None = None
    for keys in list(_keysets):
        try:
            opener = Opener(source, keys, context=tensor_context(digest, identity))
        except KeyNotFoundError as exc:
            last_missing = exc
            continue
        spec = json.loads(identity)
        out = np.empty(spec["shape"], helper.tensor_dtype_to_np_dtype(spec["dtype"]))
        opener.decrypt_into(memoryview(out.reshape(-1).view(np.uint8)))
        return out
    raise last_missing or KeyNotFoundError("no keyset registered for the Unseal fallback kernel")


def _unseal(sealed: np.ndarray, like: np.ndarray, dtype: int = 0, tensor: str = "", graph_digest: str = "",
            fallback_supported: int = 0) -> np.ndarray:
    head = bytes(np.ascontiguousarray(sealed).reshape(-1)[:224].tobytes())
    key = (graph_digest, tensor, head)
    with _lock:
        cached = _cache.get(key)
        if not _state["warned"]:
            _state["warned"] = True
            log.warning("ortseal: running sealed weights through the Unseal fallback kernel; every run() copies "
                        "every sealed weight, so per-run cost grows with weight size. Open the model with "
                        "ortseal.InferenceSession instead: it decrypts once and runs at plain-model speed.")
    if cached is None:
        cached = _open(sealed, tensor, graph_digest)
        with _lock:
            _cache[key] = cached
    return cached


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
                   "graph_digest": PyCustomOpDef.dt_string,
                   # absent on float16/bfloat16 nodes: ORT then refuses the session cleanly
                   "fallback_supported": PyCustomOpDef.dt_int64})(_unseal)
    return get_library_path()


def fallback_session_options(keys: KeySet, sess_options: ort.SessionOptions | None = None, *,
                             model: str | os.PathLike[str] | bytes | None = None) -> ort.SessionOptions:
    """SessionOptions with the Unseal Python kernel registered, so a plain ``onnxruntime.InferenceSession``
    can run a sealed model. Each tensor is decrypted once and cached for the life of the process.

    Pass ``model=`` (the sealed model's path) to check its graph binding, signatures and every blob now:
    the kernel itself sees only its node, so without ``model=`` an edit elsewhere in the graph is not
    detected on this path.
    """
    if not isinstance(keys, KeySet):
        raise TypeError(f"keys must be an ortseal.KeySet, got {type(keys).__name__}")
    if model is not None:
        verify_model(model, keys)
        loaded, _ = load_model(model)
        for st in find_sealed(loaded):
            if st.dtype not in FALLBACK_TYPES:
                raise FormatError(f"sealed tensor {st.name!r} is {helper.tensor_dtype_to_string(st.dtype)}, which the "
                                  "fallback kernel cannot return; use ortseal.InferenceSession")
    library = _register_kernel()
    with _lock:
        if not any(k is keys for k in _keysets):
            _keysets.append(keys)
    so = sess_options if sess_options is not None else ort.SessionOptions()
    so.register_custom_ops_library(library)
    return so
