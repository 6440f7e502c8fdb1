"""Issue 7's attacks, carried out on real files, real ORT sessions and the shim: a device-key holder's
tag-preserving rewrite, splicing across seals, rollback, the fallback kernel as a decryption oracle, the
process abort, the sparse engine file, and processes killed with SIGKILL mid-write and mid-open."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import contains_run
from forge import blob_span, content_key, device_of, keep_tag_rewrite
from models import big_embedding, transformer_like

import ortseal
from ortseal import KeySet, RollbackError, TamperedError
from ortseal.blob import Sealer
from ortseal.model._graph import SEALED_SUFFIX
from ortseal.model.ramdir import FOLDER_PREFIX, private_folder, remove_stale_folders, runtime_dirs
from ortseal.tensorrt.harness import EngineLoadError, TensorrtEpHarness, harness_provider
from ortseal.tensorrt.vault import engine_context

CPU = ["CPUExecutionProvider"]
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def publisher_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("pub")
    weights = transformer_like(d / "model.onnx")
    keys = KeySet.generate()
    ortseal.seal_model(d / "model.onnx", d / "v4.onnx", keys, min_bytes=64, release=4)
    ortseal.seal_model(d / "model.onnx", d / "v3.onnx", keys, min_bytes=64, release=3)
    feeds = {"ids": np.random.default_rng(0).integers(0, 512, (2, 16), dtype=np.int64)}
    return d, keys, weights, feeds


def copy_sealed(src: Path, dst_dir: Path, name: str = "model.onnx") -> Path:
    """Deploy a sealed model as ``dst_dir/name``; its data file keeps the name it was sealed with (signed)."""
    dst_dir.mkdir(exist_ok=True)
    shutil.copy(src, dst_dir / name)
    shutil.copy(src.with_name(src.name + ".data"), dst_dir / (src.name + ".data"))
    return dst_dir / name


# -- item 1: a device-key holder rewrites content while every tag stays valid -----------------------
def test_device_cannot_forge_publisher_signed_weights(publisher_model, tmp_path):
    d, keys, weights, _ = publisher_model
    path = copy_sealed(d / "v4.onnx", tmp_path)
    data, offset, length = blob_span(path, "wq")
    blob = data.read_bytes()[offset:offset + length]
    chosen = bytearray(weights["wq"].tobytes())
    chosen[:256] = bytes(256)  # the attacker's weights
    forged = keep_tag_rewrite(blob, content_key(keys), 0, bytes(chosen))  # raises if GCM would notice
    raw = bytearray(data.read_bytes())
    raw[offset:offset + length] = forged
    data.write_bytes(bytes(raw))
    for opener in (keys, device_of(keys)):
        with pytest.raises(TamperedError, match="content does not match its signed digest"):
            ortseal.verify_model(path, opener)
        with pytest.raises(TamperedError, match="content does not match its signed digest"):
            ortseal.InferenceSession(str(path), providers=CPU, keys=opener)
        with pytest.raises(TamperedError):
            ortseal.fallback_session_options(opener, model=path)


@pytest.mark.slow
def test_device_cannot_forge_a_publisher_signed_engine(tmp_path, keys, caplog):
    engine = os.urandom(3 << 20)
    publisher = TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(tmp_path / "p")}))
    publisher.save_engine(publisher.engine_path(), engine)
    device = TensorrtEpHarness(harness_provider(device_of(keys), {"trt_engine_cache_path": str(tmp_path / "d")}))
    blob = Path(publisher.engine_path()).read_bytes()
    chosen = bytearray(engine[1 << 20:2 << 20])
    chosen[:4096] = b"\xcc" * 4096  # the attacker's code
    Path(device.engine_path()).write_bytes(keep_tag_rewrite(blob, content_key(keys), 1, bytes(chosen)))
    with pytest.raises(EngineLoadError):
        device.load_engine(device.engine_path())
    assert "does not verify" in caplog.text


# -- item 2: splicing across seals, and rollback ----------------------------------------------------
def test_tensors_do_not_splice_across_seals(publisher_model, tmp_path):
    d, keys, _, _ = publisher_model
    new = copy_sealed(d / "v4.onnx", tmp_path / "new")
    old = copy_sealed(d / "v3.onnx", tmp_path / "old")
    new_data, off_n, len_n = blob_span(new, "wq")
    old_data, off_o, len_o = blob_span(old, "wq")
    assert len_n == len_o
    raw = bytearray(new_data.read_bytes())
    raw[off_n:off_n + len_n] = old_data.read_bytes()[off_o:off_o + len_o]  # one tensor from the other seal
    new_data.write_bytes(bytes(raw))
    with pytest.raises(TamperedError):
        ortseal.InferenceSession(str(new), providers=CPU, keys=device_of(keys))
    shutil.copy(old_data, new_data)  # every payload of the other seal under this manifest
    with pytest.raises(TamperedError):
        ortseal.verify_model(new, device_of(keys))


def test_older_release_copied_over_a_newer_one_is_refused(publisher_model, tmp_path):
    d, keys, _, feeds = publisher_model
    deployed = copy_sealed(d / "v4.onnx", tmp_path)
    want = ortseal.InferenceSession(str(deployed), providers=CPU, keys=device_of(keys), min_release=4).run(None, feeds)
    copy_sealed(d / "v3.onnx", tmp_path)  # the attacker puts the older, authentic release in place
    with pytest.raises(RollbackError, match="release 3, older than the minimum release 4"):
        ortseal.InferenceSession(str(deployed), providers=CPU, keys=device_of(keys), min_release=4)
    with pytest.raises(RollbackError):
        ortseal.fallback_session_options(device_of(keys), model=deployed, min_release=4)
    assert want  # the newer release opened


def test_older_engine_copied_over_a_newer_one_is_refused(tmp_path, keys, caplog):
    cache = {"trt_engine_cache_path": str(tmp_path / "c")}
    old, new = os.urandom(1 << 20), os.urandom(1 << 20)
    v2 = TensorrtEpHarness(harness_provider(keys, cache, release=2))
    v2.save_engine(v2.engine_path(), old)
    saved = Path(v2.engine_path()).read_bytes()
    v3 = TensorrtEpHarness(harness_provider(keys, cache, release=3))  # the deployment upgraded
    with pytest.raises(EngineLoadError):
        v3.load_engine(v3.engine_path())
    assert "RollbackError" in caplog.text
    v3.save_engine(v3.engine_path(), new)
    assert v3.load_engine(v3.engine_path()) == new
    Path(v3.engine_path()).write_bytes(saved)  # rollback of the cache file
    with pytest.raises(EngineLoadError):
        v3.load_engine(v3.engine_path())
    harness_provider(keys, cache, release=3, on_tamper="rebuild")
    assert not Path(v3.engine_path()).exists() and (tmp_path / "c" / "quarantine").is_dir()


# -- items 3 and 4: the fallback kernel is no decryption oracle and never aborts the process -------
ORACLE = textwrap.dedent("""
    import sys, logging, numpy as np, onnx, onnxruntime as ort, ortseal
    from onnx import helper, TensorProto
    from onnxruntime_extensions import get_library_path
    logging.basicConfig(level=logging.ERROR)
    keys = ortseal.KeySet.load(sys.argv[1])
    fb = ortseal.fallback_session_options(keys, model=sys.argv[2])   # one legitimate set-up in this process
    legit = onnx.load_from_string(fb.model_bytes)
    unseal = next(n for n in legit.graph.node if n.domain == "ai.ortseal")
    wq = next(a for a in unseal.attribute if a.name == "tensor").s  # the identity of a verified weight
    stolen = onnx.load(sys.argv[3], load_external_data=False)   # another sealed model, never verified here
    stolen.graph.output.append(helper.make_tensor_value_info("wq", TensorProto.FLOAT, [128, 128]))
    onnx.save(stolen, sys.argv[3] + ".edited.onnx")
    header = open(sys.argv[5], "rb").read(232)  # public bytes: a blob's header

    def crafted(op_type, dtype, identity):
        node = helper.make_node(op_type, ["blob", "like"], ["w"], domain="ai.ortseal", dtype=dtype, tensor=identity,
                                fallback_supported=1)
        node.attribute.append(helper.make_attribute("shape", [128, 128]))
        g = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("w", dtype, [128, 128])],
                              [helper.make_tensor("blob", TensorProto.UINT8, [len(header)], header, raw=True),
                               helper.make_tensor("like", dtype, [0], b"", raw=True)])
        return helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid("ai.ortseal", 2)])

    attempts = {
        "edited": (sys.argv[3] + ".edited.onnx", ["wq"], {"ids": np.zeros((2, 16), np.int64)}),
        "header": (crafted("Unseal", TensorProto.FLOAT, wq).SerializeToString(), ["w"], {}),
        "float16": (crafted("Unseal", TensorProto.FLOAT16, wq).SerializeToString(), ["w"], {}),
        "guessed": (crafted("Unseal_" + "0" * 32, TensorProto.FLOAT, wq).SerializeToString(), ["w"], {}),
    }
    # code holding the handed bytes (the process's op type, a set-up id and slot) and a tensor attribute that
    # is not UTF-8, which onnxruntime-extensions would abort on if the kernel declared it: no abort
    not_utf8 = crafted(unseal.op_type, TensorProto.FLOAT, bytes([0xff, 0xfe]))
    not_utf8.graph.node[0].attribute.extend(a for a in unseal.attribute if a.name in ("setup", "slot"))
    attempts["not-utf8"] = (not_utf8.SerializeToString(), ["w"], {})
    for name, (model, outputs, feeds) in attempts.items():
        so = ort.SessionOptions()
        so.register_custom_ops_library(get_library_path())        # only the extensions library, no ortseal call
        try:
            out = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(outputs, feeds)[0]
        except Exception as exc:  # no kernel for a graph nobody verified: refused, nothing served
            out = np.zeros(0, np.float32)
            print(name, "refused:", type(exc).__name__)
        np.save(sys.argv[4] + name + ".npy", out)
    print("alive")
