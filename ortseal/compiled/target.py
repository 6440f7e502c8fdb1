"""Which execution provider and device a model is compiled for, and what of that a cache entry binds.

    target = ep_target("OpenVINOExecutionProvider", {"precision": "FP32"}, device_type="CPU")

A plugin EP (``onnxruntime.register_execution_provider_library``; :func:`register_plugin_ep` does it for the
pip-installed OpenVINO and NV TensorRT RTX plugins) is chosen through ORT's EP devices, which say the EP's
version and the device. A classic EP built into the ONNX Runtime distribution (``onnxruntime-gpu``'s
TensorRT, ``onnxruntime-openvino``) is added by name; its version is the distribution's, and ORT cannot say
which device it runs on, so pass ``device=`` (e.g. the GPU's name and driver) to bind one.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._runtime import onnxruntime as ort
from .._runtime import ort_distributions
from ..errors import ProviderUnavailableError

# the module of the pip package that ships a plugin EP's library (its get_library_path() gives the path)
PLUGIN_MODULES = {
    "OpenVINOExecutionProvider": "onnxruntime_ep_openvino",
    "NvTensorRTRTXExecutionProvider": "onnxruntime_ep_nv_tensorrt_rtx",
}
INSTALL_HINTS = {
    "OpenVINOExecutionProvider": 'pip install "ortseal[openvino]" (onnxruntime-ep-openvino; Intel CPUs, GPUs, NPUs)',
    "NvTensorRTRTXExecutionProvider": "pip install onnxruntime-ep-nv-tensorrt-rtx (NVIDIA RTX GPUs)",
    "TensorrtExecutionProvider": 'pip install "ortseal[gpu]" (onnxruntime-gpu with TensorRT 10, NVIDIA GPUs)',
}
# EP metadata that says where the library sits, not what it compiles for
_UNBOUND_EP_METADATA = frozenset({"library_path"})


@dataclass(frozen=True)
class EpTarget:
    """An EP, its version, the device(s) it compiles for, and its provider options (as strings).

    ``devices`` holds ORT's ``OrtEpDevice`` objects for a plugin EP (empty for a classic one); ``device`` is
    what a cache entry binds of them."""

    name: str
    version: str
    device: Any
    options: Mapping[str, str] = field(default_factory=dict)
    devices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        # read once, as strings: what the refused-options table checks and the entry binds is what ORT gets
        object.__setattr__(self, "options", {str(k): _option_str(v) for k, v in dict(self.options).items()})

    def add_to(self, sess_options: ort.SessionOptions) -> None:
        """Add this EP, with its options, to ``sess_options``."""
        if self.devices:
            sess_options.add_provider_for_devices(list(self.devices), dict(self.options))
        else:
            sess_options.add_provider(self.name, dict(self.options))


def _option_str(value: Any) -> str:
    return ("True" if value else "False") if isinstance(value, bool) else str(value)


def _host_cpu() -> dict[str, str]:
    """The host CPU's model name and a digest of its feature flags (``/proc/cpuinfo``): a CPU EP's compiled
    code is specific to the instruction sets it was compiled for."""
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
                if model and flags:
                    break
    except OSError:
        pass
    return {"model": model, "flags_sha256": hashlib.sha256(flags.encode()).hexdigest()}


def _device_doc(d: Any) -> dict[str, Any]:
    hw = d.device
    doc = {"type": str(hw.type).rsplit(".", 1)[-1], "vendor": hw.vendor, "vendor_id": hw.vendor_id,
           "device_id": hw.device_id, "metadata": dict(hw.metadata),
           "ep_metadata": {k: v for k, v in dict(d.ep_metadata).items() if k not in _UNBOUND_EP_METADATA}}
    if doc["type"] == "CPU":
        doc["host_cpu"] = _host_cpu()
    return doc


def register_plugin_ep(name: str) -> bool:
    """Register the plugin EP library a pip package ships for ``name`` (see :data:`PLUGIN_MODULES`) unless
    ORT already offers devices for it; True if ORT offers some afterwards."""
    if any(d.ep_name == name for d in ort.get_ep_devices()):
        return True
    module_name = PLUGIN_MODULES.get(name)
    if module_name is None:
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    ort.register_execution_provider_library(name, module.get_library_path())
    return any(d.ep_name == name for d in ort.get_ep_devices())


def ep_target(ep: str | Sequence[Any], options: Mapping[str, Any] | None = None, *, device_type: str | None = None,
              device: str | None = None) -> EpTarget:
    """The EP to compile for: an EP name, or a list of ORT ``OrtEpDevice`` objects of one EP.

    For a name, a plugin EP's devices are taken from ``onnxruntime.get_ep_devices()`` (registering the
    plugin package's library first when one is installed), those of ``device_type`` ("CPU", "GPU", "NPU")
    when given; else a classic EP of this ONNX Runtime build is used. Raises
    :class:`ProviderUnavailableError` naming what to install when neither offers it."""
    opts = dict(options or {})
    if isinstance(ep, str):
        register_plugin_ep(ep)
        devices = [d for d in ort.get_ep_devices() if d.ep_name == ep]
        if device_type is not None:
            devices = [d for d in devices if str(d.device.type).rsplit(".", 1)[-1] == device_type.upper()]
        if not devices:
            if ep in ort.get_available_providers() and ep != "CPUExecutionProvider":
                dist = ", ".join(f"{n} {v}" for n, v in ort_distributions()) or f"onnxruntime {ort.__version__}"
                return EpTarget(ep, dist, {"classic": True, "device": device}, opts)
            where = f" with a {device_type} device" if device_type else ""
            hint = INSTALL_HINTS.get(ep, "install the package that provides it")
            raise ProviderUnavailableError(f"no {ep}{where} here: ONNX Runtime {ort.__version__} offers devices for "
                                           f"{sorted({d.ep_name for d in ort.get_ep_devices()})} and the providers "
                                           f"{ort.get_available_providers()}; {hint}, or register its library with "
                                           "onnxruntime.register_execution_provider_library")
    else:
        devices = list(ep)
        names = {d.ep_name for d in devices}
        if len(names) != 1:
            raise ValueError(f"ep must be devices of one execution provider, got {sorted(names) or 'none'}")
    name = devices[0].ep_name
    versions = {dict(d.ep_metadata).get("version", "") for d in devices}
    doc = [_device_doc(d) for d in devices]
    if device is not None:
        doc.append({"given": device})
    return EpTarget(name, "|".join(sorted(versions)), doc, opts, tuple(devices))


def ep_identity(target: EpTarget) -> dict[str, str]:
    """What an entry binds of the EP itself."""
    vendor = {str(getattr(d, "ep_vendor", "")) for d in target.devices}
    return {"name": target.name, "version": target.version, "vendor": "|".join(sorted(vendor))}

