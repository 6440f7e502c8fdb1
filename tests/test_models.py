"""Sealed initializers on real ORT sessions: sealing, opening, graph binding, tampering, the fallback kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime.datasets
import pytest
from conftest import contains_run, unlocked_opening_folders
from models import big_embedding, constants_everywhere, control_flow, transformer_like
from onnx import TensorProto, helper

import ortseal
from ortseal import FormatError, KeyNotFoundError, KeySet, TamperedError, UnsafeOptionError
from ortseal.model._graph import NOTE_KEY, OPEN_WITH, PLAIN_ORT_ERROR, SEALED_SUFFIX, load_model

CPU = ["CPUExecutionProvider"]


def shm_leftovers() -> set[str]:
    return unlocked_opening_folders()


def run_plain(path, feeds):
    return ort.InferenceSession(str(path), providers=CPU).run(None, feeds)


def run_sealed(path, feeds, keys, **kw):
    return ortseal.InferenceSession(str(path), providers=CPU, keys=keys, **kw).run(None, feeds)


def assert_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        if x.dtype == object:  # strings: compare the values, not the object pointers
            assert x.tolist() == y.tolist()
        else:
            assert x.tobytes() == y.tobytes()  # bit-identical, not merely close


def plain_options(so: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """Graph optimizations and pre-packing off: ORT then runs the same kernels on constant weights (plain
    model) as on Unseal outputs (fallback kernel), so outputs are bit-identical on any CPU."""
    so = so or ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.add_session_config_entry("session.disable_prepacking", "1")
    return so


def assert_fallback_matches(sealed, plain, feeds, keys) -> None:
    """The fallback kernel against the plain model. With default options ORT optimizes constant weights
    (pre-packed GEMM, fusions) but not Unseal outputs, so float32 sums are reassociated: each output of a
    length-k dot product may differ by about k * 2**-24 relative; the transformer's longest reduction is
    k = 512, so rtol 1e-4 leaves a 3x margin. With optimizations and pre-packing off, bit-identical."""
    fb = ortseal.fallback_session_options(keys, model=sealed)
    fast = ort.InferenceSession(fb.model_bytes, fb.sess_options, providers=CPU).run(None, feeds)
    want = run_plain(plain, feeds)
    for got, ref in zip(fast, want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    fb = ortseal.fallback_session_options(keys, model=sealed)
    exact = ort.InferenceSession(fb.model_bytes, plain_options(fb.sess_options), providers=CPU).run(None, feeds)
    assert_identical(exact, ort.InferenceSession(str(plain), plain_options(), providers=CPU).run(None, feeds))


def sealed_files(dst: Path) -> list[Path]:
    return [p for p in dst.parent.iterdir() if p.name.startswith(dst.name)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The transformer-like model, plain and sealed (int64 position ids included)."""
    d = tmp_path_factory.mktemp("tiny")
    weights = transformer_like(d / "model.onnx")
    keys = KeySet.generate()
    (d / "sealed").mkdir()
    summary = ortseal.seal_model(d / "model.onnx", d / "sealed" / "model.onnx", keys, min_bytes=64)
    feeds = {"ids": np.random.default_rng(0).integers(0, 512, (2, 16), dtype=np.int64)}
    return d, keys, weights, summary, feeds


def test_a_plain_loader_is_told_how_to_open_a_sealed_model(tiny):
    """The error every loader but ortseal's gives names the Unseal op; the model's description (Netron's
    "description", onnxruntime's get_modelmeta()) and its metadata, both signed, name the fix."""
    d, *_ = tiny
    sealed = d / "sealed" / "model.onnx"
    with pytest.raises(Exception, match=PLAIN_ORT_ERROR.replace("(", r"\(").replace(")", r"\)")):
        ort.InferenceSession(str(sealed), providers=CPU)
    model = onnx.load(str(sealed), load_external_data=False)
    assert model.doc_string.startswith(OPEN_WITH) and "ortseal.InferenceSession" in OPEN_WITH
    assert {p.key: p.value for p in model.metadata_props}[NOTE_KEY] == OPEN_WITH


def test_release_up_to_2_63_minus_1(tmp_path, keys):
    """Releases use the blob header's 63 bits: above 2**53 - 1 too (the manifest writes the exact digits)."""
    transformer_like(tmp_path / "m.onnx", d=16, vocab=32, seq=4)
    top = 2**63 - 1
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=64, release=top, progress=False)
    assert ortseal.verify_model(tmp_path / "s.onnx", keys, min_release=top).release == top
    assert ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=keys, min_release=top).is_sealed
    manifest = {p.key: p.value for p in onnx.load(str(tmp_path / "s.onnx"), load_external_data=False).metadata_props}
    assert f'"release":{top},' in manifest["ortseal.manifest"]  # exact digits, not a rounded double
    with pytest.raises(ValueError, match=r"release must be an int in \[0, 2\*\*63 - 1\]"):
        ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "t.onnx", keys, min_bytes=64, release=top + 1)


