"""Real third-party models (``corpus.py``): each seals with the defaults, inspects, verifies, opens with
outputs bit-identical to the plain model, and no 64-byte slice of any sealed weight is left in any file."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import contains_run, unlocked_opening_folders
from corpus import MODELS, CorpusModel, feeds, fetch_model
from forge import keep_tag_rewrite
from onnx import AttributeProto, numpy_helper

import ortseal
from ortseal import KeySet, TamperedError
from ortseal.blob import parse_header
from ortseal.model._graph import DataFiles, find_sealed, load_model
from ortseal.model.schema import SEALABLE_TYPES
from ortseal.model.seal import plaintext_report

pytestmark = pytest.mark.slow  # minutes on 2 cores: CI runs it, the quick tier (-m "not slow") does not

CPU = ["CPUExecutionProvider"]
MIN_BYTES = 1024  # seal_model's default


def constant_tensors(model: onnx.ModelProto) -> list[tuple[str, int, bytes]]:
    """``(name, dtype, bytes)`` of every initializer and Constant value, in every graph and function."""
    found = []

    def walk(nodes, inits=()):
        for t in inits:
            found.append((t.name, t.data_type, numpy_helper.to_array(t).tobytes()))
        for n in nodes:
            for a in n.attribute:
                if n.op_type == "Constant" and a.name == "value":
                    found.append((n.output[0], a.t.data_type, numpy_helper.to_array(a.t).tobytes()))
                elif n.op_type == "Constant" and a.name in ("value_floats", "value_ints"):
                    dtype = np.float32 if a.name == "value_floats" else np.int64
                    found.append((n.output[0], 1 if dtype is np.float32 else 7, np.asarray(
                        onnx.helper.get_attribute_value(a), dtype).tobytes()))
                if a.type == AttributeProto.GRAPH:
                    walk(a.g.node, a.g.initializer)
                for g in a.graphs:
                    walk(g.node, g.initializer)

    walk(model.graph.node, model.graph.initializer)
    for fn in model.functions:
        walk(fn.node)
    return found


@pytest.fixture(scope="module")
def publisher() -> KeySet:
    return KeySet.generate()


@pytest.mark.parametrize("entry", MODELS, ids=lambda m: m.id)
def test_real_model_seals_verifies_and_opens_bit_identical(tmp_path, publisher, entry: CorpusModel):
    try:
        src = fetch_model(entry)
    except RuntimeError as exc:  # a download failure fails the run: the corpus is part of the tests
        pytest.fail(str(exc))
    dst = tmp_path / "model.sealed.onnx"
    summary = ortseal.seal_model(src, dst, publisher, release=3)

    weights = [(name, data) for name, dtype, data in constant_tensors(onnx.load(str(src)))
               if dtype in SEALABLE_TYPES and len(data) >= MIN_BYTES]
    assert weights, "the corpus model has weights"
    assert Counter(summary.sealed) == Counter(name for name, _ in weights)  # every weight, Constant ones too
    left = plaintext_report(load_model(dst).model)
    assert sorted((p.name, p.reason) for p in left) == sorted((p.name, p.reason) for p in summary.left_plain)
    assert all(p.reason != "not sealed" for p in left)

    infos = ortseal.inspect_model(dst)
    assert Counter(i.name for i in infos) == Counter(summary.sealed)
    device = KeySet.merge(publisher.without_signing(), publisher.public())
    report = ortseal.verify_model(dst, device, min_release=3)
    assert report.decrypted and report.sealed_tensors == len(weights)
    assert not ortseal.verify_model(dst, publisher.public(), min_release=3).decrypted

    inputs = feeds(entry)
    want = ort.InferenceSession(str(src), providers=CPU).run(None, inputs)
    got = ortseal.InferenceSession(str(dst), providers=CPU, keys=device, min_release=3).run(None, inputs)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()

    secret = b"".join(data for _, data in weights)
    for path in tmp_path.iterdir():
        assert not contains_run(path.read_bytes(), secret, 64), f"a slice of a weight is readable in {path.name}"


@pytest.mark.parametrize("entry", [m for m in MODELS if m.id in ("nudenet", "ppocr-v4-rec")], ids=lambda m: m.id)
def test_real_model_through_ram_files(tmp_path, publisher, monkeypatch, entry: CorpusModel):
    """Forced through RAM files (the route of models over 16 MiB), a real model's weights (initializers for
    nudenet, Constant nodes for PP-OCR) open bit-identical, and a device-key holder's tag-keeping rewrite of
    its largest weight, or a flipped bit, is refused before ORT sees anything."""
    monkeypatch.setattr("ortseal.model.open.SMALL_MODEL_BYTES", 0)
    src = fetch_model(entry)
    dst = tmp_path / "model.sealed.onnx"
    ortseal.seal_model(src, dst, publisher, progress=False)
    device = KeySet.merge(publisher.without_signing(), publisher.public())
    inputs = feeds(entry)
    want = ort.InferenceSession(str(src), providers=CPU).run(None, inputs)
    got = ortseal.InferenceSession(str(dst), providers=CPU, keys=device).run(None, inputs)
    assert [a.tobytes() for a in got] == [b.tobytes() for b in want]

    loaded = load_model(dst)
    largest = max(find_sealed(loaded.model), key=lambda st: st.plaintext_bytes)
    with DataFiles(loaded.base_dir) as files:
        _, offset, length = files.span(largest.blob)
    data = dst.with_name(dst.name + ".data")
    original = data.read_bytes()
    blob = original[offset:offset + length]
    forged = keep_tag_rewrite(blob, publisher.content_key(publisher.content_key_ids[0]), 0,
                              bytes(parse_header(blob).segment_span(0)[1]))
    flipped = bytearray(blob)
    flipped[len(parse_header(blob).raw) + 100] ^= 0x01
    before = unlocked_opening_folders()
    for attack, reason in ((forged, "signed digest"), (bytes(flipped), "authentication")):
        data.write_bytes(original[:offset] + attack + original[offset + length:])
        with pytest.raises(TamperedError, match=f"{largest.name!r}.*{reason}"):
            ortseal.InferenceSession(str(dst), providers=CPU, keys=device)
    assert unlocked_opening_folders() <= before
