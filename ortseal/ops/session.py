"""``ortseal.InferenceSession``: an ``onnxruntime.InferenceSession`` that opens sealed models at session start."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._runtime import onnxruntime as ort

from ..ep_plugin.preflight import PROVIDER as TENSORRT
from ..ep_plugin.shim import shim_path
from ..errors import FormatError, KeyNotFoundError, OrtsealError, ProviderUnavailableError, UnsafeOptionError
from ..keys import KeySet, as_keyset
from .model import is_sealed_model, load_model
from .opening import open_sealed_model

EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"
# EPs whose session creation writes nothing outside the process (no engine or EP cache, no compiled
# model): for them large weights are checked while ORT opens them (docs/sealed-models.md).
NO_SIDE_EFFECT_PROVIDERS = frozenset({"CPUExecutionProvider", "CUDAExecutionProvider"})


class InferenceSession(ort.InferenceSession):
    """Like ``onnxruntime.InferenceSession``, plus ``keys=`` and ``min_release=``: a sealed model's signed
    manifest, release, graph binding and every blob are verified and its tensors decrypted in memory
    before ORT sees the graph, so ORT's optimizers and every EP see plain constant weights. Unsealed models
    pass through unchanged (``keys`` is then not needed).

        sess = ortseal.InferenceSession("model.sealed.onnx", providers=["CPUExecutionProvider"], keys=keys)
        sess.run(None, {"x": x})

    With only the CPU and CUDA EPs, large weights' signed digests are recomputed from the opened
    plaintext on the spare cores while ORT initialises the session; the constructor returns only once
    every one matched (else TamperedError, and the session is discarded). ``verify_first=True`` checks
    everything before ORT reads any weight (slower on few cores). See docs/sealed-models.md.
    """

    def __init__(self, path_or_bytes: str | bytes | os.PathLike[str], sess_options: ort.SessionOptions | None = None,
                 providers: Sequence[str | tuple[str, dict[Any, Any]]] | None = None,
                 provider_options: Sequence[dict[Any, Any]] | None = None, *, keys: KeySet | str | os.PathLike[str] | None = None,
                 min_release: int = 0, verify_first: bool = False, **kwargs: Any) -> None:
        keys = None if keys is None else as_keyset(keys)  # a KeySet, or a keyset file's path
        self._ortseal_keys = keys
        self._ortseal_min_release = min_release
        self._ortseal_verify_first = verify_first
        self._ortseal_model = None
        try:
            model, base_dir = load_model(path_or_bytes)
        except FormatError:
            model = None  # not ONNX protobuf (an .ort file, or garbage): ORT itself decides
        if model is not None and is_sealed_model(model):
            if keys is None:
                raise KeyNotFoundError("this model is sealed: pass keys= (the keyset that opens it)")
            if base_dir is None:  # bytes: ORT reads their external data from this session option, so do we
                base_dir = _config_entry(sess_options, EXTERNAL_FOLDER_KEY) or None
            self._ortseal_model, self._ortseal_base_dir = model, base_dir
            self._ortseal_name = Path(path_or_bytes).name if not isinstance(path_or_bytes, bytes) else "model.onnx"
        super().__init__(path_or_bytes, sess_options, providers, provider_options, **kwargs)

    @property
    def is_sealed(self) -> bool:
        """True if this session was opened from a sealed model."""
        return self._ortseal_model is not None

    def _create_inference_session(self, providers, provider_options, disabled_optimizers=None) -> None:
        sealed_cache = _asks_sealed_engine_cache(providers, provider_options)
        if sealed_cache:
            # ORT's Python API would print "EP Error ... Falling back" and run on CUDA or CPU, the sealed
            # engine cache unused: a session that asked for TensorRT through ortseal gets it or fails.
            self._enable_fallback = False
        if self._ortseal_model is not None or sealed_cache:
            self._refuse_plaintext_outputs()
        if self._ortseal_model is None:
            super()._create_inference_session(providers, provider_options, disabled_optimizers)
        else:
            origin = self._model_path, self._model_bytes
            check_while_opening = not self._ortseal_verify_first and _no_side_effects(providers, self._sess_options)
            with open_sealed_model(self._ortseal_model, self._ortseal_base_dir, self._ortseal_keys,  # type: ignore[arg-type]
                                   self._ortseal_name, min_release=self._ortseal_min_release,
                                   check_while_opening=check_while_opening) as opened:
                self._model_path, self._model_bytes = opened.path, opened.model_bytes
                try:
                    super()._create_inference_session(providers, provider_options, disabled_optimizers)
                finally:
                    # Keep no reference to the opened model: only the sealed source stays.
                    self._model_path, self._model_bytes = origin
        if sealed_cache and TENSORRT not in self.get_providers():
            raise ProviderUnavailableError(f"the session was asked for {TENSORRT} with a sealed engine cache but ONNX "
                                           f"Runtime gave it {self.get_providers()}")

    def _refuse_plaintext_outputs(self) -> None:
        """Options that would write opened weights (sealed model) or a compiled engine (either) in plain."""
        if self._ortseal_model is not None and self._sess_options is not None and \
                self._sess_options.optimized_model_filepath:
            raise UnsafeOptionError("sess_options.optimized_model_filepath is refused for a sealed model: ORT would "
                                    "write the opened weights to that file in plaintext")
        if _config_entry(self._sess_options, "ep.context_enable") not in (None, "0"):
            raise UnsafeOptionError("the session option ep.context_enable is refused for a sealed model or engine "
                                    "cache: the EP-context model it writes holds the compiled engine or its weights "
                                    "in plaintext")


def _no_side_effects(providers: Any, sess_options: ort.SessionOptions | None) -> bool:
    """True when creating the session can leave nothing outside the process: every EP named is in
    :data:`NO_SIDE_EFFECT_PROVIDERS` (none named: ORT's CPU EP) and the options choose no other."""
    chosen_by_options = getattr(sess_options, "has_providers", None)  # ORT 1.22+; older ones cannot
    if chosen_by_options is not None and chosen_by_options():
        return False  # EPs picked by the options (add_provider*, a selection policy): any kind
    names = {p[0] if isinstance(p, (tuple, list)) else p for p in providers or []}
    return names <= NO_SIDE_EFFECT_PROVIDERS


def _asks_sealed_engine_cache(providers: Any, provider_options: Any) -> bool:
    """True when ``providers`` hold ``ortseal.tensorrt_provider(...)``'s TensorRT entry."""
    options: list[Any] = []
    for i, p in enumerate(providers or []):
        if isinstance(p, (tuple, list)) and len(p) == 2 and p[0] == TENSORRT:
            options.append(p[1])
        elif p == TENSORRT and provider_options and i < len(provider_options):
            options.append(provider_options[i])
    try:
        shim = shim_path()
    except OrtsealError:
        return False
    return any(isinstance(o, dict) and o.get("trt_engine_decryption_lib_path") == shim for o in options)


def _config_entry(options: ort.SessionOptions | None, key: str) -> str | None:
    if options is None:
        return None
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:  # ORT raises for a key that was never set
        return None
