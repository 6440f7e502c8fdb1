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
