"""Every tensor kind of onnx.TensorProto, dense and sparse, sealed and opened exactly (issue 16).

Each kind is held as an initializer and as a Constant node (every attribute kind), inline and in external
data, in the main graph, an If branch and a local function; opened on both routes (in memory, and through
RAM files). Opened tensors must hold the source's exact ONNX bytes; where plain ORT runs a kind, a sealed
model's outputs must be bit-identical to the plain model's.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import SparseTensorProto, TensorProto, helper, numpy_helper

import ortseal
from ortseal import FormatError, TamperedError
from ortseal.model import open as opening
from ortseal.model._graph import SEALED_SUFFIX, is_unseal, iter_bodies, load_model, set_external
from ortseal.model.open import open_sealed_model
from ortseal.model.schema import ELEMENT_BITS, SEALABLE_TYPES, kind_name, raw_length
from ortseal.model.verify import verify_sealed

CPU = ["CPUExecutionProvider"]
IR_VERSION = 10  # onnx 1.23 would write 14, which ORT refuses
OPSET = 21
KINDS = sorted(SEALABLE_TYPES)
SECRET = b"a string weight nobody may read in the sealed files"
SHAPE = [5]  # odd: packed kinds end in a partly used byte


def test_every_onnx_kind_is_sealable():
    known = {v for k, v in TensorProto.DataType.items() if k != "UNDEFINED"}
    assert SEALABLE_TYPES == known


def _dense(kind: int, name: str, seed: int) -> TensorProto:
    """A tensor of ``kind`` with random content: raw bytes (the used bits of packed kinds), or strings."""
    rng = np.random.default_rng(seed)
    if kind == TensorProto.STRING:
        return TensorProto(name=name, data_type=kind, dims=SHAPE,
                           string_data=[SECRET, b"", "\u00e9t\u00e9".encode(), "".join(map(chr, range(1, 400))).encode(),
                                        b"x" * seed])
    raw = bytearray(rng.integers(0, 256, raw_length(kind, SHAPE), dtype=np.uint8).tobytes())
    if kind == TensorProto.BOOL:
        raw = bytearray(b & 1 for b in raw)
    used = SHAPE[0] * ELEMENT_BITS[kind] % 8
    if used:
        raw[-1] &= (1 << used) - 1
    return TensorProto(name=name, data_type=kind, dims=SHAPE, raw_data=bytes(raw))


def _typed(name: str) -> list[TensorProto]:
    """Tensors stored in typed fields (float_data, int32_data, ...) rather than raw_data."""
    return [helper.make_tensor(f"{name}_float", TensorProto.FLOAT, [3], [1.5, -2.0, 3.25]),
            helper.make_tensor(f"{name}_int4", TensorProto.INT4, [5], [1, -2, 7, -8, 3]),
            helper.make_tensor(f"{name}_float16", TensorProto.FLOAT16, [2], np.array([1.5, -3], np.float16)),
            helper.make_tensor(f"{name}_complex64", TensorProto.COMPLEX64, [2], [1 + 2j, -3j]),
            helper.make_tensor(f"{name}_bool", TensorProto.BOOL, [3], [True, False, True]),
            helper.make_tensor(f"{name}_uint2", TensorProto.UINT2, [5], [0, 1, 2, 3, 1])]


def _sparse(kind: int, name: str, seed: int) -> SparseTensorProto:
    values = _dense(kind, name, seed)
    values.dims[:] = [3] if kind != TensorProto.STRING else [5]
    if kind != TensorProto.STRING:
        values.raw_data = values.raw_data[:raw_length(kind, [3])]
        used = 3 * ELEMENT_BITS[kind] % 8
        if used:
            values.raw_data = values.raw_data[:-1] + bytes([values.raw_data[-1] & ((1 << used) - 1)])
    n = values.dims[0]
    indices = numpy_helper.from_array(np.arange(0, 2 * n, 2, dtype=np.int64), "")
    return helper.make_sparse_tensor(values, indices, [2 * n])


def _constants(prefix: str) -> list[onnx.NodeProto]:
    """Constant nodes of every attribute kind, and of every tensor kind as ``value``."""
    nodes = [helper.make_node("Constant", [], [f"{prefix}{kind_name(k).lower()}"],
                              value=_dense(k, f"{prefix}{kind_name(k).lower()}", k)) for k in KINDS]
    nodes += [helper.make_node("Constant", [], [t.name], value=t) for t in _typed(prefix + "typed")]
    nodes += [
        helper.make_node("Constant", [], [prefix + "vfloat"], value_float=2.5),
        helper.make_node("Constant", [], [prefix + "vfloats"], value_floats=[1.0, -2.5, 3.0]),
        helper.make_node("Constant", [], [prefix + "vint"], value_int=-7),
        helper.make_node("Constant", [], [prefix + "vints"], value_ints=[1, 2, 1 << 40]),
        helper.make_node("Constant", [], [prefix + "vstring"], value_string=SECRET),
        helper.make_node("Constant", [], [prefix + "vstrings"], value_strings=[SECRET, b"b"]),
        helper.make_node("Constant", [], [prefix + "sparse_float"],
                         sparse_value=_sparse(TensorProto.FLOAT, "anything", 1)),
        helper.make_node("Constant", [], [prefix + "sparse_int4"],
                         sparse_value=_sparse(TensorProto.INT4, "anything", 2)),
        helper.make_node("Constant", [], [prefix + "sparse_string"],
                         sparse_value=_sparse(TensorProto.STRING, "anything", 3)),
    ]
    return nodes


def _initializers(prefix: str) -> tuple[list[TensorProto], list[SparseTensorProto]]:
    dense = [_dense(k, f"{prefix}{kind_name(k).lower()}", k) for k in KINDS] + _typed(prefix + "typed")
    sparse = [_sparse(k, f"{prefix}sparse_{kind_name(k).lower()}", k)
              for k in (TensorProto.FLOAT, TensorProto.INT4, TensorProto.FLOAT8E5M2, TensorProto.STRING)]
    return dense, sparse


def _outputs(names: list[str]) -> list[onnx.ValueInfoProto]:
    return [helper.make_empty_tensor_value_info(n) for n in names]


def _holder(prefix: str, placement: str, name: str) -> onnx.GraphProto:
    """A graph holding every kind as ``placement``, each also a graph output (through Identity, so that
    the output is a node's)."""
    if placement == "initializer":
        dense, sparse = _initializers(prefix)
        held, nodes = [t.name for t in dense] + [s.values.name for s in sparse], []
    else:
        dense, sparse, nodes = [], [], _constants(prefix)
        held = [n.output[0] for n in nodes]
    nodes += [helper.make_node("Identity", [h], [h + "_out"]) for h in held]
    return helper.make_graph(nodes, name, [], _outputs([h + "_out" for h in held]), dense,
                             sparse_initializer=sparse)


def build(path: Path, placement: str, where: str) -> None:
    """Every kind as ``placement`` ("initializer" or "Constant") in ``where`` ("graph", "subgraph" or
    "function")."""
    functions = []
    if where == "graph":
        graph = _holder("", placement, "main")
    elif where == "subgraph":
        then_g, else_g = _holder("t_", placement, "then"), _holder("e_", placement, "else")
        del else_g.output[:]
        else_g.output.extend(_outputs([o.name.replace("e_", "t_", 1) for o in then_g.output]))
        for n in else_g.node:  # same output names in both branches, as If requires
            if n.op_type == "Identity":
                n.output[0] = n.output[0].replace("e_", "t_", 1)
        outs = [o.name for o in then_g.output]
        graph = helper.make_graph([helper.make_node("If", ["flag"], outs, then_branch=then_g, else_branch=else_g,
                                                    name="choose")], "main",
                                  [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])], _outputs(outs))
    else:
        held = _holder("f_", placement, "fn")
        outs = [o.name for o in held.output]
        functions = [helper.make_function("ai.test", "Hold", [], outs, list(held.node),
                                          [helper.make_opsetid("", OPSET)])]
        graph = helper.make_graph([helper.make_node("Hold", [], outs, domain="ai.test")], "main", [], _outputs(outs))
    model = helper.make_model(graph, ir_version=IR_VERSION, functions=functions,
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.test", 1)])
    onnx.save(model, str(path))


def externalize(path: Path, sparse: bool = True) -> None:
    """Move every raw tensor of the model at ``path`` into external data: initializers, Constant values and
    (with ``sparse``) sparse tensors' values and indices, which onnx's own helper leaves inline; one file."""
    model = onnx.load(str(path))
    data = path.with_name(path.name + ".data")
    with open(data, "wb") as fh:
        def out(t: TensorProto) -> None:
            if t.data_type == TensorProto.STRING:
                return  # ONNX keeps strings inline: they have no raw bytes
            raw = t.raw_data if t.HasField("raw_data") else numpy_helper.from_array(numpy_helper.to_array(t)).raw_data
            t.ClearField("raw_data")
            for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(field)
            offset = fh.tell()
            fh.write(raw)
            set_external(t, data.name, offset, len(raw))

        for _, b in iter_bodies(model):
            if isinstance(b, onnx.GraphProto):
                for t in b.initializer:
                    out(t)
                for sp in b.sparse_initializer if sparse else []:
                    out(sp.values), out(sp.indices)
            for n in b.node:
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.TENSOR:
                        out(a.t)
                    elif a.type == onnx.AttributeProto.SPARSE_TENSOR and sparse:
                        out(a.sparse_tensor.values), out(a.sparse_tensor.indices)
    onnx.save(model, str(path))


def _canon(value: TensorProto | SparseTensorProto, base_dir: str | None) -> bytes:
    """A tensor's content in a form independent of how it is stored: name cleared, typed fields and
    external data turned into raw_data (strings as they are)."""
    copy = type(value)()
    copy.CopyFrom(value)
    parts = [copy.values, copy.indices] if isinstance(copy, SparseTensorProto) else [copy]
    for t in parts:
        if t.data_location == TensorProto.EXTERNAL:
            onnx.external_data_helper.load_external_data_for_tensor(t, base_dir)
            t.ClearField("data_location")
            del t.external_data[:]
        if t.data_type != TensorProto.STRING and not t.HasField("raw_data"):
            raw = numpy_helper.from_array(numpy_helper.to_array(t)).raw_data
            for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(field)
            t.raw_data = raw
    parts[0].ClearField("name")
    return copy.SerializeToString(deterministic=True)


def weights(model: onnx.ModelProto, base_dir: str | None) -> dict[tuple[str, str], bytes]:
    """``{(scope, name): content}`` of every constant tensor of ``model`` (Constant list and string
    attributes as the tensor they produce)."""
    found = {}
    for scope, b in iter_bodies(model):
        if isinstance(b, onnx.GraphProto):
            found.update(((scope, t.name), _canon(t, base_dir)) for t in b.initializer)
            found.update(((scope, s.values.name), _canon(s, base_dir)) for s in b.sparse_initializer)
        for n in b.node:
            if n.op_type != "Constant":
                continue
            a = n.attribute[0]
            if a.type == onnx.AttributeProto.TENSOR:
                found[(scope, n.output[0])] = _canon(a.t, base_dir)
            elif a.type == onnx.AttributeProto.SPARSE_TENSOR:
                found[(scope, n.output[0])] = _canon(a.sparse_tensor, base_dir)
            else:
                value = helper.get_attribute_value(a)
                if a.name.startswith("value_string"):
                    t = TensorProto(data_type=TensorProto.STRING, dims=[] if a.name == "value_string" else [len(value)],
                                    string_data=[value] if a.name == "value_string" else list(value))
                else:
                    dtype = np.float32 if a.name.startswith("value_float") else np.int64
                    t = numpy_helper.from_array(np.asarray(value, dtype))
                found[(scope, n.output[0])] = _canon(t, None)
    return found


@contextlib.contextmanager
def opened_model(dst: Path, keys, route: str, monkeypatch) -> onnx.ModelProto:
    """The plain model ortseal hands ORT for ``dst``, through ``route`` ("memory" or "ram-files")."""
    if route == "ram-files":
        monkeypatch.setattr(opening, "SMALL_MODEL_BYTES", 0)
        monkeypatch.setattr(opening, "INLINE_BELOW", 0)
    with verify_sealed(load_model(dst), keys) as verified, open_sealed_model(verified, keys) as opened:
        assert (opened.path is not None) == (route == "ram-files")
        if opened.path:
            yield onnx.load(opened.path, load_external_data=False), str(Path(opened.path).parent)
        else:
            yield onnx.load_model_from_string(opened.model_bytes), None


@pytest.mark.parametrize("route", ["memory", "ram-files"])
@pytest.mark.parametrize("storage", ["inline", "external"])
@pytest.mark.parametrize("placement,where", [("initializer", "graph"), ("initializer", "subgraph"),
                                             ("Constant", "graph"), ("Constant", "subgraph"),
                                             ("Constant", "function")])
def test_every_kind_opens_to_the_exact_tensor(tmp_path, keys, monkeypatch, placement, where, storage, route):
    src, dst = tmp_path / "m.onnx", tmp_path / "m.sealed.onnx"
    build(src, placement, where)
    if storage == "external":
        externalize(src)
    summary = ortseal.seal_model(src, dst, keys, min_bytes=0)
    source = weights(onnx.load(str(src), load_external_data=False), str(tmp_path))
    assert summary.left_plain == [] and sorted(summary.sealed) == sorted(name for _, name in source)
    sealed = load_model(dst).model
    assert not any(n.op_type == "Constant" and not n.output[0].endswith(SEALED_SUFFIX)
                   and not n.output[0].startswith("ortseal.like.") for _, b in iter_bodies(sealed) for n in b.node)
    assert not any(len(g.sparse_initializer) for _, g in iter_bodies(sealed) if isinstance(g, onnx.GraphProto))
    for f in [dst, dst.with_name(dst.name + ".data")]:
        assert SECRET not in f.read_bytes()
    with opened_model(dst, keys, route, monkeypatch) as (plain, base):
        assert weights(plain, base) == source
        assert not any(is_unseal(n) for _, b in iter_bodies(plain) for n in b.node)


ORT_OPSET = 23  # Cast from float4e2m1 needs 23


def _reader(kind: int) -> dict | None:
    """How plain ORT can hand a ``kind`` weight back to Python: ``Identity``, or ``Cast`` to float where
    numpy has no such type; None where ORT runs neither."""
    for reader in ({"op_type": "Identity"}, {"op_type": "Cast", "to": TensorProto.FLOAT}):
        graph = helper.make_graph([helper.make_node(inputs=["w"], outputs=["y"], **reader)], "probe", [],
                                  _outputs(["y"]), [_dense(kind, "w", 0)])
        model = helper.make_model(graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", ORT_OPSET)])
        try:
            ort.InferenceSession(model.SerializeToString(), providers=CPU).run(None, {})
            return reader
        except Exception:  # noqa: BLE001 - ORT raises several types for kinds it lacks
            continue
    return None


def _ort_model(path: Path, kind: int, reader: dict) -> None:
    """``kind`` as an initializer (dense, external, and sparse for FLOAT) and a Constant, in the main graph, an If
    branch and a local function, every one an output."""
    def holder(prefix: str) -> tuple[list[onnx.NodeProto], list[TensorProto], list[SparseTensorProto], list[str]]:
        nodes = [helper.make_node("Constant", [], [prefix + "c"], value=_dense(kind, prefix + "c", 2))]
        inits = [_dense(kind, prefix + "i", 3)]
        sparse = [_sparse(kind, prefix + "s", 4)] if kind == TensorProto.FLOAT else []
        names = [prefix + "c", prefix + "i"] + [s.values.name for s in sparse]
        nodes += [helper.make_node(inputs=[n], outputs=[n + "_out"], **reader) for n in names]
        return nodes, inits, sparse, names

    nodes, inits, sparse, names = holder("")
    t_nodes, t_inits, t_sparse, t_names = holder("t_")
    e_nodes, e_inits, e_sparse, _ = holder("e_")
    for n in e_nodes:
        if n.op_type == reader["op_type"]:
            n.output[0] = n.output[0].replace("e_", "t_", 1)
    branch_outs = [n + "_out" for n in t_names]
    then_g = helper.make_graph(t_nodes, "then", [], _outputs(branch_outs), t_inits, sparse_initializer=t_sparse)
    else_g = helper.make_graph(e_nodes, "else", [], _outputs(branch_outs), e_inits, sparse_initializer=e_sparse)
    fn = helper.make_function("ai.test", "Hold", [], ["f_r"], [
        helper.make_node("Constant", [], ["f_c"], value=_dense(kind, "f_c", 5)),
        helper.make_node(inputs=["f_c"], outputs=["f_r"], **reader)], [helper.make_opsetid("", ORT_OPSET)])
    nodes += [helper.make_node("If", ["flag"], branch_outs, then_branch=then_g, else_branch=else_g, name="choose"),
              helper.make_node("Hold", [], ["f_out"], domain="ai.test")]
    outs = [n + "_out" for n in names] + branch_outs + ["f_out"]
    graph = helper.make_graph(nodes, "main", [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              _outputs(outs), inits, sparse_initializer=sparse)
    model = helper.make_model(graph, ir_version=IR_VERSION, functions=[fn],
                              opset_imports=[helper.make_opsetid("", ORT_OPSET), helper.make_opsetid("ai.test", 1)])
    onnx.save(model, str(path))
    externalize(path, sparse=False)  # ORT cannot infer shapes through an If holding external sparse tensors


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert (x.tolist() == y.tolist()) if x.dtype == object else (x.tobytes() == y.tobytes())


@pytest.mark.parametrize("kind", KINDS, ids=kind_name)
def test_ort_outputs_bit_identical_on_both_routes(tmp_path, keys, monkeypatch, kind):
    reader = _reader(kind)
    if reader is None:
        pytest.skip(f"plain ORT {ort.__version__} cannot run {kind_name(kind)} (its tensors are checked byte for "
                    "byte in test_every_kind_opens_to_the_exact_tensor)")
    src, dst = tmp_path / "m.onnx", tmp_path / "m.sealed.onnx"
    _ort_model(src, kind, reader)
    summary = ortseal.seal_model(src, dst, keys, min_bytes=0)
    assert summary.left_plain == [] and len(summary.sealed) == (10 if kind == TensorProto.FLOAT else 7)
    for flag in (True, False):
        feeds = {"flag": np.array(flag)}
        want = ort.InferenceSession(str(src), providers=CPU).run(None, feeds)
        _same(ortseal.InferenceSession(str(dst), providers=CPU, keys=keys).run(None, feeds), want)
        with monkeypatch.context() as m:
            m.setattr(opening, "SMALL_MODEL_BYTES", 0)
            m.setattr(opening, "INLINE_BELOW", 0)
            _same(ortseal.InferenceSession(str(dst), providers=CPU, keys=keys).run(None, feeds), want)


def test_a_kind_onnx_does_not_know_is_refused_naming_it(tmp_path, keys):
    graph = helper.make_graph([helper.make_node("Identity", ["odd"], ["y"])], "g", [], _outputs(["y"]),
                              [TensorProto(name="odd", data_type=99, dims=[1], raw_data=b"\0")])
    onnx.save(helper.make_model(graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", OPSET)]),
              str(tmp_path / "m.onnx"))
    with pytest.raises(FormatError, match=r"initializer 'odd'.*data type 99.*cannot seal"):
        ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=0)
    assert not (tmp_path / "s.onnx").exists()
    # excluded, it is left plaintext by the user's choice; here nothing else is left to seal
    with pytest.raises(ValueError, match="all 1 are excluded"):
        ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=0, exclude="^odd$")


def test_nothing_to_seal_message_names_the_real_cause(tmp_path, keys):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], _outputs(["y"]))
    onnx.save(helper.make_model(graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", OPSET)]),
              str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError) as info:
        ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=0)
    assert "no initializer or Constant" in str(info.value) and "--min-bytes" not in str(info.value).split(":")[-1]


