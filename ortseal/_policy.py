"""The one list of ONNX Runtime options that would write plaintext, and the check that refuses them.

Options that make ORT or an execution provider write the model's weights, a compiled engine, an EP cache
or an EP-context model to disk are refused for a sealed model (and those that write a compiled engine, an
EP cache or an EP-context model, for a sealed TensorRT engine cache and a sealed compiled-model cache:
``refuse_compiled_cache_writers``), whichever way they are given: provider tuples, the parallel
``provider_options`` list, session config entries (``ep.context_*``, ``session.*`` and the
``ep.<provider>.<option>`` form ORT stores provider options in), the TensorRT environment variables ORT
reads when TensorRT gets no options, and EPs added to the session options (``add_provider*`` or a
selection policy), which cannot be read back. The check runs before ORT sees anything, so it also
covers providers that are not installed here. The table and its sources: ``docs/tensorrt.md``,
"Options refused for sealed models".

    refuse_plaintext_writers(providers, provider_options, sess_options, sealed_model=True, sealed_cache=False)

Allowed on purpose: TensorRT's timing cache (``trt_timing_cache_enable``/``trt_timing_cache_path``: kernel
timings keyed by layer signatures, no weights) and profiling output (op timings, no tensor data).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # only for annotations: keys, sealing and inspect need no ONNX Runtime
    import onnxruntime as ort

from .errors import UnsafeOptionError

TENSORRT = "TensorrtExecutionProvider"

FALSE_VALUES = frozenset({"0", "false", "False", "FALSE", ""})
TRUE_VALUES = frozenset({"1", "true", "True", "TRUE"})


class Writer(NamedTuple):
    """An option that writes plaintext: ``flag`` options when set to anything but false, ``path``
    options when set to anything but the empty string. ``engine``: it writes a compiled engine or
    EP-context model, so it is refused for a sealed engine cache too (not only for a sealed model)."""

    name: str
    why: str
    kind: str = "flag"  # "flag" or "path"
    engine: bool = False  # also refused for a sealed engine cache and a sealed compiled-model cache
    on_by_default: bool = False  # the EP writes unless told not to: refused unless given, and off

    def is_on(self, value: Any) -> bool:
        text = option_str(value)
        return text not in FALSE_VALUES if self.kind == "flag" else text != ""


def _writers(*items: Writer) -> dict[str, Writer]:
    return {w.name: w for w in items}


# Session config entries (onnxruntime_session_options_config_keys.h, ORT 1.23-1.32).
CONFIG_WRITERS = _writers(
    Writer("ep.context_enable", "the EP-context model it writes holds the compiled engine or its weights in "
           "plaintext", engine=True),
    Writer("ep.context_file_path", "it names the EP-context model ORT writes, which holds the compiled engine or "
           "its weights in plaintext", "path", engine=True),
    Writer("ep.context_embed_mode", "it configures the EP-context model ORT writes (mode 1 embeds the compiled "
           "engine in it, unencrypted)", "path", engine=True),
    Writer("ep.context_model_external_initializers_file_name", "it names the file ORT writes the EP-context "
           "model's initializers to, in plaintext", "path", engine=True),
    Writer("session.debug_layout_transformation", "ORT dumps the model, weights included, as "
           "post_layout_transform_step_<n>.onnx in the working directory"),
    Writer("session.save_external_prepacked_constant_initializers", "ORT writes the pre-packed weights to an "
           "external data file"),
    Writer("session.optimized_model_external_initializers_file_name", "it names the file ORT writes the "
           "optimized model's weights to, in plaintext", "path"),
)

# Provider options, by provider (each EP's provider_option_names / provider options header, ORT 1.23-1.32).
# TensorRT's engine cache and decryption library have their own rule (_tensorrt_cache_rule).
PROVIDER_WRITERS: dict[str, dict[str, Writer]] = {
    TENSORRT: _writers(
        Writer("trt_dump_subgraphs", "it writes each TensorRT subgraph, weights included, as plain ONNX to the "
               "working directory", engine=True),
        Writer("trt_dump_ep_context_model", "embed mode 1 writes the whole engine into the EP-context model "
               "unencrypted; mode 0 makes ORT load an unencrypted engine file", engine=True),
        Writer("trt_ep_context_file_path", "it names the EP-context model the TensorRT EP writes, which holds the "
               "engine or the path of an unencrypted one", "path", engine=True),
        Writer("trt_weight_stripped_engine_enable", "the refitted engine is serialized unencrypted into the working "
               "directory", engine=True),
    ),
    "NvTensorRTRTXExecutionProvider": _writers(
        Writer("nv_dump_subgraphs", "it writes each subgraph, weights included, as plain ONNX"),
        Writer("nv_runtime_cache_path", "TensorRT-RTX writes its runtime cache of compiled kernels there, "
               "unencrypted (ortseal seals only the TensorRT EP's engine cache)", "path", engine=True),
    ),
    "OpenVINOExecutionProvider": _writers(
        Writer("cache_dir", "OpenVINO writes the compiled model blobs, weights included, there unencrypted", "path", engine=True),
        Writer("blob_dump_path", "OpenVINO writes the compiled model blob there unencrypted", "path", engine=True),
        Writer("use_compiled_network", "OpenVINO writes the compiled network blob unencrypted", engine=True),
        Writer("export_ep_ctx_blob", "OpenVINO writes the compiled blob into an EP-context model unencrypted", engine=True),
        Writer("dump_subgraphs", "the OpenVINO plugin EP writes every subgraph it compiles, weights included, as "
               "OpenVINO IR into the folder it names, unencrypted", "path"),
    ),
    "QNNExecutionProvider": _writers(
        Writer("qnn_saver_path", "the QNN Saver backend records every QNN call, weights included, into "
               "saver_output/", "path"),
        Writer("dump_qnn_ir_dlc", "the QNN IR backend writes the graph, weights included, as a DLC file"),
        Writer("dump_json_qnn_graph", "the QNN graph is dumped to JSON files"),
        Writer("dump_qnn_ep_input_graph", "the EP's input graph, weights included, is dumped as ONNX"),
        Writer("qnn_context_cache_enable", "the QNN context binary (the compiled graph with its weights) is "
               "written unencrypted", engine=True),
        Writer("qnn_context_cache_path", "it names the QNN context binary the EP writes unencrypted", "path", engine=True),
    ),
    "CoreMLExecutionProvider": _writers(
        Writer("ModelCacheDirectory", "Core ML writes the compiled model, weights included, there unencrypted",
               "path", engine=True),
    ),
    "MIGraphXExecutionProvider": _writers(
        Writer("migraphx_model_cache_dir", "MIGraphX writes compiled programs (.mxr, weights included) there "
               "unencrypted", "path", engine=True),
        Writer("migraphx_save_compiled_model", "MIGraphX writes the compiled program, weights included, "
               "unencrypted", engine=True),
        Writer("migraphx_save_model_path", "it names the compiled MIGraphX program written unencrypted", "path", engine=True),
        Writer("migraphx_dump_ep_context_model", "MIGraphX writes an EP-context model holding the compiled "
               "program unencrypted", engine=True),
    ),
    "VitisAIExecutionProvider": _writers(
        Writer("cache_dir", "Vitis AI writes the compiled model, weights included, there unencrypted", "path", engine=True),
    ),
    "CANNExecutionProvider": _writers(  # cann_execution_provider_info.cc; dump_om_model defaults to 1
        Writer("dump_graphs", "CANN writes each subgraph, weights included, as plain ONNX to the working directory",
               engine=True),
        Writer("dump_om_model", "CANN writes the offline model (.om), weights included, to the working directory "
               "unencrypted; it does so by default, so pass dump_om_model=0", engine=True, on_by_default=True),
    ),
}
# DirectML, CUDA, CPU, XNNPACK, WebGPU: no provider option writes a model, an engine or a cache.

# The TensorRT EP reads these only when it is given no provider options (docs/tensorrt.md).
TENSORRT_ENV_WRITERS = _writers(
    Writer("ORT_TENSORRT_DUMP_SUBGRAPHS", "it makes TensorRT write each subgraph, weights included, as plain ONNX"),
    Writer("ORT_TENSORRT_ENGINE_CACHE_ENABLE", "it makes TensorRT write its engines unencrypted"),
    Writer("ORT_TENSORRT_WEIGHT_STRIPPED_ENGINE_ENABLE", "the refitted engine is serialized unencrypted"),
    Writer("ORT_DUMP_EP_CONTEXT_MODEL", "it makes TensorRT write an EP-context model holding the engine"),
)

# OpenVINO's runtime (release builds too, 2025-2026) reads these whatever the EP's options: both EPs load it.
OPENVINO_ENV_WRITERS = _writers(
    Writer("OV_ENABLE_SERIALIZE_TRACING", "OpenVINO serializes the model after every transformation pass into the "
           "working directory as IR, weights included in each .bin"),
    Writer("OV_ENABLE_VISUALIZE_TRACING", "OpenVINO writes a .svg.dot of the model after every transformation pass, "
           "with the values of its constants, into the working directory"),
)

# What the refusal tells the user to do instead.
_SEALED_CACHE_HINT = "use ortseal.tensorrt_provider(keys, ...) for a sealed engine cache"


def option_str(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def provider_entries(providers: Sequence[Any] | None,
                     provider_options: Sequence[Mapping[Any, Any]] | None) -> list[tuple[str, dict[str, str]]]:
    """``(name, options as strings)`` for each provider, from tuples or the parallel ``provider_options``."""
    entries = []
    for i, p in enumerate(providers or []):
        if isinstance(p, (tuple, list)) and len(p) == 2:
            name, opts = p
        else:
            name = p
            opts = provider_options[i] if provider_options is not None and i < len(provider_options) else None
        if not isinstance(opts, Mapping):
            opts = {}
        entries.append((str(name), {str(k): option_str(v) for k, v in opts.items()}))
    return entries


def config_entry(sess_options: ort.SessionOptions | None, key: str) -> str | None:
    """A session config entry, or None when it was never set."""
    if sess_options is None:
        return None
    try:
        return sess_options.get_session_config_entry(key)
    except RuntimeError:  # ORT raises for a key that was never set
        return None


def _refuse(what: str, writer: Writer, subject: str) -> None:
    raise UnsafeOptionError(f"{what} is refused for {subject}: {writer.why}")


def _tensorrt_cache_rule(options: Mapping[str, str], sealed_model: bool, subject: str, shim: str | None) -> None:
    """The engine cache is allowed only when routed through ortseal's shim (``shim``: its path, None where it
    is not built); no other decryption library."""
    decrypting = options.get("trt_engine_decryption_enable", "False") not in FALSE_VALUES
    library = options.get("trt_engine_decryption_lib_path", "")
    if decrypting and library != shim:
        raise UnsafeOptionError(f"trt_engine_decryption_enable with trt_engine_decryption_lib_path={library!r} is "
                                f"refused for {subject}: that library receives every engine TensorRT builds, in "
                                f"plaintext, and ortseal cannot vouch for what it writes; {_SEALED_CACHE_HINT}")
    if sealed_model and options.get("trt_engine_cache_enable", "False") not in FALSE_VALUES and not decrypting:
        raise UnsafeOptionError(f"trt_engine_cache_enable without ortseal's shim is refused for {subject}: TensorRT "
                                f"would write its engines, weights included, unencrypted; {_SEALED_CACHE_HINT}")


def refuse_tensorrt_writers(options: Mapping[str, str], subject: str = "a sealed engine cache") -> None:
    """Raise :class:`UnsafeOptionError` for a TensorRT option that writes an engine or the weights in plain
    even with decryption on (``tensorrt_provider``'s own check)."""
    for name, writer in PROVIDER_WRITERS[TENSORRT].items():
        if writer.engine and name in options and writer.is_on(options[name]):
            _refuse(name, writer, subject)


def refuse_plaintext_writers(providers: Sequence[Any] | None, provider_options: Sequence[Mapping[Any, Any]] | None,
                             sess_options: ort.SessionOptions | None, *, sealed_model: bool,
                             sealed_cache: bool, shim: str | None, subject: str | None = None,
                             chosen: bool = True) -> None:
    """Raise :class:`UnsafeOptionError`, naming the option and why, if these session arguments would make ORT
    or an EP write plaintext weights or a compiled engine: everything in this module's tables for a sealed
    model; the engine and EP-context writers for a sealed TensorRT engine cache. Does nothing otherwise.
    ``shim``: the path of ortseal's engine-cache shim (None where it is not built), the one decryption
    library TensorRT may be given. ``chosen``: these are the providers ORT will run, with all their options, so
    a writer that is on by default must be given, and off (False for the fallback, whose application picks
    its providers and their options later, without ortseal)."""
    if not (sealed_model or sealed_cache):
        return
    subject = subject or ("a sealed model" if sealed_model else "a sealed engine cache")
    chosen_by_options = getattr(sess_options, "has_providers", None)  # ORT 1.22+
    if sealed_model and chosen_by_options is not None and chosen_by_options():
        raise UnsafeOptionError("execution providers added to sess_options (add_provider, add_provider_for_devices or "
                                "a provider selection policy) are refused for a sealed model: ONNX Runtime cannot "
                                "show their options, so ortseal cannot check that none writes the weights or an "
                                "engine in plaintext; pass them as providers=[...] (with their options) instead")
    if sealed_model and sess_options is not None and sess_options.optimized_model_filepath:
        raise UnsafeOptionError("sess_options.optimized_model_filepath is refused for a sealed model: ORT would "
                                "write the opened weights to that file in plaintext")
    for key, writer in CONFIG_WRITERS.items():
        value = config_entry(sess_options, key)
        if (sealed_model or writer.engine) and value is not None and writer.is_on(value):
            _refuse(f"the session option {key}", writer, subject)
    for name, options in provider_entries(providers, provider_options):
        writers = PROVIDER_WRITERS.get(name, {})
        for key, writer in writers.items():
            if not (sealed_model or writer.engine):
                continue
            if key in options and writer.is_on(options[key]):
                _refuse(f"{name} option {key}", writer, subject)
            stored = config_entry(sess_options, f"ep.{name.lower()}.{key}")
            if stored is not None and writer.is_on(stored):
                _refuse(f"the session option ep.{name.lower()}.{key}", writer, subject)
            if chosen and writer.on_by_default and key not in options and stored is None:
                _refuse(f"{name} without {key} (on by default)", writer, subject)
        if name == "OpenVINOExecutionProvider" and "load_config" in options and \
                _names_cache_dir(options["load_config"]):
            raise UnsafeOptionError(f"{name} option load_config with CACHE_DIR (or a load_config that is not a JSON "
                                    f"object, such as a file path) is refused for {subject}: OpenVINO writes the "
                                    "compiled model blobs, weights included, there unencrypted")
        if name == "OpenVINOExecutionProvider" and sealed_model:
            for var, writer in OPENVINO_ENV_WRITERS.items():
                if writer.is_on(os.environ.get(var, "")):
                    _refuse(f"the environment variable {var} (read by OpenVINO's runtime)", writer, subject)
        if name == TENSORRT:
            _tensorrt_cache_rule(options, sealed_model, subject, shim)
            if sealed_model and not options:
                for var, writer in TENSORRT_ENV_WRITERS.items():
                    if writer.is_on(os.environ.get(var, "")):
                        _refuse(f"the environment variable {var} (read by the TensorRT EP when it gets no options)",
                                writer, subject)


COMPILED_CACHE = "a sealed compiled-model cache"
# With an EPContext model the compiled model *is* the cache: these would make the EP write a second,
# unencrypted one beside it.
COMPILED_CACHE_WRITERS = {
    TENSORRT: _writers(Writer("trt_engine_cache_enable", "the TensorRT EP would write its engines, weights included, "
                              "unencrypted beside the sealed EPContext model")),
}


def refuse_compiled_cache_writers(ep: str, options: Mapping[str, str], sess_options: ort.SessionOptions, *,
                                  sealed_model: bool) -> None:
    """Raise :class:`UnsafeOptionError` if compiling for ``ep`` with ``options`` and ``sess_options`` would write
    the compiled model, an EP cache or (for a sealed source) the opened weights to disk: the engine and EP-cache
    rows of the tables above whatever the source, every row for a sealed one, this EP's own cache, any
    decryption library, and EPs already added to ``sess_options`` (the cache adds the one it binds)."""
    if sess_options.has_providers():
        raise UnsafeOptionError("sess_options already has execution providers: give the EP as the target "
                                "(ep_target(...)), so that what is compiled is what the cache entry binds")
    refuse_plaintext_writers([(ep, dict(options))], None, sess_options, sealed_model=sealed_model, sealed_cache=True,
                             shim=None, subject=COMPILED_CACHE)
    for key, writer in COMPILED_CACHE_WRITERS.get(ep, {}).items():
        if key in options and writer.is_on(options[key]):
            _refuse(f"{ep} option {key}", writer, COMPILED_CACHE)


def _names_cache_dir(load_config: object) -> bool:
    """True unless ``load_config`` is a JSON object none of whose keys, at any depth, is CACHE_DIR in any case
    (parsed as OpenVINO parses it: escaped spellings such as ``"\\u0043ACHE_DIR"`` are the same key)."""
    try:
        doc = json.loads(str(load_config))
    except (ValueError, RecursionError):
        return True  # not JSON: a file path or anything else ortseal cannot read the same way OpenVINO does
    if not isinstance(doc, dict):
        return True
    stack: list[object] = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(str(k).upper() == "CACHE_DIR" for k in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
