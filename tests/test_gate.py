"""One gate for everything that hands ONNX Runtime opened weights: every public entry point, given every
option of the refused-options table (``ortseal._policy``) in each way it can be given to that entry point,
raises UnsafeOptionError and writes no file (issue 20).

The cases are made from the table itself, so an option added to it is tested on every entry point."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from models import transformer_like

import ortseal
from ortseal import KeySet, UnsafeOptionError
from ortseal._policy import CONFIG_WRITERS, PROVIDER_WRITERS, TENSORRT, TENSORRT_ENV_WRITERS, Writer

CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class Case:
    """One refused option, given one way: session config entries, ``sess_options`` attributes, providers
    (None: the entry point's own), environment variables; ``named``: what the refusal must name."""

    id: str
    named: str
    config: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    providers: list[Any] | None = None
    env: dict[str, str] = field(default_factory=dict)
    adds_provider: bool = False


def _on(writer: Writer, out: str) -> str:
    return out + "/written" if writer.kind == "path" else "1"


def _cases(out: str) -> list[Case]:
    cases = [Case("optimized_model_filepath", "optimized_model_filepath",
                  attributes={"optimized_model_filepath": out + "/opt.onnx"})]
    cases += [Case(f"config-{key}", key, config={key: _on(w, out)}) for key, w in CONFIG_WRITERS.items()]
    if hasattr(ort.SessionOptions, "has_providers"):
        cases.append(Case("add_provider_for_devices", "add_provider", adds_provider=True))
    for name, writers in PROVIDER_WRITERS.items():
        for key, w in writers.items():
            cases.append(Case(f"{name[:10]}-{key}", key, providers=[(name, {key: _on(w, out)}), CPU]))
            # the form ORT stores provider options in, for a provider named without options
            cases.append(Case(f"{name[:10]}-stored-{key}", key, config={f"ep.{name.lower()}.{key}": _on(w, out)},
                              providers=[name, CPU]))
    cases += [
        Case("trt-cache-without-shim", "trt_engine_cache_enable",
             providers=[(TENSORRT, {"trt_engine_cache_enable": "1", "trt_engine_cache_path": out}), CPU]),
        Case("trt-other-decryption-library", "trt_engine_decryption_lib_path",
             providers=[(TENSORRT, {"trt_engine_cache_enable": "1", "trt_engine_cache_path": out,
                                    "trt_engine_decryption_enable": "1",
                                    "trt_engine_decryption_lib_path": "/opt/vendor/libdecrypt.so"}), CPU]),
        Case("openvino-load_config-CACHE_DIR", "CACHE_DIR",
             providers=[("OpenVINOExecutionProvider", {"load_config": '{"CPU": {"CACHE_DIR": "' + out + '"}}'}), CPU]),
    ]
    cases += [Case(f"env-{var}", var, env={var: "1"}, providers=[TENSORRT, CPU]) for var in TENSORRT_ENV_WRITERS]
    return cases


CASES = _cases("{out}")


def _apply(case: Case, out: Path, so: ort.SessionOptions) -> ort.SessionOptions:
    """Give ``so`` the case's session-wide options."""
    for key, value in case.config.items():
        so.add_session_config_entry(key, value.replace("{out}", str(out)))
    for name, value in case.attributes.items():
        setattr(so, name, value.replace("{out}", str(out)))
    if case.adds_provider:
        so.add_provider_for_devices([d for d in ort.get_ep_devices() if d.ep_name == CPU], {})
    return so


def _providers(case: Case, out: Path) -> list[Any]:
    if case.providers is None:
        return [CPU]
    return [(p[0], {k: v.replace("{out}", str(out)) for k, v in p[1].items()}) if isinstance(p, tuple) else p
            for p in case.providers]


def _stored_needs_providers(case: Case) -> bool:
    return any(k.startswith("ep.") and not k.startswith("ep.context") for k in case.config)


def _session(sealed: str, keys: KeySet, case: Case, out: Path) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT warns that EPs named are not available here
        return ortseal.InferenceSession(sealed, _apply(case, out, ort.SessionOptions()), providers=_providers(case, out),
                                        keys=keys)


def _set_providers(sealed: str, keys: KeySet, case: Case, out: Path) -> object:
    """A good session first; then the refused options on the application's own options object (which
    ``set_providers`` makes the next session with) and in the providers it asks for."""
    so = ort.SessionOptions()
    sess = ortseal.InferenceSession(sealed, so, providers=[CPU], keys=keys)
    _apply(case, out, so)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sess.set_providers(_providers(case, out))
    return sess


def _verify(sealed: str, keys: KeySet, case: Case, out: Path) -> object:
    return ortseal.verify_model(sealed, keys, sess_options=_apply(case, out, ort.SessionOptions()))


def _fallback(sealed: str, keys: KeySet, case: Case, out: Path) -> object:
    return ortseal.fallback_session_options(keys, _apply(case, out, ort.SessionOptions()), model=sealed)


ENTRY_POINTS: dict[str, tuple[bool, Callable[[str, KeySet, Case, Path], object]]] = {
    "InferenceSession": (True, _session),
    "set_providers": (True, _set_providers),
    "verify_model": (False, _verify),  # opens on the CPU EP alone: only session options reach ORT
    "fallback_session_options": (False, _fallback),  # the application picks providers later: any may run
}


def _applies(entry: str, case: Case) -> bool:
    takes_providers, _ = ENTRY_POINTS[entry]
    if takes_providers:
        return True
    if entry == "verify_model":  # only what reaches ORT's CPU-only session: session-wide options
        return case.providers is None
    # fallback: every session-wide option and every provider's stored options and environment variables, for
    # whichever provider the application picks; provider tuples never pass through it
    return case.providers is None or _stored_needs_providers(case) or bool(case.env)


MATRIX = [pytest.param(entry, case, id=f"{entry}-{case.id}") for entry in ENTRY_POINTS for case in CASES
          if _applies(entry, case)]


@pytest.fixture(scope="module")
def sealed_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    transformer_like(d / "model.onnx", d=16, vocab=32, seq=4)
    keys = KeySet.generate()
    (d / "sealed").mkdir()
    ortseal.seal_model(d / "model.onnx", d / "sealed" / "model.onnx", keys, min_bytes=64, progress=False)
    return str(d / "sealed" / "model.onnx"), keys


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


@pytest.mark.parametrize("entry, case", MATRIX)
def test_every_entry_point_refuses_every_option_that_writes_plaintext(sealed_model, entry, case, tmp_path,
                                                                      monkeypatch):
    sealed, keys = sealed_model
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)  # where dumps without a path land
    for var in (*TENSORRT_ENV_WRITERS, *case.env):
        monkeypatch.delenv(var, raising=False)
    for var, value in case.env.items():
        monkeypatch.setenv(var, value)
    model_dir = Path(sealed).parent
    before = _tree(model_dir)
    _, call = ENTRY_POINTS[entry]
    with pytest.raises(UnsafeOptionError) as err:
        call(sealed, keys, case, out)
    assert case.named in str(err.value), err.value
    assert _tree(out) == {} and _tree(model_dir) == before, "a refused entry point wrote a file"


