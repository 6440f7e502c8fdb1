"""The ortseal command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import ortseal
from ortseal import KeySet


def ortseal_cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ortseal", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


def test_version_and_help():
    r = ortseal_cli("--version")
    assert r.returncode == 0 and ortseal.__version__ in r.stdout
    r = ortseal_cli("--help")
    assert r.returncode == 0
    for command in ("keygen", "pubkey", "demo"):
        assert command in r.stdout


def test_keygen_pubkey(tmp_path):
    keys = tmp_path / "keys.json"
    r = ortseal_cli("keygen", "-o", str(keys))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    again = ortseal_cli("keygen", "-o", str(keys))
    assert again.returncode == 1 and again.stderr.strip().count("\n") == 0 and "exists" in again.stderr
    r = ortseal_cli("pubkey", str(keys), "-o", str(tmp_path / "trusted.json"))
    assert r.returncode == 0, r.stderr
    trusted = KeySet.load(tmp_path / "trusted.json")
    assert trusted.trusted_key_ids == KeySet.load(keys).signing_key_ids
    assert not json.loads((tmp_path / "trusted.json").read_text()).get("content_keys")


def test_keygen_with_passphrase(tmp_path):
    import os
    env = dict(os.environ, MY_PASS="s3cret")
    keys = tmp_path / "keys.json"
    assert ortseal_cli("keygen", "-o", str(keys), "--passphrase-env", "MY_PASS", env=env).returncode == 0
    assert KeySet.load(keys, passphrase="s3cret").content_key_ids
    r = ortseal_cli("pubkey", str(keys), "-o", str(tmp_path / "t.json"))
    assert r.returncode == 1 and "passphrase" in r.stderr
    r = ortseal_cli("keygen", "-o", str(tmp_path / "k2.json"), "--passphrase-env", "UNSET_VAR_X")
    assert r.returncode == 1 and "UNSET_VAR_X" in r.stderr


def test_demo_prints_commands_that_run(tmp_path):
    folder = tmp_path / "demo dir"  # a space: the commands must be quoted for the shell
    r = ortseal_cli("demo", "--workdir", str(folder))
    assert r.returncode == 0, r.stdout + r.stderr
    commands = [line.strip() for line in r.stdout.split("Try it yourself")[1].splitlines()[1:] if line.strip()]
    assert len(commands) == 3
    for command in commands:
        run = subprocess.run(command.replace("ortseal ", f"{shlex.quote(sys.executable)} -m ortseal ", 1), shell=True,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, (command, run.stderr)
    assert "verified" in run.stdout


def test_demo_runs_and_shows_refusals():
    r = ortseal_cli("demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TamperedError" in r.stdout
    assert "demo passed" in r.stdout


def test_seal_inspect_verify_and_convert(tmp_path):
    from models import transformer_like

    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keys = tmp_path / "keys.json"
    assert ortseal_cli("keygen", "-o", str(keys)).returncode == 0
    r = ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(keys),
                    "--min-bytes", "512", "--exclude", "^ff2$")
    assert r.returncode == 0, r.stderr
    assert "1 excluded" in r.stdout and "below --min-bytes" in r.stdout  # what stayed plaintext, by reason
    convert = [sys.executable, "tools/convert.py", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "c.onnx"),
               "--keys", str(keys), "--include", "^w[qk]$", "--release", "7", "--model-name", "tiny"]
    r = subprocess.run(convert + ["--no-sign"], capture_output=True, text=True, cwd=str(Path(__file__).parents[1]),
                       timeout=600)
    assert r.returncode == 1 and "could never open" in r.stderr and not (tmp_path / "c.onnx").exists()
    r = subprocess.run(convert, capture_output=True, text=True, cwd=str(Path(__file__).parents[1]), timeout=600)
    assert r.returncode == 0, r.stderr
    info = json.loads(ortseal_cli("inspect", "--json", str(tmp_path / "c.onnx")).stdout)
    assert sorted(t["name"] for t in info["sealed"]) == ["wk", "wq"]
    assert {(t["signer"], t["model"], t["release"]) for t in info["sealed"]} == {(KeySet.load(keys).signing_key_ids[0],
                                                                                   "tiny", 7)}
    old = ortseal_cli("verify", str(tmp_path / "c.onnx"), "--keys", str(keys), "--min-release", "8")
    assert old.returncode == 1 and "RollbackError" in old.stderr
    table = ortseal_cli("inspect", str(tmp_path / "s.onnx"))
    assert table.returncode == 0 and KeySet.load(keys).content_key_ids[0] in table.stdout
    assert "excluded" in table.stdout and "left plaintext" in table.stdout
    info = json.loads(ortseal_cli("inspect", "--json", str(tmp_path / "s.onnx")).stdout)
    assert "tok_emb" in {t["name"] for t in info["sealed"]}
    assert {(p["name"], p["reason"]) for p in info["left_plain"] if p["name"] == "ff2"} == {("ff2", "excluded")}
    ok = ortseal_cli("verify", str(tmp_path / "s.onnx"), "--keys", str(keys))
    assert ok.returncode == 0 and "verified" in ok.stdout and "opened by ONNX Runtime" in ok.stdout
    public = tmp_path / "public.json"
    KeySet.load(keys).public().save(public)
    pub = ortseal_cli("verify", "--json", str(tmp_path / "s.onnx"), "--keys", str(public))
    report = json.loads(pub.stdout)
    assert pub.returncode == 0 and report["ok"] and not report["decrypted"] and report["sealed_tensors"] == len(
        info["sealed"])
    assert "decryption NOT checked" in ortseal_cli("verify", str(tmp_path / "s.onnx"), "--keys", str(public)).stdout
    data = tmp_path / "s.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[-10] ^= 1
    data.write_bytes(bytes(blob))
    bad = ortseal_cli("verify", str(tmp_path / "s.onnx"), "--keys", str(keys))
    assert bad.returncode == 1 and "TamperedError" in bad.stderr and bad.stderr.count("\n") == 1
    bad_public = ortseal_cli("verify", "--json", str(tmp_path / "s.onnx"), "--keys", str(public))
    assert bad_public.returncode == 1 and json.loads(bad_public.stdout)["error"] == "TamperedError"
    assert not list(tmp_path.glob("*.tmp"))
    again = ortseal_cli("seal", str(tmp_path / "s.onnx"), "-o", str(tmp_path / "t.onnx"), "--keys", str(keys))
    assert again.returncode == 1 and "already sealed" in again.stderr


def test_cli_refusals_are_one_clear_line(tmp_path):
    from models import transformer_like

    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keys = tmp_path / "keys.json"
    missing = ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(tmp_path / "no.json"))
    assert missing.returncode == 1 and "no such keyset file" in missing.stderr and "Traceback" not in missing.stderr
    assert ortseal_cli("keygen", "-o", str(keys)).returncode == 0
    verify_missing = ortseal_cli("verify", str(tmp_path / "m.onnx"), "--keys", str(tmp_path / "no.json"))
    assert verify_missing.returncode == 1 and "no such keyset file" in verify_missing.stderr
    unsealed = ortseal_cli("verify", str(tmp_path / "m.onnx"), "--keys", str(keys))
    assert unsealed.returncode == 1 and "holds no sealed tensor" in unsealed.stderr
    args = ["seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(keys)]
    assert ortseal_cli(*args).returncode == 0
    again = ortseal_cli(*args)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert ortseal_cli(*args, "--overwrite").returncode == 0
    bad = ortseal_cli(*args, "--overwrite", "--include", "([")
    assert bad.returncode == 1 and "not a valid regular expression" in bad.stderr and "Traceback" not in bad.stderr
    none = ortseal_cli(*args, "--overwrite", "--min-bytes", "100000000")
    assert none.returncode == 1 and "--min-bytes" in none.stderr
    piped = subprocess.run(f"{sys.executable} -m ortseal inspect {tmp_path / 's.onnx'} | head -1", shell=True,
                           capture_output=True, text=True, timeout=120)
    assert piped.stdout.startswith("tensor") and piped.stderr == ""
