"""The TensorRT engine-cache shim, driven exactly as the TensorRT EP drives it (tests/trt_harness.py)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import contains_run

import ortseal
from ortseal import KeySet, UnsafeOptionError
from ortseal.tensorrt.harness import EngineLoadError, TensorrtEpHarness, harness_provider
from ortseal.tensorrt.provider import LEAKING_OPTIONS

ENGINE_MIB = 5


@pytest.fixture
def engine() -> bytes:
    return os.urandom(ENGINE_MIB * (1 << 20) + 12345)


@pytest.fixture
def trt(tmp_path, keys):
    return TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(tmp_path / "cache"),
                                                               "trt_fp16_enable": True}))


def test_options_keep_user_settings_and_point_at_the_shim(tmp_path, keys):
    name, opts = harness_provider(keys, {"trt_fp16_enable": True, "trt_max_workspace_size": 1 << 30,
                                                  "trt_engine_cache_path": str(tmp_path / "c")})
    assert name == "TensorrtExecutionProvider"
    assert opts["trt_fp16_enable"] == "True" and opts["trt_max_workspace_size"] == str(1 << 30)
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_decryption_enable"] == "True"
    assert Path(opts["trt_engine_decryption_lib_path"]).is_file()
    assert all(isinstance(v, str) for v in opts.values())


def test_round_trip_and_no_plaintext_on_disk(trt, engine, tmp_path):
    path = trt.engine_path()
    trt.save_engine(path, engine)
    assert trt.load_engine(path) == engine
    for f in Path(trt.cache_path).rglob("*"):
        if f.is_file():
            assert not contains_run(f.read_bytes(), engine), f
    assert [p.name for p in Path(trt.cache_path).iterdir()] == [os.path.basename(path)]


def _expect_refused(trt, path, caplog, reason: str) -> None:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="ortseal.tensorrt"), pytest.raises(EngineLoadError):
        trt.load_engine(path)
    assert path in caplog.text and reason in caplog.text, caplog.text


@pytest.mark.parametrize("where", ["header", "ciphertext", "tag", "signature"])
def test_flipped_bit_fails_closed(trt, keys, engine, caplog, where):
    path = trt.engine_path()
    trt.save_engine(path, engine)
    blob = bytearray(Path(path).read_bytes())
    offset = {"header": 40, "ciphertext": len(blob) // 2, "tag": len(blob) - 64 - 1, "signature": len(blob) - 3}[where]
    blob[offset] ^= 0x04
    Path(path).write_bytes(blob)
    _expect_refused(trt, path, caplog, "TamperedError")


def test_truncated_engine_fails_at_size_query(trt, engine, caplog):
    path = trt.engine_path()
    trt.save_engine(path, engine)
    blob = Path(path).read_bytes()
    for cut in (len(blob) - 1, len(blob) - 64 - 16 - 1000, (1 << 20) + 300, 150):
        Path(path).write_bytes(blob[:cut])
        _expect_refused(trt, path, caplog, "TamperedError")


def test_engine_copied_onto_another_name_fails(trt, engine, caplog):
    a, b = trt.engine_path("model_a"), trt.engine_path("model_a", sm=89)
    trt.save_engine(a, engine)
    shutil.copy(a, b)
    _expect_refused(trt, b, caplog, "different context")


def test_wrong_key_and_untrusted_signer(tmp_path, keys, other_keys, engine, caplog):
    trt = TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(tmp_path / "a")}))
    path = trt.engine_path()
    trt.save_engine(path, engine)
    stranger = TensorrtEpHarness(harness_provider(other_keys, {"trt_engine_cache_path": str(tmp_path / "b")}))
    shutil.copy(path, stranger.engine_path())
    _expect_refused(stranger, stranger.engine_path(), caplog, "does not trust")  # signer checked before any key
    keyless = KeySet.merge(other_keys.without_signing(), keys.public())
    no_key = TensorrtEpHarness(harness_provider(keyless, {"trt_engine_cache_path": str(tmp_path / "e")}))
    shutil.copy(path, no_key.engine_path())
    _expect_refused(no_key, no_key.engine_path(), caplog, "KeyNotFoundError")
    untrusting = KeySet.merge(KeySet(content_keys={k: keys.content_key(k) for k in keys.content_key_ids}),
                              other_keys.public())
    device = TensorrtEpHarness(harness_provider(untrusting, {"trt_engine_cache_path": str(tmp_path / "c")}))
    shutil.copy(path, device.engine_path())
    _expect_refused(device, device.engine_path(), caplog, "does not trust")
    publisher_trusting = KeySet.merge(keys.without_signing(), keys.public())
    ok = TensorrtEpHarness(harness_provider(publisher_trusting, {"trt_engine_cache_path": str(tmp_path / "d")}))
    shutil.copy(path, ok.engine_path())
    assert ok.load_engine(ok.engine_path()) == engine


def test_unregistered_directory_is_refused(trt, engine, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = trt.engine_path()
    trt.save_engine(path, engine)
    target = str(elsewhere / os.path.basename(path))
    shutil.copy(path, target)
    _expect_refused(trt, target, caplog, "no ortseal vault")


def test_many_threads_at_once(trt, keys):
    engines = {trt.engine_path(f"e{i}"): os.urandom((1 << 20) * (1 + i % 3) + i) for i in range(6)}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for j, (path, data) in enumerate(engines.items()):
                if (j + k) % 6 == 0:
                    trt.save_engine(path, data)
            for path, data in engines.items():
                if os.path.exists(path):
                    assert trt.load_engine(path) == data
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for path, data in engines.items():
        assert trt.load_engine(path) == data


WRITER = textwrap.dedent("""
    import sys
    import ortseal
    from ortseal.tensorrt.harness import TensorrtEpHarness, harness_provider
    keys = ortseal.KeySet.load({keys!r})
    trt = TensorrtEpHarness(harness_provider(keys, {{"trt_engine_cache_path": {cache!r}}}))
    engine = bytes([int(sys.argv[1])]) * (3 << 20)
    for _ in range(8):
        trt.save_engine(trt.engine_path(), engine)
        assert trt.load_engine(trt.engine_path()) in (b"\\x01" * (3 << 20), b"\\x02" * (3 << 20))
    print("ok")
