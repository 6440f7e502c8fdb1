"""Attacks on libortseal (issue 22's review): each test carries one out against the C and C++ hosts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortseal
from ortseal import KeySet

from native_host import Host, build, read_tensors, write_tensors

SHAPE = (64, 512)  # 128 KiB of float32: above the 64 KiB that stays inline, so it goes to the weights arena


@pytest.fixture(scope="module")
def hosts() -> tuple[Host, Host]:
    folder = build(ort=True)
    return Host(folder), Host(folder, "ortseal_ort_host")


@pytest.fixture(scope="module")
def publisher(tmp_path_factory) -> tuple[KeySet, Path]:
    keys = KeySet.generate()
    path = tmp_path_factory.mktemp("publisher") / "keys.json"
    path.write_text(keys.to_json())
    return keys, path


def add_model(path: Path, weights: np.ndarray, *, external_file: str | None = None) -> None:
    """y = x + w; w stored inline, or as external data in `external_file` beside the model."""
    w = numpy_helper.from_array(weights, "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(SHAPE))], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external_file:
        onnx.save_model(model, path, save_as_external_data=True, location=external_file, size_threshold=0)
    else:
        onnx.save_model(model, path)


def test_one_session_options_for_two_sealed_models(hosts, publisher, tmp_path):
    """A host with one OrtSessionOptions for all its sessions (the usual Ort::SessionOptions) opens two
    sealed models: the second must open, with its own weights."""
    keys, keyfile = publisher
    w1, w2 = np.full(SHAPE, 1.0, np.float32), np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    add_model(tmp_path / "a.onnx", w1)
    add_model(tmp_path / "b.onnx", w2)
    ortseal.seal_model(tmp_path / "a.onnx", tmp_path / "a.sealed.onnx", keys)
    ortseal.seal_model(tmp_path / "b.onnx", tmp_path / "b.sealed.onnx", keys)
    x = np.ones(SHAPE, np.float32)
    write_tensors(tmp_path / "in.bin", {"x": x})
    result = hosts[1]("reuse", keyfile, tmp_path / "a.sealed.onnx", tmp_path / "b.sealed.onnx", tmp_path / "in.bin",
                      tmp_path / "out.bin")
    assert result.name == "ok", result.message
    assert read_tensors(tmp_path / "out.bin")["y"].tobytes() == (x + w2).tobytes()


def test_session_options_keep_no_pointer_to_freed_plaintext(hosts, publisher, tmp_path):
    """After a sealed model's session, the host's session options must not point at the weights arena
    libortseal freed: a plain model whose data file is named like the arena ("ortseal-weights.bin")
    opened with the same options must read its own file, not freed heap memory (use-after-free)."""
    keys, keyfile = publisher
    add_model(tmp_path / "a.onnx", np.full(SHAPE, 7.0, np.float32))
    ortseal.seal_model(tmp_path / "a.onnx", tmp_path / "a.sealed.onnx", keys)
    plain = tmp_path / "plain"
    plain.mkdir()
    w = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    add_model(plain / "p.onnx", w, external_file="ortseal-weights.bin")
    x = np.ones(SHAPE, np.float32)
    write_tensors(tmp_path / "in.bin", {"x": x})
    result = hosts[1]("reuse", keyfile, tmp_path / "a.sealed.onnx", plain / "p.onnx", tmp_path / "in.bin",
                      tmp_path / "out.bin")
    assert result.name == "ok", result.message
    assert read_tensors(tmp_path / "out.bin")["y"].tobytes() == (x + w).tobytes()
