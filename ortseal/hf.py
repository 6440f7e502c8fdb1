"""Sealed models in optimum and sentence-transformers (``pip install "ortseal[hf]"``).

    from optimum.onnxruntime import ORTModelForFeatureExtraction
    model = ortseal.hf.from_pretrained(ORTModelForFeatureExtraction, "model_dir", keys="device.json")

    embedder = ortseal.hf.SentenceTransformer("model_dir", keys="device.json")

Both load a local model folder (optimum's or sentence-transformers' layout: ``config.json``, the tokenizer
files and the sealed ONNX file with its ``.data`` file) as the libraries do, except that the ONNX file is
opened by :class:`ortseal.InferenceSession` (read once, verified, decrypted in memory): the objects they return
are the libraries' own classes, holding an ortseal session, with the plain model's outputs bit for bit.
Optimum calls ``onnxruntime.InferenceSession`` itself inside ``ORTModel._from_pretrained``; the public seam it
offers is ``ORTModel(config=..., session=...)``, which is what :func:`from_pretrained` fills. Sentence
Transformers' ONNX backend loads through that same optimum call, so :class:`SentenceTransformer` swaps only
the module that makes it (its ``Transformer`` module), for one that calls :func:`from_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .keys import KeySet

__all__ = ["from_pretrained", "SentenceTransformer"]

KeysArg = KeySet | str | os.PathLike[str]


def from_pretrained(model_class: Any, model_dir: str | os.PathLike[str], keys: KeysArg, *, file_name: str | None = None,
                    subfolder: str = "", config: Any = None, min_release: int = 0, model_name: str | None = None,
                    provider: str = "CPUExecutionProvider", providers: Any = None, provider_options: Any = None,
                    session_options: Any = None, use_io_binding: bool | None = None) -> Any:
    """``model_class.from_pretrained(model_dir, ...)`` for a folder holding a sealed ONNX model, where
    ``model_class`` is one of optimum's single-session ORT models (``ORTModelForFeatureExtraction``,
    ``...ForSequenceClassification``, ``...ForMaskedLM``...): the file is chosen as optimum chooses it
    (``file_name``, else ``model.onnx``, else the only ``*.onnx``), the providers as optimum prepares them, and
    the session is an :class:`ortseal.InferenceSession` opened with ``keys`` (and ``min_release``,
    ``model_name``). A refusal raises ortseal's error and builds no model."""
    from optimum.onnxruntime import ORTModel
    from optimum.onnxruntime.modeling import ONNX_FILE_PATTERN, ONNX_WEIGHTS_NAME
    from optimum.onnxruntime.utils import prepare_providers_and_provider_options
    from transformers import AutoConfig

    from .model.session import InferenceSession

    single_session = isinstance(model_class, type) and issubclass(model_class, ORTModel)
    cls: Any = model_class  # (optimum is untyped)
    if not single_session or cls._from_pretrained.__func__ is not ORTModel._from_pretrained.__func__:
        raise TypeError(f"{getattr(model_class, '__name__', model_class)!r} is not one of optimum's single-session "
                        "ORT models (ORTModelForFeatureExtraction, ...ForSequenceClassification, ...)")
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a model folder (a sealed model is loaded from a local folder)")
    onnx_files = [p.relative_to(folder) for p in sorted((folder / subfolder).glob("**/*.onnx"))]
    if not onnx_files:
        raise FileNotFoundError(f"no ONNX model file in {folder / subfolder}")
    path = folder / cls._infer_file_path(ONNX_FILE_PATTERN, onnx_files=onnx_files,
                                                 target_file_name=file_name, standard_file_name=ONNX_WEIGHTS_NAME)
    if config is None:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    providers, provider_options = prepare_providers_and_provider_options(provider=provider, providers=providers,
                                                                         provider_options=provider_options)
    session = InferenceSession(path, session_options, providers=providers, provider_options=provider_options,
                               keys=keys, min_release=min_release, model_name=model_name)
    return model_class(config=config, session=session, use_io_binding=use_io_binding, model_save_dir=path.parent)


def _transformer_module(options: dict[str, Any]) -> type:
    """Sentence Transformers' ``Transformer`` module, loading its ONNX model with :func:`from_pretrained`."""
    from optimum.onnxruntime import (
        ONNX_WEIGHTS_NAME,
        ORTModelForFeatureExtraction,
        ORTModelForMaskedLM,
        ORTModelForSequenceClassification,
    )
    from sentence_transformers.backend.utils import backend_should_export
    from sentence_transformers.models import Transformer

    classes = {"feature-extraction": ORTModelForFeatureExtraction, "fill-mask": ORTModelForMaskedLM,
               "sequence-classification": ORTModelForSequenceClassification}

    class SealedTransformer(Transformer):
        def _load_model(self, model_name_or_path: str, transformer_task: str, config: Any, backend: str,
                        is_peft_model: bool, **model_kwargs: Any) -> Any:
            if transformer_task not in classes:
                raise ValueError(f"ortseal.hf.SentenceTransformer loads {', '.join(classes)} models, not "
                                 f"{transformer_task!r}")
            # the file sentence-transformers would load (model.onnx, or onnx/model.onnx, or file_name=)
            export, model_kwargs = backend_should_export(Path(model_name_or_path), True, model_kwargs,
                                                         ONNX_WEIGHTS_NAME, "*.onnx", "ONNX")
            if export:
                raise FileNotFoundError(f"no ONNX model in {model_name_or_path} (a sealed one is never exported)")
            known = {"file_name", "subfolder", "provider", "providers", "provider_options", "session_options",
                     "use_io_binding"}
            return from_pretrained(classes[transformer_task], model_name_or_path, config=config, **options,
                                   **{k: v for k, v in model_kwargs.items() if k in known})

    return SealedTransformer


def _sentence_transformer_class() -> type:
    from sentence_transformers import SentenceTransformer as Base
    from sentence_transformers.models import Transformer

    class SealedSentenceTransformer(Base):
        """``sentence_transformers.SentenceTransformer(model_dir, backend="onnx", ...)`` on a sealed model."""

        def __init__(self, model_name_or_path: str | os.PathLike[str], *args: Any, keys: KeysArg, min_release: int = 0,
                     model_name: str | None = None, **kwargs: Any) -> None:
            if kwargs.setdefault("backend", "onnx") != "onnx":
                raise ValueError("a sealed model is an ONNX model: backend must be 'onnx'")
            if not Path(model_name_or_path).is_dir():
                raise FileNotFoundError(f"{model_name_or_path} is not a model folder (a sealed model is loaded from "
                                        "a local folder)")
            self._ortseal_transformer = _transformer_module({"keys": keys, "min_release": min_release,
                                                             "model_name": model_name})
            super().__init__(os.fspath(model_name_or_path), *args, **kwargs)

        def _load_module_class_from_ref(self, class_ref: str, *args: Any, **kwargs: Any) -> Any:
            module_class = super()._load_module_class_from_ref(class_ref, *args, **kwargs)
            return self._ortseal_transformer if module_class is Transformer else module_class

    return SealedSentenceTransformer


def __getattr__(name: str) -> Any:
    # sentence-transformers (and torch) are imported only when the class is asked for
    if name == "SentenceTransformer":
        cls = _sentence_transformer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
