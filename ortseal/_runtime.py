"""Which ONNX Runtime distribution provides the ``onnxruntime`` module: exactly one must.

``onnxruntime``, ``onnxruntime-gpu``, ``onnxruntime-openvino``, ``onnxruntime-directml``... all install the
same ``onnxruntime`` package; with two installed, whichever pip wrote last wins file by file, silently (a
GPU user finds ``get_available_providers()`` back to CPU). ortseal depends on none of them, so the user's
choice stands, and checks there is exactly one the first time ortseal imports ``onnxruntime``: the
modules that need ONNX Runtime import it as ``from .._runtime import onnxruntime as ort``, so ``import
ortseal`` and the commands that need no ORT (keygen, pubkey, inspect...) work without one.

``importlib.metadata.packages_distributions()`` would answer the same question, but it reads every
installed distribution's metadata: about 220 ms with 116 distributions here, against about 1 ms for the
scan below, which opens only ``onnxruntime*`` / ``ort_nightly*`` metadata folders and reads their files
itself (importing ``importlib.metadata`` and its email parser alone cost 40-70 ms of a cold start).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

SKIP_ENV = "ORTSEAL_SKIP_ORT_CHECK"
INSTALL_HINT = ("pip install onnxruntime for the CPU build (ortseal's [cpu] extra), or install the ONNX Runtime you "
                "deploy on: onnxruntime-gpu (CUDA, TensorRT), onnxruntime-openvino, onnxruntime-directml, ...")


def ort_distributions(path: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(distribution name, version)`` of every installed distribution that provides the ``onnxruntime``
    module (on ``sys.path``, or on ``path``). Only ``onnxruntime*`` / ``ort_nightly*`` metadata folders are
    read, so the check costs about a millisecond on import."""
    found: dict[str, str] = {}
    for entry in sys.path if path is None else path:
        try:
            names = [e.name for e in os.scandir(entry or ".") if e.is_dir()]
        except OSError:
            continue
        for folder in names:
            if not folder.endswith(".dist-info") or not folder.lower().startswith(("onnxruntime", "ort_nightly")):
                continue
            dist = Path(entry or ".") / folder
            headers = _headers(_read(dist / "METADATA"))
            name = re.sub(r"[-_.]+", "-", headers.get("name", "")).lower()
            top = _read(dist / "top_level.txt").split()
            if "onnxruntime" in top or (not top and _record_has_module(dist)):
                found[name] = headers.get("version", "")
    return sorted(found.items())


def _record_has_module(dist: Path) -> bool:
    """A distribution without top_level.txt: whether its RECORD lists files of the onnxruntime module (read
    only then: ORT's RECORD is 60 KB)."""
    return any(line.startswith("onnxruntime/") for line in _read(dist / "RECORD").splitlines())


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _headers(metadata: str) -> dict[str, str]:
    """The first ``Name``/``Version`` headers of a core-metadata file (the lines before its first blank
    line), keys lowercased; what ``importlib.metadata`` reads, without importing its email parser."""
    headers: dict[str, str] = {}
    for line in metadata.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("name", "version"):
            headers.setdefault(key.strip().lower(), value.strip())
    return headers


def check_ort_distribution(path: Iterable[str] | None = None) -> None:
    """Raise ImportError, saying what to run, unless exactly one ONNX Runtime distribution is installed
    (``$ORTSEAL_SKIP_ORT_CHECK=1`` skips the check)."""
    if os.environ.get(SKIP_ENV) == "1":
        return
    found = ort_distributions(path)
    if not found:
        raise ImportError(f"ortseal needs ONNX Runtime and no distribution of it is installed: {INSTALL_HINT}")
    if len(found) > 1:
        listed = ", ".join(f"{n} {v}" for n, v in found)
        names = " ".join(n for n, _ in found)
        raise ImportError(f"{len(found)} ONNX Runtime distributions are installed ({listed}); they overwrite each "
                          f"other's onnxruntime module, so the one you meant may not be the one that runs. Keep one: "
                          f"pip uninstall -y {names} && pip install <the one you deploy on, e.g. onnxruntime-gpu> "
                          f"(or set {SKIP_ENV}=1 if this is intended)")


if TYPE_CHECKING:  # what ``from ._runtime import onnxruntime`` gives, as the type checker sees it
    import onnxruntime as onnxruntime

_checked = False


def __getattr__(name: str) -> ModuleType:
    """``from ._runtime import onnxruntime``: the ``onnxruntime`` module, imported after
    :func:`check_ort_distribution` passed (once per process)."""
    global _checked
    if name != "onnxruntime":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _checked:
        check_ort_distribution()
        _checked = True
    import onnxruntime

    return onnxruntime
