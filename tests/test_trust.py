"""Trust bundles (docs/format.md, "Trust bundle v1"): the vectors through ortseal and through a second
implementation written from the spec, and each attack of issue 24 carried out on real sealed models."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from models import matmul
from test_cli import ortseal_cli

import ortseal
from ortseal import KeySet, RollbackError, TamperedError
from ortseal.errors import FormatError, OrtsealError, RevokedError
from ortseal.signing import KeySigner
from ortseal.trust import TrustBundle, install_bundle, read_bundle

VECTORS = json.loads((Path(__file__).parent / "vectors" / "trust_v1.json").read_text())
CASES = VECTORS["cases"]


def _key(name: str) -> bytes:
    return base64.b64decode(VECTORS["keys"][name]["public"])


# -- vectors, through ortseal ----------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_vector_case(case, tmp_path):
    state = tmp_path / "state.json"
    for step in CASES[case]:
        expected = step["accept"]
        if isinstance(expected, int):
            assert install_bundle(step["bundle"].encode(), root=_key("root_1"), state=state).serial == expected
        else:
            before = state.read_bytes() if state.exists() else None
            with pytest.raises(OrtsealError) as err:
                install_bundle(step["bundle"].encode(), root=_key("root_1"), state=state)
            assert type(err.value).__name__ == expected
            assert (state.read_bytes() if state.exists() else None) == before  # a refusal changes nothing


def test_generator_reproduces_the_vectors():
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "vectors"))
    import generate_trust_vectors as gen

    for name, steps in gen.cases().items():
        assert [s.decode() for s, _ in steps] == [s["bundle"] for s in CASES[name]], name


# -- a second implementation, from docs/format.md alone ----------------------------------------------
class SpecRefusal(Exception):
    pass


def _canonical(value) -> str:
    """RFC 8785 for what a bundle payload holds: objects, arrays, strings, integers."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _canonical(v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SpecRefusal("payload holds something other than objects, arrays, strings and integers")
    return json.dumps(value, ensure_ascii=False)


def _strict(pairs):
    if len({k for k, _ in pairs}) != len(pairs):
        raise SpecRefusal("duplicate member")
    return dict(pairs)


