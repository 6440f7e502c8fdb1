"""Attacks on libortseal's engine vault and session checks (issue 22's C route), carried out: options a C++
host passes that would still make an EP write the opened weights, a second local user planting names in a
shared cache folder, and what a killed C writer leaves behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import ortseal
from ortseal import KeySet
from ortseal._atomic import remove_stale_temps
from ortseal._policy import _names_cache_dir
from ortseal.tensorrt.vault import ENGINE_SUFFIX

from models import matmul
from native_host import Host, build, write_tensors
from test_native_engine import ENGINE, NAME, cache, clean_in_c, load, paused_c_writer, save, temps  # noqa: F401 (cache: a fixture)
from test_native_session import openvino_plugin_library, weights_on_disk

SANITIZED = "SANITIZE=ON" in os.environ.get("ORTSEAL_NATIVE_CMAKE_ARGS", "")


@pytest.fixture(scope="module")
def ort_host() -> Host:
    return Host(build(ort=True), "ortseal_ort_host")


@pytest.fixture(scope="module")
def host() -> Host:
    return Host(build())


# ---- OpenVINO's load_config: CACHE_DIR inside a JSON value, which the option table alone does not see ----------

LOAD_CONFIGS = [
    ({"CPU": {"CACHE_DIR": "/somewhere"}}, True),
    ({"CPU": {"cache_dir": "/somewhere"}}, True),
    ({"CPU": {"Cache_Dir": ""}}, True),
    ({"CPU": {"cache_d\u0131r": "/somewhere"}}, True),  # dotless i: Python's upper() reads it as CACHE_DIR
    ({"AUTO": {"DEVICE_PROPERTIES": [{"CPU": {"CACHE_DIR": "/x"}}]}}, True),
    ("/etc/openvino/load_config.json", True),  # a file path: what it names cannot be checked
    ("[1, 2]", True),
    ("{not json", True),
    ({"CPU": {"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}}, False),
    ({"CPU": {"CACHE_DIRS": "/x", "MY_CACHE_DIR": "/y"}}, False),
    ({}, False),
]


def as_text(config: object) -> str:
    return config if isinstance(config, str) else json.dumps(config)


@pytest.mark.parametrize("config, refused", LOAD_CONFIGS)
@pytest.mark.parametrize("provider", ["OpenVINO", "OpenVINOExecutionProvider"])
def test_a_load_config_naming_cache_dir_is_refused_before_a_typed_append(ort_host, provider, config, refused):
    """The break: ortseal_check_provider_options passed load_config={"CPU": {"CACHE_DIR": ...}}, which makes
    OpenVINO write the compiled blob, weights included, to that folder. Now refused exactly where
    ortseal/_policy.py refuses it."""
    text = as_text(config)
    assert _names_cache_dir(text) is refused  # the Python rule, which the C one mirrors
    result = ort_host("provider-options", provider, "-", "device_type", "CPU", "load_config", text)
    assert result.name == ("unsafe_option" if refused else "ok"), result.message
    if refused:
        assert "load_config" in result.message


def test_a_load_config_nested_too_deep_to_read_is_refused(ort_host):
    deep = '{"a":' * 40 + '{"CACHE_DIR": "/x"}' + "}" * 40
    assert ort_host("provider-options", "OpenVINO", "-", "load_config", deep).name == "unsafe_option"


@pytest.mark.parametrize("key", ["ep.openvino.load_config", "ep.openvinoexecutionprovider.load_config"])
def test_a_load_config_config_entry_is_refused_for_a_sealed_model(ort_host, tmp_path, key):
    """The config-entry form ORT stores EP options in (SessionOptionsAppendExecutionProvider by name, plugin EPs)."""
    w, x = matmul(tmp_path / "m.onnx", n=16)
    keys = KeySet.generate()
    (tmp_path / "keys.json").write_text(keys.to_json())
    ortseal.seal_model(tmp_path / "m.onnx", tmp_path / "m.sealed.onnx", keys)
    write_tensors(tmp_path / "in.bin", {"x": x})
    config = json.dumps({"CPU": {"CACHE_DIR": str(tmp_path / "ov-cache")}})
    result = ort_host("sealed", tmp_path / "keys.json", "-", 0, tmp_path / "m.sealed.onnx", tmp_path / "in.bin",
                      tmp_path / "out.bin", key, config)
    assert result.name == "unsafe_option" and key in result.message, result.message
    assert not (tmp_path / "out.bin").exists()
    harmless = json.dumps({"CPU": {"NUM_STREAMS": "1"}})
    assert ort_host("sealed", tmp_path / "keys.json", "-", 0, tmp_path / "m.sealed.onnx", tmp_path / "in.bin",
                    tmp_path / "out.bin", key, harmless).name == "ok"


@pytest.mark.skipif(openvino_plugin_library() is None, reason="onnxruntime-ep-openvino is not installed")
@pytest.mark.skipif(SANITIZED, reason="OpenVINO's TBB dlopens a library with RTLD_DEEPBIND, which the sanitizer "
                    "runtime refuses")
def test_the_openvino_plugin_ep_given_a_cache_dir_in_load_config_writes_nothing_for_a_sealed_model(ort_host, tmp_path):
    """The attack end to end: the plugin EP appended by device with load_config naming CACHE_DIR. On the plain
    model it writes a blob holding the weights (the attack is real); on the sealed model libortseal refuses the
    options and nothing is written."""
    import onnxruntime as ort

    w, x = matmul(tmp_path / "m.onnx", n=64)
    needle = w.tobytes()[:256]
    ort.register_execution_provider_library("ortseal-attack-ov", str(openvino_plugin_library()))
    try:
        devices = [d for d in ort.get_ep_devices() if d.ep_name == "OpenVINOExecutionProvider"
                   and d.device.type == ort.OrtHardwareDeviceType.CPU]
        if not devices:
            pytest.skip("the OpenVINO plugin EP offers no CPU device on this machine (Intel only)")
        so = ort.SessionOptions()
        # one device: where another test registered the library too, each registration lists the CPU again
        so.add_provider_for_devices(devices[:1], {"load_config": json.dumps({"CPU": {"CACHE_DIR": str(tmp_path / "plain")}})})
        ort.InferenceSession(str(tmp_path / "m.onnx"), so)
    finally:
        ort.unregister_execution_provider_library("ortseal-attack-ov")
    assert weights_on_disk(tmp_path / "plain", needle)  # what load_config's CACHE_DIR does to a plain model
    run = tmp_path / "run"
    run.mkdir()
    keys = KeySet.generate()
    (run / "keys.json").write_text(keys.to_json())
    ortseal.seal_model(tmp_path / "m.onnx", run / "m.sealed.onnx", keys)
    write_tensors(run / "in.bin", {"x": x})
    result = ort_host("plugin-ep", run / "keys.json", run / "m.sealed.onnx", run / "in.bin", run / "out.bin",
                      openvino_plugin_library(), "OpenVINOExecutionProvider", "load_config",
                      json.dumps({"CPU": {"CACHE_DIR": str(run / "ov-cache")}}))
    assert result.name == "unsafe_option" and "load_config" in result.message, result.message
    assert not (run / "ov-cache").exists() and weights_on_disk(run, needle) == []


# ---- the engine cache: what a killed writer leaves, and a second local user in a shared cache folder -------------

def test_a_sigkilled_c_writer_leaves_no_plaintext(host, cache, tmp_path):
    """Killed after writing its temp file whole: what it leaves is the sealed engine, never ORT's bytes."""
    folder, _, keyfile = cache
    writer = paused_c_writer(host, keyfile, folder, tmp_path / "paused")
    writer.kill()
    writer.wait()
    (left,) = temps(folder)
    data = left.read_bytes()
    assert len(data) > len(ENGINE) and not any(ENGINE[i:i + 64] in data for i in range(0, len(ENGINE), 4096))
    assert oct(left.stat().st_mode & 0o777) == "0o600"