def test_ir3_initializer_listed_as_input_and_read_by_no_node(tmp_path, keys):
    """Issue 16 item 2 (light_resnet50): IR 3 lists every initializer as an input; one no node reads."""
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    unused = numpy_helper.from_array(np.ones(4, np.float32), "unused")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "w", "unused")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w, unused])
    onnx.save(helper.make_model(graph, ir_version=3, opset_imports=[helper.make_opsetid("", 8)]),
              str(tmp_path / "m.onnx"))
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=0)
    x = np.full(4, 0.5, np.float32)
    want = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=CPU).run(None, {"x": x})
    sess = ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=keys)
    _same(sess.run(None, {"x": x}), want)
    assert [i.name for i in sess.get_inputs()] == ["x"]
    with pytest.raises(Exception, match="w"):  # a sealed weight cannot be replaced by a feed
        sess.run(None, {"x": x, "w": np.zeros(4, np.float32)})


def _edit_unseal(path: Path, name: str, edit) -> Path:
    model = onnx.load(str(path))
    node = next(n for _, b in iter_bodies(model) for n in b.node if is_unseal(n) and n.output[0] == name)
    edit(node)
    out = path.with_name("edited.onnx")
    onnx.save(model, str(out))
    return out


def _set_attr(node: onnx.NodeProto, attr: str, value) -> None:
    kept = [a for a in node.attribute if a.name != attr]
    del node.attribute[:]
    node.attribute.extend(kept + ([helper.make_attribute(attr, value)] if value is not None else []))


