"""A verified sealed model -> opened tensors -> what ORT gets (spec: ``docs/sealed-models.md``, "Opening").

Every sealed blob is decrypted while its content digest is recomputed in the same pass, and every plain
external tensor is hashed as it is read, once, into memory ortseal owns; only when every digest matched the
signed manifest does ORT get anything. Large models go to ORT as one 0600 file per tensor in a private folder
on a RAM-backed file system in this user's own private base folder (:mod:`ortseal.model.ramdir`:
``$XDG_RUNTIME_DIR`` or ``/dev/shm/ortseal-<uid>``), filled several at once, next to a copy of the graph
whose tensors point at them; ORT copies them into its own memory and the folder is removed (its RAM freed, a
file per core) as soon as the session exists. Models with under 16 MiB of weights, and any model where no
RAM-backed folder has room, go to ORT as serialized bytes, in memory (models under 2 GiB). Plaintext never
reaches a persistent disk.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    SparseTensorProto,
    TensorProto,
    ValueInfoProto,
    helper,
)

from .._parallel import available_cores, for_each
from .._progress import ByteProgress
from ..blob import Opener
from ..errors import FormatError, SetupError
from ..keys import KeySet
from ._graph import (
    LIKE_PREFIX,
    SealedTensor,
    body,
    constant_value,
    external_initializers,
    is_external,
    is_unseal,
    iter_bodies,
    set_external,
    stored_tensors,
)
from ._record import ExternalEntry
from .ramdir import RUNTIME_DIR_ENV, PrivateFolder, private_folder, remove_stale_folders, runtime_dirs
from .schema import DOMAIN
from .tensors import Value, is_raw_target, restore
from .verify import VerifiedModel, naming

log = logging.getLogger("ortseal")
INLINE_LIMIT = (1 << 31) - (64 << 20)  # protobuf's 2 GiB, less room for the graph
INLINE_BELOW = 64 << 10  # tensors smaller than this are given to ORT inline, never through a RAM file
SMALL_MODEL_BYTES = 16 << 20  # models whose weights to open are smaller go to ORT as bytes, in memory


@dataclass
class Opened:
    """What ORT is given: a model file in a private RAM folder, or serialized bytes."""

    path: str | None
    model_bytes: bytes | None


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
        nodes: list[NodeProto] = []
        added: list[TensorProto] = []
        sparse: list[SparseTensorProto] = []
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


def _targets(plain: ModelProto, sealed: list[SealedTensor]) -> list[Value]:
    """The plain graph's tensors that receive each sealed tensor (initializers, sparse initializers,
    Constant values and sparse values)."""
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
    return [by_key[(st.scope, st.name)] for st in sealed]


def _plain_externals(plain: ModelProto, verified: VerifiedModel) -> list[tuple[TensorProto, ExternalEntry]]:
    """The plain graph's external initializers, each with what the manifest says of it (by scope and name,
    as :func:`verify_sealed` paired them)."""
    by_place = {place: entry for place, _, entry in verified.externals}
    found = external_initializers(plain)
    if len(found) != len(by_place) or any((scope, t.name) not in by_place for scope, t in found):
        raise FormatError("the opened graph's external tensors differ from the verified ones")
    return [(t, by_place[(scope, t.name)]) for scope, t in found]


def _check_nothing_external(plain: ModelProto, ours: set[int]) -> None:
    """ORT must read no file ortseal did not write: no tensor of ``plain`` may point at external data but
    the RAM files in ``ours`` (ids of the tensors given them)."""
    if any(is_external(t) and id(t) not in ours for t in stored_tensors(plain)):
        raise FormatError("the opened graph would make ONNX Runtime read a file ortseal did not check")


@contextlib.contextmanager
def open_sealed_model(verified: VerifiedModel, keys: KeySet) -> Iterator[Opened]:
    """Decrypt every sealed tensor and read every plain external tensor of ``verified`` once, each checked
    against its signed digest, then yield what ORT should load. Nothing is yielded unless every check passed;
    everything plaintext is removed when the block ends."""
    started = time.monotonic()
    sealed = verified.sealed
    openers = [verified.opener(st, keys) for st in sealed]
    plain = _plain_graph(verified.model, sealed)
    targets = _targets(plain, sealed)
    externals = _plain_externals(plain, verified)
    total = sum(op.header.plaintext_length for op in openers) + sum(e.length for _, e in externals)
    log.info("ortseal: opening %s: %d sealed tensors, %d plain external, %.1f MiB (model %r release %d, %s)",
             verified.loaded.name, len(sealed), len(externals), total / (1 << 20), verified.manifest.model,
             verified.manifest.release, f"signed by {verified.signer}" if verified.signer else "unsigned, HMAC checked")
    bar = ByteProgress(total, f"opening {verified.loaded.name}")
    with bar:
        # Small tensors go inline: ORT reads shape-like inputs (Reshape shapes, axes, pads) while it resolves
        # the graph, before external data is loaded.
        now = [op.header.plaintext_length < INLINE_BELOW or not is_raw_target(t) for t, op in zip(targets, openers, strict=False)]
        for t, op, inline in zip(targets, openers, now, strict=False):
            if inline:
                _decrypt_inline(t, op)
        for t, entry in externals:
            if entry.length < INLINE_BELOW:
                _read_inline(t, entry, verified)
        large = [(t, op) for t, op, inline in zip(targets, openers, now, strict=False) if not inline]
        large_plain = [(t, e) for t, e in externals if is_external(t)]
        jobs = [(t, op.header.plaintext_length, functools.partial(_decrypt_to, op, t.name, bar.add))
                for t, op in large]
        jobs += [(t, e.length, functools.partial(_copy_to, verified, t, e, bar.add)) for t, e in large_plain]
        weights = sum(size for _, size, _ in jobs)
        # $ORTSEAL_RUNTIME_DIR is checked for small models too: a misconfiguration shows at once. Small models
        # skip the folder: making, filling and removing it costs more than handing ORT bytes.
        bases = runtime_dirs() if weights >= SMALL_MODEL_BYTES or os.environ.get(RUNTIME_DIR_ENV) else []
        for base in bases if weights >= SMALL_MODEL_BYTES else []:
            remove_stale_folders(base)
            with private_folder(base) as folder:
                names = [f"t{i}.bin" for i in range(len(jobs))]
                if not _fill_tensor_files(folder, list(zip(names, [size for _, size, _ in jobs],
                                                           [write for _, _, write in jobs], strict=False))):
                    continue
                for (t, size, _), file_name in zip(jobs, names, strict=False):
                    set_external(t, file_name, 0, size)
                _check_nothing_external(plain, {id(t) for t, _, _ in jobs})
                # the sealed model's own name where it cannot be taken for a tensor file or for ORT format
                name = verified.loaded.name if verified.loaded.name.lower().endswith(".onnx") else "model.onnx"
                fd = folder.create(name)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(plain.SerializeToString())
                bar.close()
                _opened_log(verified, started, folder.path)
                yield Opened(os.path.join(folder.path, name), None)
                return
        if weights >= SMALL_MODEL_BYTES and os.environ.get(RUNTIME_DIR_ENV) != "none":
            log.warning("ortseal: no private RAM-backed folder (/dev/shm, $XDG_RUNTIME_DIR, $%s) with %d MiB free; "
                        "opening in memory instead (higher peak memory)", RUNTIME_DIR_ENV, weights >> 20)
        if total > INLINE_LIMIT:
            raise SetupError(f"the model's weights ({total >> 20} MiB) need a RAM-backed folder to open: set "
                               f"{RUNTIME_DIR_ENV} to a private tmpfs folder with room for them")
        for t, op in large:
            _decrypt_inline(t, op)
            bar.add(op.header.plaintext_length)
        for t, entry in large_plain:
            _read_inline(t, entry, verified)
            bar.add(entry.length)
    _check_nothing_external(plain, set())
    serialized = plain.SerializeToString()
    del plain, targets, large, jobs
    _opened_log(verified, started, None)
    yield Opened(None, serialized)


def _opened_log(verified: VerifiedModel, started: float, folder: str | None) -> None:
    log.info("ortseal: %s verified and decrypted in %.2f s; ONNX Runtime reads it from %s", verified.loaded.name,
             time.monotonic() - started, folder or "memory")


def _decrypt_inline(target: Value, opener: Opener) -> None:
    """Decrypt a sealed tensor into ``target`` itself: raw bytes, or a STRING or sparse tensor parsed back."""
    buf = np.empty(opener.header.plaintext_length, np.uint8)
    with naming(target.values.name if isinstance(target, SparseTensorProto) else target.name):
        opener.decrypt_into(buf.data)
    restore(target, buf.data)


def _read_inline(target: TensorProto, entry: ExternalEntry, verified: VerifiedModel) -> None:
    data = verified.read_external(target, entry)
    del target.external_data[:]
    target.data_location = TensorProto.DEFAULT
    target.raw_data = data


def _decrypt_to(opener: Opener, tensor: str, progress: Callable[[int], object], fd: int, workers: int) -> None:
    with naming(tensor):
        opener.decrypt_to_file(fd, 0, workers=workers, progress=progress)


def _copy_to(verified: VerifiedModel, tensor: TensorProto, entry: ExternalEntry, progress: Callable[[int], object],
             fd: int, workers: int) -> None:
    offset = 0
    for chunk in verified.external_chunks(tensor, entry):
        view = memoryview(chunk)
        while view:
            n = os.pwrite(fd, view, offset)
            offset, view = offset + n, view[n:]
    progress(entry.length)


def _fill_tensor_files(folder: PrivateFolder, jobs: list[tuple[str, int, Callable[[int, int], None]]]) -> bool:
    """Write each tensor into its own 0600 file in ``folder``, several files at once; False if the folder
    lacks room.

    One file per tensor because writes into one tmpfs file are serialized by its inode lock, so page
    allocation (the real cost of filling RAM) would run on one core; separate files fill in parallel.
    The largest go first; a tensor gets several decryption threads only when there are fewer files than
    cores.
    """
    if folder.free_bytes() < sum(size for _, size, _ in jobs) + (1 << 20):
        return False
    inner = max(1, available_cores() // max(1, len(jobs)))

    def fill(job: tuple[str, int, Callable[[int, int], None]]) -> None:
        file_name, _, write = job
        fd = folder.create(file_name)
        try:
            write(fd, inner)
        finally:
            os.close(fd)

    try:
        for_each(fill, sorted(jobs, key=lambda job: -job[1]))
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return False  # the folder filled up meanwhile: the caller removes it and tries elsewhere
        raise