""")


@pytest.mark.slow
def test_fallback_kernel_is_no_oracle_and_never_aborts(publisher_model, tmp_path):
    """In a process that set the fallback up once: an edited copy of another sealed model, a crafted node
    holding a blob's public header and a verified tensor's identity, the same as float16 (onnxruntime-extensions
    aborts the process on that type), and a guessed op type: none gets a weight, none aborts."""
    d, keys, weights, _ = publisher_model
    keys.save(tmp_path / "keys.json")
    legit = copy_sealed(d / "v4.onnx", tmp_path / "legit")
    stolen = copy_sealed(d / "v3.onnx", tmp_path / "stolen")
    r = subprocess.run([sys.executable, "-c", ORACLE, str(tmp_path / "keys.json"), str(legit), str(stolen),
                        str(tmp_path / "out-"), str(legit.parent / "v4.onnx.data")], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0 and "alive" in r.stdout, r.stderr  # no std::terminate
    assert (tmp_path / "out-not-utf8.npy").exists()  # it ran (or was refused) without aborting the process
    for name in ("edited", "header", "float16", "guessed"):
        out = np.load(tmp_path / f"out-{name}.npy")
        assert not out.any() and not contains_run(out.tobytes(), weights["wq"].tobytes()), name


def test_fallback_needs_a_verified_model(publisher_model):
    _, keys, _, _ = publisher_model
    with pytest.raises(TypeError):
        ortseal.fallback_session_options(keys)  # type: ignore[call-arg]


# -- item 6: the sparse engine file -------------------------------------------------------------------
def test_sparse_engine_declaring_2_24_segments_is_refused_fast(tmp_path, keys, caplog):
    trt = TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(tmp_path)}))
    path = trt.engine_path()
    header = Sealer(keys, context=engine_context(path), length=(1 << 24) * 4096, segment_size=4096).header
    with open(path, "wb") as fh:
        fh.write(header.raw)
        fh.truncate(header.blob_length)  # 64 GiB declared, a few KiB on disk
    started = time.perf_counter()
    for attempt in (trt.load_engine, lambda p: ortseal.tensorrt.verify_engine_file(p, keys)):
        with pytest.raises((EngineLoadError, TamperedError)):
            attempt(path)
    assert time.perf_counter() - started < 2
    assert "sparse" in caplog.text


# -- kill -9: engine writers and opening processes ---------------------------------------------------
WRITER = textwrap.dedent("""
    import os, sys, ortseal
    from ortseal._atomic import atomic_writer
    with atomic_writer(sys.argv[1], mode=0o600) as fh:
        fh.write(os.urandom(1 << 20)); fh.flush()
        print("writing", flush=True)
        sys.stdin.read()   # killed here, mid-write