@pytest.mark.parametrize("bad", [-1, True, 2**63, 1.0, "4"])
def test_verify_model_refuses_a_bad_min_release_as_inference_session_does(tiny, bad):
    d, keys, *_ = tiny
    for opens in (lambda: ortseal.verify_model(d / "sealed" / "model.onnx", keys, min_release=bad),
                  lambda: ortseal.InferenceSession(str(d / "sealed" / "model.onnx"), providers=CPU, keys=keys,
                                                   min_release=bad)):
        with pytest.raises(ValueError, match="min_release must be an int"):
            opens()


def test_fallback_refuses_a_model_over_2_gib_before_reading_it(tmp_path, keys):
    """A sealed model whose plain external tensors add up to more than protobuf's 2 GiB: the fallback (one
    in-memory model) raises FormatError on the signed lengths, before reading them. The 2 GiB are a sparse
    file and a publisher's re-signed manifest, so nothing of that size is written or read."""

    from ortseal.model._record import MANIFEST_KEY, RECORD_KEY, Manifest, body_digest, make_record

    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(np.ones(64, np.float32), "b")])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx", save_as_external_data=True, size_threshold=0,
              location="m.onnx.data")
    sealed = tmp_path / "s.onnx"
    ortseal.seal_model(tmp_path / "m.onnx", sealed, keys, min_bytes=1, exclude="^b$", progress=False)
    model = onnx.load(str(sealed), load_external_data=False)
    huge = 2**31
    b = next(t for t in model.graph.initializer if t.name == "b")
    offset = int(next(e.value for e in b.external_data if e.key == "offset"))
    next(e for e in b.external_data if e.key == "length").value = str(huge)
    b.dims[:] = [huge // 4]
    props = [p for p in model.metadata_props if p.key != RECORD_KEY]
    manifest = Manifest.from_json(next(p.value for p in props if p.key == MANIFEST_KEY))
    manifest.external = [manifest.external[0]._replace(length=huge)]
    next(p for p in props if p.key == MANIFEST_KEY).value = manifest.to_json()
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    body = model.SerializeToString()
    sealed.write_bytes(body + make_record(body_digest(body), keys, sign=True, key_id=manifest.key_id))
    os.truncate(tmp_path / "s.onnx.data", offset + huge)  # sparse: no 2 GiB written
    assert os.stat(tmp_path / "s.onnx.data").st_blocks * 512 < 2**20
    with pytest.raises(FormatError, match="would be 2.0 GiB, over protobuf's 2 GiB; open it with ortseal.InferenceSession"):
        ortseal.fallback_session_options(keys, model=str(sealed))


def test_ort_example_model_bit_identical(tmp_path, keys):
    src = Path(onnxruntime.datasets.get_example("mul_1.onnx"))
    shutil.copy(src, tmp_path / "mul_1.onnx")
    ortseal.seal_model(tmp_path / "mul_1.onnx", tmp_path / "mul_1.sealed.onnx", keys, min_bytes=1)
    # (mul_1 is IR 3 with W not listed as an input, so the onnx checker rejects the original already)
    feeds = {"X": np.random.default_rng(1).standard_normal((3, 2)).astype(np.float32)}
    assert_identical(run_sealed(tmp_path / "mul_1.sealed.onnx", feeds, keys), run_plain(src, feeds))
    assert_fallback_matches(tmp_path / "mul_1.sealed.onnx", src, feeds, keys)


@pytest.mark.parametrize("name", ["sigmoid.onnx", "logreg_iris.onnx"])
def test_ort_example_models_without_weights(tmp_path, keys, name):
    src = onnxruntime.datasets.get_example(name)
    with pytest.raises(ValueError, match="no constant tensor"):
        ortseal.seal_model(src, tmp_path / "x.onnx", keys)
    assert not list(tmp_path.iterdir())
    sess = ortseal.InferenceSession(src, providers=CPU)  # unsealed models pass through without keys
    assert not sess.is_sealed and sess.get_inputs()
    # a device given keys refuses a plain model put where it expects a sealed one
    with pytest.raises(FormatError, match="not a sealed model"):  # a refusal by policy, not an authentication
        ortseal.InferenceSession(src, providers=CPU, keys=keys)


def test_sealed_model_without_keys_is_misuse(tiny):
    """A sealed model and no keys= is a call that cannot work: a TypeError (misuse), not a key lookup."""
    d, *_ = tiny
    with pytest.raises(TypeError, match="pass keys="):
        ortseal.InferenceSession(str(d / "sealed" / "model.onnx"), providers=CPU)


def test_transformer_bit_identical_and_valid_onnx(tiny):
    d, keys, weights, summary, feeds = tiny
    sealed = d / "sealed" / "model.onnx"
    assert set(summary.sealed) == {k for k, v in weights.items() if v.nbytes >= 64}
    assert "pos_ids" in summary.sealed  # int64 sealed too
    onnx.checker.check_model(str(sealed), full_check=True)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(sealed), load_external_data=False))
    types = {v.name: v.type.tensor_type for v in inferred.graph.value_info}
    assert types["wq"].elem_type == TensorProto.FLOAT and [x.dim_value for x in types["wq"].shape.dim] == [128, 128]
    assert types["pos_ids"].elem_type == TensorProto.INT64
    sess = ortseal.InferenceSession(str(sealed), providers=CPU, keys=keys)
    assert sess.is_sealed
    assert_identical(sess.run(None, feeds), run_plain(d / "model.onnx", feeds))
    assert not shm_leftovers()


