"""Demo step: seal a small real model that ships with onnxruntime, inspect it, open it, refuse tampering."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from .._runtime import onnxruntime as ort
from ..keys import KeySet
from ..model.report import inspect_model
from ..model.seal import seal_model
from ..model.session import InferenceSession
from ._demokit import DemoFailure, expect_refused, say
from .model import print_table

DEMO_MODEL = "mul_1.onnx"  # onnxruntime.datasets: Y = X * W, W a float initializer


def _example(name: str) -> str:
    from onnxruntime.datasets import get_example  # onnxruntime itself was imported (and checked) above

    return get_example(name)


def model_steps(work: Path, keys: KeySet) -> None:
    say(f"\n== 2. A sealed model: onnxruntime.datasets/{DEMO_MODEL} ==")
    plain = work / DEMO_MODEL
    shutil.copy(_example(DEMO_MODEL), plain)
    sealed = work / "mul_1.sealed.onnx"
    summary = seal_model(plain, sealed, keys, min_bytes=1)
    assert summary.data_file is not None  # external data is the default
    say(f"  ortseal seal {plain.name} -o {sealed.name}: sealed {summary.sealed} into {summary.data_file.name}")
    print_table(inspect_model(sealed))
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    want = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    device = keys.for_device()  # what a device holds: it opens models, it cannot sign one
    got = InferenceSession(str(sealed), providers=["CPUExecutionProvider"], keys=device).run(None, {"X": x})[0]
    if not np.array_equal(want, got):
        raise DemoFailure("sealed model output differs from the plain model's")
    say(f"  ortseal.InferenceSession output equals the plain model's: {got.ravel().tolist()}")

    edited = work / "mul_1.edited.onnx"
    model = onnx.load(str(sealed), load_external_data=False)
    model.graph.output.append(helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, [3, 2]))
    onnx.save(model, str(edited))
    expect_refused("graph edited to output the weight W",
                   lambda: InferenceSession(str(edited), providers=["CPUExecutionProvider"], keys=device))
    data = Path(summary.data_file)
    good = data.read_bytes()
    blob = bytearray(good)
    blob[-64 - 16 - 3] ^= 0x01  # a ciphertext byte of the sealed weight
    data.write_bytes(blob)
    expect_refused("one flipped byte in the sealed payload",
                   lambda: InferenceSession(str(sealed), providers=["CPUExecutionProvider"], keys=device))
    data.write_bytes(good)  # the work folder keeps only good files: `ortseal verify` on them passes
    os.remove(edited)
