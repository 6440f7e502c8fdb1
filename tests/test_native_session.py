"""libortseal's session creation: the refused-options table is the Python one, read back from the
OrtSessionOptions a C++ host passes, and a refusal leaves no session; what ORT cannot read back is forced
off (the optimized-model path) or checked before the host appends the EP (ortseal_check_provider_options)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import ortseal
from ortseal import KeySet
from ortseal._policy import CONFIG_WRITERS, OPENVINO_ENV_WRITERS, PROVIDER_WRITERS, TENSORRT_ENV_WRITERS

from models import matmul
from native_host import Host, build, read_tensors, write_tensors

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


def weights_on_disk(root: Path, needle: bytes) -> list[Path]:
    """Every file under root that holds needle."""
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def test_an_optimized_model_path_on_the_options_writes_nothing_for_a_sealed_model(ort_host, tmp_path):
    """The attack: the host's options carry SetOptimizedModelFilePath (ORT's C API cannot read it back), so ORT
    would save the optimized graph, the opened weights in it, in plaintext. libortseal creates the session from
    its copy of the options with that path forced off: the model runs, no file appears, and no file on disk
    holds the weight's bytes. The same options on the plain model do write it: the attack is real."""
    source, run = tmp_path / "source", tmp_path / "run"
    source.mkdir(), run.mkdir()
    w, x = matmul(source / "m.onnx", n=64)
    keys = KeySet.generate()
    (run / "keys.json").write_text(keys.to_json())
    ortseal.seal_model(source / "m.onnx", run / "m.sealed.onnx", keys)
    write_tensors(run / "in.bin", {"x": x})
    needle = w.tobytes()[:256]
    leak = source / "optimized.onnx"
    assert ort_host("plain", source / "m.onnx", run / "in.bin", source / "plain.bin",
                    "optimized_model_filepath", leak).name == "ok"
    assert needle in leak.read_bytes()  # what that option does to a model ORT can see
    target = run / "optimized.onnx"
    result = ort_host("sealed", run / "keys.json", "-", 0, run / "m.sealed.onnx", run / "in.bin", run / "sealed.bin",
                      "optimized_model_filepath", target)
    assert result.name == "ok", result.message  # neutralised, as ortseal_ort.h says: not refused
    assert read_tensors(run / "sealed.bin")["y"].tobytes() == read_tensors(source / "plain.bin")["y"].tobytes()
    assert not target.exists() and weights_on_disk(run, needle) == []


def test_every_provider_option_of_the_table_is_refused_before_a_typed_append(ort_host):
    """ortseal_check_provider_options: for the EPs a host appends with typed calls ORT cannot read back."""
    for provider, writers in PROVIDER_WRITERS.items():
        # the writers on by default, given and off, beside the one tried
        off = [x for other, w in writers.items() if w.on_by_default for x in (other, "0")]
        for name, w in writers.items():
            on = "/somewhere" if w.kind == "path" else "1"
            result = ort_host("provider-options", provider, "-", *off, name, on)
            assert result.name == "unsafe_option" and name in result.message, (provider, name)
            assert ort_host("provider-options", provider, "-", *off, name, "" if w.kind == "path" else "0").name == "ok"
            short = provider.removesuffix("ExecutionProvider")  # the names ORT's append calls take
            assert ort_host("provider-options", short, "-", *off, name, on).name == "unsafe_option", (short, name)
            if w.on_by_default:  # not given: the EP writes
                result = ort_host("provider-options", provider, "-", "device_id", "0")
                assert result.name == "unsafe_option" and f"without {name} (on by default)" in result.message


