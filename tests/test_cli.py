"""The ortseal command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import ortseal
from ortseal import KeySet

ROOT = Path(__file__).resolve().parents[1]
# this tree's ortseal, from any folder (tools/convert.py puts tools/ first on sys.path), or the installed one when
# the sources are gone (the packaging test)
THIS_TREE = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def ortseal_cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ortseal", *args], capture_output=True, text=True,
                          env=THIS_TREE if env is None else env, cwd=cwd, timeout=600)


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


@pytest.mark.slow
def test_demo_prints_commands_that_run(tmp_path):
    folder = tmp_path / "demo dir"  # a space: the commands must be quoted for the shell
    r = ortseal_cli("demo", "--workdir", str(folder))
    assert r.returncode == 0, r.stdout + r.stderr
    commands = [line.strip() for line in r.stdout.split("Try it yourself")[1].splitlines()[1:] if line.strip()]
    assert len(commands) == 4  # seal, inspect, verify, cache verify: the work folder holds no tampered file
    outputs = []
    for command in commands:
        run = subprocess.run(command.replace("ortseal ", f"{shlex.quote(sys.executable)} -m ortseal ", 1), shell=True,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, (command, run.stderr)
        outputs.append(run.stdout)
    assert "verified" in outputs[2] and "1 ok, 0 bad" in outputs[3]


def test_demo_runs_and_shows_refusals():
    r = ortseal_cli("demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TamperedError" in r.stdout
    assert "demo passed" in r.stdout


@pytest.mark.slow
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
    r = subprocess.run(convert + ["--no-sign"], capture_output=True, text=True, cwd=ROOT, env=THIS_TREE, timeout=600)
    assert r.returncode == 1 and "could never open" in r.stderr and not (tmp_path / "c.onnx").exists()
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    r = subprocess.run(convert, capture_output=True, text=True, cwd=ROOT, env=THIS_TREE, timeout=600)
    assert r.returncode == 0, r.stderr
    info = json.loads(ortseal_cli("inspect", "--json", str(tmp_path / "c.onnx")).stdout)
    assert sorted(t["name"] for t in info["sealed"]) == ["wk", "wq"]
    assert info["manifest"] == {"signer": KeySet.load(keys).signing_key_ids[0], "model": "tiny", "release": 7}
    assert all("signer" not in t for t in info["sealed"])  # tensor blobs are not signed: the manifest is
    old = ortseal_cli("verify", str(tmp_path / "c.onnx"), "--keys", str(keys), "--min-release", "8")
    assert old.returncode == 1 and "older than the minimum release 8" in old.stderr
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
    assert bad.returncode == 1 and "changed after sealing" in bad.stderr and bad.stderr.count("\n") == 1
    bad_public = ortseal_cli("verify", "--json", str(tmp_path / "s.onnx"), "--keys", str(public))
    assert bad_public.returncode == 1 and json.loads(bad_public.stdout)["error"] == "TamperedError"
    assert not list(tmp_path.glob("*.tmp"))
    again = ortseal_cli("seal", str(tmp_path / "s.onnx"), "-o", str(tmp_path / "t.onnx"), "--keys", str(keys))
    assert again.returncode == 1 and "already sealed" in again.stderr


@pytest.mark.slow
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


def many_small_constants(path: Path, count: int = 30) -> None:
    """A model shaped like real exports: a few weights, and scores of 4-byte Constants (scales, shape values)."""
    import numpy as np
    import onnx
    from models import IR_VERSION, OPSET
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "big"], ["h0"]), helper.make_node("MatMul", ["h0", "medium"], ["a0"])]
    for i in range(count):
        nodes.append(helper.make_node("Constant", [], [f"tiny{i}"],
                                      value=numpy_helper.from_array(np.array([0.5 + i], np.float32), f"tiny{i}")))
        nodes.append(helper.make_node("Add", [f"a{i}", f"tiny{i}"], [f"a{i + 1}"]))
    graph = helper.make_graph(nodes, "small_constants", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info(f"a{count}", TensorProto.FLOAT, [2, 32])],
                              [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "big"),
                               numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "medium")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION), str(path))


@pytest.mark.slow
def test_inspect_and_verify_summarize_small_tensors(tmp_path):
    many_small_constants(tmp_path / "m.onnx")
    keys = tmp_path / "keys.json"
    assert ortseal_cli("keygen", "-o", str(keys)).returncode == 0
    signer = KeySet.load(keys).signing_key_ids[0]
    assert ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(keys),
                       "--exclude", "^medium$").returncode == 0
    table = ortseal_cli("inspect", str(tmp_path / "s.onnx"))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) < 10 and not any("tiny" in line for line in lines), table.stdout
    assert "30 below --min-bytes not listed" in table.stdout and any(line.startswith("medium") for line in lines)
    assert "signer" not in lines[0] and f"signed by {signer}" in table.stdout and table.stdout.count(signer) == 1
    assert "(main graph)" in table.stdout
    every = ortseal_cli("inspect", "--all", str(tmp_path / "s.onnx"))
    assert all(f"tiny{i} " in every.stdout for i in range(30))
    info = json.loads(ortseal_cli("inspect", "--json", str(tmp_path / "s.onnx")).stdout)
    assert [p["name"] for p in info["left_plain"]] == ["medium"] and info["left_plain_not_listed"] == 30
    assert [(t["name"], t["scope"]) for t in info["sealed"]] == [("big", "")] and info["manifest"]["signer"] == signer
    assert len(json.loads(ortseal_cli("inspect", "--json", "--all", str(tmp_path / "s.onnx")).stdout)["left_plain"]) == 31
    report = json.loads(ortseal_cli("verify", "--json", str(tmp_path / "s.onnx"), "--keys", str(keys)).stdout)
    assert report["ok"] and [p["name"] for p in report["left_plain"]] == ["medium"] and report["left_plain_not_listed"] == 30
    report = json.loads(ortseal_cli("verify", "--json", "--all", str(tmp_path / "s.onnx"), "--keys", str(keys)).stdout)
    assert len(report["left_plain"]) == 31


@pytest.mark.slow
def test_dash_is_stdin_where_a_stream_makes_sense_and_refused_elsewhere(tmp_path):
    from models import transformer_like

    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keys = tmp_path / "keys.json"
    assert ortseal_cli("keygen", "-o", str(keys)).returncode == 0
    assert ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "inline.onnx"), "--keys", str(keys),
                       "--inline").returncode == 0
    assert ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "ext.onnx"), "--keys", str(keys)).returncode == 0

    def piped(*args: str, model: str) -> subprocess.CompletedProcess:
        with open(tmp_path / model, "rb") as stdin:
            return subprocess.run([sys.executable, "-m", "ortseal", *args], stdin=stdin, capture_output=True,
                                  timeout=600, cwd=tmp_path, env=THIS_TREE)

    r = piped("inspect", "--json", "-", model="inline.onnx")
    assert r.returncode == 0 and "tok_emb" in {t["name"] for t in json.loads(r.stdout)["sealed"]}
    r = piped("verify", "-", "--keys", str(keys), model="inline.onnx")
    assert r.returncode == 0 and b"opened by ONNX Runtime" in r.stdout
    r = piped("inspect", "-", model="ext.onnx")  # its payloads are in ext.onnx.data: a stream cannot name them
    assert r.returncode == 1 and b"external file" in r.stderr and r.stderr.count(b"\n") == 1
    r = piped("pubkey", "-", "-o", "-", model="keys.json")
    assert r.returncode == 0 and KeySet.from_json(r.stdout).trusted_key_ids == KeySet.load(keys).signing_key_ids
    # seal - -o -: tests/test_cli_habits.py
    r = ortseal_cli("keygen", "-o", "-", cwd=tmp_path)
    assert r.returncode == 2 and "'-'" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "-").exists() and not (tmp_path / "-.data").exists()


def test_engine_cache_commands_report_json_and_fail_on_nothing_to_check(tmp_path):
    from ortseal.tensorrt.harness import TensorrtEpHarness, harness_provider

    keys = tmp_path / "keys.json"
    KeySet.generate().save(keys)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = ortseal_cli("cache", "verify", str(empty), "--keys", str(keys))
    assert r.returncode == 1 and "nothing to verify" in r.stderr and r.stderr.count("\n") == 1
    r = ortseal_cli("cache", "verify", "--json", str(empty), "--keys", str(keys))
    assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False
    r = ortseal_cli("cache", "list", "--json", str(empty))
    assert r.returncode == 0 and json.loads(r.stdout)["engines"] == []
    trt = TensorrtEpHarness(harness_provider(KeySet.load(keys), {"trt_engine_cache_path": str(tmp_path / "cache")}))
    path = trt.engine_path()
    trt.save_engine(path, b"\x01" * 5000)
    listed = json.loads(ortseal_cli("cache", "list", "--json", str(tmp_path / "cache")).stdout)["engines"]
    assert [(e["file"], e["engine_bytes"], e["state"]) for e in listed] == [(Path(path).name, 5000, "sealed")]
    ok = ortseal_cli("cache", "verify", "--json", str(tmp_path / "cache"), "--keys", str(keys))
    assert ok.returncode == 0 and json.loads(ok.stdout)["engines"] == [{"file": Path(path).name, "ok": True}]
    blob = bytearray(Path(path).read_bytes())
    blob[-100] ^= 1
    Path(path).write_bytes(bytes(blob))
    bad = ortseal_cli("cache", "verify", "--json", str(tmp_path / "cache"), "--keys", str(keys))
    assert bad.returncode == 1 and json.loads(bad.stdout)["engines"][0]["error"] == "TamperedError"


def test_every_reporting_command_has_json(tmp_path):
    from models import transformer_like

    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keygen = json.loads(ortseal_cli("keygen", "-o", str(tmp_path / "k.json"), "--json").stdout)
    keys = KeySet.load(tmp_path / "k.json")
    assert keygen["ok"] and keygen["signing_keys"] == keys.signing_key_ids and not keygen["protected"]
    pub = json.loads(ortseal_cli("pubkey", str(tmp_path / "k.json"), "-o", str(tmp_path / "t.json"), "--json").stdout)
    assert pub["trusted_keys"] == keys.signing_key_ids and pub["content_keys"] == []
    sealed = json.loads(ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys",
                                    str(tmp_path / "k.json"), "--json").stdout)
    assert sealed["ok"] and "tok_emb" in sealed["sealed"] and sealed["data_file"].endswith("s.onnx.data")
    for command in ("keygen", "pubkey", "device-keys", "inspect-keys", "seal", "inspect", "verify"):
        assert "--json" in ortseal_cli(command, "--help").stdout, command
    for command in ("list", "verify"):
        assert "--json" in ortseal_cli("cache", command, "--help").stdout, command


@pytest.mark.slow
def test_errors_name_the_users_file_and_options(tmp_path):
    from models import transformer_like

    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    keys = tmp_path / "keys.json"
    KeySet.generate().save(keys)
    (tmp_path / "a_file").write_text("not a folder")
    targets = [tmp_path / "no_folder" / "x.onnx", tmp_path / "a_file" / "x.onnx"]
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        (tmp_path / "ro").mkdir(mode=0o555)
        targets.append(tmp_path / "ro" / "x.onnx")
    for target in targets:
        r = ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(target), "--keys", str(keys))
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"cannot write {target}" in r.stderr and ".tmp" not in r.stderr, r.stderr
        keygen = ortseal_cli("keygen", "-o", str(target.parent / "k.json"))
        assert f"cannot write {target.parent / 'k.json'}" in keygen.stderr and ".tmp" not in keygen.stderr
    nomatch = ortseal_cli("seal", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(keys),
                         "--include", "nomatch")
    assert nomatch.returncode == 1 and "--include 'nomatch'" in nomatch.stderr and "--exclude" not in nomatch.stderr


def test_convert_tool_is_seal_under_its_own_name():
    r = subprocess.run([sys.executable, "tools/convert.py", "--help"], capture_output=True, text=True, cwd=ROOT,
                       env=THIS_TREE, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("Usage: tools/convert.py [OPTIONS] SRC")
    assert "Commands:" not in r.stdout and "--min-bytes" in r.stdout
