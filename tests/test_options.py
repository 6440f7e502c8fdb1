"""Options that would write plaintext weights, engines or EP caches: refused for sealed models (and sealed
engine caches) whichever way they are given, before ORT writes anything; unsealed models keep them."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
from models import transformer_like

import ortseal
from ortseal import KeySet, UnsafeOptionError
from ortseal._policy import refuse_plaintext_writers
from ortseal.tensorrt.harness import harness_provider
from ortseal.tensorrt.shim import shim_path

CPU = "CPUExecutionProvider"
TRT = "TensorrtExecutionProvider"
OUT = "{out}"  # replaced by the test's own output folder

# (provider, options that would write plaintext, the option the refusal names). None of these EPs is
# installed here: the refusal must come from ortseal's check, which runs before ORT drops them.
PROVIDER_CASES = [
    (TRT, {"trt_dump_subgraphs": "1"}, "trt_dump_subgraphs"),
    (TRT, {"trt_dump_subgraphs": True}, "trt_dump_subgraphs"),
    (TRT, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": OUT}, "trt_engine_cache_enable"),
    (TRT, {"trt_engine_cache_enable": 1, "trt_engine_cache_path": OUT, "trt_engine_decryption_enable": "0"},
     "trt_engine_cache_enable"),
    (TRT, {"trt_dump_ep_context_model": "1", "trt_ep_context_file_path": OUT + "/ctx.onnx"}, "trt_dump_ep_context_model"),
    (TRT, {"trt_ep_context_file_path": OUT + "/ctx.onnx"}, "trt_ep_context_file_path"),
    (TRT, {"trt_weight_stripped_engine_enable": "true"}, "trt_weight_stripped_engine_enable"),
    (TRT, {"trt_engine_cache_enable": "1", "trt_engine_cache_path": OUT, "trt_engine_decryption_enable": "1",
           "trt_engine_decryption_lib_path": "/opt/vendor/libdecrypt.so"}, "trt_engine_decryption_lib_path"),
    ("NvTensorRTRTXExecutionProvider", {"nv_dump_subgraphs": "1"}, "nv_dump_subgraphs"),
    ("NvTensorRTRTXExecutionProvider", {"nv_runtime_cache_path": OUT}, "nv_runtime_cache_path"),
    ("OpenVINOExecutionProvider", {"device_type": "CPU", "cache_dir": OUT}, "cache_dir"),
    ("OpenVINOExecutionProvider", {"load_config": '{"CPU": {"CACHE_DIR": "' + OUT + '"}}'}, "CACHE_DIR"),
    ("QNNExecutionProvider", {"qnn_saver_path": "libQnnSaver.so"}, "qnn_saver_path"),
    ("QNNExecutionProvider", {"dump_qnn_ir_dlc": "1", "dump_qnn_ir_dlc_dir": OUT}, "dump_qnn_ir_dlc"),
    ("QNNExecutionProvider", {"dump_json_qnn_graph": "1", "json_qnn_graph_dir": OUT}, "dump_json_qnn_graph"),
    ("CoreMLExecutionProvider", {"ModelCacheDirectory": OUT}, "ModelCacheDirectory"),
    ("MIGraphXExecutionProvider", {"migraphx_model_cache_dir": OUT}, "migraphx_model_cache_dir"),
    ("MIGraphXExecutionProvider", {"migraphx_save_compiled_model": "1", "migraphx_save_model_path": OUT + "/m.mxr"},
     "migraphx_save_compiled_model"),
    ("VitisAIExecutionProvider", {"cache_dir": OUT}, "cache_dir"),
]
CASE_IDS = [f"{p[:8]}-{'-'.join(o)}" for p, o, _ in PROVIDER_CASES]

CONFIG_CASES = [
    ("ep.context_enable", "1"),
    ("ep.context_file_path", OUT + "/ctx.onnx"),
    ("ep.context_embed_mode", "1"),
    ("ep.context_model_external_initializers_file_name", "ctx.data"),
    ("session.debug_layout_transformation", "1"),
    ("session.save_external_prepacked_constant_initializers", "1"),
    ("session.optimized_model_external_initializers_file_name", "opt.data"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A small transformer-like model, plain and sealed, and its feeds."""
    d = tmp_path_factory.mktemp("opts")
    transformer_like(d / "model.onnx", d=32, vocab=64, seq=8)
    keys = KeySet.generate()
    (d / "sealed").mkdir()
    ortseal.seal_model(d / "model.onnx", d / "sealed" / "model.onnx", keys, min_bytes=64, progress=False)
    feeds = {"ids": np.random.default_rng(0).integers(0, 64, (1, 8), dtype=np.int64)}
    return str(d / "model.onnx"), str(d / "sealed" / "model.onnx"), keys, feeds


@pytest.fixture
def out(tmp_path, monkeypatch):
    """An empty folder, also the working directory (where dumps without a path land)."""
    folder = tmp_path / "out"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _fill(options: dict, out) -> dict:
    return {k: v.replace(OUT, str(out)) if isinstance(v, str) else v for k, v in options.items()}


