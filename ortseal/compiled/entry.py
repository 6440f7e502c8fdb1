"""One sealed compiled-model cache entry (spec: ``docs/compiled-cache.md``, "Entry file").

An entry holds the EPContext model ONNX Runtime's compile API gave for one source model, execution
provider, device and set of options, sealed as a signed blob whose context is the *binding*: RFC 8785 JSON
naming all of those. The binding is also stored in the clear before the blob, so a reader knows what an
entry claims to be before it opens it, and the blob's context commits to exactly those bytes::

    entry = MAGIC (8) || VERSION (1) || binding length (u32 big-endian) || binding || sealed blob

The file is named after the binding (:func:`entry_name`), so entries for other options, EP versions or
devices sit beside each other and a changed binding is a cache miss, never a load. An authentic entry under
another binding's name (copied, or rolled back) is refused like a forgery.

Needs no ONNX Runtime: ``ortseal compiled list/verify`` read entries with this module alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785

from .._atomic import atomic_writer
from .._files import ReadPolicy, open_checked
from ..blob import BlobSource, Header, Opener, parse_header, seal_stream
from ..errors import FormatError, KeyNotFoundError, TamperedError
from ..keys import KeySet

# -- spec constants (docs/compiled-cache.md, "Entry file") -------------------------------------------
MAGIC = b"ORTSEALC"
VERSION = 1
_PREFIX = struct.Struct(">8sBI")
PREFIX_SIZE = _PREFIX.size  # 13
MAX_BINDING_SIZE = 1 << 16
BINDING_FORMAT = "ortseal-compiled-model"
CONTEXT_PREFIX = b"ortseal/compiled-model/v1\x00"
ENTRY_SUFFIX = ".epctx.sealed"
PURPOSE = "engine"  # the device's own engine-signing key signs its compiled models as it signs TensorRT engines
KIND = "compiled model"
WHAT = "compiled-model cache entry"
NAME_DIGEST_HEX = 20  # 80 bits of the binding's SHA-256 in the file name: names, not security (the blob binds it all)
_STEM = re.compile(r"[^A-Za-z0-9._-]+")
# ortseal wrote the name: a link there is refused, never followed; ciphertext has no holes
ENTRY_FILE = ReadPolicy(WHAT, TamperedError, follow_links=False, refuse_sparse=True, wrap_os_errors=False)


@dataclass(frozen=True)
class Binding:
    """What a compiled model was compiled from, for and with. ``doc`` is the JSON object; ``raw`` its RFC 8785
    serialization, which the entry stores and its blob's context commits to."""

    doc: Mapping[str, Any]
    raw: bytes

    @classmethod
    def make(cls, *, source_sha256: str, source_kind: str, ep: Mapping[str, str], device: Any,
             options: Mapping[str, str], session: Mapping[str, Any], onnxruntime: str) -> Binding:
        doc = {"format": BINDING_FORMAT, "version": VERSION, "source": {"sha256": source_sha256, "kind": source_kind},
               "ep": dict(ep), "device": device, "options": dict(options), "session": dict(session),
               "onnxruntime": onnxruntime}
        return cls(doc, rfc8785.dumps(doc))

    @classmethod
    def parse(cls, raw: bytes) -> Binding:
        """A binding read from an entry: JSON in canonical form (anything else is refused)."""
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise FormatError(f"{WHAT}: its binding is not JSON") from exc
        if not isinstance(doc, dict) or doc.get("format") != BINDING_FORMAT or doc.get("version") != VERSION:
            raise FormatError(f"{WHAT}: its binding is not an {BINDING_FORMAT} v{VERSION} object")
        try:
            canonical = rfc8785.dumps(doc)
        except Exception as exc:  # noqa: BLE001 - a value RFC 8785 cannot represent
            raise FormatError(f"{WHAT}: its binding cannot be serialized canonically") from exc
        if canonical != raw:
            raise FormatError(f"{WHAT}: its binding is not in RFC 8785 canonical form")
        return cls(doc, raw)

    @property
    def context(self) -> bytes:
        """The sealed blob's binding context."""
        return CONTEXT_PREFIX + self.raw

    def summary(self) -> str:
        ep, src = self.doc.get("ep", {}), self.doc.get("source", {})
        return f"{ep.get('name')} {ep.get('version')}, source {str(src.get('sha256'))[:16]}"


def entry_name(stem: str, binding: Binding) -> str:
    """The entry's file name: the model's stem (characters outside ``[A-Za-z0-9._-]`` replaced by ``_``) and
    the first 80 bits of the binding's SHA-256, so each binding has its own file."""
    clean = _STEM.sub("_", stem).strip("._") or "model"
    return f"{clean[:64]}-{hashlib.sha256(binding.raw).hexdigest()[:NAME_DIGEST_HEX]}{ENTRY_SUFFIX}"


@dataclass(frozen=True)
class EntryFile:
    """An entry read once into memory: its binding (not yet authenticated) and the blob after it."""

    data: bytes
    binding: Binding
    header: Header

    @property
    def blob(self) -> memoryview:
        return memoryview(self.data)[PREFIX_SIZE + len(self.binding.raw):]