""")


def test_engine_writer_killed_mid_write_leaves_nothing_for_long(tmp_path, keys):
    cache = tmp_path / "cache"
    trt = TensorrtEpHarness(harness_provider(keys, {"trt_engine_cache_path": str(cache)}))
    target = trt.engine_path()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, target], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, cwd=ROOT) for _ in range(3)]
    for w in writers:
        assert w.stdout.readline().strip() == "writing"
    listing = subprocess.run([sys.executable, "-m", "ortseal", "cache", "list", str(cache)], capture_output=True,
                             text=True, timeout=120)
    assert listing.stdout.count("being written") == 3
    harness_provider(keys, {"trt_engine_cache_path": str(cache)})
    assert len(list(cache.glob(".*.tmp"))) == 3  # live writers' files are left alone
    for w in writers:
        w.send_signal(signal.SIGKILL)
        w.wait()
    listing = subprocess.run([sys.executable, "-m", "ortseal", "cache", "list", str(cache)], capture_output=True,
                             text=True, timeout=120)
    assert listing.stdout.count("writer killed") == 3
    harness_provider(keys, {"trt_engine_cache_path": str(cache)})
    assert not list(cache.glob(".*.tmp")) and not Path(target).exists()


OPENER = textwrap.dedent("""
    import sys, ortseal
    keys = ortseal.KeySet.load(sys.argv[1])
    while True:
        ortseal.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"], keys=keys)
