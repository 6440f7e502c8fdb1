"""libortseal's engine-cache vault: native callbacks behind the keyless shim, called by name as ORT's
TensorRT EP calls them. Engines sealed in C pass `ortseal cache verify`; engines sealed by Python open
through the C vault; the refusals of ortseal/tensorrt/vault.py hold, logged, never crashing; C and Python
writers and cleaners share one cache folder without removing each other's writes in flight."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ortseal import KeySet
from ortseal._atomic import NEW_STALE_SECONDS, NEW_SUFFIX, TEMP_SUFFIX, atomic_writer, lock_held, remove_stale_temps
from ortseal.tensorrt.vault import ENGINE_SUFFIX, Vault, registry, write_engine

from native_host import Host, build

NAME = "TensorrtExecutionProvider_TRTKernel_graph_main_1234_0_0_sm86" + ENGINE_SUFFIX
ENGINE = bytes(range(256)) * 5000 + b"engine tail"


@pytest.fixture(scope="module")
def host() -> Host:
    return Host(build())


@pytest.fixture()
def cache(tmp_path) -> tuple[Path, KeySet, Path]:
    keys = KeySet.generate()
    (tmp_path / "keys.json").write_text(keys.to_json())
    folder = tmp_path / "trt_cache"
    folder.mkdir()
    (tmp_path / "engine.bin").write_bytes(ENGINE)
    return folder, keys, tmp_path / "keys.json"


def shim(host: Host) -> Path:
    return host.exe.parent / "libortseal_shim.so"


def save(host, keyfile, folder, name=NAME, release=0):
    return host("engine-save", keyfile, shim(host), folder, name, folder.parent / "engine.bin", release)


def load(host, keyfile, folder, name=NAME, min_release=0):
    return host("engine-load", keyfile, shim(host), folder, name, folder.parent / "out.bin", min_release)


def test_c_sealed_engine_passes_ortseal_cache_verify_and_reopens(host, cache):
    folder, keys, keyfile = cache
    assert save(host, keyfile, folder, release=5).name == "ok"
    assert ENGINE not in (folder / NAME).read_bytes()
    assert oct((folder / NAME).stat().st_mode & 0o777) == "0o600"
    assert not list(folder.glob(".*.tmp"))  # written atomically: no temp file left
    done = subprocess.run([sys.executable, "-m", "ortseal", "cache", "verify", str(folder), "--keys", str(keyfile)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load(host, keyfile, folder, min_release=5).name == "ok"
    assert (folder.parent / "out.bin").read_bytes() == ENGINE
    assert load(host, keyfile, folder, min_release=6).name == "tampered"  # rollback: the shim returns 0


def test_python_sealed_engine_opens_through_the_c_vault(host, cache):
    folder, keys, keyfile = cache
    write_engine(folder / NAME, memoryview(ENGINE), Vault(keys, release=2))
    assert load(host, keyfile, folder, min_release=2).name == "ok"
    assert (folder.parent / "out.bin").read_bytes() == ENGINE


def python_vault_refusal(path: Path, keys: KeySet, caplog) -> str:
    """What the Python vault logs refusing path (ORT's two calls, as the shim makes them)."""
    registry.add(str(path.parent.resolve()), Vault(keys))
    size = (ctypes.c_size_t * 1)(0)
    caplog.clear()
    with caplog.at_level(logging.ERROR, "ortseal.tensorrt"):
        if registry._decrypt(0, os.fsencode(path), None, size):
            buf = ctypes.create_string_buffer(size[0])
            assert not registry._decrypt(0, os.fsencode(path), ctypes.addressof(buf), size)
    (message,) = [r.getMessage() for r in caplog.records]
    return message


@pytest.mark.parametrize("attack", ["renamed", "flipped", "truncated", "symlink", "fifo", "other keys"])
def test_engine_attacks_are_refused_and_logged(host, cache, tmp_path, attack, caplog):
    folder, keys, keyfile = cache
    assert save(host, keyfile, folder).name == "ok"
    path, name = folder / NAME, NAME
    if attack == "renamed":  # the name is the context: an engine copied onto another name fails
        name = NAME.replace("1234", "9999")
        path.rename(folder / name)
    elif attack == "flipped":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 1
        path.write_bytes(bytes(raw))
    elif attack == "truncated":
        path.write_bytes(path.read_bytes()[:-10])
    elif attack == "symlink":
        path.rename(tmp_path / "elsewhere")
        path.symlink_to(tmp_path / "elsewhere")
    elif attack == "fifo":
        path.unlink()
        os.mkfifo(path)
    else:
        (tmp_path / "other.json").write_text(KeySet.generate().to_json())
        keyfile = tmp_path / "other.json"
    done = subprocess.run([str(host.exe), "engine-load", str(keyfile), str(shim(host)), str(folder), name,
                           str(tmp_path / "out.bin"), "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "refusing to open TensorRT engine" in done.stderr
    # worded as ortseal/tensorrt/vault.py logs it: the path, the Python error class, the message
    # worded as ortseal/tensorrt/vault.py logs the same refusal: the path, the Python error class, a message
    python_says = python_vault_refusal(folder / name, KeySet.from_json(keyfile.read_text()), caplog)
    head = f"ortseal: refusing to open TensorRT engine {folder / name}: "
    assert python_says.startswith(head)
    python_class = python_says[len(head):].split(":")[0]
    assert f"ERROR {head}{python_class}: " in done.stderr, (python_says, done.stderr)
    assert not (tmp_path / "out.bin").exists()


def test_a_keyset_that_cannot_sign_is_refused_for_the_cache(host, cache, tmp_path):
    folder, keys, _ = cache
    public = KeySet.merge(KeySet(content_keys={keys.content_key_ids[0]: keys.content_key(keys.content_key_ids[0])}),
                          keys.public())
    (tmp_path / "device.json").write_text(public.to_json())
    result = save(host, tmp_path / "device.json", folder)
    assert result.name == "misuse" and "cannot sign" in result.message


# ---- one cache folder, C and Python writers and cleaners (ortseal/_atomic.py's temp-file scheme) ----------

def pause_env(host: Host, marker: Path) -> dict[str, str]:
    """The environment that stops a C writer inside its write (native/tests/pause_fsync.c): temp file written
    and locked, not yet renamed over the engine."""
    lib = host.exe.parent / "libortseal_test_pause.so"
    if not lib.exists():
        pytest.skip("the pause library is built on Linux only")
    env = dict(os.environ, LD_PRELOAD=str(lib), ORTSEAL_TEST_PAUSED=str(marker))
    if "ASAN_OPTIONS" in env:  # the sanitized run: the preloaded library comes before ASan's runtime
        env["ASAN_OPTIONS"] += ":verify_asan_link_order=0"
    return env


def paused_c_writer(host: Host, keyfile: Path, folder: Path, marker: Path) -> subprocess.Popen:
    writer = subprocess.Popen([str(host.exe), "engine-save", str(keyfile), str(shim(host)), str(folder), NAME,
                               str(folder.parent / "engine.bin"), "0"], env=pause_env(host, marker),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert writer.poll() is None, writer.communicate()
        assert time.monotonic() < deadline, "the C writer never reached its fsync"
        time.sleep(0.01)
    return writer


def temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.engine.encrypted.*"))


def clean_in_c(host: Host, keyfile: Path, folder: Path) -> str:
    done = subprocess.run([str(host.exe), "engine-clean", str(keyfile), str(shim(host)), str(folder)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stderr


def test_a_live_c_writers_temp_file_is_locked_and_python_cleanup_leaves_it(host, cache, tmp_path):
    folder, _, keyfile = cache
    writer = paused_c_writer(host, keyfile, folder, tmp_path / "paused")
    try:
        (temp,) = temps(folder)
        assert temp.name.startswith(f".{NAME}.") and temp.suffix == TEMP_SUFFIX  # renamed from .new once locked
        assert lock_held(temp) and oct(temp.stat().st_mode & 0o777) == "0o600"
        assert remove_stale_temps(folder, f"*{ENGINE_SUFFIX}") == [] and temp.exists()
        assert "removed" not in clean_in_c(host, keyfile, folder) and temp.exists()  # nor another C process
    finally:
        writer.kill()
        writer.wait()
    # SIGKILLed mid-write: its temp file is left, unlocked, and nothing under the engine's name
    assert temps(folder) == [temp] and not lock_held(temp) and not (folder / NAME).exists()
    log = clean_in_c(host, keyfile, folder)
    assert f"WARNING ortseal: removed {folder.resolve() / temp.name}, left by an engine writer that was killed" in log
    assert temps(folder) == []
    # the same leftover, cleaned by Python this time
    writer = paused_c_writer(host, keyfile, folder, tmp_path / "paused-again")
    writer.kill()
    writer.wait()
    (left,) = temps(folder)
    assert remove_stale_temps(folder, f"*{ENGINE_SUFFIX}") == [left] and temps(folder) == []


def test_a_live_python_writers_temp_file_survives_the_c_cleanup(host, cache, tmp_path):
    folder, keys, keyfile = cache
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_engine(elsewhere / NAME, memoryview(ENGINE), Vault(keys))  # the sealed bytes, bound to NAME
    with atomic_writer(folder / NAME, mode=0o600) as fh:
        fh.write((elsewhere / NAME).read_bytes())
        fh.flush()
        (temp,) = temps(folder)
        assert "removed" not in clean_in_c(host, keyfile, folder) and temp.exists()
        assert save(host, keyfile, folder, name=NAME.replace("1234", "5678")).name == "ok"  # a C writer beside it
    assert temps(folder) == []
    assert load(host, keyfile, folder).name == "ok" and (folder.parent / "out.bin").read_bytes() == ENGINE
    assert load(host, keyfile, folder, name=NAME.replace("1234", "5678")).name == "ok"


@pytest.mark.parametrize("cleaner", ["c", "python"])
def test_both_cleaners_follow_the_same_rules(host, cache, tmp_path, cleaner):
    """.new files only once old (a writer may be between creating and locking one), only this user's,
    links and FIFOs removed as themselves (never followed), folders and other names left."""
    folder, _, keyfile = cache
    young, old = folder / f".{NAME}.young{NEW_SUFFIX}", folder / f".{NAME}.old{NEW_SUFFIX}"
    for path in (young, old):
        path.write_bytes(b"partial")
    os.utime(old, (0, time.time() - NEW_STALE_SECONDS - 5))
    dead = folder / f".{NAME}.dead{TEMP_SUFFIX}"
    dead.write_bytes(b"partial")
    target = tmp_path / "precious"
    target.write_bytes(b"not the cache's")
    link, fifo = folder / f".{NAME}.link{TEMP_SUFFIX}", folder / f".{NAME}.fifo{TEMP_SUFFIX}"
    link.symlink_to(target)
    os.mkfifo(fifo)
    (folder / f".{NAME}.dir{TEMP_SUFFIX}").mkdir()
    kept = [young, folder / f".{NAME}.dir{TEMP_SUFFIX}", folder / f".other.bin.x{TEMP_SUFFIX}"]
    kept[2].write_bytes(b"not an engine's")
    if os.geteuid() == 0:  # another user's file under a temp name: not ours to remove
        theirs = folder / f".{NAME}.theirs{TEMP_SUFFIX}"
        theirs.write_bytes(b"")
        os.chown(theirs, 12345, 12345)
        kept.append(theirs)
    if cleaner == "c":
        log = clean_in_c(host, keyfile, folder)
        assert log.count("left by an engine writer that was killed") == 4, log
    else:
        assert sorted(remove_stale_temps(folder, f"*{ENGINE_SUFFIX}")) == sorted([old, dead, link, fifo])
    assert all(p.exists() or p.is_symlink() for p in kept)
    assert not any(p.exists() or p.is_symlink() for p in (old, dead, link, fifo))
    assert target.read_bytes() == b"not the cache's"


def test_c_and_python_writers_and_cleaners_racing_on_one_folder_lose_no_write(host, cache):
    """Both languages write the same engine and clean the folder at once, over and over: a cleaner that removed
    a live writer's temp file would make that writer's rename fail, so every write must succeed, and what is
    left is one engine that opens, and no temp file."""
    folder, keys, keyfile = cache
    vault, stop, failures = Vault(keys), threading.Event(), []

    def python_side() -> None:
        while not stop.is_set():
            try:
                write_engine(folder / NAME, memoryview(ENGINE), vault)
                remove_stale_temps(folder, f"*{ENGINE_SUFFIX}")
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(repr(exc))

    threads = [threading.Thread(target=python_side) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(15):  # each run registers (its stale cleanup) and writes
            result = save(host, keyfile, folder)
            assert result.name == "ok", result.message
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert temps(folder) == []
    assert load(host, keyfile, folder).name == "ok" and (folder.parent / "out.bin").read_bytes() == ENGINE
