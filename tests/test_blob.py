"""The sealed-blob format: round trips, every bit flip, truncation, reordering, keys and contexts."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest
from forge import keep_tag_rewrite
from hypothesis import given, settings
from hypothesis import strategies as st

import ortseal
from ortseal import FormatError, KeyNotFoundError, KeySet, RollbackError, TamperedError
from ortseal.blob import (
    DEFAULT_SEGMENT_SIZE,
    FIXED_HEADER_SIZE,
    MIN_SEGMENT_SIZE,
    SIGNATURE_SIZE,
    TAG_SIZE,
    BlobSource,
    Opener,
    Sealer,
    parse_header,
    seal_bytes,
    unseal_bytes,
)

SEG = MIN_SEGMENT_SIZE


def content_only(keys: KeySet) -> KeySet:
    """The content keys alone, explicitly allowing unsigned blobs."""
    return KeySet(content_keys={k: keys.content_key(k) for k in keys.content_key_ids}, allow_unsigned=True)


def small_blob(keys: KeySet, n: int = 3 * SEG - 5, sign: bool = True) -> tuple[bytes, bytes]:
    data = os.urandom(n)
    return data, seal_bytes(data, keys, context="ctx", sign=sign, segment_size=SEG)


@pytest.mark.parametrize("size", [0, 1, DEFAULT_SEGMENT_SIZE - 1, DEFAULT_SEGMENT_SIZE, DEFAULT_SEGMENT_SIZE + 1,
                                  5 * DEFAULT_SEGMENT_SIZE + 12345])
def test_round_trip_sizes(keys, size):
    data = os.urandom(size)
    blob = ortseal.seal_bytes(data, keys, context=b"tensor:w")
    assert ortseal.plaintext_size(blob[:300]) == size
    assert ortseal.unseal_bytes(blob, keys, context=b"tensor:w") == data
    out = np.empty(size, np.uint8)
    assert ortseal.unseal_into(memoryview(blob), keys, out, context="tensor:w") == size
    assert out.tobytes() == data
    assert data[:64] not in blob or size < 16


def test_unseal_from_mmap(keys, tmp_path):
    data = os.urandom(3 * DEFAULT_SEGMENT_SIZE + 7)
    path = tmp_path / "x.blob"
    path.write_bytes(ortseal.seal_bytes(data, keys, context="m"))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        out = bytearray(ortseal.plaintext_size(mm))
        ortseal.unseal_into(mm, keys, out, context="m")
    assert bytes(out) == data


def header_field_expectations(h) -> list[tuple[range, tuple[type, ...]]]:
    kid_end = FIXED_HEADER_SIZE + len(h.key_id)
    return [
        (range(0, 11), (FormatError,)),                       # magic, version, algorithm, flags
        (range(11, 12), (FormatError, TamperedError)),        # key id length
        (range(12, 24), (FormatError, TamperedError)),        # segment size, plaintext length
        (range(24, 32), (FormatError, TamperedError)),        # release (bit 63 is out of range)
        (range(32, 103), (TamperedError,)),                   # salt, nonce prefix, context digest
        (range(103, 104), (FormatError, TamperedError)),      # signer id length
        (range(FIXED_HEADER_SIZE, kid_end), (KeyNotFoundError, FormatError, TamperedError)),
        (range(kid_end, len(h.raw)), (TamperedError, FormatError)),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("sign", [True, False])
def test_every_bit_flip_is_refused(keys, sign):
    opener = keys if sign else content_only(keys)
    data, blob = small_blob(keys, sign=sign)
    h = parse_header(blob)
    expected: dict[int, tuple[type, ...]] = {}
    for span, classes in header_field_expectations(h):
        for i in span:
            expected[i] = classes
    for i in range(len(h.raw), len(blob)):
        expected[i] = (TamperedError,)  # ciphertext, tags, signature
    # every bit of the header, tags and signature; one bit (chosen by position) of every ciphertext byte
    exhaustive = set(range(len(h.raw))) | set(range(h.body_length, len(blob)))
    for k in range(h.segment_count):
        off, n = h.segment_span(k)
        exhaustive |= set(range(off + n, off + n + TAG_SIZE))
    for i in range(len(blob)):
        for bit in range(8) if i in exhaustive else [i % 8]:
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(ortseal.OrtsealError) as info:
                unseal_bytes(bytes(bad), opener, context="ctx")
            assert type(info.value) in expected[i], (i, bit, info.value)
    assert unseal_bytes(blob, opener, context="ctx") == data


def test_every_truncation_is_refused(keys):
    _, blob = small_blob(keys)
    header_len = len(parse_header(blob).raw)
    for k in range(len(blob)):
        with pytest.raises((FormatError, TamperedError)) as info:
            unseal_bytes(blob[:k], keys, context="ctx")
        assert type(info.value) is (FormatError if k < header_len else TamperedError), k


def segments(blob: bytes) -> tuple[bytes, list[bytes], bytes]:
    h = parse_header(blob)
    spans = [h.segment_span(i) for i in range(h.segment_count)]
    segs = [blob[off:off + n + TAG_SIZE] for off, n in spans]
    return h.raw, segs, blob[h.blob_length - (SIGNATURE_SIZE if h.signed else 0):]


@pytest.mark.parametrize("sign", [True, False])
def test_reordered_duplicated_appended_segments(keys, sign):
    opener = keys if sign else content_only(keys)
    _, blob = small_blob(keys, n=4 * SEG, sign=sign)  # four full segments: swaps keep the length
    raw, segs, sig = segments(blob)
    variants = {
        "swapped": raw + segs[1] + segs[0] + b"".join(segs[2:]) + sig,
        "duplicated": raw + segs[0] + segs[0] + b"".join(segs[2:]) + sig,
        "last moved first": raw + segs[3] + b"".join(segs[:3]) + sig,
        "appended": raw + b"".join(segs) + segs[-1] + sig,
        "dropped": raw + b"".join(segs[:3]) + sig,
    }
    for name, bad in variants.items():
        with pytest.raises(TamperedError):
            unseal_bytes(bad, opener, context="ctx")
        assert name


def test_wrong_context_key_and_signer(keys, other_keys):
    data, blob = small_blob(keys)
    with pytest.raises(TamperedError, match="different context"):
        unseal_bytes(blob, keys, context="other")
    with pytest.raises(TamperedError, match="does not trust"):  # the signer is checked before any key lookup
        unseal_bytes(blob, other_keys, context="ctx")
    with pytest.raises(KeyNotFoundError):
        unseal_bytes(blob, KeySet.merge(other_keys.without_signing(), keys.public()), context="ctx")
    same_id_other_key = KeySet(content_keys={keys.content_key_ids[0]: os.urandom(32)}, allow_unsigned=True)
    with pytest.raises(TamperedError, match="authentication"):
        unseal_bytes(blob, same_id_other_key, context="ctx")
    untrusting = KeySet.merge(content_only(keys), other_keys.public())
    with pytest.raises(TamperedError, match="does not trust"):
        unseal_bytes(blob, untrusting, context="ctx")
    device = KeySet.merge(keys.without_signing(), keys.public())
    assert unseal_bytes(blob, device, context="ctx") == data


def test_unsigned_blob_refused_where_signature_required(keys):
    _, blob = small_blob(keys, sign=False)
    with pytest.raises(TamperedError, match="unsigned"):
        unseal_bytes(blob, keys, context="ctx")
    with pytest.raises(ValueError, match="no signing key"):
        seal_bytes(b"x", keys.without_signing(), context="ctx", sign=True)


def test_header_declaring_impossible_sizes_is_refused_before_allocating(keys):
    _, blob = small_blob(keys)
    huge = bytearray(blob)
    huge[16:24] = (1 << 36).to_bytes(8, "little")  # 64 GiB plaintext in a tiny blob
    with pytest.raises(TamperedError, match="declares"):
        unseal_bytes(bytes(huge), keys, context="ctx")
    assert ortseal.plaintext_size(bytes(huge)) == 1 << 36


def test_unseal_into_checks_buffer_and_zeroes_on_failure(keys):
    data = os.urandom(3 * SEG)
    blob = bytearray(seal_bytes(data, keys, context="ctx", segment_size=SEG))
    with pytest.raises(ValueError, match="bytes"):
        ortseal.unseal_into(blob, keys, bytearray(len(data) + 1), context="ctx")
    with pytest.raises(ValueError, match="writable"):
        ortseal.unseal_into(blob, keys, bytes(len(data)), context="ctx")
    no_sig = content_only(keys)
    blob[-SIGNATURE_SIZE - 1] ^= 1  # last segment's tag: earlier segments decrypt first
    out = np.full(len(data), 0xAA, np.uint8)
    with pytest.raises(TamperedError):
        ortseal.unseal_into(blob, no_sig, out, context="ctx")
    assert not out.any()


def test_not_a_blob():
    with pytest.raises(FormatError, match="magic"):
        unseal_bytes(b"hello world" * 20, KeySet.generate(), context="x")


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=10_000), seg=st.integers(SEG, 2 * SEG + 100), context=st.text(max_size=20),
       sign=st.booleans())
@pytest.mark.slow
def test_property_round_trip(keys, data, seg, context, sign):
    opener = keys if sign else content_only(keys)
    blob = seal_bytes(data, keys, context=context, sign=sign, segment_size=seg)
    assert unseal_bytes(blob, opener, context=context) == data
    assert len(blob) == parse_header(blob).blob_length


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=9000), where=st.integers(0, 20_000), mask=st.integers(1, 255))
def test_property_any_change_is_refused(keys, data, where, mask):
    blob = bytearray(seal_bytes(data, keys, context="p", segment_size=SEG))
    blob[where % len(blob)] ^= mask
    with pytest.raises(ortseal.OrtsealError):
        unseal_bytes(bytes(blob), keys, context="p")


# -- integrity against a holder of the content key (issue 7) ---------------------------------------
def test_content_key_holder_cannot_forge_a_signed_blob(keys):
    """GHASH is linear: with the content key, a segment's plaintext can be rewritten keeping its tag. The
    forgery is real (the content key alone accepts it) and the signature over the content digest refuses it."""
    data = os.urandom(3 * SEG)
    blob = seal_bytes(data, keys, context="w", segment_size=SEG)
    device_key = keys.content_key(keys.content_key_ids[0])
    forged = keep_tag_rewrite(blob, device_key, 1, bytes(SEG))
    assert forged[-SIGNATURE_SIZE:] == blob[-SIGNATURE_SIZE:]
    tags = [forged[off + n:off + n + TAG_SIZE] for off, n in map(parse_header(blob).segment_span, range(3))]
    assert tags == [blob[off + n:off + n + TAG_SIZE] for off, n in map(parse_header(blob).segment_span, range(3))]
    assert unseal_bytes(forged, content_only(keys), context="w")[SEG:2 * SEG - 16] == bytes(SEG - 16)
    device = KeySet.merge(keys.without_signing(), keys.public())
    for opener in (keys, device):
        with pytest.raises(TamperedError, match="does not verify"):
            unseal_bytes(forged, opener, context="w")


@pytest.mark.parametrize("n", [0, 1, SEG - 1, SEG, SEG + 1, 5 * SEG + 7])
def test_sealed_length_is_the_length_sealing_gives(keys, n):
    """What seal_model reserves for each tensor's blob before sealing it: the blob's exact length."""
    from ortseal.blob import sealed_length

    key_id, signer = keys.content_key_ids[0], keys.signing_key_ids[0]
    for sign in (False, True):
        blob = seal_bytes(os.urandom(n), keys, context="w", sign=sign, segment_size=SEG)
        assert sealed_length(n, key_id=key_id, signer_id=signer if sign else None, segment_size=SEG) == len(blob)


def test_decrypting_to_a_file_checks_the_signed_digest_in_the_same_pass(keys, tmp_path):
    """``decrypt_to_file`` (how opening fills a RAM file) writes the true plaintext, and refuses a forgery
    that kept its GCM tag (a content-key holder's rewrite) by the signed digest, in the decryption pass."""
    data = os.urandom(3 * SEG + 100)
    blob = seal_bytes(data, keys, context="w", segment_size=SEG)
    forged = keep_tag_rewrite(blob, keys.content_key(keys.content_key_ids[0]), 2, bytes(SEG))
    signed = _signed_digest(blob, keys)  # as a verified manifest gives it
    for stored, ok in ((blob, True), (forged, False)):
        opener = Opener(BlobSource(stored), keys, context="w", expected_digest=signed)
        out = tmp_path / "plain.bin"
        fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if ok:
                opener.decrypt_to_file(fd, 0)
            else:
                with pytest.raises(TamperedError, match="signed digest"):
                    opener.decrypt_to_file(fd, 0)  # GCM alone would accept it
        finally:
            os.close(fd)
        if ok:
            assert out.read_bytes() == data


def _signed_digest(blob: bytes, keys: KeySet) -> bytes:
    """The content digest the blob's signature commits to (checked: the signature must verify)."""
    return Opener(BlobSource(blob), keys, context="w")._verify_signature(keys, "blob", "blob")


def test_sealer_takes_no_caller_salt_or_nonce(keys):
    with pytest.raises(TypeError):
        Sealer(keys, context="x", length=1, salt=bytes(32))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Sealer(keys, context="x", length=1, nonce_prefix=bytes(7))  # type: ignore[call-arg]
    a, b = (parse_header(seal_bytes(b"same", keys, context="x")) for _ in range(2))
    assert a.salt != b.salt and a.nonce_prefix != b.nonce_prefix


def test_signatures_are_required_unless_the_keyset_says_otherwise(keys):
    _, unsigned = small_blob(keys, sign=False)
    no_trust = KeySet(content_keys={k: keys.content_key(k) for k in keys.content_key_ids})
    assert no_trust.requires_signature and not no_trust.allow_unsigned
    with pytest.raises(TamperedError, match="unsigned"):
        unseal_bytes(unsigned, no_trust, context="ctx")
    _, signed_by_anyone = small_blob(KeySet.merge(no_trust, KeySet.generate()))  # same content key, a stranger signs
    with pytest.raises(TamperedError, match="does not trust"):
        unseal_bytes(signed_by_anyone, no_trust, context="ctx")
    assert unseal_bytes(unsigned, content_only(keys), context="ctx")


def test_trust_scoped_to_a_purpose(keys):
    data, blob = small_blob(keys)
    content = KeySet(content_keys={k: keys.content_key(k) for k in keys.content_key_ids})
    models_only = KeySet.merge(content, keys.public(scope=["model:*"]))
    with pytest.raises(TamperedError, match="does not trust for 'blob' \\(it trusts that key for other purposes only\\)"):
        unseal_bytes(blob, models_only, context="ctx")
    assert unseal_bytes(blob, KeySet.merge(content, keys.public(scope=["blob"])), context="ctx") == data


def test_nothing_the_file_chooses_reaches_the_key_provider_before_the_signature(keys):
    """A forged blob naming an attacker-chosen key id never reaches the KMS lookup."""
    asked: list[str] = []
    real = keys.content_key(keys.content_key_ids[0])
    provider = KeySet.from_provider(lambda kid: asked.append(kid) or (real if kid == keys.content_key_ids[0] else None))
    device = KeySet.merge(provider, keys.public())
    attacker = KeySet(content_keys={"../../etc/attacker-id": os.urandom(32)}, signing_keys=[])
    forged = seal_bytes(os.urandom(100), KeySet.merge(attacker, KeySet.generate()), context="ctx")
    with pytest.raises(TamperedError, match="does not trust"):
        unseal_bytes(forged, device, context="ctx")
    bad_sig = bytearray(seal_bytes(b"x" * 100, keys, context="ctx"))
    bad_sig[-1] ^= 1
    with pytest.raises(TamperedError, match="does not verify"):
        unseal_bytes(bytes(bad_sig), device, context="ctx")
    assert asked == []
    assert unseal_bytes(seal_bytes(b"ok", keys, context="ctx"), device, context="ctx") == b"ok"
    assert asked == [keys.content_key_ids[0]]


def test_release_below_minimum_is_refused(keys):
    old, new = (seal_bytes(b"weights", keys, context="w", release=r) for r in (3, 4))
    assert unseal_bytes(new, keys, context="w", min_release=4) == b"weights"
    with pytest.raises(RollbackError, match="release 3, older than the minimum release 4"):
        unseal_bytes(old, keys, context="w", min_release=4)
    with pytest.raises(ValueError, match="release"):
        seal_bytes(b"x", keys, context="w", release=-1)
