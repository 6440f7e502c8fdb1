"""Attacks on issue 24's signers and trust bundles that the first round of tests did not carry out: each
test here failed on the code it was written against (branch trust) and passes with its fix."""

from __future__ import annotations

import os
import stat
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ortseal.trust as trust_module
from ortseal import KeySet, TamperedError
from ortseal.errors import SignerError
from ortseal.signing import CallbackSigner, KeySigner
from ortseal.trust import TrustBundle, install_bundle, read_state


def _bundles(root: KeySigner, count: int) -> list[bytes]:
    """Serials 1..count of one bundle, each trusting one more fresh signer."""
    bundle, out = TrustBundle.initial(root.public_key()), []
    out.append(bundle.sign(root))
    for _ in range(count - 1):
        bundle = bundle.with_signer(Ed25519PrivateKey.generate().public_key())
        out.append(bundle.sign(root))
    return out


def test_two_installs_racing_cannot_roll_the_state_back(tmp_path, monkeypatch):
    """Two processes install at once (an updater with serial 3, a replayed serial 2): whatever the order,
    the state must end at the newest serial either saw accepted. Both read the state before either writes:
    without a lock the older one's write lands last and the device's trust is rolled back to serial 2."""
    root = KeySigner(Ed25519PrivateKey.generate())
    b1, b2, b3 = _bundles(root, 3)
    state = tmp_path / "state.json"
    install_bundle(b1, root=root.public_key(), state=state)

    both_read = threading.Barrier(2, timeout=2)
    newer_written = threading.Event()
    real_read_state = trust_module.read_state

    def read_then_wait(path):  # the interleaving a scheduler can give two processes: read, read, write, write
        last = real_read_state(path)
        try:
            both_read.wait()
        except threading.BrokenBarrierError:
            pass  # the other install is held off (a lock): nothing to interleave with
        if threading.current_thread().name == "older":
            newer_written.wait(timeout=5)  # the replayed older bundle's write comes second
        return last

    monkeypatch.setattr(trust_module, "read_state", read_then_wait)
    results: dict[str, object] = {}

    def newer():
        results["newer"] = install_bundle(b3, root=root.public_key(), state=state).serial
        newer_written.set()

    def older():
        try:
            results["older"] = install_bundle(b2, root=root.public_key(), state=state).serial
        except Exception as exc:  # noqa: BLE001 - the refusal is the right outcome
            results["older"] = exc

    threads = [threading.Thread(target=newer, name="newer"), threading.Thread(target=older, name="older")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert results["newer"] == 3
    assert read_state(state).serial == 3, "the older bundle's install overwrote the newer state: rolled back"


def test_a_state_file_in_a_folder_others_can_write_is_refused(tmp_path):
    """Another local user who can write the state's folder can delete the state (or rename it away), and the
    device then takes any old bundle the root signed as its first. read_state checks the file's owner and
    mode; the folder must be checked too (owner this user or root, not group/other-writable unless sticky)."""
    root = KeySigner(Ed25519PrivateKey.generate())
    b1, b2 = _bundles(root, 2)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # e.g. a world-writable app folder without the sticky bit
    state = shared / "state.json"
    with pytest.raises(TamperedError, match="folder"):
        install_bundle(b2, root=root.public_key(), state=state)
    assert not state.exists()
    # what another user can then do: unlink the state and replay serial 1
    os.chmod(shared, 0o700)
    install_bundle(b2, root=root.public_key(), state=state)
    os.chmod(shared, 0o777)
    with pytest.raises(TamperedError, match="folder"):
        read_state(state)
    os.chmod(shared, 0o777 | stat.S_ISVTX)  # sticky (like /tmp): others cannot unlink or rename our file
    assert read_state(state).serial == 2


class _Shifty(bytes):
    """A bytes object whose bytes() differs from its content: the callback's value must be read once."""

    def __new__(cls, good: bytes, bad: bytes):
        self = super().__new__(cls, good)
        self.calls, self.good, self.bad = 0, good, bad
        return self

    def __bytes__(self):
        self.calls += 1
        return self.good if self.calls == 1 else self.bad


def test_a_callback_signature_is_read_once_and_what_was_checked_is_what_is_used():
    """Signer.sign converted the callback's value with bytes() once to check it and again to return it: a
    value whose bytes() changes got the check on one signature and the file another (not checked)."""
    key = Ed25519PrivateKey.generate()
    message = b"ortseal test message"
    other = Ed25519PrivateKey.generate().sign(message)  # a signature by another key
    signer = CallbackSigner(lambda m: _Shifty(key.sign(m), other), key.public_key())
    try:
        signature = signer.sign(message)
    except SignerError:
        return  # refusing such a value is right too
    key.public_key().verify(signature, message)  # what is returned is what was checked
    assert signature == key.sign(message)


def test_a_callback_signing_for_a_keyset_never_writes_an_unchecked_signature(tmp_path):
    """The same through seal_bytes: the blob written must verify under the pinned key."""
    import ortseal

    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    signer_keys = KeySet.from_provider(sign=lambda m: _Shifty(key.sign(m), other.sign(m)), public_key=key.public_key())
    content = KeySet.generate().without_signing()
    publisher = KeySet.merge(signer_keys, content)
    try:
        blob = ortseal.seal_bytes(b"weights", publisher, context="c")
    except SignerError:
        return
    device = KeySet.merge(content, KeySet(trusted_keys=[key.public_key()]))
    assert ortseal.unseal_bytes(blob, device, context="c") == b"weights"


# -- PKCS#11: a key the token would let out is not a key that "never leaves the HSM" -----------------
_EXTRACTABLE_SCRIPT = r"""
import os, sys, pkcs11
from ortseal.pkcs11 import TokenSigner, _load_library
from ortseal.errors import OrtsealError
module, allow = sys.argv[1], sys.argv[2] == "allow"
lib = _load_library(module)
a, kt, m = pkcs11.Attribute, pkcs11.KeyType, pkcs11.Mechanism
with lib.get_token(token_label="attack").open(rw=True, user_pin="4321") as s:
    s.generate_keypair(kt.EC_EDWARDS, mechanism=m.EC_EDWARDS_KEY_PAIR_GEN, store=True, label="leaky", id=b"\x01",
                       public_template={a.EC_PARAMS: bytes.fromhex("06032b6570")},
                       private_template={a.SENSITIVE: False, a.EXTRACTABLE: True})
try:
    kwargs = {"allow_extractable": True} if allow else {}
    with TokenSigner("pkcs11:token=attack;object=leaky", module=module, pin="4321", **kwargs) as signer:
        signer.sign(b"x")
        print("SIGNED", signer.extractable)
except OrtsealError as exc:
    print("REFUSED", type(exc).__name__, exc)
"""


def test_a_token_key_that_can_leave_the_token_is_refused_unless_asked_for(tmp_path):
    """A key made CKA_EXTRACTABLE (or not CKA_SENSITIVE) can be exported from the token: signing with it
    silently gives none of the guarantee an HSM key is used for. Refused by default (secure by default),
    accepted with allow_extractable=True. Run in a process of its own: SoftHSM2 reads its configuration once."""
    import shutil
    import subprocess
    import sys

    from test_signers import MODULE, NO_SOFTHSM

    if MODULE is None or shutil.which("softhsm2-util") is None:
        pytest.skip(NO_SOFTHSM)
    pytest.importorskip("pkcs11")
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "attack", "--so-pin", "87654321",
                    "--pin", "4321"], env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", _EXTRACTABLE_SCRIPT, MODULE, "default"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("REFUSED TokenKeyTypeError"), out.stdout + out.stderr
    assert "extractable" in out.stdout
    out = subprocess.run([sys.executable, "-c", _EXTRACTABLE_SCRIPT.replace('label="leaky"', 'label="leaky2"')
                          .replace("object=leaky", "object=leaky2"), MODULE, "allow"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("SIGNED True"), out.stdout + out.stderr


# -- reseal: re-signing launders what a revoked key signed ------------------------------------------
def test_cli_reseal_can_refuse_what_a_revoked_key_signed(tmp_path):
    """A signing key leaked and was revoked; the attacker seals a model with it and plants it where the
    publisher keeps its models. The publisher's keyset still trusts the old key (it signed everything before),
    and ``ortseal reseal`` re-signed the planted model with the current key: devices holding the bundle then
    accepted it. With the bundle given to reseal (--trust-bundle, --trust-root) it is refused, nothing written."""
    import ortseal
    from models import matmul
    from test_cli import ortseal_cli

    leaked, current, root = (KeySigner(Ed25519PrivateKey.generate()) for _ in range(3))
    content = KeySet.generate().without_signing()
    matmul(tmp_path / "evil.onnx", seed=9)
    ortseal.seal_model(tmp_path / "evil.onnx", tmp_path / "planted.onnx",
                       KeySet.merge(KeySet(signing_keys=[leaked]), content), progress=False, model_name="detector")
    publisher = KeySet.merge(KeySet(signing_keys=[current]), KeySet(trusted_keys=[leaked.public_key()]), content)
    publisher.with_new_content_key().save(tmp_path / "keys.json")
    KeySet(trusted_keys=[root.public_key()]).save(tmp_path / "root.json")
    bundle = TrustBundle.initial(root.public_key()).with_signer(current.public_key()).revoking(leaked.key_id)
    (tmp_path / "bundle.json").write_bytes(bundle.sign(root))
    r = ortseal_cli("reseal", str(tmp_path / "planted.onnx"), "-o", str(tmp_path / "laundered.onnx"),
                    "--keys", str(tmp_path / "keys.json"), "--trust-bundle", str(tmp_path / "bundle.json"),
                    "--trust-root", str(tmp_path / "root.json"))
    assert r.returncode == 1 and "revoked" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "laundered.onnx").exists() and not (tmp_path / "laundered.onnx.data").exists()


# -- a revocation that revokes nothing ----------------------------------------------------------------
@pytest.mark.parametrize("spelled", [str.upper, lambda k: k[:8], lambda k: k + " ", lambda k: "0x" + k])
def test_a_revocation_must_name_a_signer_id_as_it_is_written(tmp_path, spelled):
    """Signer ids are 16 lowercase hex digits. A revoked id spelled otherwise (upper case as another tool
    prints it, a prefix, "0x...") matched no key: the bundle said "1 revoked", the signer stayed trusted
    (revoking even left it among the bundle's signers) and devices kept accepting what the leaked key signed."""
    root, leaked = KeySigner(Ed25519PrivateKey.generate()), KeySigner(Ed25519PrivateKey.generate())
    bundle = TrustBundle.initial(root.public_key()).with_signer(leaked.public_key())
    key_id = spelled(leaked.key_id)
    try:
        revoked = bundle.revoking(key_id)
    except ValueError:
        return  # refused: the operator learns the id is wrong
    keys = install_bundle(revoked.sign(root), root=root.public_key(), state=tmp_path / "state.json").keyset()
    assert leaked.key_id not in revoked.signers, f"revoking {key_id!r} left the leaked key trusted"
    assert keys.trusted_key(leaked.key_id, "model:m") is None


def test_a_bundle_whose_revoked_list_holds_no_signer_id_is_malformed(tmp_path):
    """The same from a bundle built without revoking() (another tool, a hand-edited payload the root signed):
    docs/format.md says revoked holds signer ids; anything else is a FormatError, not a silent no-op."""
    from ortseal.errors import FormatError

    root, leaked = KeySigner(Ed25519PrivateKey.generate()), KeySigner(Ed25519PrivateKey.generate())
    odd = TrustBundle(2, root.public_key(), {}, frozenset({leaked.key_id.upper()}))
    with pytest.raises(FormatError, match="signer id"):
        install_bundle(odd.sign(root), root=root.public_key(), state=tmp_path / "state.json")
