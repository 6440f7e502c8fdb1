"""``ortseal.tensorrt_provider``: provider options that route the TensorRT EP's engine cache through the vault."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._atomic import move_into_private_folder, remove_stale_temps
from .._log import Log
from .._policy import PROVIDER_WRITERS, TRUE_VALUES, option_str, refuse_tensorrt_writers
from ..blob import check_release
from ..errors import OrtsealError, UnsafeOptionError
from ..keys import KeySet, as_keyset
from .preflight import PROVIDER, tensorrt_preflight
from .shim import shim_path
from .vault import ENGINE_SUFFIX, Vault, registry, verify_engine_file

log = Log("ortseal.tensorrt")
DEFAULT_CACHE_PATH = "./trt_cache"
QUARANTINE = "quarantine"

# The TensorRT flags that write plaintext even with decryption on; the full list (paths and other EPs too)
# is in ortseal/_policy.py.
LEAKING_OPTIONS = {name: w.why for name, w in PROVIDER_WRITERS[PROVIDER].items() if w.engine and w.kind == "flag"}
_SET_BY_ORTSEAL = ("trt_engine_decryption_enable", "trt_engine_decryption_lib_path", "trt_engine_cache_enable")


def _writable_dir(path: str) -> str:
    directory = Path(path)
    if not directory.exists():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # another process may win the race
        except OSError as exc:
            raise UnsafeOptionError(f"trt_engine_cache_path {path!r} cannot be created: {exc.strerror}") from exc
    if not directory.is_dir():
        raise UnsafeOptionError(f"trt_engine_cache_path {path!r} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UnsafeOptionError(f"trt_engine_cache_path {path!r} is not writable by this process, so sealed "
                                "engines could not be stored")
    return os.path.realpath(directory)


def quarantine_bad_engines(cache_dir: str, vault: Vault) -> list[Path]:
    """Move every engine file in ``cache_dir`` that fails verification (older releases included) into
    ``cache_dir/quarantine`` (refused, :class:`UnsafeOptionError`, when that folder is a link or another
    user's: the engines would be moved where they choose)."""
    moved = []
    for path in sorted(Path(cache_dir).glob(f"*{ENGINE_SUFFIX}")):
        try:
            verify_engine_file(path, vault)
        except (OrtsealError, OSError) as exc:
            target = move_into_private_folder(Path(cache_dir), path.name, QUARANTINE,
                                              f"the refused engine {path.name} was left in place: {exc}")
            log.warning("ortseal: %s failed verification (%s: %s); moved to %s so TensorRT rebuilds it",
                        path, type(exc).__name__, exc, target)
            moved.append(target)
    return moved


def tensorrt_provider(keys: KeySet | str | os.PathLike[str], options: Mapping[str, Any] | None = None, *,
                      on_tamper: str = "raise", release: int = 0, min_release: int | None = None,
                      check_runtime: bool = True) -> tuple[str, dict[str, str]]:
    """``("TensorrtExecutionProvider", options)`` with the engine cache sealed by ``keys``.

    Pass it in ``providers=[...]`` of any ORT session. Every other option is kept (as strings). The engine
    cache is turned on (``./trt_cache`` unless ``trt_engine_cache_path`` is given) and routed through the
    shim to this process's vault. Engines written are stamped with ``release`` (your deployment's release
    number); engines older than ``min_release`` (default: ``release``) are refused, so an old engine copied
    over a newer one is not loaded. ``on_tamper="raise"`` fails closed on a bad or old cache file;
    ``on_tamper="rebuild"`` first moves such files to ``quarantine/`` so TensorRT rebuilds them.

    With ``check_runtime`` (default) it first checks that ORT's TensorRT EP can load here and raises
    :class:`ProviderUnavailableError` naming what is missing, instead of letting ORT fall back to CUDA or
    CPU with the engine cache unused. ``check_runtime=False`` is for code that drives the shim itself
    (tests, the demo). ``ortseal.InferenceSession`` also turns ORT's fallback off for such a session.
    """
    keys = as_keyset(keys)  # a KeySet, or a keyset file's path
    if on_tamper not in ("raise", "rebuild"):
        raise ValueError(f"on_tamper must be 'raise' or 'rebuild', got {on_tamper!r}")
    if check_runtime:
        tensorrt_preflight()
    min_release = release if min_release is None else min_release
    check_release(release)
    check_release(min_release, "min_release")
    if min_release > release:
        raise ValueError(f"min_release {min_release} is above release {release}: engines this process writes "
                         "could never be opened")
    opts = {str(k): option_str(v) for k, v in (options or {}).items()}
    refuse_tensorrt_writers(opts)
    for name in _SET_BY_ORTSEAL:
        if name in opts and opts[name] not in (*TRUE_VALUES, shim_path()):
            raise ValueError(f"{name} is set by ortseal.tensorrt_provider; remove it from options")
    keys.sealing_key()  # a keyset that cannot seal could never write the cache: say so now (one that cannot
    # sign still opens publisher-signed engines; it refuses to write new ones, see write_engine)
    vault = Vault(keys, release, min_release)
    cache_dir = _writable_dir(opts.get("trt_engine_cache_path", DEFAULT_CACHE_PATH))
    for stale in remove_stale_temps(cache_dir, f"*{ENGINE_SUFFIX}"):
        log.warning("ortseal: removed %s, left by an engine writer that was killed", stale)
    if on_tamper == "rebuild":
        quarantine_bad_engines(cache_dir, vault)
    registry.add(cache_dir, vault)
    opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=cache_dir,
                trt_engine_decryption_enable="True", trt_engine_decryption_lib_path=shim_path())
    return PROVIDER, opts
