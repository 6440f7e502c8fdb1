"""The one gate between opened weights and ONNX Runtime: every entry point that hands ORT a model whose
weights ortseal opened (``InferenceSession`` and its ``set_providers``, ``verify_model``,
``fallback_session_options``, and any new one) passes the options ORT will use through here first, and the
refused-options table (``ortseal._policy``) is applied to exactly those options.

    checked = check_session(providers, provider_options, sess_options, sealed_model=True)
    ...ORT gets checked.providers, checked.provider_options...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from .._policy import PROVIDER_WRITERS, TENSORRT, refuse_plaintext_writers
from ..errors import SetupError

if TYPE_CHECKING:
    import onnxruntime as ort

# The providers an application may pick after ortseal handed it opened weights (the fallback): every provider
# the table knows, each as if given no options, so that the options it would read from the session config
# (``ep.<provider>.<option>``) or from the environment are checked too.
ANY_PROVIDER = [*PROVIDER_WRITERS]


class CheckedOptions(NamedTuple):
    """The providers and their options as ORT must get them (plain strings, read once), and whether they
    ask for ortseal's sealed TensorRT engine cache."""

    providers: Any
    provider_options: Any
    sealed_cache: bool


def check_session(providers: Any, provider_options: Any, sess_options: ort.SessionOptions | None, *,
                  sealed_model: bool) -> CheckedOptions:
    """Raise :class:`~ortseal.UnsafeOptionError` if these arguments would make ORT or an EP write opened weights
    (``sealed_model``) or a compiled engine of the sealed engine cache in plaintext; return them as ORT must
    get them. What is checked is what ORT gets: pass ORT ``providers``/``provider_options`` from the result."""
    providers, provider_options = _plain_options(providers, provider_options)
    tensorrt = _tensorrt_options(providers, provider_options)
    shim = _shim() if tensorrt else None  # only TensorRT takes a decryption library
    # ortseal.tensorrt_provider(...)'s entry: TensorRT given ortseal's shim as its decryption library
    sealed_cache = shim is not None and any(isinstance(o, dict) and o.get("trt_engine_decryption_lib_path") == shim
                                            for o in tensorrt)
    refuse_plaintext_writers(providers, provider_options, sess_options, sealed_model=sealed_model,
                             sealed_cache=sealed_cache, shim=shim)
    return CheckedOptions(providers, provider_options, sealed_cache)


def check_handed_options(sess_options: ort.SessionOptions | None) -> None:
    """Raise :class:`~ortseal.UnsafeOptionError` if session options ortseal hands the application with opened
    weights (the fallback) would make ORT write them in plaintext, whichever provider the application then
    picks (its provider options are its own: they never pass through ortseal)."""
    refuse_plaintext_writers(ANY_PROVIDER, None, sess_options, sealed_model=True, sealed_cache=False, shim=_shim(),
                             chosen=False)


def _plain_options(providers: Any, provider_options: Any) -> tuple[Any, Any]:
    """Providers and their options as plain strings, read once: what is checked is what ORT gets (an
    object whose ``str()`` changes between two reads cannot pass the check as one value and reach ORT as
    another). Entries of other shapes are left for ORT to refuse."""
    def options(d: Any) -> Any:
        return {str(k): str(v) for k, v in d.items()} if isinstance(d, dict) else d

    if providers is not None:
        providers = [(str(p[0]), options(p[1])) if isinstance(p, (tuple, list)) and len(p) == 2 else
                     str(p) if isinstance(p, str) else p for p in providers]
    if provider_options is not None:
        provider_options = [options(o) for o in provider_options]
    return providers, provider_options


def _tensorrt_options(providers: Any, provider_options: Any) -> list[Any]:
    """The options of each TensorRT entry in ``providers`` (``{}`` where it has none); empty without one."""
    options: list[Any] = []
    for i, p in enumerate(providers or []):
        if isinstance(p, (tuple, list)) and len(p) == 2 and p[0] == TENSORRT:
            options.append(p[1])
        elif p == TENSORRT:
            options.append(provider_options[i] if provider_options and i < len(provider_options) else {})
    return options


def _shim() -> str | None:
    """The path of ortseal's engine-cache shim (the one decryption library TensorRT may get), None where it is
    not built. Imported here: the engine cache's package is needed only where TensorRT is asked for."""
    from ..tensorrt.shim import shim_path

    try:
        return shim_path()
    except SetupError:
        return None