""")


def _runtime_dir() -> str:
    dirs = runtime_dirs()
    if not dirs:
        pytest.skip("no private RAM-backed folder here")
    return dirs[0]


def _ortseal_folders() -> set[str]:
    return {p.name for p in Path(_runtime_dir()).glob(FOLDER_PREFIX + "*")}


@pytest.fixture(scope="module")
def big_sealed(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    big_embedding(d / "big.onnx", rows=65536, dim=1024)  # 256 MiB: opening takes a visible moment
    keys = KeySet.generate()
    ortseal.seal_model(d / "big.onnx", d / "big.sealed.onnx", keys)
    keys.save(d / "keys.json")
    return d


@pytest.mark.slow
@pytest.mark.parametrize("namespace", [False, True], ids=["same-pid-namespace", "own-pid-namespace"])
def test_opener_killed_mid_open_is_cleaned_by_the_next_open(big_sealed, namespace):
    runtime_dir = _runtime_dir()
    command = [sys.executable, "-c", OPENER, str(big_sealed / "keys.json"), str(big_sealed / "big.sealed.onnx")]
    if namespace:
        if subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True).returncode != 0:
            pytest.skip("unshare --pid is not permitted here")
        command = ["unshare", "--pid", "--fork", "--kill-child"] + command
    before = _ortseal_folders()
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (_ortseal_folders() - before) and time.monotonic() < deadline:
            time.sleep(0.002)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    left = _ortseal_folders() - before
    assert left, "the child was killed before it began opening"
    removed: set[str] = set()
    deadline = time.monotonic() + 10  # the namespace's processes die (and drop their locks) asynchronously
    while not left & removed and time.monotonic() < deadline:
        removed |= {Path(p).name for p in remove_stale_folders(runtime_dir)}
        time.sleep(0.05)
    # the killed child's folder is removed (``left`` may also hold a live opener's of another process)
    assert left & removed and not (_ortseal_folders() & removed)


def test_a_live_openers_folder_is_not_removed():
    runtime_dir = _runtime_dir()
    with private_folder(runtime_dir) as folder:
        r = subprocess.run([sys.executable, "-c", "import sys; from ortseal.model.ramdir import remove_stale_folders as r; "
                            "print(r(sys.argv[1]))", runtime_dir], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
        assert r.returncode == 0 and folder.path not in r.stdout and os.path.isdir(folder.path)
    assert not os.path.exists(folder.path)


# -- the shim's unregister is not starved by a steady stream of calls ---------------------------
STARVE_HOST = textwrap.dedent(r"""
    #include <dlfcn.h>
    #include <pthread.h>
    #include <stdio.h>
    #include <time.h>
    #include <unistd.h>
    #include "ortseal_shim.h"
    typedef int (*decrypt_fn)(const char*, char*, size_t*);
    static decrypt_fn dec;
    static volatile int stop = 0;
    static int slow(void* u, const char* p, char* b, size_t* s) { (void)u; (void)p; (void)b; *s = 1; usleep(2000); return 1; }
    static void* hammer(void* arg) { size_t s; (void)arg; while (!stop) dec("x", NULL, &s); return NULL; }
    int main(int argc, char** argv) {
        (void)argc;
        void* lib = dlopen(argv[1], RTLD_NOW);
        int (*reg)(ortseal_decrypt_callback, ortseal_encrypt_callback, void*) = dlsym(lib, "ortseal_shim_register");
        void (*unreg)(void) = dlsym(lib, "ortseal_shim_unregister");
        dec = (decrypt_fn)dlsym(lib, "decrypt");
        reg(slow, NULL, NULL);
        pthread_t t[8];
        for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, hammer, NULL);
        usleep(50000);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        unreg();
        clock_gettime(CLOCK_MONOTONIC, &b);
        stop = 1;
        for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
        printf("%.3f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
        return 0;
    }
