"""Engine cache files that are not regular files (FIFO, socket, directory, links), and files swapped
between ORT's two decrypt calls: refused quickly or opened whole and verified, never half, never a hang.

Every operation that could block runs in a daemon thread (or a subprocess) with a timeout, so a hang
fails the test instead of hanging the run."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli import ortseal_cli

from ortseal import TamperedError
from ortseal.tensorrt import verify_engine_file
from ortseal.tensorrt.harness import EngineLoadError, TensorrtEpHarness, harness_provider

LIMIT_S = 60  # generous for a slow machine: a refusal takes milliseconds, a hang forever
SPECIAL_KINDS = ["fifo", "socket", "directory", "link_to_dev_zero", "link_to_directory", "link_to_good_engine"]


def within_limit(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a daemon thread; its result or exception, or a test failure if it does not return."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(LIMIT_S)
    if thread.is_alive():
        pytest.fail(f"{fn} did not return within {LIMIT_S} s: it hangs")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


@pytest.fixture
def planted(tmp_path, keys, request):
    """A cache with one good engine and, under an engine's name, the special file ``request.param``."""
    cache = tmp_path / "cache"
    trt = TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(cache)}))
    good = trt.engine_path("good")
    trt.save_engine(good, os.urandom(100_000))
    path = trt.engine_path("planted")
    kind = request.param
    held = []
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        held.append(sock)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "link_to_dev_zero":
        os.symlink("/dev/zero", path)
    elif kind == "link_to_directory":
        os.symlink(str(tmp_path), path)
    else:  # a link to a good engine of another name: the name is ours, so a link is refused, not followed
        os.symlink(good, path)
    yield trt, keys, path, kind
    for sock in held:
        sock.close()


@pytest.mark.parametrize("planted", SPECIAL_KINDS, indirect=True)
def test_engine_load_refuses_special_file_quickly(planted, caplog):
    trt, _, path, kind = planted
    with caplog.at_level("ERROR", logger="ortseal.tensorrt"), pytest.raises(EngineLoadError):
        within_limit(lambda: trt.load_engine(path))
    assert "not a regular file" in caplog.text and path in caplog.text, caplog.text


@pytest.mark.parametrize("planted", SPECIAL_KINDS, indirect=True)
def test_verify_engine_file_refuses_special_file_quickly(planted):
    _, keys, path, _ = planted
    with pytest.raises(TamperedError, match="not a regular file"):
        within_limit(lambda: verify_engine_file(path, keys))


@pytest.mark.parametrize("on_tamper", ["raise", "rebuild"])
@pytest.mark.parametrize("planted", ["fifo", "socket", "link_to_dev_zero"], indirect=True)
def test_provider_on_a_cache_with_a_special_file_does_not_hang(planted, on_tamper, tmp_path):
    trt, keys, path, _ = planted
    cache = os.path.dirname(path)
    # a FIFO also planted as a killed writer's temp file, which tensorrt_provider cleans up
    os.mkfifo(os.path.join(cache, f".{os.path.basename(path)}.x1y2.tmp"))
    provider = within_limit(lambda: harness_provider(keys, {"trt_engine_cache_path": cache}, on_tamper=on_tamper))
    assert not [p for p in Path(cache).glob(".*.tmp")]
    if on_tamper == "rebuild":
        assert not os.path.lexists(path) and os.path.lexists(os.path.join(cache, "quarantine", os.path.basename(path)))
    else:
        with pytest.raises(EngineLoadError):
            within_limit(lambda: TensorrtEpHarness(provider).load_engine(path))


@pytest.mark.slow
@pytest.mark.parametrize("planted", SPECIAL_KINDS, indirect=True)
def test_cache_cli_reports_special_file_without_hanging(planted, tmp_path):
    trt, keys, path, kind = planted
    cache = os.path.dirname(path)
    os.mkfifo(os.path.join(cache, ".x.engine.encrypted.a1b2.tmp"))  # a FIFO in a temp file's name too
    keys.save(tmp_path / "keys.json")
    listing = within_limit(lambda: ortseal_cli("cache", "list", cache))
    assert listing.returncode == 0, listing.stdout + listing.stderr
    row = next(line for line in listing.stdout.splitlines() if os.path.basename(path) in line)
    assert "refused" in row and "not a regular file" in row, listing.stdout
    assert "good" in listing.stdout and "Traceback" not in listing.stderr
    verify = within_limit(lambda: ortseal_cli("cache", "verify", cache, "--keys", str(tmp_path / "keys.json")))
    assert verify.returncode == 1 and "Traceback" not in verify.stderr
    assert f"BAD  {os.path.basename(path)}: engine file " in verify.stdout and "not a regular file" in verify.stdout
    assert f"ok   {os.path.basename(trt.engine_path('good'))}" in verify.stdout