def test_sealed_files_hold_no_plaintext(tiny):
    d, _, weights, summary, _ = tiny
    for f in sealed_files(d / "sealed" / "model.onnx"):
        data = f.read_bytes()
        for name in summary.sealed:
            assert not contains_run(data, weights[name].tobytes()), (f, name)


def test_everything_else_is_preserved(tiny):
    d, *_ = tiny
    plain = onnx.load(str(d / "model.onnx"), load_external_data=False)
    sealed = onnx.load(str(d / "sealed" / "model.onnx"), load_external_data=False)
    assert sealed.ir_version == plain.ir_version and sealed.doc_string == f"{OPEN_WITH}\n\n{plain.doc_string}"
    assert sealed.producer_name == plain.producer_name
    assert {p.key: p.value for p in plain.metadata_props}.items() <= {p.key: p.value for p in sealed.metadata_props}.items()
    assert [o for o in sealed.opset_import if o.domain != "ai.ortseal"] == list(plain.opset_import)
    assert sealed.graph.name == plain.graph.name and sealed.graph.doc_string == plain.graph.doc_string
    assert sealed.graph.value_info == plain.graph.value_info
    assert list(sealed.graph.input) == list(plain.graph.input) and list(sealed.graph.output) == list(plain.graph.output)
    original_nodes = [n for n in sealed.graph.node if n.domain != "ai.ortseal"]
    assert original_nodes == list(plain.graph.node)
    assert next(n for n in original_nodes if n.name == "residual").doc_string == "the residual add"


def test_session_api_keeps_working(tiny):
    d, keys, _, _, feeds = tiny
    sess = ortseal.InferenceSession(str(d / "sealed" / "model.onnx"), providers=CPU, keys=keys)
    want = run_plain(d / "model.onnx", feeds)
    assert [i.name for i in sess.get_inputs()] == ["ids"] and [o.name for o in sess.get_outputs()] == ["y"]
    assert sess.get_providers() == CPU
    assert sess._model_bytes is None and sess._model_path == str(d / "sealed" / "model.onnx")
    binding = sess.io_binding()
    binding.bind_cpu_input("ids", feeds["ids"])
    binding.bind_output("y")
    sess.run_with_iobinding(binding)
    assert binding.copy_outputs_to_cpu()[0].tobytes() == want[0].tobytes()
    sess.set_providers(CPU)  # ORT rebuilds the session: ortseal opens the sealed model again
    assert_identical(sess.run(None, feeds), want)
    assert sess.get_modelmeta().custom_metadata_map["author"] == "tests"
    assert not shm_leftovers()


@pytest.mark.parametrize("route", ["ram-files", "memory"])
def test_both_routes_give_the_same_outputs(tiny, monkeypatch, route):
    """The tiny model opens in memory (under SMALL_MODEL_BYTES); forced through one RAM file per tensor it
    must give the same outputs and leave nothing behind."""
    d, keys, _, _, feeds = tiny
    if route == "memory":
        monkeypatch.setenv("ORTSEAL_RUNTIME_DIR", "none")
    else:
        monkeypatch.setattr("ortseal.model.open.SMALL_MODEL_BYTES", 0)
    assert_identical(run_sealed(d / "sealed" / "model.onnx", feeds, keys), run_plain(d / "model.onnx", feeds))
    assert not shm_leftovers()


