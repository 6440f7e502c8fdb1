"""Known-answer vectors of the blob format (tests/vectors/blob_v1.json, made by generate_blob_vectors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ortseal
from ortseal import KeySet

VECTORS = json.loads((Path(__file__).parent / "vectors" / "blob_v1.json").read_text())

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "vectors"))
import generate_blob_vectors as gen  # noqa: E402


def vector_keys(signed: bool) -> KeySet:
    content = KeySet(content_keys={VECTORS["content_key_id"]: bytes.fromhex(VECTORS["content_key"])})
    return gen.keyset() if signed else content


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_opens(vector):
    blob = bytes.fromhex(vector["blob"])
    assert ortseal.unseal_bytes(blob, vector_keys(vector["signed"]), context=vector["context"]).hex() == vector["plaintext"]


@pytest.mark.parametrize("n, vector", enumerate(VECTORS["valid"]), ids=lambda v: str(v) if isinstance(v, int) else v["name"])
def test_sealing_reproduces_vector(n, vector):
    plaintext = bytes.fromhex(vector["plaintext"])
    assert gen.seal(plaintext, vector["context"], sign=vector["signed"], n=n).hex() == vector["blob"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_refused(vector):
    with pytest.raises(getattr(ortseal, vector["expect"])) as info:
        ortseal.unseal_bytes(bytes.fromhex(vector["blob"]), vector_keys(True), context=vector["context"])
    assert type(info.value).__name__ == vector["expect"]


def test_keyset_vectors_load():
    from generate_model_vectors import PASSPHRASE

    want = gen.keyset()
    for name, passphrase in (("keyset_v1.json", None), ("keyset_v1_wrapped.json", PASSPHRASE)):
        ks = KeySet.load(Path(__file__).parent / "vectors" / name, passphrase=passphrase)
        assert ks.content_key(VECTORS["content_key_id"]) == want.content_key(VECTORS["content_key_id"])
        assert ks.signing_key_ids == want.signing_key_ids


def test_sealed_model_vector_still_opens():
    import numpy as np
    import onnxruntime as ort
    import onnxruntime.datasets

    from ortseal.ops.model import find_sealed, graph_digest, load_model

    path = Path(__file__).parent / "vectors" / "mul_1.sealed.onnx"
    model, base = load_model(path)
    assert {st.graph_digest for st in find_sealed(model)} == {graph_digest(model, base)}
    assert ortseal.verify_model(path, gen.keyset()) == 1
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    plain = ort.InferenceSession(onnxruntime.datasets.get_example("mul_1.onnx"), providers=["CPUExecutionProvider"])
    sealed = ortseal.InferenceSession(str(path), providers=["CPUExecutionProvider"], keys=gen.keyset())
    assert sealed.run(None, {"X": x})[0].tobytes() == plain.run(None, {"X": x})[0].tobytes()
