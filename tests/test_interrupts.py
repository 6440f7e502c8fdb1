"""A seal stopped half-way (SIGTERM, Ctrl-C, SIGKILL) leaves nothing behind, and two seals to one output
never pair one's model with the other's data: real signals sent to real ``ortseal seal`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from models import big_embedding, transformer_like

import ortseal
from ortseal import KeySet

ROWS = 65536  # a 256 MiB table: the seal runs long enough to be stopped while it writes


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    big_embedding(d / "big.onnx", ROWS)
    keys = KeySet.generate()
    keys.save(d / "keys.json")
    return d, keys


def _seal(src: Path, out: Path, keys: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ortseal", "seal", str(src), "-o", str(out), "--keys", str(keys),
                             "--overwrite", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _hidden(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}"))


def _wait_for_temp(proc: subprocess.Popen, folder: Path, name: str, timeout: float = 120) -> None:
    """Until ``proc`` is writing its temp file (the data file's, which comes first)."""
    end = time.monotonic() + timeout
    while not any(n.endswith(".tmp") for n in _hidden(folder, name)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the seal never started writing"
        time.sleep(0.005)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 128 + signal.SIGINT)])
def test_a_stopped_seal_removes_what_it_was_writing(big, tmp_path, sig, code):
    d, _ = big
    proc = _seal(d / "big.onnx", tmp_path / "s.onnx", d / "keys.json")
    _wait_for_temp(proc, tmp_path, "s.onnx")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert sorted(os.listdir(tmp_path)) == [], "a temp file, a lock or a half output is left"
    assert "Traceback" not in err and (sig != signal.SIGINT or err.strip() == "error: interrupted")


def test_the_next_seal_removes_a_killed_writers_temp_file(big, tmp_path):
    d, keys = big
    proc = _seal(d / "big.onnx", tmp_path / "s.onnx", d / "keys.json")
    _wait_for_temp(proc, tmp_path, "s.onnx")
    proc.kill()  # SIGKILL: nothing runs in the killed process
    proc.wait()
    left = _hidden(tmp_path, "s.onnx")
    assert any(n.endswith(".tmp") for n in left), left  # a model-sized temp file (and the lock file) left
    # another output in the same folder leaves it alone; the next seal to this output removes it
    transformer_like(tmp_path / "small.onnx", d=16, vocab=32, seq=4)
    ortseal.seal_model(tmp_path / "small.onnx", tmp_path / "other.onnx", keys, min_bytes=64, progress=False)
    assert _hidden(tmp_path, "s.onnx") == left
    ortseal.seal_model(tmp_path / "small.onnx", tmp_path / "s.onnx", keys, min_bytes=64, progress=False)
    assert _hidden(tmp_path, "s.onnx") == []
    assert ortseal.verify_model(tmp_path / "s.onnx", keys).sealed_tensors > 0


def test_two_seals_to_one_output_take_turns(big, tmp_path):
    """A long seal holds the output pair; a short one to the same output waits for it and then replaces both
    files, so the result is one seal's model with that seal's data (it verifies), never a mix."""
    d, keys = big
    other = KeySet.generate()
    other.save(tmp_path / "other.json")
    transformer_like(tmp_path / "small.onnx", d=16, vocab=32, seq=4)
    out = tmp_path / "out" / "s.onnx"
    out.parent.mkdir()
    first = _seal(d / "big.onnx", out, d / "keys.json")
    _wait_for_temp(first, out.parent, "s.onnx")
    second = _seal(tmp_path / "small.onnx", out, tmp_path / "other.json", "--min-bytes", "64")
    assert first.wait(timeout=300) == 0, first.communicate()
    assert second.wait(timeout=300) == 0, second.communicate()
    # the short seal finished last: it waited for the long one instead of writing beside it
    assert ortseal.verify_model(out, other).sealed_tensors > 0
    with pytest.raises(ortseal.TamperedError):
        ortseal.verify_model(out, keys)
    assert sorted(os.listdir(out.parent)) == ["s.onnx", "s.onnx.data"]
