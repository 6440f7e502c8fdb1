"""The sealed compiled-model cache: compile once in memory with ORT's compile API, seal, and start from it.

    cache = CompiledModelCache("/var/cache/app/compiled", "device.json", release=3, on_tamper="rebuild")
    target = ep_target("OpenVINOExecutionProvider", device_type="CPU")
    session = cache.session("model.sealed.onnx", target)       # an onnxruntime.InferenceSession

The first start compiles the model in memory (``ModelCompiler(...).compile_to_bytes()``, EPContext with the
EP's blob embedded), seals it bound to what it was compiled from, for and with (:mod:`.entry`) and writes it
atomically; later starts read the entry once, check it and create the session from the decrypted bytes,
without compiling. A sealed source model is verified and opened by ortseal's own route and handed to the
compiler in memory. Spec and threat: ``docs/compiled-cache.md``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnx import ModelProto

from .._atomic import move_into_private_folder, remove_stale_temps
from .._log import Log
from .._policy import refuse_compiled_cache_writers
from .._runtime import onnxruntime as ort
from ..blob import check_release
from ..errors import CompileError, FormatError, OrtsealError, SetupError, UnsafeOptionError
from ..keys import KeySet, as_keyset
from ..model._graph import (
    DataFiles,
    LoadedModel,
    external_initializers,
    is_sealed_model,
    load_inline,
    load_model,
    malformed_is_format_error,
)
from ..model._record import read_record
from ..model.open import open_sealed_model
from ..model.verify import verify_sealed
from .entry import ENTRY_SUFFIX, Binding, check_can_write, entry_name, open_entry, read_entry, write_entry
from .target import EpTarget, ep_identity

log = Log("ortseal.compiled")
QUARANTINE = "quarantine"
SOURCE_LABEL = b"ortseal compiled source v1\x00"


@dataclass(frozen=True)
class CachedStart:
    """One start: the session, the entry it came from, whether this start compiled, and what was set aside."""

    session: ort.InferenceSession
    entry: Path
    compiled: bool
    quarantined: Path | None
    seconds: float


def _private_dir(path: str | os.PathLike[str]) -> Path:
    """The cache folder, created 0700 if missing; refused when it is a link, not a folder, not this user's,
    or writable by others (who could then replace, or remove, entries)."""
    directory = Path(path)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700, parents=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeOptionError(f"compiled-model cache {os.fspath(path)!r} is not a folder (a link or a file): refused")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise UnsafeOptionError(f"compiled-model cache {os.fspath(path)!r} belongs to another user or is writable by "
                                "others: use a folder of this user's, mode 0700")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SetupError(f"compiled-model cache {os.fspath(path)!r} is not writable by this process")
    return directory.absolute()


def _plain_source(loaded: LoadedModel) -> tuple[str, bytes]:
    """A plain model's digest and the bytes to compile: its external tensors read once each, hashed as read
    and put inline, so what is compiled is what was hashed."""
    h = hashlib.sha256(SOURCE_LABEL + len(loaded.data).to_bytes(8, "big"))
    h.update(loaded.data)
    externals = external_initializers(loaded.model)
    if not externals:
        return h.hexdigest(), loaded.data
    model = ModelProto()
    model.CopyFrom(loaded.model)
    with DataFiles(loaded.base_dir) as files:
        for _, tensor in external_initializers(model):
            load_inline(tensor, files)
            h.update(len(tensor.raw_data).to_bytes(8, "big"))
            h.update(tensor.raw_data)
    if model.ByteSize() >= (1 << 31):
        raise FormatError(f"{loaded.name}: a plain model over 2 GiB with external data cannot be compiled in memory; "
                          "seal it (ortseal seal) and compile the sealed model")
    return h.hexdigest(), model.SerializeToString()


class CompiledModelCache:
    """A folder of sealed compiled models for one keyset.

    ``keys`` opens sealed source models and signs the entries: give it a device keyset with its own
    engine-signing key (``ortseal device-keys --engine-signing-key``); entries are accepted only when signed
    by a key trusted for ``"engine"``, never by a key trusted for models only. Entries written are stamped
    with ``release``; entries older than ``min_release`` (default: ``release``) are refused, so an old entry
    copied over a newer one is not loaded. ``on_tamper="raise"`` (default) fails on a bad entry;
    ``"rebuild"`` moves it to ``quarantine/`` and compiles again. An entry for another model, EP version,
    device or options is never loaded: it has another name, and the start compiles.
    """

    def __init__(self, cache_dir: str | os.PathLike[str], keys: KeySet | str | os.PathLike[str], *, release: int = 0,
                 min_release: int | None = None, on_tamper: str = "raise") -> None:
        if on_tamper not in ("raise", "rebuild"):
            raise ValueError(f"on_tamper must be 'raise' or 'rebuild', got {on_tamper!r}")
        self.keys = as_keyset(keys)
        self.release = check_release(release)
        self.min_release = check_release(release if min_release is None else min_release, "min_release")
        if self.min_release > self.release:
            raise ValueError(f"min_release {self.min_release} is above release {self.release}: entries this process "
                             "writes could never be opened")
        self.on_tamper = on_tamper
        self.directory = _private_dir(cache_dir)
        for stale in remove_stale_temps(self.directory, f"*{ENTRY_SUFFIX}"):
            log.warning("ortseal: removed %s, left by a compiled-model cache writer that was killed", stale)

    def session(self, model: str | os.PathLike[str] | bytes, target: EpTarget, **kwargs) -> ort.InferenceSession:
        """:meth:`start`'s session."""
        return self.start(model, target, **kwargs).session

    def start(self, model: str | os.PathLike[str] | bytes, target: EpTarget, *,
              sess_options: ort.SessionOptions | None = None, name: str | None = None,
              model_name: str | None = None, model_min_release: int = 0) -> CachedStart:
        """An ORT session of ``model`` (a path or bytes, plain or sealed) on ``target``, from the cache.

        ``sess_options`` (no providers of its own) is used for the session and gets ``target`` added; its
        ``graph_optimization_level`` is bound into the entry. ``name``: the entry's file-name stem (default:
        the model file's). ``model_name`` / ``model_min_release``: as for ``ortseal.InferenceSession``, for
        a sealed source."""
        started = time.monotonic()
        so = sess_options or ort.SessionOptions()
        loaded = load_model(model)
        sealed = is_sealed_model(loaded.model) or read_record(loaded.data) is not None
        refuse_compiled_cache_writers(target.name, target.options, so, sealed_model=sealed)  # the one gate
        source_name = loaded.name
        with contextlib.ExitStack() as stack:
            digest, compile_input = self._source(loaded, sealed, model_name, model_min_release, stack)
            del loaded  # the parsed plain model is not needed again (a sealed one's stays with ``stack``)
            binding = Binding.make(source_sha256=digest, source_kind="sealed" if sealed else "plain",
                                   ep=ep_identity(target), device=target.device, options=target.options,
                                   session={"graph_optimization_level": int(so.graph_optimization_level)},
                                   onnxruntime=ort.__version__)
            stem = name or (Path(os.fspath(model)).name.split(".")[0] if not isinstance(model, bytes) else "model")
            path = self.directory / entry_name(stem, binding)
            session, quarantined = None, None
            if os.path.lexists(path):
                try:
                    session = self._load(path, binding, target, so)
                except FileNotFoundError:
                    pass  # removed since lexists (another process quarantined it): a miss
                except OrtsealError as exc:
                    if self.on_tamper == "raise":
                        raise
                    quarantined = self._quarantine(path, exc)
            compiled = session is None
            if compiled:
                session = self._compile(compile_input(), path, binding, target, so)
        seconds = time.monotonic() - started
        log.info("ortseal: %s for %s on %s in %.2f s", "compiled and sealed" if compiled else "opened sealed entry",
                 source_name, target.name, seconds)
        return CachedStart(session, path, compiled, quarantined, seconds)

    def _source(self, loaded: LoadedModel, sealed: bool, model_name: str | None, model_min_release: int,
                stack: contextlib.ExitStack) -> tuple[str, Callable[[], str | bytes]]:
        """The source's digest, and a function giving what to compile (called only on a miss). A sealed model
        is verified here (its record over the whole file, which commits to its data files) and opened, into
        ``stack``, only when it is compiled."""
        if not sealed:
            digest, data = _plain_source(loaded)
            return digest, lambda: data
        with malformed_is_format_error(f"the sealed model {loaded.name}"):
            verified = stack.enter_context(verify_sealed(loaded, self.keys, min_release=model_min_release,
                                                         model_name=model_name))

        def opened() -> str | bytes:
            got = stack.enter_context(open_sealed_model(verified, self.keys))
            return got.model_bytes if got.model_bytes is not None else got.path  # type: ignore[return-value]

        return hashlib.sha256(SOURCE_LABEL + loaded.data).hexdigest(), opened

    def _load(self, path: Path, binding: Binding, target: EpTarget, so: ort.SessionOptions) -> ort.InferenceSession:
        """A session from the entry at ``path``: read once, checked, decrypted in memory; CompileError if the
        EP refuses the compiled model it holds."""
        plain = open_entry(read_entry(path), self.keys, binding, min_release=self.min_release)
        try:
            compiled = bytes(plain)  # ORT's Python API takes bytes only
        finally:
            ctypes.memset((ctypes.c_char * len(plain)).from_buffer(plain), 0, len(plain))
        del plain  # before ORT makes its own copies: one plaintext copy of ours at a time
        return _session(compiled, target, so)

    def _compile(self, source: str | bytes, path: Path, binding: Binding, target: EpTarget,
                 so: ort.SessionOptions) -> ort.InferenceSession:
        check_can_write(self.keys)  # before compiling: an entry nobody could open again is not worth building
        compile_options = ort.SessionOptions()
        compile_options.graph_optimization_level = so.graph_optimization_level
        compile_options.log_severity_level = so.log_severity_level
        target.add_to(compile_options)
        try:
            compiled = ort.ModelCompiler(compile_options, source, embed_compiled_data_into_model=True).compile_to_bytes()
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types (Fail, InvalidArgument, RuntimeError...)
            raise CompileError(f"{target.name} could not compile the model: {exc}") from None
        session = _session(compiled, target, so)  # first: an entry the EP cannot load is never written
        write_entry(path, compiled, binding, self.keys, release=self.release)
        log.info("ortseal: sealed %s (%d bytes, release %d)", path, len(compiled), self.release)
        return session

    def _quarantine(self, path: Path, exc: Exception) -> Path:
        """Move a refused entry (a link or FIFO itself, never what it points to) into ``quarantine/``."""
        target = move_into_private_folder(self.directory, path.name, QUARANTINE,
                                          f"the refused entry {path.name} was left in place: {exc}")
        log.warning("ortseal: %s was refused (%s: %s); moved to %s and compiling again", path, type(exc).__name__,
                    exc, target)
        return target


def _session(compiled: bytes, target: EpTarget, so: ort.SessionOptions) -> ort.InferenceSession:
    """The session ORT makes from compiled bytes; it keeps no Python reference to them (ORT has its own copy),
    so the plaintext compiled model lives only as long as ORT needs it."""
    if not so.has_providers():
        target.add_to(so)
    try:
        session = ort.InferenceSession(compiled, so)
    except Exception as exc:  # noqa: BLE001
        raise CompileError(f"{target.name} refused the compiled model: {exc}") from None
    session._model_bytes = None  # set_providers is not supported on it: start again from the cache
    return session
