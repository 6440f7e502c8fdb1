"""The ``ai.ortseal::Unseal`` kernel for a plain ``onnxruntime.InferenceSession`` (slow fallback).

ORT never constant-folds a custom-domain node, and an onnxruntime-extensions Python kernel copies its
output element by element on every ``run()``: each run pays for the size of every sealed weight. Use
``ortseal.InferenceSession`` wherever you can; this path exists for code that must keep a plain session.

The kernel decrypts nothing and reads no file. :func:`fallback_session_options` reads the sealed model once,
verifies all of it and opens its tensors into this process's memory, then hands the application the model
bytes to load: the verified graph, its plain tensors inline, its blobs emptied, and every Unseal node renamed
to an op type made from a random secret of this process (``Unseal_<secret>``), which no file holds, and
stamped with this set-up's id. Only that op type has a kernel, and it serves only the tensors a set-up
verified, to nodes carrying that set-up's id: a graph a caller writes (a node named ``Unseal``, or any other
guess) finds no kernel, and ORT refuses it when the session is created, before onnxruntime-extensions could
abort the process on a type it cannot convert. (One op type per process: onnxruntime-extensions crashes
when a second Python op is registered after its library was loaded.) onnxruntime-extensions turns any
exception raised by a Python kernel into ``std::terminate``, so the kernel never raises: a node of the right
op type but an identity it did not verify gets zeros and an error on the ``ortseal`` logger, never plaintext.
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass

import numpy as np

from .._log import Log
from .._onnx_proto import AttributeProto, TensorProto
from .._runtime import onnxruntime as ort
from ..errors import FormatError
from ..keys import KeySet, as_keyset
from ._gate import check_handed_options
from ._graph import MAX_MODEL_FILE, malformed_is_format_error, read_model, set_inline
from .schema import DOMAIN, FALLBACK_TYPES, OP_TYPE, RAW, kind_name
from .verify import VerifiedModel, verify_sealed

log = Log("ortseal")
SETUP_ATTRIBUTE = "setup"
SLOT_ATTRIBUTE = "slot"
_lock = threading.Lock()
_opened: dict[tuple[int, int], np.ndarray] = {}  # (set-up id, slot) -> verified plaintext
_warned = False  # the slow-path warning was logged (once per process)
_op_type: str | None = None  # this process's kernel op type, once registered (under _lock)
_NUMPY_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.INT8: np.int8,
                TensorProto.INT16: np.int16, TensorProto.INT32: np.int32, TensorProto.INT64: np.int64,
                TensorProto.UINT8: np.uint8, TensorProto.UINT16: np.uint16, TensorProto.UINT32: np.uint32,
                TensorProto.UINT64: np.uint64, TensorProto.BOOL: np.bool_}  # FALLBACK_TYPES, as numpy has them


@dataclass(frozen=True)
class FallbackModel:
    """What a plain ``onnxruntime.InferenceSession`` loads: the verified model's bytes and the session
    options that register the Unseal kernel. ``onnxruntime.InferenceSession(fb.model_bytes, fb.sess_options)``."""

    model_bytes: bytes
    sess_options: ort.SessionOptions


def _unseal(sealed: np.ndarray, like: np.ndarray, dtype: int = 0, setup: int = 0, slot: int = 0) -> np.ndarray:
    global _warned
    with _lock:
        opened = _opened.get((setup, slot))
        if opened is not None and not _warned:
            _warned = True
            log.warning("ortseal: running sealed weights through the Unseal fallback kernel; every run() copies "
                        "every sealed weight, so per-run cost grows with weight size. Open the model with "
                        "ortseal.InferenceSession instead: it decrypts once and runs at plain-model speed.")
    if opened is None:
        log.error("ortseal: the Unseal fallback kernel refused a node of a model it did not verify (load "
                  "fallback_session_options(...).model_bytes); it returned an empty tensor, so this run's outputs "
                  "are meaningless")
        return np.zeros(0, np.float32)
    return opened


def _register_kernel() -> str:
    """Register this process's kernel once, op type ``Unseal_<random secret>``; returns that op type."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op  # only the fallback needs it

    global _op_type
    with _lock:
        if _op_type is None:
            op_type = f"{OP_TYPE}_{secrets.token_hex(16)}"
            onnx_op(op_type=f"{DOMAIN}::{op_type}", inputs=[PyCustomOpDef.dt_uint8, PyCustomOpDef.undefined],
                    outputs=[PyCustomOpDef.undefined],
                    # integers only: onnxruntime-extensions aborts the process on a string attribute that is
                    # not UTF-8, which a crafted node could hold
                    attrs={"dtype": PyCustomOpDef.dt_int64, SETUP_ATTRIBUTE: PyCustomOpDef.dt_int64,
                           SLOT_ATTRIBUTE: PyCustomOpDef.dt_int64})(_unseal)
            _op_type = op_type
        return _op_type


