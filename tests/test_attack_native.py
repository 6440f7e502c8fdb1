"""Attacks on libortseal (issue 22's review): each test carries one out against the C and C++ hosts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortseal
from ortseal import KeySet

from native_host import Host, build, read_tensors, write_tensors
from test_native_models import hosts, publisher  # noqa: F401 (fixtures, one copy)

SHAPE = (64, 512)  # 128 KiB of float32: above the 64 KiB that stays inline, so it goes to the weights arena




def add_model(path: Path, weights: np.ndarray, *, external_file: str | None = None) -> None:
    """y = x + w; w stored inline, or as external data in `external_file` beside the model."""
    w = numpy_helper.from_array(weights, "w")
    shape = list(weights.shape)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [w])
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


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def resign(body: bytes, keys: KeySet, key_id: str) -> bytes:
    """The publisher's signature over a new body (what only the signing key can make)."""
    from ortseal.model._record import body_digest, make_record

    return body + make_record(body_digest(body), keys, sign=True, key_id=key_id)


def test_int32_fields_read_as_onnx_reads_them(hosts, publisher, tmp_path, monkeypatch):
    """ONNX's int32 and enum fields keep the low 32 bits of their varint (protobuf), so data_location
    2^32 + 1 is EXTERNAL to ORT and to Python's onnx, which refuses the model (an external tensor its
    manifest does not list). A C walker comparing all 64 bits takes that tensor for an inline one and
    hands it to ORT unchecked (ORT then finds no such in-memory file: a runtime error, not the refusal).
    Needs the signing key (the body is signed): the C walker must read what ORT reads all the same."""
    keys, keyfile = publisher
    shape = (4, 4)  # small: no weights arena, so ORT resolves external data itself (from the working folder)
    add_model(tmp_path / "src.onnx", np.full(shape, 1.0, np.float32))
    sealed = tmp_path / "m.sealed.onnx"
    ortseal.seal_model(tmp_path / "src.onnx", sealed, keys, min_bytes=1)
    from ortseal.model._record import read_record

    raw = sealed.read_bytes()
    record = read_record(raw)
    model = onnx.load_from_string(raw[:-record.size])
    graph = model.graph
    add = next(n for n in graph.node if n.output and n.output[0] == "y")
    add.output[0] = "t"
    graph.node.append(helper.make_node("Add", ["t", "c"], ["y"]))
    c = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=list(shape))
    for key, value in (("location", "evil.bin"), ("offset", "0"), ("length", str(4 * np.prod(shape)))):
        c.external_data.add(key=key, value=value)
    tensor = c.SerializeToString() + b"\x70" + _varint((1 << 32) + 1)  # data_location: field 14, varint
    graph_bytes = graph.SerializeToString() + b"\x2a" + _varint(len(tensor)) + tensor  # initializer: field 5
    model.ClearField("graph")
    body = model.SerializeToString() + b"\x3a" + _varint(len(graph_bytes)) + graph_bytes  # graph: field 7
    manifest = next(p.value for p in model.metadata_props if p.key == "ortseal.manifest")
    sealed.write_bytes(resign(body, keys, json.loads(manifest)["key_id"]))
    evil = np.full(shape, 1000.0, np.float32).tobytes()
    (tmp_path / "evil.bin").write_bytes(evil)
    x = np.ones(shape, np.float32)
    write_tensors(tmp_path / "in.bin", {"x": x})
    assert python_refuses(sealed, keys)
    monkeypatch.chdir(tmp_path)  # where ORT looks for a relative external file of a model given as bytes
    result = hosts[1]("sealed", keyfile, "-", 0, sealed, tmp_path / "in.bin", tmp_path / "out.bin")
    if result.name == "ok":
        out = read_tensors(tmp_path / "out.bin")["y"]
        pytest.fail(f"the C host accepted a tensor ORT read from an unchecked file (y[0,0] = {out[0, 0]})")
    assert result.name in ("format", "tampered"), result.message


def python_refuses(path: Path, keys: KeySet) -> bool:
    try:
        ortseal.verify_model(path, keys)
    except ortseal.OrtsealError:
        return True
    return False


def test_weights_arena_size_cannot_wrap(hosts, publisher, tmp_path):
    """Plain external tensors whose lengths (each within its data file) sum past 2^64: the arena's size
    wraps to a few bytes and the tensors are read past its end (heap overflow). Needs the signing key and a
    file system with sparse files of 2^62 bytes (tmpfs): what the signed manifest says is still bounded."""
    import tempfile

    keys, keyfile = publisher
    try:
        folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
        with open(folder / "big.bin", "wb") as f:
            f.truncate(1 << 62)
    except OSError:
        pytest.skip("no file system here holds a sparse file of 2^62 bytes")
    try:
        add_model(tmp_path / "src.onnx", np.full((4, 4), 1.0, np.float32))
        sealed = folder / "m.sealed.onnx"
        ortseal.seal_model(tmp_path / "src.onnx", sealed, keys, min_bytes=1)
        from ortseal.model._record import read_record

        raw = sealed.read_bytes()
        model = onnx.load_from_string(raw[:-read_record(raw).size])
        entry = next(p for p in model.metadata_props if p.key == "ortseal.manifest")
        manifest = json.loads(entry.value)
        for i in range(4):
            t = TensorProto(name=f"e{i}", data_type=TensorProto.UINT8, dims=[1 << 62],
                            data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "big.bin"), ("offset", "0"), ("length", str(1 << 62))):
                t.external_data.add(key=key, value=value)
            model.graph.initializer.append(t)
            manifest["external"].append({"location": "big.bin", "offset": 0, "length": 1 << 62, "sha256": "0" * 64})
        entry.value = json.dumps(manifest, separators=(",", ":"), sort_keys=True)
        sealed.write_bytes(resign(model.SerializeToString(), keys, manifest["key_id"]))
        out = tmp_path / "opened"
        out.mkdir()
        result = hosts[0]("model", keyfile, "-", 0, sealed, out)
        assert result.name in ("format", "tampered", "nomem"), result.message
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_a_second_session_from_one_opened_model_is_a_refusal(hosts, publisher, tmp_path):
    """The first session wipes the model's plaintext; a second ortseal_session_create on the same model
    must say so (misuse), not hand ORT a NULL model or, for tensors over 2 GiB, uninitialized shapes."""
    keys, keyfile = publisher
    add_model(tmp_path / "a.onnx", np.full(SHAPE, 1.0, np.float32))
    ortseal.seal_model(tmp_path / "a.onnx", tmp_path / "a.sealed.onnx", keys)
    result = hosts[1]("twice", keyfile, tmp_path / "a.sealed.onnx")
    assert result.name == "misuse", result.message
