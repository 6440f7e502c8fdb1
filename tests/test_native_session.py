"""libortseal's session creation: the refused-options table is the Python one, read back from the
OrtSessionOptions a C++ host passes, and a refusal leaves no session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ortseal._policy import CONFIG_WRITERS, PROVIDER_WRITERS

from native_host import Host, build, write_tensors

HERE = Path(__file__).parent / "vectors"


@pytest.fixture(scope="module")
def ort_host() -> Host:
    return Host(build(ort=True), "ortseal_ort_host")


def test_refused_options_table_is_pythons(ort_host):
    want = {("-", name, w.kind) for name, w in CONFIG_WRITERS.items()}
    want |= {(provider, name, w.kind) for provider, writers in PROVIDER_WRITERS.items() for name, w in writers.items()}
    got = {tuple(line.split()) for line in ort_host.lines("options")}
    assert got == want


@pytest.mark.parametrize("key, value, refused", [
    ("ep.context_enable", "1", True),
    ("ep.context_enable", "0", False),
    ("ep.context_file_path", "out.onnx", True),
    ("session.debug_layout_transformation", "True", True),
    ("session.optimized_model_external_initializers_file_name", "w.bin", True),
    ("ep.openvinoexecutionprovider.cache_dir", "/tmp/ov", True),
    ("ep.openvino.cache_dir", "/tmp/ov", True),
    ("ep.openvino.cache_dir", "", False),
    ("ep.tensorrtexecutionprovider.trt_dump_subgraphs", "false", False),
    ("ep.tensorrtexecutionprovider.trt_dump_subgraphs", "yes", True),
    ("session.intra_op.allow_spinning", "0", False),
])
def test_session_options_that_write_plaintext_are_refused(ort_host, tmp_path, key, value, refused):
    write_tensors(tmp_path / "in.bin", {"X": np.ones((3, 2), np.float32)})
    result = ort_host("sealed", HERE / "keyset_v1.json", "-", 0, HERE / "mul_1.sealed.onnx", tmp_path / "in.bin",
                      tmp_path / "out.bin", key, value)
    if refused:
        assert result.name == "unsafe_option" and key in result.message
        assert not (tmp_path / "out.bin").exists()
    else:
        assert result.name == "ok", result.message