def _open(path, keys, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT warns that the EPs named are not available here, then drops them
        return ortseal.InferenceSession(path, keys=keys, **kwargs)


@pytest.mark.parametrize("provider, options, named", PROVIDER_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("way", ["tuple", "provider_options", "session_config"])
def test_provider_option_refused_for_sealed_model(models, out, provider, options, named, way):
    _, sealed, keys, _ = models
    options = _fill(options, out)
    so = ort.SessionOptions()
    if way == "tuple":
        kwargs = {"providers": [(provider, options), CPU]}
    elif way == "provider_options":
        kwargs = {"providers": [provider, CPU], "provider_options": [options, {}]}
    else:  # the form ORT keeps provider options in: ep.<provider, lower case>.<option>
        for key, value in options.items():
            so.add_session_config_entry(f"ep.{provider.lower()}.{key}", str(value))
        kwargs = {"providers": [provider, CPU]}
        if provider == "OpenVINOExecutionProvider" and "load_config" in options:
            pytest.skip("load_config is checked where it is given as a provider option")
        if named == "trt_engine_decryption_lib_path":
            pytest.skip("the decryption library rule reads the provider options")
        if named == "trt_engine_cache_enable":
            pytest.skip("the engine cache rule reads the provider options")
    with pytest.raises(UnsafeOptionError, match=named):
        _open(sealed, keys, sess_options=so, **kwargs)
    assert not list(out.iterdir())


@pytest.mark.parametrize("provider, options, named", PROVIDER_CASES, ids=CASE_IDS)
def test_unsealed_model_keeps_those_options(models, out, provider, options, named):
    plain, _, _, feeds = models
    sess = _open(plain, None, providers=[(provider, _fill(options, out)), CPU])
    assert not sess.is_sealed and sess.get_providers() == [CPU]
    sess.run(None, feeds)


@pytest.mark.parametrize("key, value", CONFIG_CASES)
def test_session_config_entry_refused_for_sealed_model(models, out, key, value):
    _, sealed, keys, _ = models
    so = ort.SessionOptions()
    so.add_session_config_entry(key, value.replace(OUT, str(out)))
    with pytest.raises(UnsafeOptionError, match=key):
        _open(sealed, keys, sess_options=so, providers=[CPU])
    assert not list(out.iterdir())


def test_optimized_model_filepath_refused_for_sealed_model_only(models, out):
    plain, sealed, keys, _ = models
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(out / "opt.onnx")
    with pytest.raises(UnsafeOptionError, match="optimized_model_filepath"):
        _open(sealed, keys, sess_options=so, providers=[CPU])
    assert not list(out.iterdir())
    _open(plain, None, sess_options=so, providers=[CPU])
    assert (out / "opt.onnx").exists()  # the unsealed model keeps the option


@pytest.mark.skipif(not hasattr(ort.SessionOptions, "has_providers"), reason="ORT < 1.22 cannot add EPs to options")
def test_providers_added_to_session_options_refused_for_sealed_model(models):
    plain, sealed, keys, feeds = models
    cpu_devices = [d for d in ort.get_ep_devices() if d.ep_name == CPU]
    by_device = ort.SessionOptions()
    by_device.add_provider_for_devices(cpu_devices, {})
    by_policy = ort.SessionOptions()
    by_policy.set_provider_selection_policy(ort.OrtExecutionProviderDevicePolicy.PREFER_CPU)
    for so in (by_device, by_policy):
        with pytest.raises(UnsafeOptionError, match="providers=") as err:
            _open(sealed, keys, sess_options=so)
        assert "add_provider" in str(err.value)
    _open(plain, None, sess_options=by_device).run(None, feeds)


def test_tensorrt_environment_variables_refused_when_tensorrt_gets_no_options(models, out, monkeypatch):
    _, sealed, keys, feeds = models
    monkeypatch.setenv("ORT_TENSORRT_ENGINE_CACHE_ENABLE", "1")
    with pytest.raises(UnsafeOptionError, match="ORT_TENSORRT_ENGINE_CACHE_ENABLE"):
        _open(sealed, keys, providers=[TRT, CPU])
    # given options, the TensorRT EP ignores its environment variables
    _open(sealed, keys, providers=[(TRT, {"trt_fp16_enable": "1"}), CPU]).run(None, feeds)
    assert not list(out.iterdir())


def test_timing_cache_allowed_for_sealed_model(models, out):
    """A TensorRT timing cache holds kernel timings keyed by layer signatures, no weights: allowed."""
    _, sealed, keys, feeds = models
    sess = _open(sealed, keys, providers=[(TRT, {"trt_timing_cache_enable": "1", "trt_timing_cache_path": str(out)}),
                                          CPU])
    assert sess.is_sealed
    sess.run(None, feeds)


def test_disabled_writers_are_allowed_for_sealed_model(models, out):
    _, sealed, keys, feeds = models
    so = ort.SessionOptions()
    so.add_session_config_entry("ep.context_enable", "0")
    so.add_session_config_entry("session.debug_layout_transformation", "0")
    providers = [(TRT, {"trt_dump_subgraphs": "false", "trt_engine_cache_enable": "0"}),
                 ("OpenVINOExecutionProvider", {"cache_dir": ""}), CPU]
    _open(sealed, keys, sess_options=so, providers=providers).run(None, feeds)
    assert not list(out.iterdir())


def test_sealed_engine_cache_guards_engine_writers_only(keys, tmp_path):
    provider = harness_provider(keys, {"trt_engine_cache_path": str(tmp_path / "cache")})
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")  # an unsealed model's weights are not secret
    refuse_plaintext_writers([provider, CPU], None, so, sealed_model=False, sealed_cache=True, shim=shim_path())
    so.add_session_config_entry("ep.context_enable", "1")  # the EP-context model would hold the engine
    with pytest.raises(UnsafeOptionError, match="ep.context_enable"):
        refuse_plaintext_writers([provider, CPU], None, so, sealed_model=False, sealed_cache=True, shim=shim_path())
    # the sealed cache itself (shim + decryption) is what a sealed model may use
    refuse_plaintext_writers([provider, CPU], None, None, sealed_model=True, sealed_cache=True, shim=shim_path())


def test_tensorrt_provider_refuses_context_file_path(keys, tmp_path):
    with pytest.raises(UnsafeOptionError, match="trt_ep_context_file_path"):
        harness_provider(keys, {"trt_engine_cache_path": str(tmp_path), "trt_ep_context_file_path": "ctx.onnx"})