""")


def test_two_processes_writing_the_same_engine(tmp_path, keys):
    keys.save(tmp_path / "keys.json")
    cache = tmp_path / "cache"
    code = WRITER.format(keys=str(tmp_path / "keys.json"), cache=str(cache))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(v)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for v in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    files = list(cache.iterdir())
    assert len(files) == 1, files  # no torn or leftover temp file
    trt = TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(cache)}))
    assert trt.load_engine(str(files[0])) in (b"\x01" * (3 << 20), b"\x02" * (3 << 20))


def test_library_alone_gives_nothing(trt, engine):
    path = trt.engine_path()
    trt.save_engine(path, engine)
    code = textwrap.dedent(f"""
        import ctypes
        lib = ctypes.CDLL({ortseal.tensorrt.shim_path()!r})
        size = ctypes.c_size_t(0)
        d = lib.decrypt({path.encode()!r}, None, ctypes.byref(size))
        buf = ctypes.create_string_buffer(16)
        e = lib.encrypt({(path + '.forged').encode()!r}, buf, 16)
        print(d, e, size.value)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0", "0"]
    assert r.stderr.count("callback registered in this process") == 2
    assert not os.path.exists(path + ".forged")


@pytest.mark.parametrize("option", sorted(LEAKING_OPTIONS))
@pytest.mark.parametrize("value", [True, "1", 1])
def test_leaking_options_refused(keys, tmp_path, option, value):
    with pytest.raises(UnsafeOptionError, match=option):
        harness_provider(keys, {option: value, "trt_engine_cache_path": str(tmp_path)})
    harness_provider(keys, {option: False, "trt_engine_cache_path": str(tmp_path)})


def test_cache_path_must_be_a_writable_directory(keys, tmp_path):
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    with pytest.raises(UnsafeOptionError, match="not a directory"):
        harness_provider(keys, {"trt_engine_cache_path": str(not_dir)})
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(UnsafeOptionError, match="not writable"):
            harness_provider(keys, {"trt_engine_cache_path": str(ro)})
    with pytest.raises(UnsafeOptionError):
        harness_provider(keys, {"trt_engine_cache_path": "/proc/ortseal-cannot-exist"})


def test_same_directory_two_keysets_refused(keys, other_keys, tmp_path):
    harness_provider(keys, {"trt_engine_cache_path": str(tmp_path)})
    with pytest.raises(ValueError, match="another keyset"):
        harness_provider(other_keys, {"trt_engine_cache_path": str(tmp_path)})