@pytest.mark.parametrize("provider, shim, options, refused", [
    ("TensorRT", "-", ["trt_engine_cache_enable", "1"], True),
    ("TensorRT", "-", ["trt_engine_cache_enable", "1", "trt_engine_decryption_enable", "1",
                       "trt_engine_decryption_lib_path", "/opt/app/libortseal_shim.so"], True),
    ("TensorRT", "/opt/app/libortseal_shim.so", ["trt_engine_cache_enable", "1", "trt_engine_decryption_enable", "1",
                                                  "trt_engine_decryption_lib_path", "/tmp/their_decrypt.so"], True),
    ("TensorrtExecutionProvider", "/opt/app/libortseal_shim.so",
     ["trt_engine_cache_enable", "True", "trt_engine_decryption_enable", "True",
      "trt_engine_decryption_lib_path", "/opt/app/libortseal_shim.so", "trt_timing_cache_enable", "1"], False),
    ("TensorRT", "-", ["trt_dump_subgraphs", "1", "trt_dump_subgraphs", "0"], False),  # the last one wins, as in ORT
    ("CUDA", "-", ["device_id", "0", "cudnn_conv_algo_search", "EXHAUSTIVE"], False),
])
def test_the_tensorrt_engine_cache_only_through_ortseals_shim(ort_host, provider, shim, options, refused):
    result = ort_host("provider-options", provider, shim, *options)
    assert result.name == ("unsafe_option" if refused else "ok"), result.message


def openvino_plugin_library() -> Path | None:
    try:
        import onnxruntime_ep_openvino
    except ImportError:
        return None
    return Path(onnxruntime_ep_openvino.get_library_path())


@pytest.mark.skipif(openvino_plugin_library() is None, reason="onnxruntime-ep-openvino is not installed")
@pytest.mark.skipif("SANITIZE=ON" in os.environ.get("ORTSEAL_NATIVE_CMAKE_ARGS", ""),
                    reason="OpenVINO's TBB dlopens a library with RTLD_DEEPBIND, which the sanitizer runtime refuses")
@pytest.mark.parametrize("options, refused", [
    (("cache_dir", "CACHE"), True),
    (("device_type", "CPU"), False),
])
def test_plugin_ep_options_appended_by_device_are_checked(ort_host, tmp_path, options, refused):
    """SessionOptionsAppendExecutionProvider_V2 (a plugin EP by device): ORT stores its options as
    ep.<ep name>.<option> config entries, which the session check reads (as ortseal_ort.h says); here the
    OpenVINO plugin EP, which writes compiled blobs, weights included, to cache_dir."""
    w, x = matmul(tmp_path / "m.onnx", n=64)
    keys = KeySet.generate()
    (tmp_path / "keys.json").write_text(keys.to_json())
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "m.sealed.onnx", keys)
    write_tensors(tmp_path / "in.bin", {"x": x})
    key, value = options
    if value == "CACHE":
        value = str(tmp_path / "ov-cache")
    result = ort_host("plugin-ep", tmp_path / "keys.json", tmp_path / "m.sealed.onnx", tmp_path / "in.bin",
                      tmp_path / "out.bin", openvino_plugin_library(), "OpenVINOExecutionProvider", key, value)
    if result.name == "runtime" and "no CPU device" in result.message:
        pytest.skip("the OpenVINO plugin EP offers no CPU device on this machine (Intel only)")
    if refused:
        assert result.name == "unsafe_option" and f"ep.openvinoexecutionprovider.{key}" in result.message, result.message
        assert not (tmp_path / "ov-cache").exists() and not (tmp_path / "out.bin").exists()
    else:
        assert result.name == "ok", result.message
        assert np.allclose(read_tensors(tmp_path / "out.bin")["y"], x @ w, atol=1e-3)


def test_environment_variables_that_write_plaintext_are_refused_for_a_typed_append(ort_host, monkeypatch):
    """As tensorrt_provider / refuse_plaintext_writers: the TensorRT EP reads ORT_TENSORRT_* only when given no
    options (an EP made from a device id alone); OpenVINO's runtime reads its tracing variables always."""
    for name in TENSORRT_ENV_WRITERS:
        monkeypatch.setenv(name, "1")
        result = ort_host("provider-options", "TensorRT", "-")
        assert result.name == "unsafe_option" and name in result.message, name
        assert ort_host("provider-options", "TensorRT", "-", "device_id", "0").name == "ok"  # options given: not read
        monkeypatch.setenv(name, "0")
        assert ort_host("provider-options", "TensorRT", "-").name == "ok"
        monkeypatch.delenv(name)
    for name in OPENVINO_ENV_WRITERS:
        monkeypatch.setenv(name, "1")
        result = ort_host("provider-options", "OpenVINO", "-", "device_type", "CPU")
        assert result.name == "unsafe_option" and name in result.message, name
        monkeypatch.delenv(name)
