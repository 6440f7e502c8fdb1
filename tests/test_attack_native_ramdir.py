"""Attacks on libortseal's private RAM folder (native/src/os_posix.c) beyond tests/test_native_ramdir.py's:
a host whose real and effective uids differ, a child the host spawns while a folder is in use, another
user reaching for the plaintext while it waits for ORT, and a writer of the same uid after the checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from native_host import read_tensors
from test_native_ramdir import (  # noqa: F401  (fixtures, used as they are)
    ROUTE_ENV,
    Holder,
    models,
    ort_host,
    plain_outputs,
    run_sealed,
)
from test_ramdir import NOBODY, NOBODY_PYTHON, ROOT, fresh_user_base, quiet_env  # noqa: F401

from ortseal.model.ramdir import RUNTIME_DIR_ENV, SHARED_RAM_DIR

# Real uid nobody, effective uid root: what a set-user-ID-root host runs as when nobody starts it.
SETUID_ROOT = ["setpriv", "--ruid=nobody", "--euid=0"]
needs_root_setpriv = pytest.mark.skipif(NOBODY_PYTHON is None, reason="needs root with setpriv (a second uid)")


def nobody_sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c", script],
                          capture_output=True, text=True, cwd="/", timeout=60, check=False)


@pytest.fixture
def nobody_base():
    """A folder of nobody's on /dev/shm, 0700: a base that passes every check for nobody."""
    if not os.path.isdir(SHARED_RAM_DIR):
        pytest.skip("no /dev/shm")
    folder = tempfile.mkdtemp(prefix="nobody-base-", dir=SHARED_RAM_DIR)
    os.chown(folder, NOBODY, NOBODY)
    yield folder
    shutil.rmtree(folder)


def swap_out(folder: str) -> subprocess.CompletedProcess:
    """nobody moves the opening folder aside and puts a folder of its own, of zero weights, in its place."""
    zeros = "; ".join(f"head -c {4 << 20} /dev/zero > {folder}/t{i}.bin" for i in range(5))
    return nobody_sh(f"mv {folder} {folder}.moved && mkdir {folder} && {zeros}")


# -- a host whose real uid is not its effective uid --------------------------------------------------

