"""Attacks on the sealed compiled-model cache (issue 21), carried out on real OpenVINO-EP sessions and files.

Each test here was written against the cache as first delivered and failed on it (see the commit log)."""

from __future__ import annotations

import pytest
from test_compiled_cache import _cache, _model, _no_plaintext, device, publisher, target, work  # noqa: F401

import ortseal
from ortseal import UnsafeOptionError

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("value", ["True", "dumps", "1"])
def test_openvino_dump_subgraphs_is_refused_for_a_sealed_source(work, publisher, device, target, value):  # noqa: F811
    """The OpenVINO plugin EP (1.8.1) takes ``dump_subgraphs=<folder>`` and writes every subgraph it
    compiles there as OpenVINO IR, its .bin holding the weights in plaintext: for a sealed source those are
    the opened weights. Refused before anything is opened or compiled."""
    from ortseal.compiled import ep_target

    weights = _model(work / "m.onnx", n=64)
    ortseal.seal_model(work / "m.onnx", work / "m.sealed.onnx", publisher)
    (work / "m.onnx").unlink()
    dumping = ep_target(target.name, {"dump_subgraphs": value}, device_type="CPU")
    with pytest.raises(UnsafeOptionError, match="dump_subgraphs"):
        _cache(work, device).start(work / "m.sealed.onnx", dumping, model_name="m")
    _no_plaintext([work], weights)


@pytest.mark.parametrize("var", ["OV_ENABLE_SERIALIZE_TRACING", "OV_ENABLE_VISUALIZE_TRACING"])
def test_openvino_tracing_environment_is_refused_for_a_sealed_source(work, publisher, device, target, monkeypatch,  # noqa: F811
                                                                     var):
    """OpenVINO's runtime (release builds included) reads OV_ENABLE_SERIALIZE_TRACING and serializes the
    model after every transformation pass into the working folder as IR (.xml + .bin: the opened weights in
    plaintext); OV_ENABLE_VISUALIZE_TRACING writes a .svg.dot per pass with constants' values. Whatever the
    options, compiling a sealed source with either set is refused before anything is opened."""
    weights = _model(work / "m.onnx", n=64)
    ortseal.seal_model(work / "m.onnx", work / "m.sealed.onnx", publisher)
    (work / "m.onnx").unlink()
    monkeypatch.setenv(var, "1")
    with pytest.raises(UnsafeOptionError, match=var):
        _cache(work, device).start(work / "m.sealed.onnx", target, model_name="m")
    _no_plaintext([work], weights)
    assert not [p for p in work.rglob("Model*") if p.suffix in (".xml", ".bin", ".dot")]


def _tampered_entry(work, device, target):  # noqa: F811
    _model(work / "m.onnx", n=64)
    cache = _cache(work, device, on_tamper="rebuild")
    entry = cache.start(work / "m.onnx", target).entry
    data = bytearray(entry.read_bytes())
    data[-100] ^= 1
    entry.write_bytes(data)
    return cache, entry


def test_a_planted_quarantine_link_is_not_followed(work, device, target, tmp_path_factory):  # noqa: F811
    """``quarantine`` planted as a link to another folder: the refused entry is not moved through it (a
    typed refusal, or set aside without following the link), and nothing lands in the folder it points to."""
    cache, entry = _tampered_entry(work, device, target)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (work / "cache" / "quarantine").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ortseal.OrtsealError, match="quarantine"):
        cache.start(work / "m.onnx", target)
    assert list(elsewhere.iterdir()) == []
    assert (work / "cache" / "quarantine").is_symlink()


def test_a_quarantine_that_is_not_a_folder_is_a_typed_refusal(work, device, target):  # noqa: F811
    """``quarantine`` planted as a file: on_tamper="rebuild" raises an OrtsealError naming it, not an OSError."""
    cache, entry = _tampered_entry(work, device, target)
    (work / "cache" / "quarantine").write_bytes(b"planted")
    with pytest.raises(ortseal.OrtsealError, match="quarantine"):
        cache.start(work / "m.onnx", target)
