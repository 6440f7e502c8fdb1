"""A sealed compiled-model cache on ONNX Runtime's compile API (EPContext models), for any EP that has one.

    from ortseal.compiled import CompiledModelCache, ep_target

    cache = CompiledModelCache("/var/cache/app/compiled", "device.json", release=3)
    session = cache.session("model.sealed.onnx", ep_target("OpenVINOExecutionProvider", device_type="CPU"))

``entry`` (the entry file: no ONNX Runtime needed), ``target`` (EP and device), ``cache`` (compile, seal,
start); the command line is ``ortseal/cli/compiled.py``; the options refused, ``ortseal/_policy.py``.
Spec: ``docs/compiled-cache.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"CompiledModelCache": ".cache", "CachedStart": ".cache", "ep_target": ".target", "EpTarget": ".target",
         "register_plugin_ep": ".target", "verify_entry": ".entry", "read_entry": ".entry"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