@needs_root_setpriv
@pytest.mark.parametrize("how", ["option", "xdg"])
def test_setuid_host_never_opens_into_a_base_of_its_real_uid(how, ort_host, models, quiet_env, fresh_user_base,
                                                             nobody_base, tmp_path):
    """A set-user-ID-root host started by nobody: nobody's base passed the owner check (the real uid), so
    nobody could swap the opening folder for one of its own between the checks and ORT's read, and the
    session ran on nobody's weights. The owner is the effective uid: that base is refused (the option) or
    skipped for root's own (XDG_RUNTIME_DIR), which nobody cannot touch; outputs stay bit-identical."""
    d, folders = models
    env = {**os.environ, RUNTIME_DIR_ENV if how == "option" else "XDG_RUNTIME_DIR": nobody_base}
    env.pop(ROUTE_ENV, None)
    args = [str(ort_host.exe), "hold", str(d / "keys.json"), str(folders["large"] / "sealed.onnx"), str(d / "in.bin"),
            str(tmp_path / "out.bin")]
    proc = subprocess.Popen([*SETUID_ROOT, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    first = proc.stdout.readline().strip()
    if first.startswith("folder /"):
        swap_out(first.split()[1])  # the attack (fails with permission denied where the base is root's)
    out, err = proc.communicate("go\ngo\n", timeout=300)
    if how == "option":
        assert first.startswith("error unsafe_option") and nobody_base in first, first + out + err
        return
    assert proc.returncode == 0, first + out + err
    assert first.startswith(f"folder {fresh_user_base}/"), first  # /dev/shm/ortseal-0: the effective uid's
    plain = plain_outputs(ort_host, models, "large", tmp_path)
    assert read_tensors(tmp_path / "out.bin")["x5"].tobytes() == plain["x5"].tobytes()
    assert os.listdir(nobody_base) == [] and os.listdir(fresh_user_base) == []


@needs_root_setpriv
def test_python_never_trusts_a_base_of_its_real_uid(nobody_base):
    """The same rule on the Python side (ortseal/model/ramdir.py), which shares the base with C."""
    script = textwrap.dedent("""
        import sys
        from ortseal.errors import UnsafeOptionError
        from ortseal.model.ramdir import runtime_dirs
        try:
            print("used", runtime_dirs())
        except UnsafeOptionError as exc:
            print("refused", exc)
    """)
    env = {**os.environ, RUNTIME_DIR_ENV: nobody_base}
    r = subprocess.run([*SETUID_ROOT, sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=60, check=False)
    assert r.stdout.startswith("refused") and f"owned by uid {NOBODY}" in r.stdout, r.stdout + r.stderr


# -- descriptors a child of the host would inherit -----------------------------------------------------

PROBE = r"""
/* LD_PRELOAD probe: at each of these calls libortseal makes, every descriptor leading under $PROBE_UNDER must
 * be close-on-exec (a child the host forks and execs at that moment would inherit it); else it is reported
 * to $PROBE_OUT. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
static __thread int busy;
static void probe(const char *where) {
    const char *under = getenv("PROBE_UNDER"), *out = getenv("PROBE_OUT");
    if (busy || !under || !out) return;
    busy = 1;
    int saved = errno;
    for (int fd = 3; fd < 4096; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0 || (flags & FD_CLOEXEC)) continue;
        char link[64], target[1024] = "";
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(link, target, sizeof target - 1);
        if (k <= 0) continue;
        target[k] = 0;
        if (strncmp(target, under, strlen(under)) != 0) continue;
        FILE *f = fopen(out, "a");
        if (f) { fprintf(f, "%s %d %s\n", where, fd, target); fclose(f); }
    }
    errno = saved;
    busy = 0;
}
#define REAL(name) static __typeof__(name) *real; if (!real) real = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)
DIR *fdopendir(int fd) { REAL(fdopendir); probe("fdopendir"); return real(fd); }
struct dirent *readdir(DIR *d) { REAL(readdir); probe("readdir"); return real(d); }
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) { REAL(pwrite); probe("pwrite"); return real(fd, b, n, o); }
int flock(int fd, int op) { REAL(flock); probe("flock"); return real(fd, op); }
int unlinkat(int fd, const char *p, int fl) { REAL(unlinkat); probe("unlinkat"); return real(fd, p, fl); }
int renameat(int a, const char *p, int b, const char *q) { REAL(renameat); probe("renameat"); return real(a, p, b, q); }
"""


@pytest.fixture(scope="module")
def probe_lib(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(d / "probe.so"), str(d / "probe.c"), "-ldl"], check=True)
    return d / "probe.so"


def test_no_descriptor_of_the_ram_folder_is_inherited_by_a_child(ort_host, models, probe_lib, quiet_env, tmp_path,
                                                                monkeypatch):
    """Between dup() and fdopendir() (stale cleanup, removal), the folder's and the base's descriptors had no
    FD_CLOEXEC: a child the host spawned then inherited the base, or the folder with its flock (keeping a
    dead opener's plaintext 'live'). Every descriptor under the base is close-on-exec at every step, for a
    clean open, a stale folder's removal and a refused open."""
    base = tempfile.mkdtemp(prefix="native-cloexec-", dir=SHARED_RAM_DIR)
    try:
        stale = Path(base, "ortseal-open-" + "0" * 32)
        stale.mkdir(mode=0o700)
        (stale / "t0.bin").write_bytes(b"left by a killed opener")
        out = tmp_path / "probe.out"
        monkeypatch.setenv(RUNTIME_DIR_ENV, base)
        monkeypatch.setenv("PROBE_UNDER", os.path.realpath(base))
        monkeypatch.setenv("PROBE_OUT", str(out))
        monkeypatch.setenv("LD_PRELOAD", str(probe_lib))
        # an ASan build wants its runtime first; the probe only wraps libc calls
        monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
        assert run_sealed(ort_host, models, "large", tmp_path).name == "ok"
        assert not stale.exists()  # removed (scanned: the probe ran through readdir)
        refused = run_sealed(ort_host, models, "large", tmp_path, "ep.context_enable", "1")
        assert refused.name == "unsafe_option"
        assert not out.exists(), out.read_text()
        assert os.listdir(base) == []
    finally:
        shutil.rmtree(base)


# -- another user, while the plaintext waits for ORT -----------------------------------------------------

@needs_root_setpriv
def test_another_user_cannot_reach_the_plaintext_while_it_waits(ort_host, models, quiet_env, tmp_path, monkeypatch):
    """While an opening holds its files (after the checks, before ORT reads them), nobody cannot read, write,
    list or replace them by path, nor through the host's /proc entries (fd, map_files, mem)."""
    base = tempfile.mkdtemp(prefix="native-reach-", dir=SHARED_RAM_DIR)
    monkeypatch.setenv(RUNTIME_DIR_ENV, base)
    holder = Holder(ort_host, models, "large")
    try:
        folder, pid = holder.folder, holder.proc.pid
        assert folder
        probes = {
            "read": f"cat {folder}/t0.bin", "write": f"echo x >> {folder}/t0.bin", "list": f"ls {folder}",
            "list-base": f"ls {base}", "replace": f"mv {folder} {base}/moved", "fd": f"ls /proc/{pid}/fd",
            "map_files": f"ls /proc/{pid}/map_files", "mem": f"head -c 1 /proc/{pid}/mem",
            "fd-file": f"cat /proc/{pid}/fd/*",
        }
        for what, script in probes.items():
            r = nobody_sh(script)
            assert r.returncode != 0 and r.stdout == "", (what, r.stdout, r.stderr)
        assert "folder-after -" in holder.release()
    finally:
        if holder.proc.poll() is None:
            holder.kill()
        left = os.listdir(base)
        shutil.rmtree(base)
    assert left == []


# -- the same uid, after the checks ----------------------------------------------------------------------

SAME_UID_WRITER = """
    import os, sys
    for i in range(5):
        fd = os.open(os.path.join(sys.argv[1], f"t{i}.bin"), os.O_WRONLY)
        os.pwrite(fd, bytes(4 << 20), 0)
        os.close(fd)
    print("written", flush=True)
"""


@pytest.mark.xfail(strict=True, reason="ORT reads the RAM files by path after the checks: a process of the same uid "
                   "(which under Yama ptrace_scope>=1, or against a non-dumpable host, cannot touch the host's "
                   "memory) can rewrite them in that window. A sealed memfd (F_SEAL_WRITE) as /proc/self/fd/N "
                   "would close it, but ORT 1.32's external-data path validation refuses that path (its canonical "
                   "form is /memfd:...). docs/sealed-models.md states the trade-off; ORTSEAL_ROUTE_MEMORY has no "
                   "such window")
def test_same_uid_writer_cannot_change_the_weights_ort_reads(ort_host, models, quiet_env, tmp_path, monkeypatch):
    """Between ortseal's checks and ORT's read, a process of the same uid rewrites the RAM files with zeros:
    the session must still compute with the checked weights."""
    base = tempfile.mkdtemp(prefix="native-sameuid-", dir=SHARED_RAM_DIR)
    monkeypatch.setenv(RUNTIME_DIR_ENV, base)
    d, folders = models
    plain = plain_outputs(ort_host, models, "large", tmp_path)
    host = subprocess.Popen([str(ort_host.exe), "hold", str(d / "keys.json"), str(folders["large"] / "sealed.onnx"),
                             str(d / "in.bin"), str(tmp_path / "out.bin")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        folder = host.stdout.readline().split()[1]
        writer = subprocess.run([sys.executable, "-c", textwrap.dedent(SAME_UID_WRITER), folder], capture_output=True,
                                text=True, timeout=60, check=False)
        assert writer.stdout.strip() == "written", writer.stderr
        out, _ = host.communicate("go\ngo\n", timeout=300)
        assert host.returncode == 0 and "ran" in out, out
        assert read_tensors(tmp_path / "out.bin")["x5"].tobytes() == plain["x5"].tobytes()
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        shutil.rmtree(base)


# -- a plain (excluded) tensor copied into a RAM file before its digest is known -----------------------------

def test_rewritten_plain_external_tensor_in_a_ram_file_is_refused(ort_host, models, quiet_env, tmp_path, monkeypatch):
    """A tensor left plain (--exclude) is copied into its RAM file a MiB at a time and hashed as it goes: the
    model opens bit-identical through the RAM route, and with one byte of it rewritten (a keyless attacker)
    the open is refused after the copy, leaving no file and no folder."""
    import onnx

    import ortseal
    from ortseal import KeySet

    d, folders = models
    keys = KeySet.from_json((d / "keys.json").read_text())
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    ortseal.seal_model(folders["large"] / "model.onnx", deploy / "sealed.onnx", keys, exclude="^w4$", progress=False)
    model = onnx.load(str(deploy / "sealed.onnx"), load_external_data=False)
    w4 = next(t for t in model.graph.initializer if t.name == "w4")
    info = {e.key: e.value for e in w4.external_data}
    base = tempfile.mkdtemp(prefix="native-plain-", dir=SHARED_RAM_DIR)
    monkeypatch.setenv(RUNTIME_DIR_ENV, base)
    monkeypatch.setenv(ROUTE_ENV, "ram")
    try:
        def run() -> str:
            return ort_host("sealed", d / "keys.json", "-", 0, deploy / "sealed.onnx", d / "in.bin",
                            tmp_path / "out.bin")

        assert run().name == "ok"
        plain = plain_outputs(ort_host, models, "large", tmp_path)
        assert read_tensors(tmp_path / "out.bin")["x5"].tobytes() == plain["x5"].tobytes()
        data = deploy / info["location"]
        raw = bytearray(data.read_bytes())
        raw[int(info["offset"]) + int(info["length"]) - 1] ^= 1  # its last MiB: the rest is in the file by then
        data.write_bytes(bytes(raw))
        refused = run()
        assert refused.name == "tampered" and "differ from those that were signed" in refused.message, refused
        assert os.listdir(base) == []
    finally:
        shutil.rmtree(base)


# -- the route choice and odd arguments --------------------------------------------------------------------

MISUSE = r"""
#include "ortseal.h"
#include <stdio.h>
int main(int argc, char **argv) {
    ortseal_keyset *ks = NULL;
    ortseal_error err = {0};
    if (argc != 3 || ortseal_keyset_load(argv[1], NULL, 0, &ks, &err)) return 100;
    const int routes[] = {3, -1, 255, 0x7fffffff, -0x7fffffff - 1};
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        ortseal_model *m = (ortseal_model *)&err; /* garbage a host may have left in it */
        ortseal_code c = ortseal_model_open_route(argv[2], NULL, 0, NULL, ks, 0, NULL, (ortseal_route)routes[i], &m, &err);
        printf("route %d %s %s %s\n", routes[i], ortseal_code_name(c), m ? "set" : "null", err.message);
    }
    ortseal_model *m = (ortseal_model *)&err;
    ortseal_code c = ortseal_model_open_route(argv[2], NULL, 0, NULL, NULL, 0, NULL, ORTSEAL_ROUTE_RAM_FOLDER, &m, NULL);
    printf("no-keyset %s %s\n", ortseal_code_name(c), m ? "set" : "null");
    m = (ortseal_model *)&err;
    c = ortseal_model_open_route(NULL, NULL, 0, NULL, ks, 0, NULL, ORTSEAL_ROUTE_RAM_FOLDER, &m, NULL);
    printf("no-model %s %s\n", ortseal_code_name(c), m ? "set" : "null");
    printf("no-out %s\n", ortseal_code_name(ortseal_model_open_route(argv[2], NULL, 0, NULL, ks, 0, NULL,
           ORTSEAL_ROUTE_RAM_FOLDER, NULL, NULL)));
    printf("folder-of-null %s\n", ortseal_model_folder(NULL) ? "set" : "null");
    ortseal_model_drop_weights(NULL);
    ortseal_model_free(NULL);
    c = ortseal_model_open_route(argv[2], NULL, 0, NULL, ks, 0, NULL, ORTSEAL_ROUTE_RAM_FOLDER, &m, NULL);
    printf("ram %s %s\n", ortseal_code_name(c), c == ORTSEAL_OK && ortseal_model_folder(m) ? "folder" : "none");
    if (c == ORTSEAL_OK) {
        ortseal_model_drop_weights(m);
        ortseal_model_drop_weights(m); /* twice: nothing left to drop */
        printf("dropped %s\n", ortseal_model_folder(m) ? "folder" : "none");
        ortseal_model_free(m);
    }
    ortseal_keyset_free(ks);
    return 0;
}
"""


def test_bad_routes_and_odd_arguments_are_misuse(models, quiet_env, tmp_path, monkeypatch):
    """Routes outside the enum and missing arguments: MISUSE, *out set to NULL (a host that frees what it got
    on failure frees nothing), no folder made; the folder goes with the weights, dropped twice or not."""
    from native_host import BUILD, build

    folder = build()
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    sanitize = ["-fsanitize=address,undefined"] if "SANITIZE=ON" in os.environ.get("ORTSEAL_NATIVE_CMAKE_ARGS", "") else []
    (tmp_path / "misuse.c").write_text(MISUSE)
    exe = tmp_path / "misuse"
    subprocess.run([cc, *sanitize, "-I", str(ROOT / "native" / "include"), str(tmp_path / "misuse.c"), "-o", str(exe),
                    f"-L{folder}", "-lortseal", f"-Wl,-rpath,{BUILD}"], check=True)
    base = tempfile.mkdtemp(prefix="native-misuse-", dir=SHARED_RAM_DIR)
    monkeypatch.setenv(RUNTIME_DIR_ENV, base)
    d, folders = models
    try:
        r = subprocess.run([str(exe), str(d / "keys.json"), str(folders["large"] / "sealed.onnx")], capture_output=True,
                           text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        for line in lines[:5]:
            number, code, out = line.split()[1:4]
            assert code == "misuse" and out == "null" and f"unknown route {number}" in line, line
        assert lines[5:] == ["no-keyset misuse null", "no-model misuse null", "no-out misuse", "folder-of-null null",
                             "ram ok folder", "dropped none"]
        assert os.listdir(base) == []
    finally:
        shutil.rmtree(base)


# -- a killed C opener's plaintext, removed by the next open ---------------------------------------------------

@pytest.mark.parametrize("next_open", ["c", "python"])
def test_killed_c_openers_plaintext_is_removed_by_the_next_open(next_open, ort_host, models, quiet_env, tmp_path,
                                                               monkeypatch):
    """kill -9 of a C opener holding its files leaves plaintext on tmpfs; the next large open, by a C host or
    by ortseal.InferenceSession, removes it first (its lock is free) and opens bit-identical."""
    import numpy as np

    import ortseal
    from ortseal import KeySet

    base = tempfile.mkdtemp(prefix="native-killed-", dir=SHARED_RAM_DIR)
    monkeypatch.setenv(RUNTIME_DIR_ENV, base)
    d, folders = models
    try:
        dead = Holder(ort_host, models, "large")
        dead.kill()
        assert dead.folder and sorted(os.listdir(dead.folder)) == [f"t{i}.bin" for i in range(5)]
        plain = plain_outputs(ort_host, models, "large", tmp_path)["x5"]
        if next_open == "c":
            assert run_sealed(ort_host, models, "large", tmp_path).name == "ok"
            got = read_tensors(tmp_path / "out.bin")["x5"]
        else:
            keys = KeySet.from_json((d / "keys.json").read_text())
            x0 = read_tensors(d / "in.bin")["x0"]
            session = ortseal.InferenceSession(str(folders["large"] / "sealed.onnx"), keys=keys,
                                               providers=["CPUExecutionProvider"])
            got = np.asarray(session.run(None, {"x0": x0})[0])
        assert got.tobytes() == plain.tobytes()
        assert not os.path.exists(dead.folder) and os.listdir(base) == []
    finally:
        shutil.rmtree(base)