def test_runtime_dir_on_disk_is_refused(tiny, monkeypatch, tmp_path):
    d, keys, _, _, feeds = tiny
    monkeypatch.setenv("ORTSEAL_RUNTIME_DIR", str(tmp_path))
    if not str(tmp_path).startswith("/dev/shm"):
        with pytest.raises(UnsafeOptionError, match="tmpfs"):
            ortseal.InferenceSession(str(d / "sealed" / "model.onnx"), providers=CPU, keys=keys)
        assert not list(tmp_path.iterdir())


def test_optimized_model_filepath_refused(tiny, tmp_path):
    d, keys, *_ = tiny
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    with pytest.raises(UnsafeOptionError, match="optimized_model_filepath"):
        ortseal.InferenceSession(str(d / "sealed" / "model.onnx"), so, providers=CPU, keys=keys)
    assert not (tmp_path / "opt.onnx").exists()


def test_ep_context_dump_refused(tiny, tmp_path):
    d, keys, *_ = tiny
    so = ort.SessionOptions()
    so.add_session_config_entry("ep.context_enable", "1")
    so.add_session_config_entry("ep.context_file_path", str(tmp_path / "ctx.onnx"))
    with pytest.raises(UnsafeOptionError, match="ep.context_enable"):
        ortseal.InferenceSession(str(d / "sealed" / "model.onnx"), so, providers=CPU, keys=keys)
    assert not list(tmp_path.iterdir())
    off = ort.SessionOptions()
    off.add_session_config_entry("ep.context_enable", "0")
    assert ortseal.InferenceSession(str(d / "sealed" / "model.onnx"), off, providers=CPU, keys=keys).is_sealed


def test_fallback_kernel_same_outputs(tiny, caplog):
    d, keys, _, _, feeds = tiny
    sealed = str(d / "sealed" / "model.onnx")
    fb = ortseal.fallback_session_options(keys, model=sealed)
    with caplog.at_level("WARNING", logger="ortseal"):
        sess = ort.InferenceSession(fb.model_bytes, fb.sess_options, providers=CPU)
        first = sess.run(None, feeds)
        second = sess.run(None, feeds)
    assert_identical(second, first)
    assert_fallback_matches(sealed, d / "model.onnx", feeds, keys)
    warnings = [r for r in caplog.records if "fallback" in r.getMessage()]
    assert len(warnings) <= 1 and all("ortseal.InferenceSession" in r.getMessage() for r in warnings)


def test_control_flow_subgraphs(tmp_path, keys):
    weights = control_flow(tmp_path / "cf.onnx")
    summary = ortseal.seal_model(tmp_path / "cf.onnx", tmp_path / "cf.sealed.onnx", keys)
    assert sorted(summary.sealed) == sorted(weights)
    sealed = onnx.load(str(tmp_path / "cf.sealed.onnx"), load_external_data=False)
    if_node = next(n for n in sealed.graph.node if n.op_type == "If")
    then_g = next(a.g for a in if_node.attribute if a.name == "then_branch")
    assert then_g.node[0].op_type == "Unseal" and then_g.initializer[0].name == "w_then" + SEALED_SUFFIX
    onnx.checker.check_model(str(tmp_path / "cf.sealed.onnx"), full_check=True)
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x_in": x, "flag": np.array(flag), "trip": np.array(3, np.int64)}
        want = run_plain(tmp_path / "cf.onnx", feeds)
        assert_identical(run_sealed(tmp_path / "cf.sealed.onnx", feeds, keys), want)
        assert_fallback_matches(tmp_path / "cf.sealed.onnx", tmp_path / "cf.onnx", feeds, keys)
    for f in sealed_files(tmp_path / "cf.sealed.onnx"):
        for w in weights.values():
            assert not contains_run(f.read_bytes(), w.tobytes())