def _nobody() -> list[str] | None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable]
    probe = subprocess.run([*cmd, "-c", "import os; print(os.getuid())"], capture_output=True, text=True, cwd="/")
    return cmd if probe.returncode == 0 and probe.stdout.strip() != "0" else None


NOBODY = _nobody()


def as_nobody(script: str, *args: str) -> None:
    done = subprocess.run([*NOBODY, "-c", script, *args], capture_output=True, text=True, cwd="/", timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture()
def shared_cache(cache, tmp_path):
    """cache's folder moved where a second user can reach it (pytest's tmp_path is this user's only): a folder of
    /tmp, mode 0755, holding the cache folder (mode 1777) and this user's victim file."""
    folder, keys, keyfile = cache
    base = Path(tempfile.mkdtemp(prefix="ortseal-attack-cvault-", dir="/tmp"))
    base.chmod(0o755)
    shutil.move(str(folder.parent / "engine.bin"), base / "engine.bin")
    shared = base / "trt_cache"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    victim = base / "victim.txt"
    victim.write_bytes(b"this user's own file")
    yield shared, keys, keyfile, victim
    shutil.rmtree(base)


PLANT = """
import os, sys
folder, name, victim = sys.argv[1:4]
t = lambda tag, suffix: os.path.join(folder, f".{name}.{tag}{suffix}")
os.symlink(victim, t("link", ".tmp"))
os.symlink(victim, t("oldlink", ".new"))
os.mkfifo(t("fifo", ".tmp"))
with open(t("file", ".tmp"), "wb") as f:
    f.write(b"nobody's")
os.mkdir(t("dir", ".tmp"))
os.utime(t("file", ".tmp"), (0, 0))
os.symlink(victim, os.path.join(folder, name))  # the engine's own name, pointing at the victim's file
"""


@pytest.mark.skipif(NOBODY is None, reason="needs root with setpriv, to plant as a second uid (nobody)")
@pytest.mark.parametrize("cleaner", ["c", "python"])
def test_a_second_user_planting_in_a_shared_cache_folder_gets_nothing_removed_followed_or_written(
        host, shared_cache, cleaner):
    """A cache folder others may write in (mode 1777): nobody plants links to this user's file, a FIFO, a file and
    a folder under engine temp names, and a link under the engine's own name. Neither cleaner removes or follows
    any of them (not this user's); the C writer replaces the link at the engine's name rather than writing
    through it; the victim's file is untouched and the engine opens."""
    folder, _, keyfile, victim = shared_cache
    as_nobody(PLANT, str(folder), NAME, str(victim))
    planted = sorted(p.name for p in folder.iterdir())
    if cleaner == "c":
        assert "removed" not in clean_in_c(host, keyfile, folder)
    else:
        assert remove_stale_temps(folder, f"*{ENGINE_SUFFIX}") == []
    assert sorted(p.name for p in folder.iterdir()) == planted
    assert save(host, keyfile, folder).name == "ok"
    assert not (folder / NAME).is_symlink() and (folder / NAME).stat().st_uid == os.geteuid()
    assert victim.read_bytes() == b"this user's own file"
    assert load(host, keyfile, folder).name == "ok" and (folder.parent / "out.bin").read_bytes() == ENGINE
    left = sorted(p.name for p in folder.iterdir())
    assert left == planted  # the writer left no temp file of its own, and removed nothing of nobody's


@pytest.mark.skipif(NOBODY is None, reason="needs root with setpriv, to race as a second uid (nobody)")
def test_a_second_user_racing_the_c_writer_never_gets_a_write_through_a_planted_name(host, shared_cache):
    """nobody watches a world-writable cache folder and, for every temp name a writer makes, at once plants a
    symlink to this user's file under the matching .tmp and .new names. The writer's file is never
    opened by name again, so the victim's file is never written, and no engine is made from nobody's bytes."""
    folder, _, keyfile, victim = shared_cache
    racer = subprocess.Popen([*NOBODY, "-c", """
import os, sys, time
folder, victim = sys.argv[1:3]
end = time.monotonic() + 20
while time.monotonic() < end:
    for n in os.listdir(folder):
        if n.endswith((".new", ".tmp")):
            stem = n[:-4]
            for s in (".tmp", ".new"):
                try:
                    os.symlink(victim, os.path.join(folder, stem + s))
                except OSError:
                    pass
""", str(folder), str(victim)], cwd="/")
    try:
        for _ in range(10):
            save(host, keyfile, folder)  # a lost race may fail the write (a folder it cannot use): never a leak
            assert victim.read_bytes() == b"this user's own file"
            if (folder / NAME).exists():
                assert not (folder / NAME).is_symlink()
        time.sleep(0.2)
    finally:
        racer.kill()
        racer.wait()
    assert victim.read_bytes() == b"this user's own file"


# ---- the provider name a host gives ortseal_check_provider_options (the typed append itself takes none) ----------

@pytest.mark.parametrize("provider", [" TensorRT", "TensorRT ", "Tensor_RT", "TRT", "TensorRT_V2", "", "tensorrt\t",
                                      "OpenVINO_V2", "x" * 300])
def test_a_misspelt_provider_name_is_refused_not_waved_through(ort_host, provider):
    """The break: a name the table did not match checked nothing and returned OK, so a host that wrote
    " TensorRT" or "TensorRT_V2" had trt_dump_subgraphs=1 pass before appending TensorRT with a typed call."""
    result = ort_host("provider-options", provider, "-", "trt_dump_subgraphs", "1")
    assert result.name == "misuse" and "does not know the execution provider" in result.message, result.message


@pytest.mark.parametrize("provider", ["CUDA", "cuda", "CUDAExecutionProvider", "CPU", "DML", "XNNPACK", "WebGPU",
                                      "Dnnl", "ROCM", "NvTensorRtRtx", "MIGraphX", "QNN", "CoreML", "VitisAI"])
def test_the_names_onnx_runtime_ships_are_known(ort_host, provider):
    assert ort_host("provider-options", provider, "-", "device_id", "0").name == "ok"


def test_cann_dumps_its_offline_model_unless_told_not_to(ort_host):
    """CANN's dump_om_model is on by default (the offline model, weights included, written unencrypted) and its
    dump_graphs writes subgraphs: CANN without dump_om_model=0, or with either on, is refused; given off, it passes."""
    result = ort_host("provider-options", "CANN", "-", "device_id", "0")
    assert result.name == "unsafe_option" and "without dump_om_model (on by default)" in result.message, result.message
    assert ort_host("provider-options", "CANN", "-", "dump_om_model", "1").name == "unsafe_option"
    assert ort_host("provider-options", "CANN", "-", "dump_om_model", "0", "dump_graphs", "1").name == "unsafe_option"
    assert ort_host("provider-options", "CANN", "-", "dump_om_model", "0").name == "ok"


MISUSE_EXPECTED = {
    "provider-null": "misuse", "keys-null-n5": "misuse", "null-key": "misuse",
    "null-value": "misuse",  # was ok: a NULL value skipped the check of its key
    "err-null": "unsafe_option", "session-null": "misuse", "create-null": "misuse", "register-null": "misuse",
    "register-empty-folder": "io", "register-huge-folder": "io",
    "register-file-as-folder": "io",  # was ok: a regular file registered as a cache folder (os_win.c refused it)
    "register-missing-shim": "io", "register-libc-as-shim": "io", "verify-null": "misuse", "verify-folder": "tampered",
    "verify-huge": "io", "register": "ok",
    "decrypt-null": "0", "decrypt-null-size": "0", "decrypt-empty": "0", "decrypt-huge": "0",
    "encrypt-folder-path": "0", "encrypt-empty": "0", "encrypt-long-name": "0", "encrypt-null-data": "0",
    "encrypt-zero": "1", "decrypt-zero-size": "1", "decrypt-wrong-size": "0",
}


def test_malformed_calls_into_the_engine_and_option_api_return_a_status(tmp_path):
    """native/tests/misuse.c: NULLs, empty and 70,000-character strings, a file as the cache folder, libc as the
    shim, odd paths into the shim's callbacks: each a status (or the callback's 0), never a crash (and, in the
    sanitized run, no ASan or UBSan report)."""
    exe = build(ort=True) / "ortseal_misuse_host"
    (tmp_path / "keys.json").write_text(KeySet.generate().to_json())
    (tmp_path / "cache").mkdir()
    done = subprocess.run([str(exe), str(tmp_path / "keys.json"), str(exe.parent / "libortseal_shim.so"),
                           str(tmp_path / "cache")], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    got = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert got == MISUSE_EXPECTED
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["x.engine"]  # the one engine sealed, no temp
    assert b"abc" not in (tmp_path / "cache" / "x.engine").read_bytes()


def test_the_optimized_model_path_as_a_config_entry_writes_nothing_for_a_sealed_model(ort_host, tmp_path):
    """ORT 1.32's C API takes "session.optimized_model_filepath" through AddSessionConfigEntry as it takes
    SetOptimizedModelFilePath (onnxruntime_session_options_config_keys.h: "Equivalent to"), a route the option
    table does not list. On the plain model it writes the weights; on the sealed one the forced-off path in
    ortseal's copy of the options holds: nothing is written."""
    source, run = tmp_path / "source", tmp_path / "run"
    source.mkdir(), run.mkdir()
    w, x = matmul(source / "m.onnx", n=64)
    needle = w.tobytes()[:256]
    keys = KeySet.generate()
    (run / "keys.json").write_text(keys.to_json())
    ortseal.seal_model(source / "m.onnx", run / "m.sealed.onnx", keys)
    write_tensors(run / "in.bin", {"x": x})
    key = "session.optimized_model_filepath"
    assert ort_host("plain", source / "m.onnx", run / "in.bin", source / "out.bin", key, source / "opt.onnx").name == "ok"
    assert needle in (source / "opt.onnx").read_bytes()  # the attack is real on this ORT
    result = ort_host("sealed", run / "keys.json", "-", 0, run / "m.sealed.onnx", run / "in.bin", run / "out.bin",
                      key, run / "opt.onnx")
    assert result.name == "ok", result.message
    assert not (run / "opt.onnx").exists() and weights_on_disk(run, needle) == []


@pytest.mark.parametrize("command, suffix", [("compiled", ".epctx.sealed"), ("cache", ENGINE_SUFFIX)])
def test_listing_a_cache_never_opens_what_a_planted_link_points_to(tmp_path, command, suffix):
    """The break: `ortseal compiled list` (and `ortseal cache list`, between its lstat and the open) asked
    _atomic.lock_held about each temp name, which opened it following links: anyone who can write the folder
    made the listing's user open a path of their choosing (a FIFO whose blocked writer it released, shown with
    a second uid; a device). Here the link points at a file this test holds locked: followed, it read as a
    write in progress."""
    import fcntl

    from ortseal._atomic import lock_held

    folder = tmp_path / "cache"
    folder.mkdir()
    target = tmp_path / "held"
    target.write_bytes(b"not the cache's")
    link = folder / f".m{suffix}.abc.tmp"
    link.symlink_to(target)
    fd = os.open(target, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert lock_held(link) is False
        done = subprocess.run([sys.executable, "-m", "ortseal", command, "list", str(folder), "--json"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert link.name in done.stdout and "being written" not in done.stdout
    finally:
        os.close(fd)


@pytest.mark.parametrize("planted", ["link", "their folder"])
def test_quarantine_of_a_bad_engine_never_moves_it_where_a_second_user_chose(tmp_path, planted):
    """The break: tensorrt_provider(on_tamper="rebuild") made cache/quarantine with mkdir(exist_ok=True) and
    shutil.move'd each refused engine into it, so a "quarantine" link planted in a shared cache folder (shown
    with a second uid) or a folder of someone else's received this user's engines. Now refused as the compiled
    cache refuses it (the same code): the engine stays, nothing lands at the link's target."""
    from ortseal.tensorrt.provider import tensorrt_provider
    from ortseal.tensorrt.vault import Vault, write_engine

    keys = KeySet.generate()
    cache = tmp_path / "cache"
    cache.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    engine = cache / NAME
    write_engine(engine, memoryview(ENGINE), Vault(keys, release=1))  # older than min_release below: refused
    if planted == "link":
        (cache / "quarantine").symlink_to(elsewhere)
    else:
        (cache / "quarantine").mkdir()
        (cache / "quarantine").chmod(0o777)  # or another user's: a folder someone else can take from
    with pytest.raises(ortseal.UnsafeOptionError, match="quarantine"):
        tensorrt_provider(keys, {"trt_engine_cache_path": str(cache)}, on_tamper="rebuild", release=2,
                          check_runtime=False)
    assert engine.exists() and list(elsewhere.iterdir()) == []
    assert not (cache / "quarantine" / NAME).exists()
