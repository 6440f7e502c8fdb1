"""libortseal's engine-cache vault: native callbacks behind the keyless shim, called by name as ORT's
TensorRT EP calls them. Engines sealed in C pass `ortseal cache verify`; engines sealed by Python open
through the C vault; the refusals of ortseal/tensorrt/vault.py hold, logged, never crashing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ortseal import KeySet
from ortseal.tensorrt.vault import ENGINE_SUFFIX, Vault, write_engine

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


@pytest.mark.parametrize("attack", ["renamed", "flipped", "truncated", "symlink", "fifo", "other keys"])
def test_engine_attacks_are_refused_and_logged(host, cache, tmp_path, attack):
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
    assert not (tmp_path / "out.bin").exists()


def test_a_keyset_that_cannot_sign_is_refused_for_the_cache(host, cache, tmp_path):
    folder, keys, _ = cache
    public = KeySet.merge(KeySet(content_keys={keys.content_key_ids[0]: keys.content_key(keys.content_key_ids[0])}),
                          keys.public())
    (tmp_path / "device.json").write_text(public.to_json())
    result = save(host, tmp_path / "device.json", folder)
    assert result.name == "misuse" and "cannot sign" in result.message