def test_constant_nodes_sealed_in_graphs_subgraphs_and_functions(tmp_path, keys):
    weights = constants_everywhere(tmp_path / "c.onnx")
    src, dst = tmp_path / "c.onnx", tmp_path / "c.sealed.onnx"
    summary = ortseal.seal_model(src, dst, keys, min_bytes=0, exclude="^labels$")  # the fallback serves no strings
    assert sorted(summary.sealed) == sorted(weights)
    assert [(p.name, p.reason, p.detail) for p in summary.left_plain] == [("labels", "excluded", "")]
    infos = {i.name: i for i in ortseal.inspect_model(dst)}
    assert {n: (i.source, i.scope) for n, i in infos.items()} == {
        "c_main": ("Constant", ""), "c_list": ("Constant", ""), "w_else": ("initializer", "/choose.else_branch"),
        "c_then": ("Constant", "/choose.then_branch"), "c_fn": ("Constant", "fn:ai.test:Proj")}
    for f in sealed_files(dst):
        for w in weights.values():
            assert not contains_run(f.read_bytes(), w.tobytes()[:64], 64)
    x = np.random.default_rng(4).standard_normal((4, 16)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x_in": x, "flag": np.array(flag)}
        want = run_plain(src, feeds)
        assert_identical(run_sealed(dst, feeds, keys), want)
        fb = ortseal.fallback_session_options(keys, model=dst)
        exact = ort.InferenceSession(fb.model_bytes, plain_options(fb.sess_options), providers=CPU).run(None, feeds)
        plain = ort.InferenceSession(str(src), plain_options(), providers=CPU).run(None, feeds)
        assert exact[0].tobytes() == plain[0].tobytes() and list(exact[1]) == list(plain[1])
    report = ortseal.verify_model(dst, keys)
    assert report.decrypted and report.sealed_tensors == 5
    assert not ortseal.verify_model(dst, keys.public()).decrypted


def test_swapped_constant_blobs_are_refused(tmp_path, keys):
    """An attacker exchanges the sealed blobs of two Constant weights of the same shape and type."""
    constants_everywhere(tmp_path / "c.onnx")
    ortseal.seal_model(tmp_path / "c.onnx", tmp_path / "c.sealed.onnx", keys, external_data=False)
    model = onnx.load(str(tmp_path / "c.sealed.onnx"))
    then_g = next(a.g for n in model.graph.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")
    blob = {n.output[0]: n for g in (model.graph, then_g) for n in g.node if n.output[0].endswith(SEALED_SUFFIX)}
    main, then = blob["c_main" + SEALED_SUFFIX].attribute[0].t, blob["c_then" + SEALED_SUFFIX].attribute[0].t
    main.raw_data, then.raw_data = then.raw_data, main.raw_data
    onnx.save(model, str(tmp_path / "swapped.onnx"))
    feeds = {"x_in": np.zeros((4, 16), np.float32), "flag": np.array(True)}
    with pytest.raises(TamperedError):
        run_sealed(tmp_path / "swapped.onnx", feeds, keys)
    with pytest.raises(TamperedError):
        ortseal.verify_model(tmp_path / "swapped.onnx", keys.public())


def test_string_constant_is_sealed(tmp_path, keys):
    constants_everywhere(tmp_path / "c.onnx")
    summary = ortseal.seal_model(tmp_path / "c.onnx", tmp_path / "s.onnx", keys, include="^(labels|c_main)$",
                                 min_bytes=0)
    assert sorted(summary.sealed) == ["c_main", "labels"]
    assert b"dog" not in (tmp_path / "s.onnx").read_bytes()
    feeds = {"x_in": np.ones((4, 16), np.float32), "flag": np.array(True)}
    assert_identical(run_sealed(tmp_path / "s.onnx", feeds, keys), run_plain(tmp_path / "c.onnx", feeds))


def test_verify_fails_exactly_when_opening_fails(tmp_path, keys):
    """A model whose crypto is sound but whose graph ORT refuses: verify must not pass it."""
    w = np.ones((64, 64), np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("NoSuchOp", ["m"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [onnx.numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
              str(tmp_path / "bad.onnx"))
    ortseal.seal_model(tmp_path / "bad.onnx", tmp_path / "bad.sealed.onnx", keys)
    with pytest.raises(FormatError, match="ONNX Runtime cannot open"):
        ortseal.verify_model(tmp_path / "bad.sealed.onnx", keys)
    with pytest.raises(Exception, match="NoSuchOp"):
        ortseal.InferenceSession(str(tmp_path / "bad.sealed.onnx"), providers=CPU, keys=keys)


# -- graph binding ---------------------------------------------------------------------------------
def _edit_output_weight(m):
    m.graph.output.append(helper.make_tensor_value_info("wq", TensorProto.FLOAT, [128, 128]))


def _edit_attribute(m):
    next(n for n in m.graph.node if n.op_type == "Softmax").attribute[0].i = 1


def _edit_plain_initializer(m):
    t = next(t for t in m.graph.initializer if t.name == "scale")
    t.raw_data = np.array([1.0], np.float32).tobytes()


def _edit_remove_node(m):
    nodes = [n for n in m.graph.node if n.op_type != "Relu"]
    for n in nodes:
        n.input[:] = ["h1" if i == "h2" else i for i in n.input]
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def _edit_opset(m):
    m.opset_import[0].version = 18


def _edit_metadata(m):
    """Metadata is signed too: an application's class labels swapped."""
    next(p for p in m.metadata_props if p.key == "author").value = "someone else"


def _edit_doc_string(m):
    m.graph.node[0].doc_string = "edited"
    m.producer_name = "edited"


def _swap_blobs(m):
    a = next(t for t in m.graph.initializer if t.name == "wq" + SEALED_SUFFIX)
    b = next(t for t in m.graph.initializer if t.name == "wk" + SEALED_SUFFIX)
    ea, eb = list(a.external_data), list(b.external_data)
    del a.external_data[:], b.external_data[:]
    a.external_data.extend(eb)
    b.external_data.extend(ea)


@pytest.mark.parametrize("edit", [_edit_output_weight, _edit_attribute, _edit_plain_initializer, _edit_remove_node,
                                  _edit_opset, _edit_metadata, _edit_doc_string, _swap_blobs])
def test_graph_edits_are_refused_before_any_plaintext(tiny, edit):
    d, keys, *_ = tiny
    path = d / "sealed" / f"edited_{edit.__name__}.onnx"
    model = onnx.load(str(d / "sealed" / "model.onnx"), load_external_data=False)
    edit(model)
    onnx.save(model, str(path))
    try:
        before = shm_leftovers()
        with pytest.raises(TamperedError):
            ortseal.InferenceSession(str(path), providers=CPU, keys=keys)
        with pytest.raises(TamperedError):
            ortseal.verify_model(path, keys)
        with pytest.raises(TamperedError):
            ortseal.fallback_session_options(keys, model=path)
        assert shm_leftovers() == before
    finally:
        path.unlink()


# -- tampered, missing and wrong inputs ------------------------------------------------------------
@pytest.fixture
def sealed_copy(tiny, tmp_path):
    d, keys, *_ = tiny
    for f in sealed_files(d / "sealed" / "model.onnx"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "model.onnx", keys


@pytest.mark.parametrize("where", [0, 30, 5000, -70, -1])  # magic, salt, ciphertext, tag, signature
def test_flipped_byte_in_payload(sealed_copy, where):
    path, keys = sealed_copy
    data = path.with_name("model.onnx.data")
    blob = bytearray(data.read_bytes())
    blob[where] ^= 0x10
    data.write_bytes(blob)
    with pytest.raises((TamperedError, FormatError)):
        ortseal.InferenceSession(str(path), providers=CPU, keys=keys)
    assert not shm_leftovers()


def test_truncated_payload(sealed_copy):
    path, keys = sealed_copy
    data = path.with_name("model.onnx.data")
    data.write_bytes(data.read_bytes()[:-1000])
    with pytest.raises(TamperedError):
        ortseal.InferenceSession(str(path), providers=CPU, keys=keys)


def test_wrong_key_untrusted_signer_and_device_keyset(sealed_copy, other_keys):
    path, keys = sealed_copy
    # the signer before any key lookup, and before the model is parsed: trusted for no model at all
    with pytest.raises(TamperedError, match=rf"the model is signed by {keys.signing_key_ids[0]}, which this "
                       r"keyset does not trust \(wrong keyset\?\)"):
        ortseal.InferenceSession(str(path), providers=CPU, keys=other_keys)
    with pytest.raises(KeyNotFoundError):
        ortseal.InferenceSession(str(path), providers=CPU, keys=KeySet.merge(other_keys.without_signing(), keys.public()))
    content_only = KeySet(content_keys={k: keys.content_key(k) for k in keys.content_key_ids})
    with pytest.raises(TamperedError, match="does not trust"):
        ortseal.InferenceSession(str(path), providers=CPU, keys=KeySet.merge(content_only, other_keys.public()))
    device = KeySet.merge(keys.without_signing(), keys.public())
    assert ortseal.InferenceSession(str(path), providers=CPU, keys=device).is_sealed


def test_unsigned_model_refused_where_signature_required(tmp_path, keys):
    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    with pytest.raises(ValueError, match="could never open"):
        ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "u.onnx", keys, sign=False)
    lax = KeySet(content_keys={k: keys.content_key(k) for k in keys.content_key_ids}, allow_unsigned=True)
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "u.onnx", lax, sign=False)
    for strict in (keys, KeySet(content_keys={k: keys.content_key(k) for k in keys.content_key_ids})):
        with pytest.raises(TamperedError, match="unsigned"):
            ortseal.InferenceSession(str(tmp_path / "u.onnx"), providers=CPU, keys=strict)
    assert ortseal.InferenceSession(str(tmp_path / "u.onnx"), providers=CPU, keys=lax).is_sealed


# -- sealing errors --------------------------------------------------------------------------------
def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_sealing_errors_leave_nothing(tmp_path, keys, tiny):
    d, *_ = tiny
    with pytest.raises(FormatError, match="does not exist"):
        ortseal.seal_model(tmp_path / "missing.onnx", tmp_path / "out.onnx", keys)
    (tmp_path / "junk.onnx").write_bytes(os.urandom(1000))
    with pytest.raises(FormatError, match="not an ONNX model"):
        ortseal.seal_model(tmp_path / "junk.onnx", tmp_path / "out.onnx", keys)
    with pytest.raises(FormatError, match="already sealed"):
        ortseal.seal_model(d / "sealed" / "model.onnx", tmp_path / "out.onnx", keys)
    unknown = helper.make_graph([helper.make_node("Identity", ["s"], ["o"])], "g", [],
                                [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])],
                                [TensorProto(name="s", data_type=99, dims=[2], raw_data=b"ab" * 600)])
    onnx.save(helper.make_model(unknown, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "odd.onnx"))
    with pytest.raises(FormatError, match="cannot be sealed"):
        ortseal.seal_model(tmp_path / "odd.onnx", tmp_path / "out.onnx", keys)
    # a source whose external data is shorter than its tensors: fails mid-way, leaves nothing
    for f in ("model.onnx", "model.onnx.weights"):
        shutil.copy(d / f, tmp_path / f)
    weights = tmp_path / "model.onnx.weights"
    weights.write_bytes(weights.read_bytes()[:-4096])
    with pytest.raises(FormatError, match="shorter"):
        ortseal.seal_model(tmp_path / "model.onnx", tmp_path / "out.onnx", keys)
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "out.onnx.data").exists()
    assert _no_temp_files(tmp_path)


def test_include_exclude_and_inline(tmp_path, keys, tiny):
    d, _, weights, _, feeds = tiny
    s = ortseal.seal_model(d / "model.onnx", tmp_path / "only_w.onnx", keys, include=r"^w[qkvo]$", exclude="wo")
    assert sorted(s.sealed) == ["wk", "wq", "wv"]
    assert_identical(run_sealed(tmp_path / "only_w.onnx", feeds, keys), run_plain(d / "model.onnx", feeds))
    s = ortseal.seal_model(d / "model.onnx", tmp_path / "inline.onnx", keys, external_data=False)
    assert s.data_file is None and not (tmp_path / "inline.onnx.data").exists()
    blob = (tmp_path / "inline.onnx").read_bytes()
    assert_identical(ortseal.InferenceSession(blob, providers=CPU, keys=keys).run(None, feeds),
                     run_plain(d / "model.onnx", feeds))
    assert not contains_run(blob, weights["wq"].tobytes())


def test_model_loaded_whole_is_not_needed_for_sealing(tiny):
    """The sealed model file itself stays small: payloads are streamed to the data file."""
    d, *_ = tiny
    assert (d / "sealed" / "model.onnx").stat().st_size < 16 * 1024
    model = load_model(d / "sealed" / "model.onnx").model
    assert all(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer if t.name.endswith(SEALED_SUFFIX))


@pytest.mark.slow
def test_model_over_2_gib(tmp_path, keys, capfd):
    rows, dim = 540_000, 1024  # 2.06 GiB float32
    table = big_embedding(tmp_path / "big.onnx", rows, dim)
    summary = ortseal.seal_model(tmp_path / "big.onnx", tmp_path / "big.sealed.onnx", keys, progress=True)
    assert summary.sealed == ["table"] and summary.plaintext_bytes > 2 << 30
    assert "\r" not in capfd.readouterr().err  # stderr is not a terminal here: no progress frames
    (tmp_path / "big.onnx.data").unlink()  # the plaintext is gone: only the sealed copy remains
    onnx.checker.check_model(str(tmp_path / "big.sealed.onnx"))
    ids = np.array([0, 1, rows // 2, rows - 1], np.int64)
    sess = ortseal.InferenceSession(str(tmp_path / "big.sealed.onnx"), providers=CPU, keys=keys)
    (y,) = sess.run(None, {"ids": ids})
    assert y.tobytes() == np.asarray(table[ids]).tobytes()
    assert not shm_leftovers()
    # 3 MiB of plaintext from the start, middle and end of the table, searched through the whole sealed file
    sample = b"".join(np.asarray(table[r:r + 256]).tobytes() for r in (0, rows // 2, rows - 256))
    data = np.memmap(tmp_path / "big.sealed.onnx.data", np.uint8, "r")
    chunk = 256 << 20
    for start in range(0, len(data), chunk):
        assert not contains_run(data[start:start + chunk + 32].tobytes(), sample), start


def test_float16_weights(tmp_path, keys):
    """float16 opens at plain speed through ortseal; the extensions fallback, which cannot return float16,
    is refused cleanly (with or without model=) instead of aborting the process."""
    w = helper.make_tensor("w", TensorProto.FLOAT16, [64, 64],
                           np.random.default_rng(5).standard_normal((64, 64)).astype(np.float16).tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "f16",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 64])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
              str(tmp_path / "f16.onnx"))
    ortseal.seal_model(tmp_path / "f16.onnx", tmp_path / "f16.sealed.onnx", keys)
    feeds = {"x": np.random.default_rng(6).standard_normal((2, 64)).astype(np.float16)}
    assert_identical(run_sealed(tmp_path / "f16.sealed.onnx", feeds, keys), run_plain(tmp_path / "f16.onnx", feeds))
    with pytest.raises(FormatError, match="fallback kernel cannot return"):
        ortseal.fallback_session_options(keys, model=tmp_path / "f16.sealed.onnx")
    # a session given the kernel for another model still refuses the float16 node cleanly at creation
    ortseal.seal_model(onnxruntime.datasets.get_example("mul_1.onnx"), tmp_path / "mul.sealed.onnx", keys, min_bytes=1)
    fb = ortseal.fallback_session_options(keys, model=tmp_path / "mul.sealed.onnx")
    with pytest.raises(Exception, match="not a registered function/op"):  # no kernel: refused, no abort
        ort.InferenceSession(str(tmp_path / "f16.sealed.onnx"), fb.sess_options, providers=CPU)


def test_scalar_initializers_and_bad_selections(tmp_path, keys):
    w = np.array(3.5, np.float32)
    graph = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "scalar",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [onnx.numpy_helper.from_array(w, "s")])
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "s.onnx"))
    summary = ortseal.seal_model(tmp_path / "s.onnx", tmp_path / "sealed.onnx", keys, min_bytes=0)
    assert summary.sealed == ["s"]
    feeds = {"x": np.array([1, 2], np.float32)}
    assert_identical(run_sealed(tmp_path / "sealed.onnx", feeds, keys), run_plain(tmp_path / "s.onnx", feeds))
    for option in ("include", "exclude"):
        with pytest.raises(ValueError, match=f"--{option} .* not a valid regular expression"):
            ortseal.seal_model(tmp_path / "s.onnx", tmp_path / "x.onnx", keys, **{option: "(["})
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("route", ["ram-file", "memory"])
def test_shape_like_inputs_sealed_still_open(tmp_path, keys, monkeypatch, route):
    """ORT reads a Reshape's shape while it resolves the graph, before external data exists: a model that
    seals and verifies with small shape tensors sealed must open too."""
    if route == "memory":
        monkeypatch.setenv("ORTSEAL_RUNTIME_DIR", "none")
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(np.array([4, 32], np.int64), "shape")])
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    summary = ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=9)
    assert sorted(summary.sealed) == ["shape", "w"]
    assert ortseal.verify_model(tmp_path / "s.onnx", keys).sealed_tensors == 2
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)}
    out = run_sealed(tmp_path / "s.onnx", feeds, keys)
    assert out[0].shape == (4, 32)
    assert_identical(out, run_plain(tmp_path / "m.onnx", feeds))


