"""What users of age, openssl and model_signing expect of a command line (issue 23, items 3, 4 and 6), carried
out on the real ``ortseal`` command in a subprocess: --quiet, global options after the command, several models
to verify, an example in every --help, seal from stdin to stdout, keys in scripts, bounded stdin, a FIFO."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import click
import onnx
import pytest
from models import transformer_like
from test_cli import THIS_TREE, ortseal_cli

import ortseal
from ortseal import KeySet
from ortseal.cli import main


def _run(*args: str, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ortseal", *args], input=stdin, capture_output=True,
                          env=THIS_TREE if env is None else env, timeout=600)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("habits")
    transformer_like(d / "m.onnx", d=16, vocab=32, seq=4)
    publisher = KeySet.generate()
    publisher.save(d / "keys.json")
    publisher.for_device().save(d / "device.json")
    ortseal.seal_model(d / "m.onnx", d / "s.onnx", publisher, min_bytes=64, progress=False)
    return d


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


@pytest.mark.parametrize("command", [()] + _commands(main), ids=lambda c: " ".join(c) or "ortseal")
def test_every_help_shows_an_example(command):
    from click.testing import CliRunner

    r = CliRunner().invoke(main, [*command, "--help"], prog_name="ortseal")
    assert r.exit_code == 0, r.output
    example = r.output.split("Example:", 1)
    assert len(example) == 2, f"ortseal {' '.join(command)} --help has no example"
    assert re.search(rf"^\s+ortseal {' '.join(command)}", example[1], re.M)


def test_quiet_means_errors_only_and_global_options_come_anywhere(made):
    d = made
    for args in (["--quiet", "verify"], ["verify", "--quiet"], ["verify", "-q"]):
        r = ortseal_cli(*args, str(d / "s.onnx"), "--keys", str(d / "device.json"))
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", (args, r)
    loud = ortseal_cli("verify", str(d / "s.onnx"), "--keys", str(d / "device.json"))
    assert loud.returncode == 0 and loud.stdout.startswith("ok ")
    r = ortseal_cli("seal", str(d / "m.onnx"), "-o", str(d / "q.onnx"), "--keys", str(d / "keys.json"), "--quiet",
                    "--min-bytes", "64", "--log-level", "debug")
    assert r.returncode == 0 and r.stdout == "", r
    # errors still print under --quiet, one line, and the --log-level value after the command is taken
    r = ortseal_cli("verify", str(d / "m.onnx"), "--keys", str(d / "device.json"), "-q")
    assert r.returncode == 1 and r.stderr.startswith("FAILED ") and r.stderr.count("\n") == 1
    r = ortseal_cli("inspect", str(d / "s.onnx"), "--log-level", "bogus")
    assert r.returncode == 2 and "bogus" in r.stderr
    # what follows -- is an argument, never a global option
    r = ortseal_cli("inspect", "--", "--quiet")
    assert r.returncode == 1 and "--quiet" in r.stderr


def test_messages_carry_no_python_class_names_or_wording(made, tmp_path):
    d = made
    tampered = tmp_path / "t.onnx"
    raw = bytearray((d / "s.onnx").read_bytes())
    raw[len(raw) // 3] ^= 1
    tampered.write_bytes(bytes(raw))
    (tmp_path / "t.onnx.data").write_bytes((d / "s.onnx.data").read_bytes())
    KeySet.generate().for_device().save(tmp_path / "other.json")
    failures = [
        ortseal_cli("verify", str(tampered), "--keys", str(d / "device.json")),
        ortseal_cli("inspect", str(tmp_path / "missing.onnx")),
        ortseal_cli("seal", str(d / "m.onnx"), "-o", str(d / "s.onnx"), "--keys", str(d / "keys.json")),
        ortseal_cli("verify", str(d / "s.onnx"), "--keys", str(tmp_path / "other.json")),
    ]
    for r in failures:
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r
        assert not re.search(r"[A-Z][a-z]+Error|Errno|Traceback|Exception|NoneType", r.stderr), r.stderr
    assert "which this keyset does not trust (wrong keyset?)" in failures[3].stderr
    # tools still get the class in --json
    r = ortseal_cli("verify", str(tampered), "--keys", str(d / "device.json"), "--json")
    assert json.loads(r.stdout)["error"] == "TamperedError"


def test_verify_takes_several_models(made, tmp_path):
    d = made
    r = ortseal_cli("verify", str(d / "s.onnx"), str(d / "m.onnx"), str(d / "s.onnx"), "--keys", str(d / "device.json"))
    assert r.returncode == 1
    assert [line.split()[0] for line in r.stdout.splitlines() if not line.startswith(" ")] == ["ok", "ok"]
    assert r.stderr.startswith(f"FAILED {d / 'm.onnx'}: ") and r.stderr.count("\n") == 1
    r = ortseal_cli("verify", str(d / "s.onnx"), str(d / "s.onnx"), "--keys", str(d / "device.json"), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] and [m["ok"] for m in doc["models"]] == [True, True]
    r = ortseal_cli("verify", str(d / "s.onnx"), str(tmp_path / "none.onnx"), "--keys", str(d / "device.json"), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and not doc["ok"] and [m["ok"] for m in doc["models"]] == [True, False]


def test_seal_reads_and_writes_dash(made):
    d = made
    plain = onnx.load(str(d / "m.onnx"))
    r = _run("seal", "-", "-o", "-", "--keys", str(d / "keys.json"), "--min-bytes", "64", "--model-name", "piped",
             stdin=plain.SerializeToString())
    assert r.returncode == 0, r.stderr
    sealed = r.stdout
    assert ortseal.verify_model(sealed, KeySet.load(d / "device.json"), model_name="piped").sealed_tensors > 0
    r = _run("inspect", "-", stdin=sealed)
    assert r.returncode == 0 and b"piped" in r.stdout
    r = _run("seal", "-", "-o", str(d / "x.onnx"), "--keys", str(d / "keys.json"), stdin=plain.SerializeToString())
    assert r.returncode == 1 and b"--model-name" in r.stderr and not (d / "x.onnx").exists()
    # a model with external data cannot come from stdin: it names the file it cannot read
    external = onnx.load(str(d / "m.onnx"))
    onnx.save(external, str(d / "ext.onnx"), save_as_external_data=True, size_threshold=0)
    r = _run("seal", "-", "-o", "-", "--keys", str(d / "keys.json"), "--model-name", "e",
             stdin=(d / "ext.onnx").read_bytes())
    assert r.returncode == 1 and r.stdout == b"" and r.stderr.count(b"\n") == 1


def test_stdin_readers_stop_at_a_stated_size(made):
    d = made
    r = _run("inspect-keys", "-", stdin=b" " * ((1 << 20) + 1))
    assert r.returncode == 1 and b"more than 1 MiB; refused" in r.stderr
    r = _run("verify", str(d / "s.onnx"), "--keys", "-", stdin=b"{" * ((1 << 20) + 1))
    assert r.returncode == 1 and b"more than 1 MiB; refused" in r.stderr


def test_a_stdin_reader_asks_for_the_limit_and_one_byte_more():
    """Whatever the stream holds, at most limit + 1 bytes are read (a model's limit: 2 GiB, protobuf's)."""
    import io

    from ortseal.cli._kit import read_bounded

    class Endless(io.RawIOBase):
        asked: list[int] = []

        def read(self, n=-1):
            self.asked.append(n)
            return b"\0" * 1024

    with pytest.raises(click.ClickException, match="more than 1000 bytes"):
        read_bounded(Endless(), 1000, "x")
    assert Endless.asked == [1001]


def test_passphrase_file_refuses_a_fifo_at_once(made, tmp_path):
    d = made
    KeySet.load(d / "keys.json").save(tmp_path / "locked.json", "pw")
    fifo = tmp_path / "pass.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    r = ortseal_cli("inspect-keys", str(tmp_path / "locked.json"), "--passphrase-file", str(fifo))
    assert time.monotonic() - started < 60  # no writer ever opens the FIFO: a blocking read would hang here
    assert r.returncode == 1 and "--passphrase-file" in r.stderr and "a FIFO, not a regular file" in r.stderr, r
    (tmp_path / "pass.txt").write_text("pw\n")
    r = ortseal_cli("inspect-keys", str(tmp_path / "locked.json"), "--passphrase-file", str(tmp_path / "pass.txt"))
    assert r.returncode == 0 and "content keys:" in r.stdout


def test_passphrase_help_says_what_it_applies_to():
    r = ortseal_cli("device-keys", "--help")
    text = " ".join(r.stdout.split())
    assert "passphrase of KEYSET (the publisher's keyset read, not the one written)" in text
    assert "passphrase of the device keyset written (-o)" in text
    assert "passphrase of the new keyset (it is protected with it)" in " ".join(ortseal_cli("keygen", "--help").stdout.split())
    assert "passphrase of the --keys keyset" in " ".join(ortseal_cli("verify", "--help").stdout.split())


def test_device_keys_writes_an_unprotected_keyset_only_when_asked(made, tmp_path):
    d = made
    KeySet.load(d / "keys.json").save(tmp_path / "locked.json", "pw")
    (tmp_path / "pw.txt").write_text("pw")
    base = ["device-keys", str(tmp_path / "locked.json"), "--passphrase-file", str(tmp_path / "pw.txt")]
    r = ortseal_cli(*base, "-o", str(tmp_path / "dev.json"))
    assert r.returncode == 2 and "--no-protect" in r.stderr and not (tmp_path / "dev.json").exists()
    assert "unlocks KEYSET (the publisher's keyset read), not the device keyset written" in r.stderr
    r = ortseal_cli(*base, "-o", str(tmp_path / "dev.json"), "--no-protect")
    assert r.returncode == 0 and "NOT passphrase-protected" in r.stdout, r.stderr
    device = KeySet.load(tmp_path / "dev.json")  # no passphrase needed
    assert device.has_content_keys and not device.signing_key_ids
    r = ortseal_cli(*base, "-o", str(tmp_path / "dev2.json"), "--no-protect", "--protect")
    assert r.returncode == 2 and not (tmp_path / "dev2.json").exists()


def test_a_publisher_keyset_opening_a_model_gets_one_warning(made):
    d = made
    code = ("import logging, ortseal; logging.basicConfig(format='%(message)s'); "
            f"k = ortseal.KeySet.load({str(d / 'keys.json')!r}); "
            f"[ortseal.InferenceSession({str(d / 's.onnx')!r}, providers=['CPUExecutionProvider'], keys=k) "
            "for _ in range(2)]")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=THIS_TREE, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "can sign models" in line]
    assert len(lines) == 1 and "ortseal device-keys" in lines[0]
    code = code.replace("keys.json", "device.json")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=THIS_TREE, timeout=600)
    assert r.returncode == 0 and "can sign models" not in r.stderr


def test_a_missing_keys_file_on_a_device_does_not_suggest_keygen(made, tmp_path):
    d = made
    r = ortseal_cli("verify", str(d / "s.onnx"), "--keys", str(tmp_path / "device.json"))
    assert r.returncode == 1 and "keygen" not in r.stderr and "ortseal device-keys" in r.stderr
    r = ortseal_cli("seal", str(d / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--keys", str(tmp_path / "keys.json"))
    assert r.returncode == 1 and "ortseal keygen" in r.stderr


def test_inspect_says_how_to_open_the_model(made):
    r = ortseal_cli("inspect", str(made / "s.onnx"))
    assert r.returncode == 0
    line = next(line for line in r.stdout.splitlines() if line.startswith("open with:"))
    assert "ortseal.InferenceSession" in line and "ai.ortseal:Unseal(-1) is not a registered function/op" in line