def test_on_tamper_rebuild_quarantines(keys, engine, tmp_path):
    cache = tmp_path / "cache"
    trt = TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(cache)}))
    good, bad = trt.engine_path("good"), trt.engine_path("bad")
    trt.save_engine(good, engine)
    trt.save_engine(bad, engine)
    blob = bytearray(Path(bad).read_bytes())
    blob[len(blob) // 2] ^= 1
    Path(bad).write_bytes(blob)
    harness_provider(keys, {"trt_engine_cache_path": str(cache)}, on_tamper="rebuild")
    assert not os.path.exists(bad) and (cache / "quarantine" / os.path.basename(bad)).exists()
    assert trt.load_engine(good) == engine


def test_header_declaring_a_huge_engine_is_refused_at_size_query(trt, engine, caplog):
    path = trt.engine_path()
    trt.save_engine(path, engine)
    blob = bytearray(Path(path).read_bytes())
    blob[16:24] = (1 << 45).to_bytes(8, "little")
    Path(path).write_bytes(blob)
    _expect_refused(trt, path, caplog, "does not match its header")


def test_cache_cli_list_and_verify(trt, keys, engine, tmp_path):
    from test_cli import ortseal_cli

    good, bad = trt.engine_path("good"), trt.engine_path("bad")
    trt.save_engine(good, engine)
    trt.save_engine(bad, engine)
    keys.save(tmp_path / "keys.json")
    r = ortseal_cli("cache", "verify", trt.cache_path, "--keys", str(tmp_path / "keys.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    blob = bytearray(Path(bad).read_bytes())
    blob[-100] ^= 1
    Path(bad).write_bytes(blob)
    r = ortseal_cli("cache", "verify", trt.cache_path, "--keys", str(tmp_path / "keys.json"))
    assert r.returncode == 1
    assert f"BAD  {os.path.basename(bad)}" in r.stdout and f"ok   {os.path.basename(good)}" in r.stdout
    r = ortseal_cli("cache", "list", trt.cache_path)
    assert r.returncode == 0
    assert keys.content_key_ids[0] in r.stdout and keys.signing_key_ids[0] in r.stdout
    assert str(len(engine)) in r.stdout


C_HOST = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "ortseal_shim.h"

static int my_decrypt(void* user, const char* path, char* buf, size_t* size) {
    const char* secret = (const char*)user;
    if (strstr(path, ".engine.encrypted") == NULL) return 0;
    if (buf == NULL) { *size = strlen(secret); return 1; }
    memcpy(buf, secret, *size);
    return 1;
}

int main(int argc, char** argv) {
    void* lib = dlopen(argv[1], RTLD_LAZY);
    if (!lib) return 2;
    int (*reg)(ortseal_decrypt_callback, ortseal_encrypt_callback, void*) = dlsym(lib, "ortseal_shim_register");
    void (*unreg)(void) = dlsym(lib, "ortseal_shim_unregister");
    int (*dec)(const char*, char*, size_t*) = dlsym(lib, "decrypt");
    int (*enc)(const char*, char*, size_t) = dlsym(lib, "encrypt");
    char secret[] = "engine-bytes";
    size_t size = 0;
    char out[64] = {0};
    if (!reg(my_decrypt, NULL, secret)) return 3;
    int a = dec("c/x_sm86.engine.encrypted", NULL, &size);
    int b = dec("c/x_sm86.engine.encrypted", out, &size);
    int c = enc("c/x_sm86.engine.encrypted", out, size);          /* no encrypt callback: refused */
    unreg();
    int d = dec("c/x_sm86.engine.encrypted", NULL, &size);        /* unregistered: refused */
    printf("%d %d %d %d %zu %s\n", a, b, c, d, size, out);
    return 0;
}
"""


def test_c_host_registers_its_own_callbacks(tmp_path):
    import shutil as _shutil

    compiler = _shutil.which("cc") or _shutil.which("gcc")
    assert compiler, "a C compiler is needed to build ortseal at all"
    (tmp_path / "host.c").write_text(C_HOST)
    include = Path(ortseal.tensorrt.__file__).parent
    build = subprocess.run([compiler, "-std=c11", "-Wall", "-o", str(tmp_path / "host"), str(tmp_path / "host.c"),
                            f"-I{include}", "-ldl"], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    r = subprocess.run([str(tmp_path / "host"), ortseal.tensorrt.shim_path()], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "1", "0", "0", "12", "engine-bytes"]
    assert r.stderr.count("callback registered in this process") == 2


def test_keyset_that_verifies_but_cannot_sign_writes_nothing(keys, engine, tmp_path, caplog):
    """Publisher-signed engines open on a device that cannot sign; an engine it would write could never be
    opened again (unsigned), so encrypt refuses and nothing is written."""
    publisher = TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(tmp_path / "p")}))
    publisher.save_engine(publisher.engine_path(), engine)
    device_keys = KeySet.merge(keys.without_signing(), keys.public())
    device = TensorrtEpHarness(harness_provider(device_keys, {"trt_engine_cache_path": str(tmp_path / "d")}))
    shutil.copy(publisher.engine_path(), device.engine_path())
    assert device.load_engine(device.engine_path()) == engine
    with caplog.at_level(logging.ERROR, logger="ortseal.tensorrt"), pytest.raises(EngineLoadError):
        device.save_engine(device.engine_path("new"), engine)
    assert "cannot sign" in caplog.text and not os.path.exists(device.engine_path("new"))
