"""Attacks on the issue-20 opening route (review of branch ``route``): files that make the opener work before
it refuses them, from someone with no key and from a keyholder. Each runs for real, on real files; costs are
measured in a fresh interpreter."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from models import IR_VERSION, OPSET
from onnx import TensorProto, helper, numpy_helper

import ortseal
from ortseal import FormatError
from ortseal.model._record import _record, body_digest, make_record, read_record

CPU = ["CPUExecutionProvider"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _entry(key: bytes, value: bytes) -> bytes:
    """One ``metadata_props`` entry as a top-level ModelProto field (14)."""
    inner = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value
    return b"\x72" + _varint(len(inner)) + inner


_COST = """
    import json, sys, time
    import ortseal
    from ortseal import KeySet, OrtsealError
    ortseal.InferenceSession  # every import paid before the measure
    def peak():
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
    keys = KeySet.load(sys.argv[2]) if len(sys.argv) > 2 else KeySet.generate()
    before, started, cpu = peak(), time.perf_counter(), time.process_time()
    try:
        ortseal.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"], keys=keys)
        refused = ""
    except OrtsealError as exc:
        refused = type(exc).__name__ + ": " + str(exc)
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                      "rss": peak() - before, "refused": refused}))
"""


def _cost(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_COST), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


FAKE_RECORD = _record(b"ed25519:0123456789abcdef:" + base64.b64encode(bytes(64)))


@pytest.mark.parametrize("tail", [b"", FAKE_RECORD[:-3] + b"!==", FAKE_RECORD + b"\x00"],
                         ids=["no-record", "record-one-byte-off", "record-then-a-byte"])
def test_ten_million_nodes_without_a_valid_record_are_refused_unparsed(tmp_path, tail):
    """No key needed: the 10-million-node file of issue 20, marked sealed (``ortseal.sealed`` and the Unseal
    domain's name in its bytes) but with no record at its end that read_record accepts. The route parsed
    such a file whole to tell whether it was sealed and again to word the refusal (1.5 GB RSS, 26 s of CPU
    here): refused now on its raw bytes alone."""
    graph = b"\x0a\x00" * 10_000_000 + b"\x12\x0aai.ortseal"  # empty nodes, then the graph's name
    path = tmp_path / "hostile.onnx"
    path.write_bytes(b"\x08\x08\x3a" + _varint(len(graph)) + graph + _entry(b"ortseal.sealed", b"3") + tail)
    got = _cost(str(path))
    assert got["refused"].startswith(("FormatError", "TamperedError")), got
    assert got["cpu"] < 3, got
    assert got["rss"] < 2 * path.stat().st_size, got


def test_plain_file_naming_the_unseal_domain_is_refused_unparsed(tmp_path):
    """No key needed: a file that is no sealed model at all but holds the bytes ``ai.ortseal`` (a doc string
    will do) was parsed in full before a device refused it as unsealed."""
    graph = b"\x0a\x00" * 10_000_000 + b"\x12\x0aai.ortseal"
    path = tmp_path / "plain.onnx"
    path.write_bytes(b"\x08\x08\x3a" + _varint(len(graph)) + graph)
    got = _cost(str(path))
    assert got["refused"].startswith(("FormatError", "TamperedError")) and "not a sealed model" in got["refused"], got
    assert got["cpu"] < 3, got
    assert got["rss"] < 2 * path.stat().st_size, got


def _signed(tmp_path, keys, tail: bytes):  # noqa: ANN001, ANN202
    """A sealed model whose body ends with ``tail`` (more top-level fields), signed by its publisher."""
    w = np.ones((16, 16), np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
                              [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION),
              str(tmp_path / "m.onnx"))
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=0, external_data=False)
    data = (tmp_path / "s.onnx").read_bytes()
    body = data[:len(data) - read_record(data).size] + tail
    path = tmp_path / "hostile.onnx"
    path.write_bytes(body + make_record(body_digest(body), keys, sign=True, key_id=keys.content_key_ids[0]))
    return path


def test_metadata_entries_full_of_fields_cost_nothing(tmp_path, keys):
    """A trusted-looking file (any holder of the content key can make one for an unsigned model) whose
    metadata entries each hold 60 000 two-byte unknown fields: 19 MB the manifest reader walked field by
    field in Python (11 s of CPU) before the parse. An entry has two fields; more than a few is refused."""
    stuffing = b"\x18\x00" * 60_000
    tail = (b"\x72" + _varint(len(stuffing)) + stuffing) * 160
    path = _signed(tmp_path, keys, tail)
    keys.save(tmp_path / "keys.json")
    got = _cost(str(path), str(tmp_path / "keys.json"))
    assert got["refused"].startswith("FormatError") and "docs/format.md, limits" in got["refused"], got
    assert got["cpu"] < 2, got


def test_a_few_extra_fields_in_an_entry_still_open(tmp_path, keys):
    """The entry limit refuses nothing a writer makes: an entry with its key and value given twice (the
    last wins, as in protobuf) and one unknown field opens."""
    entry = b"\x0a\x01a\x12\x01b\x0a\x01c\x12\x01d\x18\x05"
    path = _signed(tmp_path, keys, b"\x72" + _varint(len(entry)) + entry)
    sess = ortseal.InferenceSession(str(path), providers=CPU, keys=keys)
    y = sess.run(None, {"x": np.ones((1, 16), np.float32)})[0]
    assert np.array_equal(y, np.full((1, 16), 16, np.float32))
    assert sess.get_modelmeta().custom_metadata_map.get("c") == "d"


def test_a_keyholder_file_of_ten_million_nodes_is_refused_before_the_parse_blows_up(tmp_path, keys):
    """Any device holding the content key can make an unsigned model its allow_unsigned keyset accepts. 19 MB
    of empty nodes with a valid HMAC: the node limit refuses it, but only once protobuf built 10 million
    NodeProtos (1.5 GB RSS here, about 75x the file; a 200 MB file needs 15 GB)."""
    key_id = keys.content_key_ids[0]
    device = ortseal.KeySet(content_keys={key_id: keys.content_key(key_id)}, allow_unsigned=True)
    nodes = b"\x0a\x00" * 10_000_000
    plain = _signed(tmp_path, keys, b"").read_bytes()
    body = plain[:len(plain) - read_record(plain).size] + b"\x3a" + _varint(len(nodes)) + nodes
    path = tmp_path / "hostile.onnx"
    path.write_bytes(body + make_record(body_digest(body), device, sign=False, key_id=key_id))
    device.save(tmp_path / "device.json")
    got = _cost(str(path), str(tmp_path / "device.json"))
    assert got["refused"].startswith("FormatError") and "nodes" in got["refused"], got
    assert got["rss"] < 4 * path.stat().st_size, got


def test_a_keyholder_manifest_of_empty_lists_is_refused_before_it_is_built(tmp_path, keys):
    """A content-key holder's unsigned model whose manifest is 16 MiB (the limit is 64 MiB) of ``[],``:
    json.loads builds 5.5 million lists (about 27 times the file in RSS; at 62 MiB, 1.8 GB and 12.7 s of CPU
    here) before any entry is looked at."""
    key_id = keys.content_key_ids[0]
    device = ortseal.KeySet(content_keys={key_id: keys.content_key(key_id)}, allow_unsigned=True)
    plain = _signed(tmp_path, keys, b"").read_bytes()
    model = onnx.load_from_string(plain[:len(plain) - read_record(plain).size])
    entry = next(p for p in model.metadata_props if p.key == "ortseal.manifest")
    entry.value = '{"format":"ortseal-model-manifest","version":3,"x":[' + "[]," * 5_500_000 + "[]]}"
    body = model.SerializeToString()
    path = tmp_path / "hostile.onnx"
    path.write_bytes(body + make_record(body_digest(body), device, sign=False, key_id=key_id))
    device.save(tmp_path / "device.json")
    got = _cost(str(path), str(tmp_path / "device.json"))
    assert got["refused"].startswith("FormatError"), got
    assert got["rss"] < 4 * path.stat().st_size, got
