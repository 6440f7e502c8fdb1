"""Signing keys outside keyset files: a real SoftHSM2 token made here, and callbacks (a KMS stand-in that
really signs, with a real Ed25519 key held elsewhere). Nothing of the crypto or the token is mocked."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from models import matmul
from test_cli import ortseal_cli

import ortseal
from ortseal import KeySet
from ortseal.blob import parse_header
from ortseal.errors import (
    SignerError,
    TamperedError,
    TokenKeyTypeError,
    TokenObjectNotFoundError,
    TokenPinError,
    TokenUnavailableError,
)
from ortseal.model._record import read_record
from ortseal.signing import CallbackSigner, signer_id

MODULE = next((p for p in ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                           "/usr/local/lib/softhsm/libsofthsm2.so") if os.path.exists(p)), None)
NO_SOFTHSM = "softhsm2 is not installed (apt-get install softhsm2; .ci/run installs it where apt is there)"
PIN, SO_PIN = "4321", "87654321"
ED25519_PARAMS = bytes.fromhex("06032b6570")  # DER of OID 1.3.101.112


class Token:
    """A SoftHSM2 configuration in a temp folder, its tokens, and the URI of each key made in them."""

    def __init__(self, folder: Path) -> None:
        (folder / "tokens").mkdir()
        self.conf = folder / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        self.env = {**os.environ, "SOFTHSM2_CONF": str(self.conf)}
        self.pin_file = folder / "pin"
        self.pin_file.write_text(PIN + "\n")

    def init(self, label: str) -> None:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", PIN],
                       env=self.env, check=True, capture_output=True)

    def uri(self, token: str, obj: str) -> str:
        return f"pkcs11:token={token};object={obj}"


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory):
    """Tokens "ortseal-release" (an Ed25519 key "signer" made in it, sensitive and never extractable, and an
    RSA key "rsa") and "ortseal-removable", in a SoftHSM2 configuration of its own. SoftHSM2 reads
    SOFTHSM2_CONF once per process, when the module is first loaded: this module's tests share it."""
    if MODULE is None or shutil.which("softhsm2-util") is None:
        pytest.skip(NO_SOFTHSM)
    pkcs11 = pytest.importorskip("pkcs11")
    t = Token(tmp_path_factory.mktemp("softhsm"))
    for label in ("ortseal-release", "ortseal-removable"):
        t.init(label)
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(t.conf)
    from ortseal.pkcs11 import _load_library

    lib = _load_library(MODULE)
    a, kt, m = pkcs11.Attribute, pkcs11.KeyType, pkcs11.Mechanism
    for label in ("ortseal-release", "ortseal-removable"):
        with lib.get_token(token_label=label).open(rw=True, user_pin=PIN) as session:
            session.generate_keypair(kt.EC_EDWARDS, mechanism=m.EC_EDWARDS_KEY_PAIR_GEN, store=True, label="signer",
                                     id=b"\x01", public_template={a.EC_PARAMS: ED25519_PARAMS},
                                     private_template={a.SENSITIVE: True, a.EXTRACTABLE: False})
            if label == "ortseal-release":
                session.generate_keypair(kt.RSA, 2048, store=True, label="rsa", id=b"\x02")
    yield t
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


def _signer(token: Token, obj: str = "signer", label: str = "ortseal-release", pin: str | None = PIN):
    from ortseal.pkcs11 import TokenSigner

    return TokenSigner(token.uri(label, obj), module=MODULE, pin=pin)


def test_the_private_key_stays_in_the_token(token):
    import pkcs11

    with _signer(token) as signer:
        assert signer.sensitive and not signer.extractable  # CKA_SENSITIVE, ALWAYS_SENSITIVE, not EXTRACTABLE
        with pytest.raises(pkcs11.AttributeSensitive):  # the token refuses to hand out the private value
            signer._private[pkcs11.Attribute.VALUE]
        message = b"ortseal v2 signature\x00" + bytes(32)
        signer.public_key().verify(signer.sign(message), message)  # CKM_EDDSA in the token, pure Ed25519


