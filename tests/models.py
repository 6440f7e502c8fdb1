"""Real ONNX models built for the tests (ir_version 10: onnx 1.23 would write 14, which ORT 1.31 refuses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10
OPSET = 17


def _model(graph: onnx.GraphProto, **kw) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION, **kw)


def transformer_like(path: Path, *, d: int = 128, vocab: int = 512, seq: int = 16, ff: int = 4,
                     external: bool = True) -> dict[str, np.ndarray]:
    """Embedding + position ids + one attention block + layer norms + FFN; weights in external data.

    Returns the weights by name (float32 and one int64 tensor) so tests can look for their bytes.
    """
    rng = np.random.default_rng(7)
    w = {
        "tok_emb": rng.standard_normal((vocab, d)).astype(np.float32),
        "pos_emb": rng.standard_normal((seq, d)).astype(np.float32),
        "wq": (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32),
        "wk": (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32),
        "wv": (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32),
        "wo": (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32),
        "ln1_scale": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32),
        "ln1_bias": (0.1 * rng.standard_normal(d)).astype(np.float32),
        "ff1": (rng.standard_normal((d, ff * d)) / np.sqrt(d)).astype(np.float32),
        "ff1_bias": rng.standard_normal(ff * d).astype(np.float32),
        "ff2": (rng.standard_normal((ff * d, d)) / np.sqrt(ff * d)).astype(np.float32),
        "scale": np.array([1.0 / np.sqrt(d)], np.float32),
    }
    w["pos_ids"] = rng.permutation(seq).astype(np.int64)  # int64 gather indices
    nodes = [
        helper.make_node("Gather", ["tok_emb", "ids"], ["tok"], name="embed"),
        helper.make_node("Gather", ["pos_emb", "pos_ids"], ["pos"], name="pos_embed"),
        helper.make_node("Add", ["tok", "pos"], ["x0"]),
        helper.make_node("LayerNormalization", ["x0", "ln1_scale", "ln1_bias"], ["x1"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["x1", "wq"], ["q"]),
        helper.make_node("MatMul", ["x1", "wk"], ["k"]),
        helper.make_node("MatMul", ["x1", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["att0"]),
        helper.make_node("Mul", ["att0", "scale"], ["att1"]),
        helper.make_node("Softmax", ["att1"], ["att"], axis=-1),
        helper.make_node("MatMul", ["att", "v"], ["ctx"]),
        helper.make_node("MatMul", ["ctx", "wo"], ["proj"]),
        helper.make_node("Add", ["x0", "proj"], ["x2"]),
        helper.make_node("MatMul", ["x2", "ff1"], ["h0"]),
        helper.make_node("Add", ["h0", "ff1_bias"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "ff2"], ["h3"]),
        helper.make_node("Add", ["x2", "h3"], ["y"], name="residual", doc_string="the residual add"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_transformer",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", seq])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", seq, d])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
        doc_string="a transformer-like block",
        value_info=[helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["batch", seq, d])],
    )
    model = _model(graph, producer_name="ortseal-tests", doc_string="model doc")
    helper.set_model_props(model, {"author": "tests", "license": "none"})
    onnx.save(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
              location=path.name + ".weights", size_threshold=256)
    return w


def control_flow(path: Path) -> dict[str, np.ndarray]:
    """If whose branches and a Loop whose body each hold their own initializers."""
    rng = np.random.default_rng(3)
    w = {name: rng.standard_normal((16, 16)).astype(np.float32) for name in ("w_then", "w_else", "w_loop", "w_main")}
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "w_then"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [4, 16])],
                               [numpy_helper.from_array(w["w_then"], "w_then")])
    else_g = helper.make_graph([helper.make_node("MatMul", ["x", "w_else"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [4, 16])],
                               [numpy_helper.from_array(w["w_else"], "w_else")])
    body = helper.make_graph(
        [helper.make_node("MatMul", ["acc_in", "w_loop"], ["m"]), helper.make_node("Tanh", ["m"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(w["w_loop"], "w_loop")])
    nodes = [
        helper.make_node("MatMul", ["x_in", "w_main"], ["x"]),
        helper.make_node("If", ["flag"], ["branch"], then_branch=then_g, else_branch=else_g, name="choose"),
        helper.make_node("Loop", ["trip", "", "branch"], ["looped"], body=body, name="repeat"),
    ]
    graph = helper.make_graph(
        nodes, "control_flow",
        [helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [4, 16]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
         helper.make_tensor_value_info("trip", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("looped", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(w["w_main"], "w_main")])
    onnx.save(_model(graph), str(path))
    return w


def big_embedding(path: Path, rows: int, dim: int = 1024) -> np.memmap:
    """A Gather over one float32 table of ``rows x dim`` in external data, written in chunks (no 2 GiB
    buffer in memory). Returns the table memory-mapped read-only."""
    data = path.with_name(path.name + ".data")
    rng = np.random.default_rng(11)
    with open(data, "wb") as fh:
        for start in range(0, rows, 16384):
            n = min(16384, rows - start)
            fh.write(rng.standard_normal((n, dim), dtype=np.float32).tobytes())
    table = TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[rows, dim])
    for key, value in (("location", data.name), ("offset", "0"), ("length", str(rows * dim * 4))):
        table.external_data.add(key=key, value=value)
    table.data_location = TensorProto.EXTERNAL
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "big",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", dim])], [table])
    onnx.save(_model(graph), str(path))
    return np.memmap(data, np.float32, "r", shape=(rows, dim))


def constants_everywhere(path: Path) -> dict[str, np.ndarray]:
    """Weights held by Constant nodes, as paddle2onnx, spox and torch exporters write them: in the main graph
    (a ``value`` tensor and a ``value_floats`` list), in an If branch and in a local function; plus a string
    Constant (which cannot be sealed) and one initializer."""
    rng = np.random.default_rng(5)
    w = {name: rng.standard_normal((16, 16)).astype(np.float32) for name in ("c_main", "c_then", "c_fn", "w_else")}
    w["c_list"] = rng.standard_normal(16).astype(np.float32)
    then_g = helper.make_graph(
        [helper.make_node("Constant", [], ["c_then"], value=numpy_helper.from_array(w["c_then"], "c_then")),
         helper.make_node("MatMul", ["x", "c_then"], ["t_out"])], "then", [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [4, 16])])
    else_g = helper.make_graph([helper.make_node("MatMul", ["x", "w_else"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [4, 16])],
                               [numpy_helper.from_array(w["w_else"], "w_else")])
    proj = helper.make_function(
        "ai.test", "Proj", ["a"], ["b"],
        [helper.make_node("Constant", [], ["c_fn"], value=numpy_helper.from_array(w["c_fn"], "c_fn")),
         helper.make_node("MatMul", ["a", "c_fn"], ["b"])],
        [helper.make_opsetid("", OPSET)])
    nodes = [
        helper.make_node("Constant", [], ["c_main"], value=numpy_helper.from_array(w["c_main"], "c_main")),
        helper.make_node("Constant", [], ["c_list"], value_floats=w["c_list"].tolist()),
        helper.make_node("Constant", [], ["labels"], value_strings=[b"cat", b"dog"]),
        helper.make_node("MatMul", ["x_in", "c_main"], ["m"]),
        helper.make_node("Add", ["m", "c_list"], ["x"]),
        helper.make_node("If", ["flag"], ["branch"], then_branch=then_g, else_branch=else_g, name="choose"),
        helper.make_node("Proj", ["branch"], ["y"], domain="ai.test"),
    ]
    graph = helper.make_graph(
        nodes, "constants",
        [helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [4, 16]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16]),
         helper.make_tensor_value_info("labels", TensorProto.STRING, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.test", 1)],
                              ir_version=IR_VERSION, functions=[proj])
    onnx.save(model, str(path))
    return w


def matmul(path: Path, *, n: int = 64, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``y = x @ W`` with one float32 weight ``W`` (n x n, sealed at the default --min-bytes); returns
    ``(W, x)`` so a test can check a session's output against ``x @ W``."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(w, "W")])
    onnx.save(_model(graph), str(path))
    return w, rng.standard_normal((1, n)).astype(np.float32)
