"""Deprecated: ``ortseal.ep_plugin`` moved to ``ortseal.tensorrt`` (the sealed TensorRT engine cache); import
``tensorrt_provider`` from ``ortseal`` itself. This alias only re-exports the public names and will be removed."""

import warnings

from ..tensorrt import shim_path, tensorrt_provider, verify_engine_file

warnings.warn("ortseal.ep_plugin is deprecated: import from ortseal (or ortseal.tensorrt)", DeprecationWarning,
              stacklevel=2)

__all__ = ["tensorrt_provider", "shim_path", "verify_engine_file"]