def test_cli_seals_with_the_token_and_the_device_opens(token, tmp_path):
    w, x = matmul(tmp_path / "m.onnx")
    keys = tmp_path / "keys.json"
    assert ortseal_cli("keygen", "-o", str(keys)).returncode == 0
    r = ortseal_cli("pubkey", token.uri("ortseal-release", "signer"), "-o", str(tmp_path / "token.pub.json"),
                    "--pkcs11-module", MODULE, "--pin-file", str(token.pin_file), env=token.env)
    assert r.returncode == 0, r.stderr
    token_public = KeySet.load(tmp_path / "token.pub.json")
    r = ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(keys),
                    "--signing-key", token.uri("ortseal-release", "signer"), "--pkcs11-module", MODULE,
                    "--pin-env", "TOKEN_PIN", env={**token.env, "TOKEN_PIN": PIN})
    assert r.returncode == 0, r.stderr
    record = read_record((tmp_path / "s.onnx").read_bytes())
    assert record is not None and record.signer_id == token_public.trusted_key_ids[0]
    publisher = KeySet.load(keys)
    # the device trusts the token's key only: not the keyset file's own signing key
    device = KeySet.merge(KeySet(content_keys={k: publisher.content_key(k) for k in publisher.content_key_ids}),
                          token_public)
    sess = ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"], keys=device)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-4, atol=1e-4)
    file_only = KeySet.merge(publisher.without_signing().public(), KeySet(content_keys={
        k: publisher.content_key(k) for k in publisher.content_key_ids}))
    with pytest.raises(TamperedError, match="does not trust"):
        ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"], keys=file_only)


def test_blobs_signed_in_the_token(token):
    publisher = KeySet.generate()
    with _signer(token) as signer:
        keys = KeySet.merge(KeySet(signing_keys=[signer]), publisher)
        blob = ortseal.seal_bytes(b"engine bytes" * 100, keys, context="engine:x")
    assert parse_header(blob).signer_id == signer.key_id
    device = KeySet.merge(publisher.without_signing(), KeySet(trusted_keys=[signer.public_key()]))
    assert ortseal.unseal_bytes(blob, device, context="engine:x") == b"engine bytes" * 100


def test_engines_signed_in_the_token(token, tmp_path):
    from ortseal.tensorrt.vault import Vault, verify_engine_file, write_engine

    publisher = KeySet.generate()
    engine = tmp_path / "model_ctx.engine"
    with _signer(token) as signer:
        write_engine(engine, memoryview(b"serialized engine" * 300), Vault(KeySet.merge(KeySet(signing_keys=[signer]),
                                                                                        publisher)))
    content = KeySet(content_keys={k: publisher.content_key(k) for k in publisher.content_key_ids})
    device = KeySet.merge(content, KeySet(trusted_keys=[signer.public_key()], trust_scopes={signer.key_id: ["engine"]}))
    verify_engine_file(engine, device)
    with pytest.raises(TamperedError, match="does not trust"):
        verify_engine_file(engine, KeySet.merge(content, publisher.public()))


@pytest.mark.parametrize("case, error, says", [
    ("wrong pin", TokenPinError, "refused the PIN"),
    ("no pin", TokenPinError, "user PIN"),
    ("missing object", TokenObjectNotFoundError, "object=LABEL"),
    ("missing token", TokenObjectNotFoundError, "token=LABEL"),
    ("rsa key", TokenKeyTypeError, "RSA key; ortseal signs with Ed25519 only"),
])
def test_token_errors_name_what_to_fix(token, case, error, says):
    kwargs = {"wrong pin": {"pin": "0000"}, "no pin": {"pin": None}, "missing object": {"obj": "nothing"},
              "missing token": {"label": "not-there"}, "rsa key": {"obj": "rsa"}}[case]
    with pytest.raises(error, match=says):
        _signer(token, **kwargs)


def test_a_removed_token_fails_typed_and_writes_nothing(token, tmp_path):
    matmul(tmp_path / "m.onnx")
    signer = _signer(token, label="ortseal-removable")
    keys = KeySet.merge(KeySet(signing_keys=[signer]), KeySet.generate())
    subprocess.run(["softhsm2-util", "--delete-token", "--token", "ortseal-removable"], env=token.env, check=True,
                   capture_output=True)
    with pytest.raises(TokenUnavailableError, match="went away"):
        ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no model, no .data, no temp file
    signer.close()
    with _signer(token) as other:  # the module's other token still signs (the removed one's slot is skipped)
        assert other.sign(b"m")


def test_cli_token_errors_are_one_line_and_the_pin_is_never_an_argument(token, tmp_path):
    matmul(tmp_path / "m.onnx")
    keys = tmp_path / "keys.json"
    assert ortseal_cli("keygen", "-o", str(keys)).returncode == 0
    base = ["seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(keys),
            "--pkcs11-module", MODULE]
    (tmp_path / "bad-pin").write_text("0000\n")
    r = ortseal_cli(*base, "--signing-key", token.uri("ortseal-release", "signer"), "--pin-file",
                    str(tmp_path / "bad-pin"), env=token.env)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "refused the PIN" in r.stderr and r.stderr.count("\n") == 1
    r = ortseal_cli(*base, "--signing-key", token.uri("ortseal-release", "signer") + "?pin-value=" + PIN, env=token.env)
    assert r.returncode == 1 and "pin-value puts the PIN in clear" in r.stderr
    r = ortseal_cli(*base, "--signing-key", token.uri("ortseal-release", "signer"), "--pin", PIN, env=token.env)
    assert r.returncode == 2  # there is no option that takes the PIN itself
    assert not (tmp_path / "s.onnx").exists()


