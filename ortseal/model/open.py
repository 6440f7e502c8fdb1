"""A verified sealed model -> opened tensors -> what ORT gets (spec: ``docs/sealed-models.md``, "Opening").

Every sealed blob is decrypted while its content digest is recomputed in the same pass, and every plain
external tensor is hashed as it is read, once, into memory ortseal owns, each written into the place the
verifying walk found for it (no second walk, no pairing by name or order); only when every digest matched
the signed manifest does ORT get anything. Large models go to ORT as one 0600 file per tensor in a private folder
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
import os
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from .._log import Log
from .._onnx_proto import AttributeProto, GraphProto, SparseTensorProto, TensorProto, ValueInfoProto
from .._parallel import available_cores, for_each
from .._progress import ByteProgress
from ..blob import Opener
from ..errors import SetupError
from ..keys import KeySet
from ._graph import LIKE_PREFIX, SealedTensor, set_external, set_inline
from ._record import ExternalEntry
from .ramdir import RUNTIME_DIR_ENV, PrivateFolder, private_folder, remove_stale_folders, runtime_dirs
from .schema import DOMAIN
from .tensors import Value, is_raw_target, restore
from .verify import VerifiedModel, naming

log = Log("ortseal")
INLINE_LIMIT = (1 << 31) - (64 << 20)  # protobuf's 2 GiB, less room for the graph
INLINE_BELOW = 64 << 10  # tensors smaller than this are given to ORT inline, never through a RAM file
SMALL_MODEL_BYTES = 16 << 20  # models whose weights to open are smaller go to ORT as bytes, in memory


class Opened(NamedTuple):
    """What ORT is given: a model file in a private RAM folder, or serialized bytes."""

    path: str | None
    model_bytes: bytes | None
    progress_shown: bool = False  # a progress bar was drawn (on a terminal): a status line may follow it


def _plain_graph(verified: VerifiedModel) -> list[Value]:
    """Turn the verified model, in place, into the plain model ORT gets, and return the tensor that receives
    each sealed tensor (``verified.sealed``'s order): every Unseal node, its blob and the ``like`` tensors
    give way to a plain tensor with no data yet: an initializer (sparse ones in ``sparse_initializer``), or,
    for sealed Constants, the Unseal node itself made the Constant (``value`` or ``sparse_value``). In IR < 4
    graphs, which list initializers as inputs, a sealed initializer takes its blob's place among the inputs
    (ORT needs it there, and lets no feed replace it at that IR).

    Everything is edited where the walk found it (nodes and initializers deleted by index, nodes rewritten
    in place), never by rebuilding a node list, which would copy the subgraphs below it and leave the
    places of the tensors in them pointing at the copies' originals."""
    model = verified.model
    by_body: dict[int, list[SealedTensor]] = {}
    for st in verified.sealed:
        by_body.setdefault(id(st.body), []).append(st)
    targets: dict[int, Value] = {}
    for _, b in verified.places.bodies:
        sealed = by_body.get(id(b))
        if not sealed:
            continue
        blobs = {st.node.input[0] for st in sealed}  # type: ignore[union-attr]
        unseal = {id(st.node): st for st in sealed}

        def dropped(name: str) -> bool:
            return name in blobs or name.startswith(LIKE_PREFIX)

        gone = [i for i, n in enumerate(b.node) if id(n) not in unseal and n.op_type == "Constant" and n.output
                and dropped(n.output[0])]
        gone += [i for i, n in enumerate(b.node) if id(n) in unseal and not unseal[id(n)].constant]
        for i in sorted(gone, reverse=True):
            del b.node[i]
        for st in sealed:
            if st.constant:
                targets[id(st)] = _as_constant(st)
        if isinstance(b, GraphProto):
            for i in reversed([i for i, t in enumerate(b.initializer) if dropped(t.name)]):
                del b.initializer[i]
            for st in sealed:
                if not st.constant:
                    targets[id(st)] = _empty_value(st, b.sparse_initializer.add() if st.sparse else b.initializer.add())
            restored = {st.node.input[0]: st for st in sealed if not st.constant}  # type: ignore[union-attr]
            for i in reversed(range(len(b.input))):
                name = b.input[i].name
                if name in restored and model.ir_version < 4:
                    b.input[i].CopyFrom(_restored_input(restored[name]))
                elif dropped(name):
                    del b.input[i]
        else:
            _drop_domain(b.opset_import)
    _drop_domain(model.opset_import)
    return [targets[id(st)] for st in verified.sealed]


def _drop_domain(opsets) -> None:  # noqa: ANN001 - a repeated OperatorSetIdProto field
    for i in reversed([i for i, o in enumerate(opsets) if o.domain == DOMAIN]):
        del opsets[i]


def _empty_value(st: SealedTensor, value: Value) -> Value:
    """``value`` (a new tensor or sparse tensor) named, typed and shaped as ``st``, with no data yet."""
    tensor = value.values if isinstance(value, SparseTensorProto) else value
    tensor.name, tensor.data_type = st.name, st.dtype
    tensor.dims.extend(st.shape)
    if isinstance(value, SparseTensorProto):
        value.dims.extend(st.shape)
    return value


def _as_constant(st: SealedTensor) -> Value:
    """Rewrite a sealed Constant's Unseal node, where it stands, into the Constant node it was sealed from."""
    node = st.node
    assert node is not None
    node.Clear()
    node.op_type, node.name = "Constant", st.name
    node.output.append(st.name)
    attr = node.attribute.add(name="sparse_value" if st.sparse else "value",
                              type=AttributeProto.SPARSE_TENSOR if st.sparse else AttributeProto.TENSOR)
    return _empty_value(st, attr.sparse_tensor if st.sparse else attr.t)


def _restored_input(st: SealedTensor) -> ValueInfoProto:
    """The graph input an IR < 4 sealed initializer was: its name, type and shape."""
    info = ValueInfoProto(name=st.name)
    info.type.tensor_type.elem_type = st.dtype
    shape = info.type.tensor_type.shape
    shape.SetInParent()
    for d in st.shape:
        shape.dim.add().dim_value = d
    return info


@contextlib.contextmanager
def open_sealed_model(verified: VerifiedModel, keys: KeySet) -> Iterator[Opened]:
    """Decrypt every sealed tensor and read every plain external tensor of ``verified`` once, each checked
    against its signed digest and written into its place in the verified model (which becomes the plain
    model: :func:`_plain_graph`), then yield what ORT should load. Nothing is yielded unless every check
    passed; everything plaintext is removed when the block ends."""
    started = time.monotonic()
    sealed = verified.sealed
    openers = [verified.opener(st, keys) for st in sealed]
    sizes = [op.header.plaintext_length for op in openers]
    targets = _plain_graph(verified)
    externals = verified.externals
    total = sum(sizes) + sum(e.length for _, e in externals)
    log.info("ortseal: opening %s: %d sealed tensors, %d plain external, %.1f MiB (model %r release %d, %s)",
             verified.loaded.name, len(sealed), len(externals), total / (1 << 20), verified.manifest.model,
             verified.manifest.release, f"signed by {verified.signer}" if verified.signer else "unsigned, HMAC checked")
    bar = ByteProgress(total, f"opening {verified.loaded.name}")
    shown = not bar.disable
    with bar:
        # Small tensors go inline: ORT reads shape-like inputs (Reshape shapes, axes, pads) while it resolves
        # the graph, before external data is loaded.
        large, large_plain = [], []
        for t, op, size in zip(targets, openers, sizes, strict=True):
            if size < INLINE_BELOW or not is_raw_target(t):
                _decrypt_inline(t, op)
            else:
                large.append((t, op, size))
        for t, entry in externals:
            if entry.length < INLINE_BELOW:
                set_inline(t, verified.read_external(t, entry))
            else:
                large_plain.append((t, entry))
        jobs = [(t, size, functools.partial(_decrypt_to, op, t.name, bar.add)) for t, op, size in large]
        jobs += [(t, e.length, functools.partial(_copy_to, verified, t, e, bar.add)) for t, e in large_plain]
        weights = sum(size for _, size, _ in jobs)
        # $ORTSEAL_RUNTIME_DIR is checked for small models too: a misconfiguration shows at once. Small models
        # skip the folder: making, filling and removing it costs more than handing ORT bytes.
        bases = runtime_dirs() if weights >= SMALL_MODEL_BYTES or os.environ.get(RUNTIME_DIR_ENV) else []
        for base in bases if weights >= SMALL_MODEL_BYTES else []:
            remove_stale_folders(base)
            with private_folder(base) as folder:
                names = [f"t{i}.bin" for i in range(len(jobs))]
                if not _fill_tensor_files(folder, [(name, size, write) for name, (_, size, write)
                                                   in zip(names, jobs, strict=True)]):
                    continue
                for (t, size, _), file_name in zip(jobs, names, strict=True):
                    set_external(t, file_name, 0, size)
                # the sealed model's own name where it cannot be taken for a tensor file or for ORT format
                name = verified.loaded.name if verified.loaded.name.lower().endswith(".onnx") else "model.onnx"
                fd = folder.create(name)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(verified.model.SerializeToString())
                bar.close()
                _opened_log(verified, started, folder.path)
                yield Opened(os.path.join(folder.path, name), None, shown)
                return
        if weights >= SMALL_MODEL_BYTES and os.environ.get(RUNTIME_DIR_ENV) != "none":
            log.warning("ortseal: no private RAM-backed folder (/dev/shm, $XDG_RUNTIME_DIR, $%s) with %d MiB free; "
                        "opening in memory instead (higher peak memory)", RUNTIME_DIR_ENV, weights >> 20)
        if total > INLINE_LIMIT:
            raise SetupError(f"the model's weights ({total >> 20} MiB) need a RAM-backed folder to open: set "
                               f"{RUNTIME_DIR_ENV} to a private tmpfs folder with room for them")
        for t, op, size in large:
            _decrypt_inline(t, op)
            bar.add(size)
        for t, entry in large_plain:
            set_inline(t, verified.read_external(t, entry))
            bar.add(entry.length)
    serialized = verified.model.SerializeToString()
    del targets, large, large_plain, jobs
    _opened_log(verified, started, None)
    yield Opened(None, serialized, shown)


def _opened_log(verified: VerifiedModel, started: float, folder: str | None) -> None:
    log.info("ortseal: %s verified and decrypted in %.2f s; ONNX Runtime reads it from %s", verified.loaded.name,
             time.monotonic() - started, folder or "memory")


def _decrypt_inline(target: Value, opener: Opener) -> None:
    """Decrypt a sealed tensor into ``target`` itself: raw bytes, or a STRING or sparse tensor parsed back."""
    buf = np.empty(opener.header.plaintext_length, np.uint8)
    with naming(target.values.name if isinstance(target, SparseTensorProto) else target.name):
        opener.decrypt_into(buf.data)
    restore(target, buf.data)


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
