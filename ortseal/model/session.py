"""``ortseal.InferenceSession``: an ``onnxruntime.InferenceSession`` that opens sealed models at session start."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .._log import Log
from .._policy import TENSORRT, config_entry
from .._progress import status_line
from .._runtime import onnxruntime as ort
from ..blob import check_release
from ..errors import FormatError, ProviderUnavailableError
from ..keys import KeySet, as_keyset
from ._gate import check_session
from ._graph import LoadedModel, malformed_is_format_error, read_model
from ._record import read_record, sealed_format
from .open import Opened, open_sealed_model
from .verify import verify_sealed

log = Log("ortseal")

EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


class InferenceSession(ort.InferenceSession):
    """Like ``onnxruntime.InferenceSession``, plus ``keys=`` and ``min_release=``: a sealed model file is read
    once, its signature over the whole file, its release and every sealed and plain external tensor are
    checked against what the publisher signed, and its tensors decrypted in memory, all before ORT sees any
    of it; ORT's optimizers and every EP then see plain constant weights.

        sess = ortseal.InferenceSession("model.sealed.onnx", providers=["CPUExecutionProvider"], keys=keys)
        sess.run(None, {"x": x})

    ``keys`` is a :class:`ortseal.KeySet` (or a keyset file's path). ``model_name``: the name the model was
    sealed with (its manifest's); any other model signed by the same publisher is then refused in its place.
    Given keys, an unsealed model is refused with FormatError (a device that expects sealed models must not
    run a plain one put in their place); without keys, unsealed models pass through unchanged, and a sealed
    one is a TypeError. A refusal leaves no session: the constructor raises, and ``set_providers`` (which
    opens the model again, verifying it again) keeps the previous session. ORT's own fallback to other EPs
    never runs for a sealed model.
    """

    _model_path: str | None  # ORT's own: what its session is made from
    _model_bytes: bytes | None

    def __init__(self, path_or_bytes: str | bytes | os.PathLike[str], sess_options: ort.SessionOptions | None = None,
                 providers: Sequence[str | tuple[str, dict[Any, Any]]] | None = None,
                 provider_options: Sequence[dict[Any, Any]] | None = None, *, keys: KeySet | str | os.PathLike[str] |
                 None = None, min_release: int = 0, model_name: str | None = None, **kwargs: Any) -> None:
        keys = None if keys is None else as_keyset(keys)  # a KeySet, or a keyset file's path
        self._ortseal_keys = keys
        self._ortseal_min_release = check_release(min_release, "min_release")
        self._ortseal_model_name = model_name
        self._ortseal_loaded: LoadedModel | None = None
        self._ortseal_source: str | bytes | None = None
        base_dir = config_entry(sess_options, EXTERNAL_FOLDER_KEY) or None
        started = time.monotonic()
        loaded = read_model(path_or_bytes, base_dir)
        if _is_sealed(loaded):
            if keys is None:
                raise TypeError("this model is sealed: pass keys= (the keyset that opens it)")
            # The first session is made from these very bytes; set_providers() reads the file again.
            self._ortseal_loaded = loaded
            self._ortseal_source = path_or_bytes if isinstance(path_or_bytes, bytes) else os.fspath(path_or_bytes)
            self._ortseal_base_dir = base_dir
            self._ortseal_read_s = time.monotonic() - started
        elif keys is not None:
            raise FormatError(f"{loaded.name} is not a sealed model, but keys= was given: a device that expects "
                                "sealed models refuses a plain one (open unsealed models without keys=)")
        self._ortseal_opened: Opened | None = None
        super().__init__(path_or_bytes, sess_options, providers, provider_options, **kwargs)

    @property
    def is_sealed(self) -> bool:
        """True if this session was opened from a sealed model."""
        return self._ortseal_source is not None

    def _create_inference_session(self, providers, provider_options, disabled_optimizers=None) -> None:
        checked = check_session(providers, provider_options, self._sess_options, sealed_model=self.is_sealed)
        providers, provider_options, sealed_cache = checked.providers, checked.provider_options, checked.sealed_cache
        if sealed_cache or self.is_sealed:
            # ORT's Python API would print "EP Error ... Falling back" and retry elsewhere: a sealed model or a
            # session that asked for the sealed engine cache gets what it asked for or fails.
            self._enable_fallback = False
        if not self.is_sealed:
            super()._create_inference_session(providers, provider_options, disabled_optimizers)
        else:
            self._create_sealed(providers, provider_options, disabled_optimizers)
        if sealed_cache and TENSORRT not in self.get_providers():
            raise ProviderUnavailableError(f"the session was asked for {TENSORRT} with a sealed engine cache but ONNX "
                                           f"Runtime gave it {self.get_providers()}")

    def _reset_session(self, providers, provider_options) -> None:
        """``set_providers`` and ORT's retries: ORT drops its session before making the next, so a sealed
        model is verified and opened first; if that fails, the previous session stays as it was."""
        if not self.is_sealed:
            return super()._reset_session(providers, provider_options)
        # the options ORT will make the next session with: the application's own object, not the copy ORT
        # bound to the current session (the application may have changed it since)
        checked = check_session(providers, provider_options, self._sess_options_initial or self._sess_options,
                                sealed_model=True)
        providers, provider_options = checked.providers, checked.provider_options
        with self._open_sealed() as opened:
            self._ortseal_opened = opened
            try:
                super()._reset_session(providers, provider_options)
            finally:
                self._ortseal_opened = None

    @contextlib.contextmanager
    def _open_sealed(self) -> Iterator[Opened]:
        """Read (unless the constructor just did), verify and open the sealed model; every check runs before
        anything is yielded. Any failure on these bytes is an OrtsealError."""
        loaded, self._ortseal_loaded = self._ortseal_loaded, None
        keys = self._ortseal_keys
        assert isinstance(keys, KeySet) and self._ortseal_source is not None
        started = time.monotonic() - (self._ortseal_read_s if loaded is not None else 0.0)
        with contextlib.ExitStack() as stack:
            with malformed_is_format_error(f"the sealed model {loaded.name if loaded else ''}"):
                if loaded is None:
                    loaded = read_model(self._ortseal_source, self._ortseal_base_dir)
                verified = stack.enter_context(verify_sealed(loaded, keys, min_release=self._ortseal_min_release,
                                                             model_name=self._ortseal_model_name))
                verify_s = time.monotonic() - started
                _warn_if_publisher(keys, verified.manifest.purpose)
                opened = stack.enter_context(open_sealed_model(verified, keys))
            # (read+verify, decrypt) seconds, for the log line once ORT has built the session
            self._ortseal_times = verify_s, time.monotonic() - started - verify_s
            yield opened

    def _create_sealed(self, providers, provider_options, disabled_optimizers) -> None:
        """Let ORT build the session from the verified, opened model."""
        with contextlib.ExitStack() as stack:
            opened = self._ortseal_opened or stack.enter_context(self._open_sealed())
            origin = self._model_path, self._model_bytes
            self._model_path, self._model_bytes = opened.path, opened.model_bytes
            folder = config_entry(self._sess_options, EXTERNAL_FOLDER_KEY)
            if folder and opened.path:  # the opened tensors are beside the opened model, not where the option says
                self._sess_options.add_session_config_entry(EXTERNAL_FOLDER_KEY, os.path.dirname(opened.path))
            started = time.monotonic()
            try:
                # the progress bar of a large model ends here; ORT may take seconds more to build the session
                with status_line("building the ONNX Runtime session", enabled=opened.progress_shown):
                    super()._create_inference_session(providers, provider_options, disabled_optimizers)
            finally:
                # Keep no reference to the opened model: only the sealed source stays.
                self._model_path, self._model_bytes = origin
                if folder and opened.path:
                    self._sess_options.add_session_config_entry(EXTERNAL_FOLDER_KEY, folder)
            verify_s, decrypt_s = self._ortseal_times
            build_s = time.monotonic() - started
            name = os.path.basename(self._ortseal_source) if isinstance(self._ortseal_source, str) else "model bytes"
            log.info("ortseal: opened %s in %.2f s: read+verify %.2f s, decrypt %.2f s, ONNX Runtime build %.2f s "
                     "(from %s)", name, verify_s + decrypt_s + build_s, verify_s, decrypt_s, build_s,
                     "a RAM folder" if opened.path else "memory")


def _is_sealed(loaded: LoadedModel) -> bool:
    """True for a model that ends with a seal record, or whose metadata marks it sealed without one (refused
    when verified: damaged, or sealed by an older format). Told from the raw bytes, never by parsing the
    graph of a file nobody vouched for: everything else goes to ORT as it is, unparsed."""
    return read_record(loaded.data) is not None or sealed_format(loaded.data) is not None


def _warn_if_publisher(keys: KeySet, purpose: str) -> None:
    """One line when the keyset opening a model could also sign it: the publisher's keyset on a device, where
    anyone who copies it can sign models every device accepts."""
    signer = next((k for k in keys.signing_key_ids if keys.trusted_key(k, purpose) is not None), None)
    if signer is not None and signer not in _WARNED:
        _WARNED.add(signer)
        log.warning(f"ortseal: this keyset can sign models (signing key {signer}): keep it on the publisher's "
                    "machine and give devices the keyset of: ortseal device-keys keys.json -o device.json")


_WARNED: set[str] = set()  # signing key ids warned about (once per process)