class TwoCalls:
    """ORT's two decrypt calls, made one at a time so the file can be swapped in between."""

    def __init__(self, trt: TensorrtEpHarness, path: str) -> None:
        self.trt, self.path = trt, path
        self.size = ctypes.c_size_t(0)

    def size_query(self) -> int:
        assert self.trt._decrypt(self.path.encode(), None, ctypes.byref(self.size))
        return self.size.value

    def real_call(self) -> tuple[int, bytes]:
        buf = ctypes.create_string_buffer(self.size.value)  # ORT: new char[engine_size]
        ok = within_limit(lambda: self.trt._decrypt(self.path.encode(), buf, ctypes.byref(self.size)))
        return ok, buf.raw


@pytest.fixture
def trt(tmp_path, keys):
    return TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(tmp_path / "cache")}))


def _sealed_copy(trt: TensorrtEpHarness, engine: bytes, name: str) -> str:
    """A genuine sealed engine written under ``name``'s file, then renamed onto the engine's own name
    (the vault binds an engine to its file name, so it is sealed under that name first)."""
    path = trt.engine_path()
    staging = os.path.join(os.path.dirname(path), "staging")
    os.makedirs(staging, exist_ok=True)
    trt.save_engine(path, engine)
    os.replace(path, os.path.join(staging, name))
    return os.path.join(staging, name)


def test_engine_swapped_for_another_size_between_the_calls_is_refused(trt):
    path = trt.engine_path()
    first, second = os.urandom(300_000), os.urandom(200_000)
    other = _sealed_copy(trt, second, "second")
    trt.save_engine(path, first)
    calls = TwoCalls(trt, path)
    assert calls.size_query() == len(first)
    os.replace(other, path)  # a genuine engine of another size, swapped in between
    ok, buf = calls.real_call()
    assert not ok and buf == bytes(len(first))  # refused, nothing of either engine written to ORT's buffer


def test_engine_swapped_for_one_of_the_same_size_is_opened_whole_and_verified(trt):
    path = trt.engine_path()
    first, second = os.urandom(300_000), os.urandom(300_000)
    other = _sealed_copy(trt, second, "second")
    trt.save_engine(path, first)
    calls = TwoCalls(trt, path)
    assert calls.size_query() == len(first)
    os.replace(other, path)
    ok, buf = calls.real_call()
    assert ok and buf == second  # the whole second engine, verified; no mix of the two


def test_engine_swapped_for_a_forgery_of_the_same_size_is_refused_and_buffer_zeroed(trt):
    path = trt.engine_path()
    engine = os.urandom(300_000)
    trt.save_engine(path, engine)
    calls = TwoCalls(trt, path)
    assert calls.size_query() == len(engine)
    blob = bytearray(Path(path).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    forged = path + ".forged"
    Path(forged).write_bytes(blob)
    os.replace(forged, path)
    ok, buf = calls.real_call()
    assert not ok and buf == bytes(len(engine))


def test_engine_swapped_for_a_fifo_between_the_calls_is_refused(trt):
    path = trt.engine_path()
    engine = os.urandom(100_000)
    trt.save_engine(path, engine)
    calls = TwoCalls(trt, path)
    calls.size_query()
    os.unlink(path)
    os.mkfifo(path)
    ok, buf = calls.real_call()
    assert not ok and buf == bytes(len(engine))


def test_cli_on_a_fifo_engine_in_a_fresh_process_does_not_hang(tmp_path, keys):
    """The CLI as a user runs it, killed by the timeout if it hangs."""
    cache = tmp_path / "cache"
    cache.mkdir()
    os.mkfifo(cache / "x_sm86.engine.encrypted")
    keys.save(tmp_path / "keys.json")
    for args in (["cache", "list", str(cache)], ["cache", "verify", str(cache), "--keys", str(tmp_path / "keys.json")]):
        r = subprocess.run([sys.executable, "-m", "ortseal", *args], capture_output=True, text=True, timeout=LIMIT_S)
        assert "a FIFO, not a regular file" in r.stdout and "Traceback" not in r.stderr, r.stdout + r.stderr