@pytest.mark.parametrize("attack", ["encoding removed", "encoding raw -> tensor_proto", "payload_bytes changed",
                                    "sparse restored dense"])
def test_edited_encoding_is_refused(tmp_path, keys, attack):
    """An attacker changes how a sealed payload is read back: each edit is refused before ORT sees it."""
    src, dst = tmp_path / "m.onnx", tmp_path / "s.onnx"
    build(src, "initializer", "graph")
    ortseal.seal_model(src, dst, keys, min_bytes=0, external_data=False)
    target, edit = {
        "encoding removed": ("string", lambda n: _set_attr(n, "encoding", None)),
        "encoding raw -> tensor_proto": ("float", lambda n: (_set_attr(n, "encoding", "tensor_proto"),
                                                             _set_attr(n, "payload_bytes", 20))),
        "payload_bytes changed": ("string", lambda n: _set_attr(
            n, "payload_bytes", next(a.i for a in n.attribute if a.name == "payload_bytes") + 1)),
        "sparse restored dense": ("sparse_float", lambda n: _set_attr(n, "encoding", None)),
    }[attack]
    edited = _edit_unseal(dst, target, edit)
    with pytest.raises((TamperedError, FormatError)):
        ortseal.InferenceSession(str(edited), providers=CPU, keys=keys)
    with pytest.raises((TamperedError, FormatError)):
        ortseal.verify_model(edited, keys)


def test_fallback_kernel_refuses_sparse_and_string_tensors(tmp_path, keys):
    src, dst = tmp_path / "m.onnx", tmp_path / "s.onnx"
    _ort_model(src, TensorProto.FLOAT, {"op_type": "Identity"})
    ortseal.seal_model(src, dst, keys, min_bytes=0)
    model = onnx.load(str(dst), load_external_data=False)
    unseal = {n.output[0]: n for _, b in iter_bodies(model) for n in b.node if is_unseal(n)}
    assert "fallback_supported" not in {a.name for a in unseal["s"].attribute}
    assert "fallback_supported" in {a.name for a in unseal["i"].attribute}
    with pytest.raises(FormatError, match="'s' is a sparse FLOAT, which the fallback kernel cannot return"):
        ortseal.fallback_session_options(keys, model=dst)