def fallback_session_options(keys: KeySet | str | os.PathLike[str], sess_options: ort.SessionOptions | None = None, *,
                             model: str | os.PathLike[str] | bytes, min_release: int = 0,
                             data_dir: str | None = None, model_name: str | None = None) -> FallbackModel:
    """Verify the sealed ``model`` in full (read once: signature over the whole file, release, every sealed
    and plain external tensor), open its tensors into this process's memory for the life of the process, and
    return the model bytes and session options a plain ``onnxruntime.InferenceSession`` needs::

        fb = ortseal.fallback_session_options(keys, model="model.sealed.onnx")
        sess = onnxruntime.InferenceSession(fb.model_bytes, fb.sess_options)

    Load ``fb.model_bytes``, never the file again: the bytes are what was verified. ``data_dir`` is where the
    external data of a model given as bytes lives. Only models under 2 GiB (the bytes hold every plain tensor).
    """
    keys = as_keyset(keys)  # a KeySet, or a keyset file's path
    check_handed_options(sess_options)  # before a byte is read: the application's session gets the opened weights
    loaded = read_model(model, data_dir)  # parsed once its seal record is checked
    setup = secrets.randbits(62)
    opened: dict[tuple[int, int], np.ndarray] = {}
    with malformed_is_format_error(loaded.name), verify_sealed(loaded, keys, min_release=min_release,
                                                                           model_name=model_name) as verified:
        for st in verified.sealed:
            if st.dtype not in FALLBACK_TYPES or st.encoding != RAW:
                kind = ("a sparse " if st.sparse else "") + kind_name(st.dtype)
                raise FormatError(f"sealed tensor {st.name!r} is {kind}, which the fallback kernel cannot return (it "
                                  "serves dense float, double, integer and bool tensors); use ortseal.InferenceSession")
        inline = len(loaded.data) + sum(entry.length for _, entry in verified.externals)
        if inline > MAX_MODEL_FILE:  # checked on the signed lengths, before anything is read or decrypted
            raise FormatError(f"the fallback hands ONNX Runtime one in-memory model holding every plain tensor, and "
                              f"this one's would be {inline / 2**30:.1f} GiB, over protobuf's 2 GiB; open it with "
                              "ortseal.InferenceSession, which has no such limit")
        for st in verified.sealed:
            out = np.empty(st.shape, _NUMPY_TYPES[st.dtype])
            verified.opener(st, keys).decrypt_into(out.reshape(-1).view(np.uint8).data)
            out.setflags(write=False)
            opened[(setup, len(opened))] = out  # slot = the tensor's place in verified.sealed
        for t, entry in verified.externals:
            set_inline(t, verified.read_external(t, entry))
        _stamp(verified, _register_kernel(), setup)
        handed = verified.model.SerializeToString()
    with _lock:
        _opened.update(opened)
    so = sess_options if sess_options is not None else ort.SessionOptions()
    from onnxruntime_extensions import get_library_path

    so.register_custom_ops_library(get_library_path())
    return FallbackModel(handed, so)


def _stamp(verified: VerifiedModel, op_type: str, setup: int) -> None:
    """Rename every Unseal node of the verified model to the kernel's op type and stamp it with the set-up id
    and its tensor's slot (its index in ``verified.sealed``), and empty every blob, where the walk found them,
    so ORT reads nothing but these bytes (the plain external tensors are already inline)."""
    for slot, st in enumerate(verified.sealed):
        node = st.node
        assert node is not None
        node.op_type = op_type
        node.attribute.add(name=SETUP_ATTRIBUTE, type=AttributeProto.INT, i=setup)
        node.attribute.add(name=SLOT_ATTRIBUTE, type=AttributeProto.INT, i=slot)
        set_inline(st.blob, b"")
        del st.blob.dims[:]
        st.blob.dims.append(0)