def read_entry(path: str | os.PathLike[str]) -> EntryFile:
    """Read the entry at ``path`` once, from one descriptor that refuses links, FIFOs, devices and sparse files
    (checked with ``fstat`` before a byte is read), into memory; check its prefix, binding and blob length.
    Every later check runs on these bytes."""
    try:
        fd, st = open_checked(path, ENTRY_FILE)
    except FileNotFoundError:
        raise  # no entry (or one removed meanwhile): the cache compiles, as for any miss
    except OSError as exc:  # unreadable (EACCES, EIO...): refused like any entry that does not verify
        raise TamperedError(f"cannot open {WHAT} {os.fspath(path)}: {exc.strerror}") from None
    try:
        with io.FileIO(fd, "rb", closefd=False) as fh:
            data = fh.readall()
    finally:
        os.close(fd)
    if len(data) != st.st_size:
        raise TamperedError(f"{WHAT} {os.fspath(path)} changed length while it was read: refused")
    return parse_entry(data, os.fspath(path))


def parse_entry(data: bytes, where: str = "entry") -> EntryFile:
    """Split an entry's bytes into its binding and blob; FormatError / TamperedError naming what is wrong."""
    if len(data) < PREFIX_SIZE or data[:8] != MAGIC:
        raise FormatError(f"{where} is not an ortseal {WHAT} (bad magic)")
    _, version, length = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise FormatError(f"{where}: {WHAT} version {version} is not supported (this ortseal reads {VERSION}); "
                          "delete it or let the cache rebuild it")
    if not 0 < length <= MAX_BINDING_SIZE or PREFIX_SIZE + length > len(data):
        raise TamperedError(f"{where}: {WHAT} declares a binding of {length} bytes, which it does not hold")
    binding = Binding.parse(data[PREFIX_SIZE:PREFIX_SIZE + length])
    blob = memoryview(data)[PREFIX_SIZE + length:]
    header = parse_header(blob, kind=KIND)
    if header.blob_length != len(blob):
        raise TamperedError(f"{where}: {WHAT} is {len(blob)} bytes after its binding but its header declares "
                            f"{header.blob_length}: truncated or damaged")
    return EntryFile(data, binding, header)


def opener(entry: EntryFile, keys: KeySet, *, expected: Binding | None, min_release: int = 0,
           need_key: bool = True) -> Opener:
    """Check an entry before any of its plaintext exists: that it is the entry for ``expected`` (None: for
    the binding it stores, as ``verify`` does), its release, and its signature by a key ``keys`` trusts for
    ``"engine"``; then, unless ``need_key`` is False, fetch its content key. Raises TamperedError
    (RollbackError) naming what failed."""
    if expected is not None and entry.binding.raw != expected.raw:
        raise TamperedError(f"this {WHAT} was compiled for another model, EP, device or options "
                            f"({entry.binding.summary()}) and put under this one's name")
    return Opener(BlobSource(entry.blob), keys, context=entry.binding.context, purpose=PURPOSE,
                  min_release=min_release, kind=KIND, need_key=need_key)


def open_entry(entry: EntryFile, keys: KeySet, expected: Binding, *, min_release: int = 0) -> bytearray:
    """The compiled model an entry holds, decrypted into memory ortseal owns, after every check of
    :func:`opener` passed. The caller zeroes it once ORT has its copy."""
    op = opener(entry, keys, expected=expected, min_release=min_release)
    out = bytearray(op.header.plaintext_length)
    op.decrypt_into(memoryview(out))
    return out


def verify_entry(path: str | os.PathLike[str], keys: KeySet, *, min_release: int = 0) -> EntryFile:
    """Fully verify the entry at ``path`` against the binding it stores: signature by a key trusted for
    ``"engine"``, release, and every segment (decrypted when ``keys`` holds the content key, else hashed
    against the signed digest). Keeps no plaintext."""
    entry = read_entry(path)
    op = opener(entry, keys, expected=None, min_release=min_release, need_key=keys.has_content_keys)
    if keys.has_content_keys:
        op.verify()
    elif not (entry.header.signed and keys.requires_signature):
        raise TamperedError(f"nothing commits to this unsigned {WHAT}: only its content key can check it")
    # else the opener has checked the signature over the digest of every stored byte
    return entry


def check_can_write(keys: KeySet) -> None:
    """Raise unless entries sealed with ``keys`` could be opened again by the same keyset."""
    keys.sealing_key()
    if keys.requires_signature and keys.signing_key() is None:
        raise KeyNotFoundError("this keyset verifies signatures but cannot sign, so a compiled model cached with it "
                               "could never be opened again; give the cache the device's keyset with its own "
                               "engine-signing key (KeySet.for_device(engine_signing_key=True))")


def write_entry(path: str | os.PathLike[str], compiled: bytes | bytearray | memoryview, binding: Binding,
                keys: KeySet, *, release: int = 0) -> None:
    """Seal ``compiled`` bound to ``binding`` and write it to ``path`` atomically (0600 temp file in the same
    folder, locked while written, fsync, rename): a killed writer leaves only a temp file, never an entry."""
    check_can_write(keys)
    if len(binding.raw) > MAX_BINDING_SIZE:
        raise ValueError(f"the binding is {len(binding.raw)} bytes; at most {MAX_BINDING_SIZE} are allowed")
    with atomic_writer(path, mode=0o600) as fh:
        fh.write(_PREFIX.pack(MAGIC, VERSION, len(binding.raw)) + binding.raw)
        seal_stream(memoryview(compiled).cast("B"), fh, keys, context=binding.context,
                    sign=keys.signing_key() is not None, release=release)


def entry_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The entries in ``directory`` (by name; not opened)."""
    return sorted(Path(directory).glob(f"*{ENTRY_SUFFIX}"))