@pytest.mark.slow
def test_thousands_of_sealed_tensors_open_within_a_small_descriptor_limit(tmp_path, keys):
    """Every blob of a data file is read through one descriptor: 1500 sealed tensors open under a limit
    of 256 open files."""
    n = 1500
    rng = np.random.default_rng(8)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal(256).astype(np.float32), f"b{i}") for i in range(n)]
    nodes = [helper.make_node("Add", ["x" if i == 0 else f"h{i}", f"b{i}"], [f"h{i + 1}"]) for i in range(n)]
    graph = helper.make_graph(nodes, "many", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256])],
                              [helper.make_tensor_value_info(f"h{n}", TensorProto.FLOAT, [256])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
              str(tmp_path / "many.onnx"))
    assert len(ortseal.seal_model(tmp_path / "many.onnx", tmp_path / "s.onnx", keys).sealed) == n
    keys.save(tmp_path / "k.json")
    script = ("import resource, sys, numpy as np, onnxruntime as ort, ortseal\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))\n"
              "keys = ortseal.KeySet.load(sys.argv[1])\n"
              "x = np.ones(256, np.float32)\n"
              "got = ortseal.InferenceSession(sys.argv[2], providers=['CPUExecutionProvider'], keys=keys).run(None, {'x': x})\n"
              "want = ort.InferenceSession(sys.argv[3], providers=['CPUExecutionProvider']).run(None, {'x': x})\n"
              "assert got[0].tobytes() == want[0].tobytes()\n")
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "k.json"), str(tmp_path / "s.onnx"),
                        str(tmp_path / "many.onnx")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