def test_every_table_entry_has_a_case():
    named = {c.named for c in CASES}
    assert set(CONFIG_WRITERS) <= named and set(TENSORRT_ENV_WRITERS) <= named
    assert all(set(w) <= named for w in PROVIDER_WRITERS.values())


def test_verify_and_fallback_accept_safe_options(sealed_model, tmp_path, monkeypatch):
    """The gate refuses what writes plaintext, nothing else: profiling and the timing cache stay allowed."""
    sealed, keys = sealed_model
    monkeypatch.chdir(tmp_path)
    so = ort.SessionOptions()
    so.add_session_config_entry("ep.context_enable", "0")
    so.log_severity_level = 3
    assert ortseal.verify_model(sealed, keys, sess_options=so).decrypted
    fb = ortseal.fallback_session_options(keys, so, model=sealed)
    sess = ort.InferenceSession(fb.model_bytes, fb.sess_options, providers=[CPU])
    sess.run(None, {"ids": np.zeros((1, 4), np.int64)})
    assert not [p for p in os.listdir(tmp_path) if p.endswith((".onnx", ".data"))]


def test_a_writer_on_by_default_must_be_turned_off(sealed_model, tmp_path):
    """CANN dumps its offline model (.om, weights included) unless dump_om_model=0 (its default is 1): a sealed
    model given CANN without that option is refused, by every entry point that runs the providers it is given;
    the fallback, whose application picks providers and options later, cannot see them (docs/tensorrt.md)."""
    sealed, keys = sealed_model
    for providers in (["CANNExecutionProvider", CPU], [("CANNExecutionProvider", {"device_id": "0"}), CPU]):
        with pytest.raises(UnsafeOptionError, match="CANNExecutionProvider without dump_om_model .on by default."):
            ortseal.InferenceSession(sealed, providers=providers, keys=keys)
    assert _tree(tmp_path) == {}
    # given, and off: the gate lets it through to ORT, whose CPU build has no CANN (it warns and runs on CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sess = ortseal.InferenceSession(sealed, providers=[("CANNExecutionProvider", {"dump_om_model": "0"}), CPU],
                                        keys=keys)
    assert sess.get_providers()[-1] == CPU
