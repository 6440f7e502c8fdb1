"""Opening a sealed model for ORT: verify everything, then hand ORT plain constant initializers.

Route (``docs/sealed-models.md``, "Opening"): the sealed blobs are read with ``pread`` and decrypted
straight into one 0600 file per tensor, several at once, inside a private 0700 folder on a RAM-backed file
system (``/dev/shm``), next to a copy of the graph whose tensors point at them as external data. ORT
copies them into its own memory, and the folder is removed (its RAM freed, a file per core) as soon as the
session exists. For sessions that can have no effect outside the process, large weights' signed digests
are checked from those files while ORT initialises (``_FileCheck``) rather than before. Models with under 16 MiB of weights, and any model where no RAM-backed folder has room,
are decrypted into memory and given to ORT inline as bytes (models under 2 GiB; for large ones, more
peak memory). Plaintext never
reaches a persistent disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import shutil
import tempfile
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    SparseTensorProto,
    TensorProto,
    ValueInfoProto,
    helper,
)

from .._atomic import lock_held
from ..blob import DIGEST_SIZE, TAG_SIZE, Opener, available_cores
from ..errors import OrtsealError, TamperedError, UnsafeOptionError
from ..keys import KeySet
from .binding import check_model, open_tensor
from .model import (
    LIKE_PREFIX,
    DataFiles,
    SealedTensor,
    body,
    constant_value,
    external_location,
    is_external,
    is_unseal,
    iter_bodies,
    iter_external,
    iter_graphs,
    load_inline,
    set_external,
)
from .schema import DOMAIN
from .tensors import Value, is_raw_target, restore

log = logging.getLogger("ortseal")
RUNTIME_DIR_ENV = "ORTSEAL_RUNTIME_DIR"
RAM_FILESYSTEMS = {"tmpfs", "ramfs"}
INLINE_LIMIT = (1 << 31) - (64 << 20)  # protobuf's 2 GiB, less room for the graph
INLINE_BELOW = 64 << 10  # tensors smaller than this are given to ORT inline, never through a RAM file
SMALL_MODEL_BYTES = 16 << 20  # models whose weights to open are smaller go to ORT as bytes, in memory
# Tensor types whose digests may be checked while ORT opens them (check_while_opening): weights, whose
# values ORT's initialisation only computes with. Integer index and shape types are always checked first.
CHECKED_WHILE_OPENING = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
                                   TensorProto.INT8, TensorProto.UINT8})
FOLDER_PREFIX = "ortseal-open-"
NEW_PREFIX = ".ortseal-open-new-"
T = TypeVar("T")
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


@dataclass
class Opened:
    """What ORT is given: a model file in a private RAM folder, or serialized bytes."""

    path: str | None
    model_bytes: bytes | None


def _mount_fstype(path: str) -> str | None:
    best, fstype = "", None
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            mount_point = fields[4].replace("\\040", " ")
            fs = fields[fields.index("-") + 1]
            if (path == mount_point or path.startswith(mount_point.rstrip("/") + "/")) and len(mount_point) >= len(best):
                best, fstype = mount_point, fs
    return fstype


def _runtime_dirs() -> list[str]:
    """RAM-backed folders to open into, best first. ``$ORTSEAL_RUNTIME_DIR`` must be RAM-backed if set;
    ``none`` selects the in-memory route."""
    chosen = os.environ.get(RUNTIME_DIR_ENV)
    if chosen == "none":
        return []  # the application asked for the in-memory route
    if chosen:
        real = os.path.realpath(chosen)
        if _mount_fstype(real) not in RAM_FILESYSTEMS:
            raise UnsafeOptionError(f"{RUNTIME_DIR_ENV}={chosen} is not on tmpfs or ramfs: plaintext weights would "
                                    "reach a persistent disk")
        return [real]
    dirs = []
    for candidate in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR")):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            real = os.path.realpath(candidate)
            if _mount_fstype(real) in RAM_FILESYSTEMS:
                dirs.append(real)
    return dirs


@contextlib.contextmanager
def _private_folder(runtime_dir: str) -> Iterator[str]:
    """A fresh 0700 folder in ``runtime_dir``, locked (``flock``) for as long as it exists.

    The lock is the opening process's liveness: the kernel drops it when the process dies, in any PID
    namespace, so :func:`remove_stale_folders` removes exactly the folders whose owner is gone.
    """
    # Made and locked under a name the cleanup leaves alone, then renamed: no one can see it unlocked.
    unlocked = tempfile.mkdtemp(prefix=NEW_PREFIX, dir=runtime_dir)
    lock = os.open(unlocked, os.O_RDONLY | os.O_DIRECTORY)
    folder = unlocked
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder = os.path.join(runtime_dir, FOLDER_PREFIX + os.path.basename(unlocked)[len(NEW_PREFIX):])
        os.rename(unlocked, folder)
        yield folder
    finally:
        _remove_folder(folder)
        os.close(lock)


def remove_stale_folders(runtime_dir: str) -> list[str]:
    """Remove opening folders whose process died before cleaning up (their lock is free)."""
    removed = []
    for entry in Path(runtime_dir).glob(f"{FOLDER_PREFIX}*"):
        with contextlib.suppress(OSError):
            if entry.stat().st_uid != os.getuid() or not entry.is_dir() or lock_held(entry):
                continue  # not ours, or its process is still opening a model
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
            log.warning("ortseal: removed %s, left by a process that ended while opening a model", entry)
    for entry in Path(runtime_dir).glob(f"{NEW_PREFIX}*"):  # empty folders of a process killed at birth
        with contextlib.suppress(OSError):
            if entry.stat().st_uid == os.getuid() and time.time() - entry.stat().st_mtime > 60:
                entry.rmdir()
    return removed


def _remove_folder(folder: str) -> None:
    """Remove the private folder and give its RAM back now, a file per core.

    Unlinking a tmpfs file frees its pages (~0.15 s per GiB on one core). Done here, in parallel, rather
    than on a helper thread after the session exists: pages released behind the first ``run()`` calls
    slowed them down.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        names = []

    def unlink(name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))

    _parallel(unlink, names)
    shutil.rmtree(folder, ignore_errors=True)