""")


def test_unregister_is_not_starved_by_constant_decrypt_calls(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    (tmp_path / "starve.c").write_text(STARVE_HOST)
    include = Path(ortseal.tensorrt.__file__).parent
    build = subprocess.run([compiler, "-std=gnu11", "-O1", "-o", str(tmp_path / "starve"), str(tmp_path / "starve.c"),
                            f"-I{include}", "-ldl", "-lpthread"], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    r = subprocess.run([str(tmp_path / "starve"), ortseal.tensorrt.shim_path()], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) < 1.0  # waits for the calls in flight (2 ms each), not for the stream to pause


@pytest.mark.parametrize("location", ["../outside.data", "/etc/passwd", "sub/../../outside.data"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, keys, location):
    """A sealed model pointing its blobs outside its folder (to read or probe other files) is refused."""
    folder = tmp_path / "model"
    folder.mkdir()
    transformer_like(folder / "m.onnx", d=32, vocab=64)
    ortseal.seal_model(folder / "m.onnx", folder / "s.onnx", keys, min_bytes=256)
    shutil.copy(folder / "s.onnx.data", tmp_path / "outside.data")
    model = onnx.load(str(folder / "s.onnx"), load_external_data=False)
    blob = next(t for t in model.graph.initializer if t.name.endswith(SEALED_SUFFIX))
    next(e for e in blob.external_data if e.key == "location").value = location
    onnx.save(model, str(folder / "moved.onnx"))
    # the location is signed with the rest of the file: the edit itself is refused
    with pytest.raises(TamperedError, match="signature"):
        ortseal.InferenceSession(str(folder / "moved.onnx"), providers=["CPUExecutionProvider"], keys=keys)
    with pytest.raises(TamperedError, match="signature"):
        ortseal.verify_model(folder / "moved.onnx", keys.public())
    # a source model pointing outside its folder is refused when sealing
    source = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    t = next(t for t in source.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    next(e for e in t.external_data if e.key == "location").value = location
    onnx.save(source, str(folder / "src-moved.onnx"))
    with pytest.raises(ortseal.FormatError, match="outside the model folder"):
        ortseal.seal_model(folder / "src-moved.onnx", folder / "x.onnx", keys)




def test_stale_cleanup_never_sees_a_writers_temp_file_unlocked(tmp_path):
    """Found attacking the compiled cache: a writer's temp file used to be visible under its stale-cleanup name
    between mkstemp and flock, so a cleanup run by another process at that instant removed a live writer's
    file. It is now made under a name cleanup leaves alone until old, locked, then renamed."""
    from ortseal._atomic import NEW_STALE_SECONDS, NEW_SUFFIX, atomic_writer, lock_held, remove_stale_temps

    target = tmp_path / "x.bin"
    with atomic_writer(target) as fh:
        fh.write(b"x")
        visible = list(tmp_path.glob(".x.bin.*.tmp"))
        assert len(visible) == 1 and lock_held(visible[0]) and not list(tmp_path.glob(f".*{NEW_SUFFIX}"))
        assert remove_stale_temps(tmp_path) == []  # a live writer's file is left alone
    assert target.read_bytes() == b"x" and not list(tmp_path.glob(".x.bin.*"))
    # a writer killed between mkstemp and flock: its file is left while it could still be a live one's, then removed
    young, old = tmp_path / f".x.bin.young{NEW_SUFFIX}", tmp_path / f".x.bin.old{NEW_SUFFIX}"
    young.write_bytes(b""), old.write_bytes(b"")
    os.utime(old, (0, time.time() - NEW_STALE_SECONDS - 1))
    assert remove_stale_temps(tmp_path) == [old] and young.exists()
