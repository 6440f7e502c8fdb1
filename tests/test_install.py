"""What a fresh install meets: which ONNX Runtime is used, TensorRT never silently off, library habits of
the CLI and the logger."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from models import big_embedding, transformer_like

import ortseal
from ortseal import KeySet, ProviderUnavailableError, UnsafeOptionError
from ortseal._runtime import check_ort_distribution, ort_distributions
from ortseal.tensorrt.harness import harness_provider
from ortseal.tensorrt.preflight import load_provider_library

CPU = ["CPUExecutionProvider"]


def fake_distribution(site: Path, name: str, version: str, top_level: str = "onnxruntime") -> None:
    """The metadata pip leaves for an installed distribution (what the check reads)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(top_level + "\n")


def test_exactly_one_onnxruntime_distribution(tmp_path):
    assert len(ort_distributions()) == 1  # this environment: the check passed on import
    with pytest.raises(ImportError, match=r"no distribution of it is installed.*\[cpu\] extra"):
        check_ort_distribution([str(tmp_path)])
    fake_distribution(tmp_path, "onnxruntime", "1.32.0")
    fake_distribution(tmp_path, "onnxruntime-extensions", "0.15.2", "onnxruntime_extensions")  # not an ORT
    check_ort_distribution([str(tmp_path)])
    fake_distribution(tmp_path, "onnxruntime-gpu", "1.31.1")
    with pytest.raises(ImportError, match="2 ONNX Runtime distributions.*onnxruntime 1.32.0, onnxruntime-gpu 1.31.1"
                                          ".*pip uninstall -y onnxruntime onnxruntime-gpu"):
        check_ort_distribution([str(tmp_path)])


@pytest.mark.slow
def test_onnxruntime_import_fails_with_two_distributions_and_says_what_to_run(tmp_path):
    """``import ortseal`` works (keys, blobs, sealing need no ORT); what imports ONNX Runtime checks first."""
    fake_distribution(tmp_path, "onnxruntime-gpu", "1.31.1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), str(tmp_path)])}
    env.pop("ORTSEAL_SKIP_ORT_CHECK", None)
    assert subprocess.run([sys.executable, "-c", "import ortseal; ortseal.KeySet.generate()"], env=env,
                          timeout=120).returncode == 0
    for needs_ort in ("from ortseal import InferenceSession", "import ortseal.model.session",
                      "import ortseal; ortseal.fallback_session_options"):
        r = subprocess.run([sys.executable, "-c", needs_ort], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 1 and "ImportError: 2 ONNX Runtime" in r.stderr and "pip uninstall -y" in r.stderr
    env["ORTSEAL_SKIP_ORT_CHECK"] = "1"
    assert subprocess.run([sys.executable, "-c", "from ortseal import InferenceSession"], env=env,
                          timeout=120).returncode == 0


def test_tensorrt_provider_checks_the_runtime_first(tmp_path, keys):
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ProviderUnavailableError, match="no TensorRT execution provider.*pip install "
                                                           "\"onnxruntime-gpu>=1.31,<1.32\""):
            ortseal.tensorrt_provider(keys, {"trt_engine_cache_path": str(tmp_path / "cache")})
        assert not (tmp_path / "cache").exists()  # refused before anything was set up
    else:  # a GPU build: the EP library loads here, or the error names what is missing
        try:
            ortseal.tensorrt_provider(keys, {"trt_engine_cache_path": str(tmp_path / "cache")})
        except ProviderUnavailableError as exc:
            assert "cannot load" in str(exc)


def test_the_install_advice_names_the_gpu_extras_packages():
    """The advice fits a source checkout too (no "ortseal[gpu]", which needs ortseal on an index): it names
    the very packages pyproject's [gpu] extra holds."""
    import shlex

    from ortseal.tensorrt.preflight import GPU_PACKAGES

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extra = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["gpu"]
    assert shlex.split(GPU_PACKAGES) == extra


def test_a_missing_tensorrt_library_is_named(tmp_path):
    """A real EP-like library linked against libnvinfer.so.10, loaded where that library is absent."""
    (tmp_path / "stub.c").write_text("int nvinfer_stub(void) { return 10; }\n")
    (tmp_path / "ep.c").write_text("int nvinfer_stub(void);\nint ep(void) { return nvinfer_stub(); }\n")
    cc = ["cc", "-shared", "-fPIC"]
    subprocess.run(cc + ["-o", str(tmp_path / "libnvinfer.so.10"), str(tmp_path / "stub.c"),
                         "-Wl,-soname,libnvinfer.so.10"], check=True)
    subprocess.run(cc + ["-o", str(tmp_path / "libfake_ep.so"), str(tmp_path / "ep.c"), "-L", str(tmp_path),
                         "-l:libnvinfer.so.10"], check=True)
    (tmp_path / "libnvinfer.so.10").unlink()
    with pytest.raises(ProviderUnavailableError, match="libnvinfer.so.10 is missing; install TensorRT 10"):
        load_provider_library(tmp_path / "libfake_ep.so")


def test_session_asking_for_sealed_tensorrt_never_falls_back(tmp_path, keys):
    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    provider = harness_provider(keys, {"trt_engine_cache_path": str(tmp_path / "cache")})
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ORT has a TensorRT EP: the no-fallback path is exercised by tools/gpu_smoke.py")
    with pytest.raises(ProviderUnavailableError, match="asked for TensorrtExecutionProvider"):
        ortseal.InferenceSession(str(tmp_path / "m.onnx"), providers=[provider, "CPUExecutionProvider"])
    so = ort.SessionOptions()
    so.add_session_config_entry("ep.context_enable", "1")
    with pytest.raises(UnsafeOptionError, match="ep.context_enable"):
        ortseal.InferenceSession(str(tmp_path / "m.onnx"), so, providers=[provider, "CPUExecutionProvider"])
    ortseal.InferenceSession(str(tmp_path / "m.onnx"), providers=CPU)  # unsealed, no TensorRT: no keys needed


def test_sealed_bytes_use_the_external_initializers_folder_option(tmp_path, keys):
    transformer_like(tmp_path / "m.onnx", d=32, vocab=64)
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "s.onnx", keys, min_bytes=256)
    data = (tmp_path / "s.onnx").read_bytes()
    ids = np.arange(16, dtype=np.int64).reshape(1, 16)
    want = ortseal.InferenceSession(str(tmp_path / "s.onnx"), providers=CPU, keys=keys).run(None, {"ids": ids})
    with pytest.raises(ortseal.FormatError, match="external file"):
        ortseal.InferenceSession(data, providers=CPU, keys=keys)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(tmp_path))
    got = ortseal.InferenceSession(data, so, providers=CPU, keys=keys).run(None, {"ids": ids})
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want))


