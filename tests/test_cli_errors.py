"""No traceback from any command on any input, and the commands that need no ONNX Runtime work without one
(none installed, or two)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from models import transformer_like

from ortseal import KeySet
from ortseal.cli import main
from ortseal.cli._kit import Group

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ortseal", *args], capture_output=True, text=True, timeout=600,
                          env=env, **kw)


def one_error_line(r: subprocess.CompletedProcess, code: int = 1) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith(("error: ", "FAILED ")) and r.stderr.count("\n") == 1, \
        r.stderr  # FAILED: verify, whose failure is a verdict
    return r.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    transformer_like(folder / "m.onnx", d=32, vocab=64)
    keys = KeySet.generate()
    keys.save(folder / "keys.json")
    keys.save(folder / "locked.json", "right passphrase")
    (folder / "wrong").write_text("wrong passphrase\n")
    (folder / "notes.json").write_text('{"hello": "world"}')
    assert cli("seal", str(folder / "m.onnx"), "-o", str(folder / "s.onnx"), "--keys", str(folder / "keys.json"),
               "--min-bytes", "256").returncode == 0
    return folder


@pytest.mark.slow
def test_bad_keysets_are_one_line_with_and_without_json(files):
    model = str(files / "s.onnx")
    cases = {
        "a model as keyset": ["--keys", model],  # was UnicodeDecodeError
        "a JSON file that is no keyset": ["--keys", str(files / "notes.json")],
        "a protected keyset, no terminal": ["--keys", str(files / "locked.json")],
        "a wrong passphrase": ["--keys", str(files / "locked.json"), "--passphrase-file", str(files / "wrong")],
        "a folder": ["--keys", str(files)],
    }
    expected = {"a model as keyset": "not UTF-8 text", "a JSON file that is no keyset": "not an ortseal keyset",
                "a protected keyset, no terminal": "no terminal", "a wrong passphrase": "passphrase",
                "a folder": "no such keyset file"}
    for what, args in cases.items():
        for command in (["verify", model], ["seal", str(files / "m.onnx"), "-o", str(files / "x.onnx")],
                        ["cache", "verify", str(files)]):
            line = one_error_line(cli(*command, *args, stdin=subprocess.DEVNULL))
            assert expected[what] in line, (what, command, line)
        r = cli("verify", "--json", model, *args, stdin=subprocess.DEVNULL)
        one_error_line(r)
        report = json.loads(r.stdout)
        assert report["ok"] is False and expected[what] in report["error"] + report["message"], (what, report)
    for command in (["pubkey", model, "-o", str(files / "p.json")], ["inspect-keys", model],
                    ["device-keys", model, "-o", str(files / "d.json")], ["inspect", str(files / "keys.json")],
                    ["verify", str(files / "keys.json"), "--keys", str(files / "keys.json")]):
        one_error_line(cli(*command, stdin=subprocess.DEVNULL))
    assert not list(files.glob("x.onnx*")) and not (files / "p.json").exists() and not (files / "d.json").exists()


def test_usage_errors_are_one_line_with_exit_2(files):
    for args in (["seal"], ["verify", str(files / "s.onnx")], ["--log-level", "loud", "inspect", "x"], ["nosuch"]):
        assert "see: " in one_error_line(cli(*args), code=2)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback():
    """The boundary itself, around a command that fails in a way no ortseal code expects."""

    @click.group(cls=Group)
    @click.option("--log-level", default="warning")
    def app(log_level: str) -> None:
        from ortseal.cli._kit import setup_logging

        setup_logging(log_level, False)

    @app.command()
    def broken() -> None:
        {}["missing"]  # a KeyError: a bug

    runner = CliRunner()
    r = runner.invoke(app, ["broken"])
    assert r.exit_code == 1 and r.stderr.startswith("error: unexpected KeyError") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.output
    debug = runner.invoke(app, ["--log-level", "debug", "broken"])
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and 'KeyError: \'missing\'' in debug.stderr


def test_click_runner_sees_the_same_boundary(files):
    r = CliRunner().invoke(main, ["verify", str(files / "s.onnx"), "--keys", str(files / "s.onnx")])
    assert r.exit_code == 1 and r.stderr.startswith("error: --keys ") and r.stderr.count("\n") == 1


def _site_without_onnxruntime(folder: Path) -> str:
    """A sys.path entry holding links to everything this Python has installed except ONNX Runtime itself."""
    folder.mkdir()
    # every site folder this Python reads, those a .pth file added too (the packaging test's environment)
    sites = [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p)]
    for where in sites:
        for entry in os.scandir(where):
            low = entry.name.lower()
            if low == "onnxruntime" or low.startswith(("onnxruntime-", "onnxruntime_gpu", "onnxruntime_openvino",
                                                       "onnxruntime_directml", "ort_nightly")) or low.endswith(".pth"):
                continue
            if not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry.path)
    return str(folder)


@pytest.mark.slow
def test_commands_that_need_no_onnxruntime_work_without_it(files, tmp_path):
    """A Python with no ONNX Runtime installed at all: python -S, this tree (or the installed ortseal) and every
    other installed package."""
    path = _site_without_onnxruntime(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k != "ORTSEAL_SKIP_ORT_CHECK"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), path])

    def bare(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-S", "-m", "ortseal", *args], capture_output=True, text=True,
                              env=env, timeout=600, cwd=tmp_path)

    probe = subprocess.run([sys.executable, "-S", "-c", "import importlib.util as u; print(u.find_spec('onnxruntime'))"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert probe.stdout.strip() == "None", probe  # really no ONNX Runtime here
    assert bare("--version").returncode == 0 and bare("--help").returncode == 0
    assert bare("keygen", "-o", str(tmp_path / "k.json")).returncode == 0
    assert bare("pubkey", str(tmp_path / "k.json"), "-o", str(tmp_path / "t.json")).returncode == 0
    assert bare("device-keys", str(tmp_path / "k.json"), "-o", str(tmp_path / "d.json")).returncode == 0
    assert bare("inspect-keys", str(tmp_path / "d.json")).returncode == 0
    seal = bare("seal", str(files / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(tmp_path / "k.json"),
                "--min-bytes", "256")
    assert seal.returncode == 0, seal.stderr
    inspect = bare("inspect", str(tmp_path / "s.onnx"))
    assert inspect.returncode == 0 and "sealed tensors" in inspect.stdout, inspect.stderr
    public = bare("verify", str(tmp_path / "s.onnx"), "--keys", str(tmp_path / "t.json"))  # hashing only: no ORT
    assert public.returncode == 0 and "decryption NOT checked" in public.stdout, public.stderr
    opened = bare("verify", str(tmp_path / "s.onnx"), "--keys", str(tmp_path / "k.json"))
    assert opened.returncode == 1 and "Traceback" not in opened.stderr and opened.stderr.count("\n") == 1
    assert "no distribution of it is installed" in opened.stderr and "pip install onnxruntime for the CPU build" in opened.stderr
    lib = subprocess.run([sys.executable, "-S", "-c", "import ortseal; print(ortseal.KeySet.generate());"
                          "ortseal.InferenceSession"], capture_output=True, text=True, env=env, timeout=120)
    assert lib.returncode == 1 and "KeySet(" in lib.stdout and "ImportError: ortseal needs ONNX Runtime" in lib.stderr


@pytest.mark.slow
def test_two_onnxruntime_distributions_break_only_what_needs_one(files, tmp_path):
    fake = tmp_path / "fake"
    info = fake / "onnxruntime_gpu-1.31.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.31.1\n")
    (info / "top_level.txt").write_text("onnxruntime\n")
    env = {k: v for k, v in os.environ.items() if k != "ORTSEAL_SKIP_ORT_CHECK"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(fake)])
    assert cli("--version", env=env).returncode == 0 and cli("--help", env=env).returncode == 0
    assert cli("keygen", "-o", str(tmp_path / "k.json"), env=env).returncode == 0
    assert cli("inspect", str(files / "s.onnx"), env=env).returncode == 0
    r = cli("verify", str(files / "s.onnx"), "--keys", str(files / "keys.json"), "--json", env=env)
    report = json.loads(r.stdout)
    assert r.returncode == 1 and not report["ok"] and "2 ONNX Runtime distributions" in report["message"]
    assert "pip uninstall -y" in report["message"] and "Traceback" not in r.stderr
    assert "2 ONNX Runtime distributions" in one_error_line(cli("demo", env=env))
