"""The sealed TensorRT engine cache: a keyless C shim ORT loads (``shim.c``, ``shim.py``), the in-process
vault it forwards to (``vault.py``), the check that the TensorRT EP can run here (``preflight.py``), and
:func:`tensorrt_provider` (``provider.py``), which builds the provider options. ``harness.py`` calls the shim
as ORT's TensorRT EP does, for tests and the demo on machines without TensorRT.

Imports ``ortseal._policy`` for the options it refuses; never ``ortseal.model`` (sealed models).
"""

from .provider import tensorrt_provider
from .shim import shim_path
from .vault import verify_engine_file

__all__ = ["tensorrt_provider", "shim_path", "verify_engine_file"]