def test_library_logger_has_a_null_handler():
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("ortseal").handlers)


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ortseal", *args], capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.slow
def test_no_progress_frames_when_redirected_and_quiet_mode(tmp_path):
    big_embedding(tmp_path / "big.onnx", rows=18000)  # 70 MiB: above the progress bar's threshold
    keys = tmp_path / "k.json"
    assert cli("keygen", "-o", str(keys)).returncode == 0
    r = cli("seal", str(tmp_path / "big.onnx"), "-o", str(tmp_path / "s.onnx"), "--keys", str(keys))
    assert r.returncode == 0 and "\r" not in r.stderr and "\r" not in r.stdout
    q = cli("--quiet", "--log-level", "debug", "verify", str(tmp_path / "s.onnx"), "--keys", str(keys))
    assert q.returncode == 0 and q.stderr == ""
    bad = cli("--log-level", "loud", "verify", str(tmp_path / "s.onnx"), "--keys", str(keys))
    assert bad.returncode == 2 and "--log-level" in bad.stderr


@pytest.mark.slow
def test_passphrase_from_file_and_descriptor(tmp_path):
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse battery staple\n")
    keys = tmp_path / "k.json"
    assert cli("keygen", "-o", str(keys), "--passphrase-file", str(secret)).returncode == 0
    assert "wrapped_secrets" in keys.read_text()
    locked = cli("pubkey", str(keys), "-o", str(tmp_path / "p.json"), stdin=subprocess.DEVNULL)
    assert locked.returncode == 1 and "passphrase-protected" in locked.stderr
    read, write = os.pipe()
    os.write(write, b"correct horse battery staple\n")
    os.close(write)
    r = subprocess.run([sys.executable, "-m", "ortseal", "pubkey", str(keys), "-o", str(tmp_path / "p.json"),
                        "--passphrase-fd", str(read)], capture_output=True, text=True, pass_fds=(read,), timeout=120)
    os.close(read)
    assert r.returncode == 0, r.stderr
    assert KeySet.load(tmp_path / "p.json").trusted_key_ids == KeySet.load(keys, "correct horse battery staple").signing_key_ids
    both = cli("pubkey", str(keys), "-o", str(tmp_path / "q.json"), "--passphrase-file", str(secret),
               "--passphrase-env", "HOME")
    assert both.returncode == 1 and "one way" in both.stderr


@pytest.mark.parametrize("module", ["ortseal.cli.model", "ortseal.cli.cache", "ortseal.cli", "ortseal.cli.demo",
                                    "ortseal.cli.demo_model", "ortseal.cli.demo_cache"])
def test_cli_modules_import_on_their_own(module):
    """No import circle: each command module imports first without the others."""
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_protected_keyset_asks_for_its_passphrase_on_a_terminal(tmp_path):
    import pty

    secret = tmp_path / "pass.txt"
    secret.write_text("typed at the prompt\n")
    keys = tmp_path / "k.json"
    assert cli("keygen", "-o", str(keys), "--passphrase-file", str(secret)).returncode == 0
    pid, fd = pty.fork()
    if pid == 0:  # the child: ortseal on a terminal
        os.execv(sys.executable, [sys.executable, "-m", "ortseal", "pubkey", str(keys), "-o", str(tmp_path / "p.json")])
    out, answered = b"", False
    while True:
        try:
            data = os.read(fd, 1024)
        except OSError:  # the terminal closed: the child is done
            break
        if not data:
            break
        out += data
        if b"passphrase for" in out and not answered:
            os.write(fd, b"typed at the prompt\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    assert answered and os.waitstatus_to_exitcode(status) == 0, out
    assert (tmp_path / "p.json").exists() and b"typed at the prompt" not in out  # hidden input