def _kid(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def _spec_check(envelope: dict, payload: bytes, root: bytes) -> None:
    sig = {e["id"]: base64.b64decode(e["signature"]) for e in envelope["signatures"]}.get(_kid(root))
    if sig is None:
        raise SpecRefusal("not signed by the root")
    try:
        Ed25519PublicKey.from_public_bytes(root).verify(sig, b"ortseal trust bundle v1\x00" + payload)
    except InvalidSignature:
        raise SpecRefusal("bad signature") from None


def spec_install(bundle: str, state: dict) -> int:
    """Install one bundle on a device whose state is ``state`` (root, serial, digest); returns the serial."""
    envelope = json.loads(bundle, object_pairs_hook=_strict)
    if envelope["format"] != "ortseal-trust-bundle" or envelope["version"] != 1:
        raise SpecRefusal("format")
    payload = base64.b64decode(envelope["payload"], validate=True)
    _spec_check(envelope, payload, state["root"])
    doc = json.loads(payload, object_pairs_hook=_strict)
    if _canonical(doc).encode() != payload:
        raise SpecRefusal("payload not canonical")
    new_root = base64.b64decode(doc["root"]["public"])
    if _kid(new_root) != doc["root"]["id"]:
        raise SpecRefusal("root id")
    if new_root != state["root"]:
        _spec_check(envelope, payload, new_root)
    for s in doc["signers"]:
        if _kid(base64.b64decode(s["public"])) != s["id"] or s["id"] in doc["revoked"]:
            raise SpecRefusal("signer entry")
    if not all(isinstance(k, str) and len(k) == 16 and set(k) <= set("0123456789abcdef") for k in doc["revoked"]):
        raise SpecRefusal("a revoked id that is not a signer id")
    digest = hashlib.sha256(payload).digest()
    if state.get("serial") is not None:
        if doc["serial"] < state["serial"] or (doc["serial"] == state["serial"] and digest != state["digest"]):
            raise SpecRefusal("rollback or equivocation")
    state.update(root=new_root, serial=doc["serial"], digest=digest)
    return doc["serial"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_second_implementation_agrees_on_every_vector(case):
    state = {"root": _key("root_1")}
    for step in CASES[case]:
        if isinstance(step["accept"], int):
            assert spec_install(step["bundle"], state) == step["accept"]
        else:
            with pytest.raises((SpecRefusal, ValueError, KeyError)):
                spec_install(step["bundle"], state)


# -- attacks on real models ---------------------------------------------------------------------------
@pytest.fixture
def fleet(tmp_path):
    """A root, two publisher signing keys (old, new), a device with content keys only, a sealed model."""
    root = KeySigner(Ed25519PrivateKey.generate())
    content = KeySet.generate().without_signing()
    old, new = KeySigner(Ed25519PrivateKey.generate()), KeySigner(Ed25519PrivateKey.generate())
    w, x = matmul(tmp_path / "m.onnx")

    def seal(signer: KeySigner, name: str, model_name: str = "m") -> Path:
        out = tmp_path / name
        ortseal.seal_model(tmp_path / "m.onnx", out, KeySet.merge(KeySet(signing_keys=[signer]), content),
                           progress=False, model_name=model_name)
        return out

    def device(bundle: bytes, extra: KeySet | None = None) -> KeySet:
        trust = install_bundle(bundle, root=root.public_key(), state=tmp_path / "state.json")
        return KeySet.merge(content, trust.keyset(), *([extra] if extra else []))

    def opens(model: Path, keys: KeySet) -> None:
        sess = ortseal.InferenceSession(str(model), providers=["CPUExecutionProvider"], keys=keys)
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-4, atol=1e-4)

    class Fleet:
        pass

    f = Fleet()
    f.root, f.content, f.old, f.new, f.seal, f.device, f.opens, f.dir = root, content, old, new, seal, device, opens, tmp_path
    return f


def test_rotation_old_key_opens_until_revoked_new_key_once_named(fleet):
    b = TrustBundle.initial(fleet.root.public_key()).with_signer(fleet.old.public_key(), ["model:*"])
    by_old, by_new = fleet.seal(fleet.old, "old.onnx"), fleet.seal(fleet.new, "new.onnx")
    keys = fleet.device(b.sign(fleet.root))
    fleet.opens(by_old, keys)
    with pytest.raises(TamperedError, match="does not trust"):
        fleet.opens(by_new, keys)  # not yet named by a bundle
    b = b.with_signer(fleet.new.public_key(), ["model:*"])
    keys = fleet.device(b.sign(fleet.root))
    fleet.opens(by_old, keys)  # both during the change
    fleet.opens(by_new, keys)
    b = b.revoking(fleet.old.key_id)
    keys = fleet.device(b.sign(fleet.root))
    fleet.opens(by_new, keys)
    with pytest.raises(RevokedError):
        fleet.opens(by_old, keys)


def test_a_revoked_signers_freshly_signed_model_is_refused_whatever_else_trusts_it(fleet):
    b = TrustBundle.initial(fleet.root.public_key()).with_signer(fleet.new.public_key()).revoking(fleet.old.key_id)
    fresh = fleet.seal(fleet.old, "fresh.onnx")  # the leaked key signs a new, otherwise valid model
    device_file = KeySet(trusted_keys=[fleet.old.public_key()])  # e.g. an old device.json still trusting it
    keys = fleet.device(b.sign(fleet.root), device_file)
    with pytest.raises(RevokedError, match="revoked"):
        fleet.opens(fresh, keys)
    blob = ortseal.seal_bytes(b"engine", KeySet.merge(KeySet(signing_keys=[fleet.old]), fleet.content), context="e")
    with pytest.raises(RevokedError):
        ortseal.unseal_bytes(blob, keys, context="e")
    with pytest.raises(RevokedError):
        ortseal.verify_model(str(fresh), keys)
    from ortseal.tensorrt.vault import Vault, verify_engine_file, write_engine

    write_engine(fleet.dir / "e.engine", memoryview(b"engine" * 1000),
                 Vault(KeySet.merge(KeySet(signing_keys=[fleet.old]), fleet.content)))
    with pytest.raises(RevokedError):
        verify_engine_file(fleet.dir / "e.engine", keys)


def test_bundle_attacks(fleet):
    root, old = fleet.root, fleet.old
    b2 = TrustBundle.initial(root.public_key()).with_signer(old.public_key(), ["model:detector*"])
    state = fleet.dir / "state.json"
    install_bundle(b2.sign(root), root=root.public_key(), state=state)
    # a scope widened in a bundle signed by a non-root key (the signer itself)
    with pytest.raises(TamperedError, match="not signed by the root"):
        install_bundle(b2.with_signer(old.public_key(), ["*"]).sign(old), root=root.public_key(), state=state)
    # a signer added but not re-signed
    doc = json.loads(b2.sign(root))
    doc["payload"] = base64.b64encode(b2.with_signer(fleet.new.public_key()).payload()).decode()
    with pytest.raises(TamperedError, match="does not verify"):
        install_bundle(json.dumps(doc).encode(), root=root.public_key(), state=state)
    # two bundles with the same serial and different content
    twin = TrustBundle(b2.serial, root.public_key(), {}, frozenset())
    with pytest.raises(TamperedError, match="two bundles with one serial"):
        install_bundle(twin.sign(root), root=root.public_key(), state=state)
    # rolled back to an older serial
    b3 = b2.revoking(old.key_id)
    install_bundle(b3.sign(root), root=root.public_key(), state=state)
    with pytest.raises(RollbackError):
        install_bundle(b2.sign(root), root=root.public_key(), state=state)
    # a bundle signed by the revoked signer
    with pytest.raises(TamperedError, match="not signed by the root"):
        install_bundle(b3.with_signer(fleet.new.public_key()).sign(old), root=root.public_key(), state=state)
    # an unsigned bundle
    doc = json.loads(b3.with_signer(fleet.new.public_key()).sign(root))
    doc["signatures"] = []
    with pytest.raises(TamperedError, match="signed by: nobody"):
        install_bundle(json.dumps(doc).encode(), root=root.public_key(), state=state)
    assert read_bundle(b3.sign(root), root.public_key()).revoked == {old.key_id}


def test_root_rotation_needs_the_old_roots_signature(fleet):
    root, new_root = fleet.root, KeySigner(Ed25519PrivateKey.generate())
    state = fleet.dir / "state.json"
    b1 = TrustBundle.initial(root.public_key())
    install_bundle(b1.sign(root), root=root.public_key(), state=state)
    b2 = b1.with_root(new_root.public_key())
    with pytest.raises(TamperedError):  # a new root that only signs itself
        install_bundle(b2.sign(new_root), root=root.public_key(), state=state)
    install_bundle(b2.sign(root, new_root), root=root.public_key(), state=state)
    b3 = b2.with_signer(fleet.new.public_key())
    with pytest.raises(TamperedError):  # the old root no longer signs for this device
        install_bundle(b3.sign(root), root=root.public_key(), state=state)
    assert install_bundle(b3.sign(new_root), root=root.public_key(), state=state).serial == 3


def test_the_state_file_is_refused_when_another_user_could_have_written_it(fleet):
    root = fleet.root
    state = fleet.dir / "state.json"
    install_bundle(TrustBundle.initial(root.public_key()).sign(root), root=root.public_key(), state=state)
    assert state.stat().st_mode & 0o777 == 0o600
    os.chmod(state, 0o666)
    with pytest.raises(TamperedError, match="writable only by it"):
        install_bundle(TrustBundle.initial(root.public_key()).sign(root), root=root.public_key(), state=state)
    os.chmod(state, 0o600)
    link = fleet.dir / "link.json"
    link.symlink_to(state)
    with pytest.raises(TamperedError, match="a link is refused"):
        install_bundle(TrustBundle.initial(root.public_key()).sign(root), root=root.public_key(), state=link)


def test_malformed_bundles_are_format_errors(fleet):
    for data in (b"", b"{}", b"[1]", b'{"format": "ortseal-trust-bundle", "version": 2}', b"\xff" * 10):
        with pytest.raises(FormatError):
            read_bundle(data, fleet.root.public_key())


def test_cli_trust_workflow(tmp_path):
    root, signer = tmp_path / "root.json", tmp_path / "signer.json"
    for path in (root, signer):
        assert ortseal_cli("keygen", "-o", str(path)).returncode == 0
        assert ortseal_cli("pubkey", str(path), "-o", str(path.with_suffix(".pub.json"))).returncode == 0
    bundle, state = str(tmp_path / "bundle.json"), str(tmp_path / "state.json")
    assert ortseal_cli("trust", "init", "-o", bundle, "--root-key", str(root)).returncode == 0
    r = ortseal_cli("trust", "add-signer", bundle, "--key", str(tmp_path / "signer.pub.json"), "--scope", "model:*",
                    "--root-key", str(root))
    assert r.returncode == 0 and "serial 2" in r.stdout, r.stderr
    r = ortseal_cli("trust", "install", bundle, "--root", str(tmp_path / "root.pub.json"), "--state", state, "--json")
    assert r.returncode == 0, r.stderr
    sid = KeySet.load(signer).signing_key_ids[0]
    assert json.loads(r.stdout)["signers"] == {sid: ["model:*"]}
    matmul(tmp_path / "m.onnx")
    assert ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(signer)).returncode == 0
    assert ortseal_cli("device-keys", str(signer), "-o", str(tmp_path / "device.json")).returncode == 0
    with_bundle = ["--trust-bundle", bundle, "--trust-root", str(tmp_path / "root.pub.json"), "--trust-state", state]
    r = ortseal_cli("verify", str(tmp_path / "s.onnx"), "--keys", str(tmp_path / "device.json"), *with_bundle)
    assert r.returncode == 0, r.stderr
    old = Path(bundle).read_bytes()
    assert ortseal_cli("trust", "revoke", bundle, sid, "--root-key", str(root)).returncode == 0
    assert ortseal_cli("trust", "install", bundle, "--root", str(tmp_path / "root.pub.json"), "--state", state).returncode == 0
    # device.json still trusts the signer; the bundle's revocation wins
    r = ortseal_cli("verify", str(tmp_path / "s.onnx"), "--keys", str(tmp_path / "device.json"), *with_bundle)
    assert r.returncode == 1 and "is revoked by the" in r.stderr
    r = ortseal_cli("verify", str(tmp_path / "s.onnx"), "--keys", str(tmp_path / "device.json"), "--trust-bundle", bundle)
    assert r.returncode == 2 and "go together" in r.stderr
    Path(bundle).write_bytes(old)
    r = ortseal_cli("trust", "install", bundle, "--root", str(tmp_path / "root.pub.json"), "--state", state)
    assert r.returncode == 1 and r.stderr.startswith("error: trust bundle serial 2 is older") and r.stderr.count("\n") == 1
    r = ortseal_cli("trust", "show", bundle, "--root", str(tmp_path / "signer.pub.json"))
    assert r.returncode == 1 and "is not signed by the root" in r.stderr


def test_a_keyset_with_revocations_is_not_saved_as_a_keyset_file(fleet):
    keys = KeySet.merge(fleet.content, TrustBundle.initial(fleet.root.public_key()).revoking(fleet.old.key_id).keyset())
    assert keys.revoked_key_ids == [fleet.old.key_id]
    with pytest.raises(ValueError, match="revocations"):
        keys.to_json()