def _pool() -> ThreadPoolExecutor:
    """The opening pool: one thread per core, started once per process."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="ortseal-open")
    return _POOL


def _parallel(fn: Callable[[T], None], items: Sequence[T]) -> None:
    """``fn(item)`` for every item on the opening pool; the first error is raised after every item has
    finished."""
    if len(items) <= 1 or available_cores() <= 1:
        for item in items:
            fn(item)
        return
    errors = []
    for future in [_pool().submit(fn, item) for item in items]:
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - re-raised below, once nothing is still writing
            errors.append(exc)
    if errors:
        raise errors[0]


def _plain_externals(model: ModelProto) -> list[TensorProto]:
    return [t for _, g in iter_graphs(model.graph) for t in g.initializer if is_external(t)]


def _plain_graph(model: ModelProto, sealed: list[SealedTensor]) -> ModelProto:
    """A copy of ``model`` with every Unseal node, its blob and the ``like`` tensors replaced by a plain
    tensor (no data yet): an initializer (sparse ones in ``sparse_initializer``), or a Constant node
    (``value`` or ``sparse_value``) in place of the Unseal for sealed Constants. In IR < 4 graphs, which
    list initializers as inputs, a sealed initializer takes its blob's place among the inputs (ORT needs it
    there, and lets no feed replace it at that IR)."""
    plain = ModelProto()
    plain.CopyFrom(model)
    by_key = {(st.scope, st.name): st for st in sealed}
    for scope in [scope for scope, _ in iter_bodies(plain)]:
        b = body(plain, scope)  # afresh: editing a parent's nodes copies its subgraphs
        unseal = {n.input[0]: n for n in b.node if is_unseal(n)}
        if not unseal:
            continue
        nodes, added, sparse = [], [], []
        for n in b.node:
            if is_unseal(n):
                st = by_key[(scope, n.output[0])]
                tensor = TensorProto(name=st.name, data_type=st.dtype, dims=st.shape)
                value = SparseTensorProto(values=tensor, dims=st.shape) if st.sparse else tensor
                if st.constant:
                    nodes.append(helper.make_node("Constant", [], [st.name], name=st.name,
                                                  **{"sparse_value" if st.sparse else "value": value}))
                else:
                    (sparse if st.sparse else added).append(value)
            elif not (n.op_type == "Constant" and n.output and (n.output[0] in unseal
                                                                or n.output[0].startswith(LIKE_PREFIX))):
                nodes.append(n)
        b.ClearField("node")
        b.node.extend(nodes)
        if isinstance(b, GraphProto):
            inits = [t for t in b.initializer if t.name not in unseal and not t.name.startswith(LIKE_PREFIX)]
            b.ClearField("initializer")
            b.initializer.extend(inits + added)
            b.sparse_initializer.extend(sparse)
            inputs = [_restored_input(by_key[(scope, unseal[i.name].output[0])]) if i.name in unseal else i
                      for i in b.input if not i.name.startswith(LIKE_PREFIX)
                      and (i.name not in unseal or plain.ir_version < 4)]
            del b.input[:]
            b.input.extend(inputs)
        else:
            opsets = [o for o in b.opset_import if o.domain != DOMAIN]
            b.ClearField("opset_import")
            b.opset_import.extend(opsets)
    opsets = [o for o in plain.opset_import if o.domain != DOMAIN]
    plain.ClearField("opset_import")
    plain.opset_import.extend(opsets)
    return plain


def _restored_input(st: SealedTensor) -> ValueInfoProto:
    """The graph input an IR < 4 sealed initializer was: its name, type and shape."""
    return helper.make_tensor_value_info(st.name, st.dtype, st.shape)


def _targets(plain: ModelProto, sealed: list[SealedTensor]) -> tuple[list[Value], list[TensorProto]]:
    """The plain graph's tensors that receive each sealed tensor (initializers, sparse initializers,
    Constant values and sparse values), and its plain external initializers."""
    by_key: dict[tuple[str, str], Value] = {}
    for scope, b in iter_bodies(plain):
        if isinstance(b, GraphProto):
            by_key.update(((scope, t.name), t) for t in b.initializer)
            by_key.update(((scope, t.values.name), t) for t in b.sparse_initializer)
        for n in b.node:
            value = constant_value(n)
            if value is not None:
                by_key.setdefault((scope, n.output[0]), value)
            elif n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "sparse_value" and a.type == AttributeProto.SPARSE_TENSOR:
                        by_key.setdefault((scope, n.output[0]), a.sparse_tensor)
    targets = [by_key[(st.scope, st.name)] for st in sealed]
    return targets, _plain_externals(plain)


@contextlib.contextmanager
def open_sealed_model(model: ModelProto, base_dir: str | None, keys: KeySet, name: str, *,
                      min_release: int = 0, check_while_opening: bool = False) -> Iterator[Opened]:
    """Check the manifest, binding and every blob's header, length, context and key before decrypting any
    (decryption re-checks each blob's signed digest), then yield what ORT should load. Everything
    plaintext is removed when the block ends.

    ``check_while_opening``: large weight tensors (:data:`CHECKED_WHILE_OPENING`) that go through RAM
    files are authenticated (GCM) as they are decrypted, and their signed digests are recomputed from the
    files themselves on the spare cores while the block runs (ORT reading them). The block's end waits for
    that check and raises TamperedError if it failed, whatever the block did. Only for callers whose block
    has no effect outside the process (``docs/sealed-models.md``, "Checking while ORT opens").
    """
    checked = check_model(model, base_dir, keys, min_release=min_release)
    sealed = checked.sealed
    with contextlib.ExitStack() as blobs:
        files = blobs.enter_context(DataFiles())
        openers = [blobs.enter_context(open_tensor(checked, st, keys, files=files)) for st in sealed]
        plain = _plain_graph(model, sealed)
        targets, externals = _targets(plain, sealed)
        # Small tensors go inline: ORT reads shape-like inputs (Reshape shapes, axes, pads) while it resolves
        # the graph, before external data is loaded.
        now = [op.header.plaintext_length < INLINE_BELOW or not is_raw_target(t) for t, op in zip(targets, openers)]
        for t, op, inline in zip(targets, openers, now):
            if inline:
                _decrypt_inline(t, op)
        for t in externals:
            if external_location(t, base_dir)[2] < INLINE_BELOW:
                load_inline(t, base_dir)
        openers = [op for op, inline in zip(openers, now) if not inline]
        targets = [t for t, inline in zip(targets, now) if not inline]
        externals = [t for t in externals if is_external(t)]
        sizes = [op.header.plaintext_length for op in openers] + [external_location(t, base_dir)[2] for t in externals]
        late = [check_while_opening and available_cores() > 1 and op.expected_digest is not None
                and t.data_type in CHECKED_WHILE_OPENING and op.header.plaintext_length > 0  # no empty mapping
                for t, op in zip(targets, openers)]
        writers = [functools.partial(_decrypt_to, op, not defer, t.name)
                   for t, op, defer in zip(targets, openers, late)] + \
                  [functools.partial(_copy_to, t, base_dir) for t in externals]
        total = sum(sizes)
        # Small models skip the RAM folder: making, locking, filling and removing it costs more than
        # handing ORT the bytes. $ORTSEAL_RUNTIME_DIR is still checked: a misconfiguration shows at once.
        small = total < SMALL_MODEL_BYTES
        runtime_dirs = _runtime_dirs() if not small or os.environ.get(RUNTIME_DIR_ENV) else []
        for runtime_dir in [] if small else runtime_dirs:
            remove_stale_folders(runtime_dir)
            with _private_folder(runtime_dir) as folder:
                names = [f"t{i}.bin" for i in range(len(sizes))]
                if _fill_tensor_files(folder, list(zip(names, sizes, writers))):
                    for t, file_name, size in zip(targets + externals, names, sizes):
                        set_external(t, file_name, 0, size)
                    model_path = os.path.join(folder, name)
                    fd = os.open(model_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(plain.SerializeToString())
                    log.debug("ortseal: opened %d sealed tensors into %s", len(sealed), folder)
                    check = _FileCheck(folder, [(file_name, op, t.name) for file_name, op, t, defer
                                                in zip(names, openers, targets, late) if defer])
                    try:
                        yield Opened(model_path, None)
                    finally:
                        check.finish()  # before the folder goes: the check reads its files
                    return
        if not small and os.environ.get(RUNTIME_DIR_ENV) != "none":  # else nothing to warn about
            log.warning("ortseal: no RAM-backed folder (/dev/shm, $XDG_RUNTIME_DIR, $%s) with %d MiB free; opening "
                        "in memory instead (higher peak memory)", RUNTIME_DIR_ENV, total >> 20)
        if total > INLINE_LIMIT:
            raise OrtsealError(f"the model's weights ({total >> 20} MiB) need a RAM-backed folder to open: set "
                               f"{RUNTIME_DIR_ENV} to a tmpfs folder with room for them")
        for t, op in zip(targets, openers):
            _decrypt_inline(t, op)
        for t in externals:
            load_inline(t, base_dir)
        serialized = plain.SerializeToString()
        del plain, targets
        yield Opened(None, serialized)


@contextlib.contextmanager
def _naming(tensor: str) -> Iterator[None]:
    """Prefix a TamperedError (or RollbackError) with the sealed tensor it is about."""
    try:
        yield
    except TamperedError as exc:
        raise type(exc)(f"sealed tensor {tensor!r}: {exc}") from None


def _decrypt_inline(target: Value, opener: Opener) -> None:
    """Decrypt a sealed tensor into ``target`` itself: raw bytes, or a STRING or sparse tensor parsed back."""
    buf = np.empty(opener.header.plaintext_length, np.uint8)
    with _naming(target.values.name if isinstance(target, SparseTensorProto) else target.name):
        opener.decrypt_into(memoryview(buf))
    restore(target, memoryview(buf))


def _decrypt_to(opener: Opener, check: bool, tensor: str, fd: int, workers: int) -> None:
    with _naming(tensor):
        opener.decrypt_to_file(fd, 0, workers=workers, check=check)


def _map_file(path: str, size: int) -> mmap.mmap:
    """A read-only mapping of an opening file, which must hold ``size`` bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size != size:
            raise OrtsealError(f"the opening file {path} does not hold the {size} bytes written to it")
        return mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


class _FileCheck:
    """Recomputes the signed digests of tensors decrypted into RAM files (``check=False``) from the files
    themselves, segment by segment: on every core but one from creation (ORT's session initialisation runs
    on one), then on the caller's thread too in :meth:`finish`, which raises TamperedError unless every
    digest matched."""

    def __init__(self, folder: str, items: list[tuple[str, Opener, str]]) -> None:
        self._folder, self._items = folder, items
        self._digests = [bytearray(op.header.segment_count * DIGEST_SIZE) for _, op, _ in items]
        self._segments = [(k, i) for k, (_, op, _) in enumerate(items) for i in range(op.header.segment_count)]
        self._next, self._lock, self._stop = 0, threading.Lock(), threading.Event()
        self._futures = [_pool().submit(self._work) for _ in range(available_cores() - 1)] if items else []

    def _take(self) -> tuple[int, int] | None:
        with self._lock:
            if self._stop.is_set() or self._next == len(self._segments):
                return None
            self._next += 1
            return self._segments[self._next - 1]

    def _work(self) -> None:
        # Read through a mapping (tmpfs reads cost more than the check itself), one file at a time: segments
        # come in file order, and a mapped page counts towards the process's RSS until it is unmapped.
        mapped: tuple[int, mmap.mmap] | None = None
        scratch = bytearray(max((op.header.segment_size for _, op, _ in self._items), default=0) + TAG_SIZE)
        try:
            while (job := self._take()) is not None:
                k, i = job
                file_name, op, _ = self._items[k]
                if mapped is None or mapped[0] != k:
                    if mapped is not None:
                        mapped[1].close()
                    mapped = k, _map_file(os.path.join(self._folder, file_name), op.header.plaintext_length)
                start, n = i * op.header.segment_size, op.header.segment_span(i)[1]
                with memoryview(mapped[1])[start:start + n] as plain:
                    self._digests[k][i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE] = \
                        op.digest_from_plaintext(i, plain, memoryview(scratch))
        except BaseException:
            self._stop.set()
            raise
        finally:
            if mapped is not None:
                mapped[1].close()

    def finish(self) -> None:
        """Help until every segment is done, then compare; raises TamperedError naming the first tensor
        whose digest differs."""
        if not self._items:
            return
        errors = []
        for work in [self._work, *(f.result for f in self._futures)]:
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - raised below, once no thread reads the files
                errors.append(exc)
        if errors:
            raise errors[0]
        for (_, op, name), digests in zip(self._items, self._digests):
            with _naming(name):
                op.check_segment_digests(digests)


def _copy_to(tensor: TensorProto, base_dir: str | None, fd: int, workers: int) -> None:
    offset = 0
    for chunk in iter_external(tensor, base_dir):
        offset += os.pwrite(fd, chunk, offset)


def _fill_tensor_files(folder: str, jobs: list[tuple[str, int, Callable[[int, int], None]]]) -> bool:
    """Write each tensor into its own 0600 file in ``folder``, several files at once; False if the folder
    lacks room.

    One file per tensor because writes into one tmpfs file are serialized by its inode lock, so page
    allocation (the real cost of filling RAM) would run on one core; separate files fill in parallel.
    The largest go first; a tensor gets several decryption threads only when there are fewer files than
    cores.
    """
    stat = os.statvfs(folder)
    if stat.f_bavail * stat.f_frsize < sum(size for _, size, _ in jobs) + (1 << 20):
        return False
    inner = max(1, available_cores() // max(1, len(jobs)))

    def fill(job: tuple[str, int, Callable[[int, int], None]]) -> None:
        file_name, _, write = job
        fd = os.open(os.path.join(folder, file_name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write(fd, inner)
        finally:
            os.close(fd)

    try:
        _parallel(fill, sorted(jobs, key=lambda job: -job[1]))
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return False  # the folder filled up meanwhile: the caller removes it and tries elsewhere
        raise