# -- callbacks (KMS, cloud HSM) ------------------------------------------------------------------
def test_provider_signs_models_and_blobs_and_each_signature_is_checked(tmp_path):
    held_by_kms = Ed25519PrivateKey.generate()
    calls: list[bytes] = []

    def kms_sign(message: bytes) -> bytes:
        calls.append(message)
        return held_by_kms.sign(message)

    content = KeySet.generate().without_signing()
    keys = KeySet.merge(KeySet.from_provider(sign=kms_sign, public_key=held_by_kms.public_key()), content)
    assert keys.signing_key_ids == [signer_id(held_by_kms.public_key())]
    w, x = matmul(tmp_path / "m.onnx")
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, progress=False)
    assert len(calls) == 1 and calls[0].startswith(b"ortseal v3 model signature\x00") and len(calls[0]) == 27 + 32
    device = KeySet.merge(content, KeySet(trusted_keys=[held_by_kms.public_key()]))
    sess = ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"], keys=device)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-4, atol=1e-4)
    blob = ortseal.seal_bytes(b"payload", keys, context="c")
    assert ortseal.unseal_bytes(blob, device, context="c") == b"payload"
    saved = KeySet.from_json(keys.to_json())  # the KMS key is never exported; its public key is listed
    assert saved.signing_key_ids == [] and signer_id(held_by_kms.public_key()) in saved.trusted_key_ids


@pytest.mark.parametrize("bad", ["other key", "other message", "short", "raises"])
def test_a_bad_signature_from_a_callback_writes_nothing(tmp_path, bad):
    pinned, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    def sign(message: bytes) -> bytes:
        if bad == "raises":
            raise ConnectionError("KMS unreachable")
        return {"other key": lambda: other.sign(message), "other message": lambda: pinned.sign(message + b"!"),
                "short": lambda: pinned.sign(message)[:63]}[bad]()

    keys = KeySet.merge(KeySet.from_provider(sign=sign, public_key=pinned.public_key()), KeySet.generate())
    matmul(tmp_path / "m.onnx")
    with pytest.raises(SignerError, match="nothing was written" if bad != "raises" else "KMS unreachable"):
        ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    with pytest.raises(SignerError):
        ortseal.seal_bytes(b"x", keys, context="c")


def test_provider_misuse_is_a_type_error():
    with pytest.raises(TypeError, match="public_key"):
        KeySet.from_provider(sign=lambda m: b"")
    with pytest.raises(TypeError, match="fn .* sign"):
        KeySet.from_provider()
    with pytest.raises(TypeError):
        CallbackSigner("not callable", Ed25519PrivateKey.generate().public_key())  # type: ignore[arg-type]


def test_pkcs11_uris_are_parsed_as_rfc_7512_says():
    from ortseal.pkcs11 import parse_uri

    uri = parse_uri("pkcs11:token=My%20Token;id=%01%a2;type=private?module-path=/opt/hsm/lib.so&pin-source=file:/run/pin")
    assert uri.path == {"token": b"My Token", "id": b"\x01\xa2", "type": b"private"}
    assert uri.query == {"module-path": "/opt/hsm/lib.so", "pin-source": "file:/run/pin"}
    assert uri.redacted() == "pkcs11:token=My Token;id=01a2;type=private"  # nothing of the query in messages
    for bad, says in (("pkcs11:token=t;object=k?pin-value=1234", "in clear"), ("pkcs11:token=t", "names no key"),
                      ("pkcs11:token=t;object=k;object=j", "repeated"), ("pkcs11:token=t;colour=red;object=k", "unknown"),
                      ("pkcs11:object=k;type=secret-key", "type must be"), ("file:/k", "not a pkcs11")):
        with pytest.raises(ValueError, match=says):
            parse_uri(bad)


def test_pin_source_file_in_the_uri(token):
    from ortseal.pkcs11 import TokenSigner

    with TokenSigner(token.uri("ortseal-release", "signer") + f"?pin-source=file:{token.pin_file}", module=MODULE) as s:
        assert s.sign(b"m")
