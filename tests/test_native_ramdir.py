"""libortseal's private RAM folder (native/src/os_posix.c, the C side of ortseal.model.ramdir): models with
16 MiB of large tensors or more open into 0600 files in a flock-ed 0700 folder that ORT reads, under the same
base-folder rules and names as Python, so that Python and C processes share a base; the attacks of
tests/test_ramdir.py that apply, carried out against the C++ host."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from native_host import Host, build, read_tensors, write_tensors
from onnx import TensorProto, helper, numpy_helper

# the fixtures and attack helpers of the Python side's tests, used as they are (pytest finds imported fixtures)
from test_ramdir import (  # noqa: F401
    BAD_BASES,
    INSIDE_ENV,
    MAKES_PRIVATE_SHM,
    NOBODY,
    NOBODY_PYTHON,
    PLANT,
    PRIVATE_SHM,
    RACER,
    REASONS,
    ROOT,
    _cleanup,
    _state,
    as_nobody,
    fresh_user_base,
    make_bad_base,
    needs_second_user,
    needs_shm,
    ortseal_entries,
    quiet_env,
    remove_anything,
    victim,
)

import ortseal
from ortseal import KeySet
from ortseal.model.ramdir import FOLDER_PREFIX, NEW_PREFIX, RUNTIME_DIR_ENV, SHARED_RAM_DIR, remove_stale_folders

ROUTE_ENV = "ORTSEAL_HOST_ROUTE"  # native/tests/ort_host.cpp: auto (unset), memory, ram
DIM = 1024


@pytest.fixture(scope="module")
def ort_host() -> Host:
    return Host(build(ort=True), "ortseal_ort_host")


def _matmul_model(path: Path, layers: int) -> None:
    """``layers`` 1024x1024 float32 MatMul+Tanh layers (4 MiB each), weights in one external data file."""
    rng = np.random.default_rng(layers)
    nodes, inits = [], []
    for i in range(layers):
        w = (rng.standard_normal((DIM, DIM), dtype=np.float32) / 32).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"x{i + 1}"])]
    graph = helper.make_graph(nodes, "ram", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [2, DIM])],
                              [helper.make_tensor_value_info(f"x{layers}", TensorProto.FLOAT, [2, DIM])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A large model (20 MiB of weights: the RAM route) and a small one (4 MiB: memory), sealed by Python."""
    d = tmp_path_factory.mktemp("native-ramdir")
    keys = KeySet.generate()
    (d / "keys.json").write_text(keys.to_json())
    out = {}
    for name, layers in (("large", 5), ("small", 1)):
        folder = d / name
        folder.mkdir()
        _matmul_model(folder / "model.onnx", layers)
        ortseal.seal_model(folder / "model.onnx", folder / "sealed.onnx", keys, progress=False)
        out[name] = folder
    write_tensors(d / "in.bin", {"x0": np.random.default_rng(1).standard_normal((2, DIM)).astype(np.float32)})
    return d, out


@pytest.fixture
def base(quiet_env, monkeypatch):
    """A private base (0700, on /dev/shm's tmpfs) named by $ORTSEAL_RUNTIME_DIR; must be empty at the end."""
    if not os.path.isdir(SHARED_RAM_DIR):
        pytest.skip("no /dev/shm")
    folder = tempfile.mkdtemp(prefix="native-base-", dir=SHARED_RAM_DIR)
    monkeypatch.setenv(RUNTIME_DIR_ENV, folder)
    monkeypatch.delenv(ROUTE_ENV, raising=False)
    yield folder
    left = os.listdir(folder)
    subprocess.run(["rm", "-rf", folder], check=True)
    assert left == [], f"left behind: {left}"


def run_sealed(ort_host: Host, models, which: str, tmp: Path, *extra: str):
    d, folders = models
    return ort_host("sealed", d / "keys.json", "-", 0, folders[which] / "sealed.onnx", d / "in.bin", tmp / "out.bin", *extra)


def plain_outputs(ort_host: Host, models, which: str, tmp: Path) -> dict:
    d, folders = models
    assert ort_host("plain", folders[which] / "model.onnx", d / "in.bin", tmp / "plain.bin").name == "ok"
    return read_tensors(tmp / "plain.bin")


class Holder:
    """``ortseal_ort_host hold``: a C process that has opened a model and holds it (its folder live) until
    released."""

    def __init__(self, ort_host: Host, models, which: str, env: dict | None = None) -> None:
        d, folders = models
        self.proc = subprocess.Popen([str(ort_host.exe), "hold", str(d / "keys.json"), str(folders[which] / "sealed.onnx")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["folder"], line + [self.proc.stderr.read()]
        self.folder = None if line[1] == "-" else line[1]

    def release(self) -> str:
        out, err = self.proc.communicate("go\n", timeout=300)
        assert self.proc.returncode == 0, out + err
        return out

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def openings(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith((FOLDER_PREFIX, NEW_PREFIX)))


# -- the route --------------------------------------------------------------------------------------

def test_large_model_opens_through_a_private_ram_folder_bit_identical(ort_host, models, base, tmp_path):
    holder = Holder(ort_host, models, "large")
    try:
        folder = holder.folder
        assert folder and os.path.dirname(folder) == os.path.realpath(base)
        assert os.path.basename(folder).startswith(FOLDER_PREFIX)
        st = os.lstat(folder)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
        files = sorted(os.listdir(folder))
        assert files == [f"t{i}.bin" for i in range(5)]  # one file per tensor, nothing else (no graph file)
        for name in files:
            fst = os.lstat(os.path.join(folder, name))
            assert stat.S_ISREG(fst.st_mode) and stat.S_IMODE(fst.st_mode) == 0o600 and fst.st_size == DIM * DIM * 4
        # the opened plaintext is exactly the source model's tensor
        w = numpy_helper.to_array(onnx.load(str(models[1]["large"] / "model.onnx")).graph.initializer[0])
        assert w.tobytes() in {Path(folder, n).read_bytes() for n in files}
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:  # locked while the opening lives: no stale cleanup, Python's or C's, can take it
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        out = holder.release()
    finally:
        if holder.proc.poll() is None:
            holder.kill()
    assert "folder-after -" in out  # removed as soon as the session existed
    assert not os.path.exists(folder)
    assert run_sealed(ort_host, models, "large", tmp_path).name == "ok"
    sealed = read_tensors(tmp_path / "out.bin")
    plain = plain_outputs(ort_host, models, "large", tmp_path)
    assert plain.keys() == sealed.keys() and all(plain[k].tobytes() == sealed[k].tobytes() for k in plain)


def test_small_model_and_the_off_switches_stay_in_memory(ort_host, models, base, tmp_path, monkeypatch):
    plain = plain_outputs(ort_host, models, "small", tmp_path)
    holder = Holder(ort_host, models, "small")
    assert holder.folder is None  # under 16 MiB: no folder, no files
    holder.release()
    for env, value in ((RUNTIME_DIR_ENV, "none"), (ROUTE_ENV, "memory")):
        monkeypatch.setenv(env, value)
        holder = Holder(ort_host, models, "large")
        assert holder.folder is None, (env, value)
        holder.release()
        monkeypatch.setenv(RUNTIME_DIR_ENV, base)
        monkeypatch.delenv(ROUTE_ENV, raising=False)
    # the explicit choice: the RAM folder for a small model too, bit-identical
    monkeypatch.setenv(ROUTE_ENV, "ram")
    holder = Holder(ort_host, models, "small")
    assert holder.folder and os.path.dirname(holder.folder) == os.path.realpath(base)
    holder.release()
    assert run_sealed(ort_host, models, "small", tmp_path).name == "ok"
    assert read_tensors(tmp_path / "out.bin")["x1"].tobytes() == plain["x1"].tobytes()
    monkeypatch.setenv(RUNTIME_DIR_ENV, "none")  # asked for, but turned off: an error that says so
    refused = run_sealed(ort_host, models, "small", tmp_path)
    assert refused.name == "io" and f"{RUNTIME_DIR_ENV}=none" in refused.message


def test_refusals_leave_no_folder_and_no_file(ort_host, models, base, tmp_path):
    d, folders = models
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sealed.onnx").write_bytes((folders["large"] / "sealed.onnx").read_bytes())
    for data in folders["large"].glob("sealed.onnx*.data"):
        raw = bytearray(data.read_bytes())
        raw[-100] ^= 1  # in the last tensor's blob: the others are already in their files when it fails
        (broken / data.name).write_bytes(raw)
    assert list(broken.glob("*.data"))
    refused = ort_host("sealed", d / "keys.json", "-", 0, broken / "sealed.onnx", d / "in.bin", tmp_path / "o.bin")
    assert refused.name == "tampered", refused
    assert os.listdir(base) == []
    # refused by the session options, after the model was opened into its folder
    refused = run_sealed(ort_host, models, "large", tmp_path, "ep.context_enable", "1")
    assert refused.name == "unsafe_option"
    assert os.listdir(base) == []


@needs_shm
@pytest.mark.parametrize("kind", BAD_BASES)
def test_bad_runtime_dir_option_is_refused_by_c(kind, ort_host, models, quiet_env, fresh_user_base, victim, tmp_path,
                                                monkeypatch):
    path = make_bad_base(kind, tmp_path, victim)
    try:
        before = _state(path)
        monkeypatch.setenv(RUNTIME_DIR_ENV, path)
        for which in ("large", "small"):  # checked for small models too: a misconfiguration shows at once
            refused = run_sealed(ort_host, models, which, tmp_path)
            assert refused.name == "unsafe_option", refused
            assert REASONS[kind] in refused.message and RUNTIME_DIR_ENV in refused.message
        assert _state(path) == before  # nothing made in it, nothing chmod-ed (through a link or not)
    finally:
        _cleanup(path, tmp_path)


@needs_shm
@pytest.mark.parametrize("kind", ["symlink", "wrong-mode", "on-disk", "fifo", "file"])
def test_bad_xdg_runtime_dir_is_skipped_by_c(kind, ort_host, models, quiet_env, fresh_user_base, victim, tmp_path,
                                            monkeypatch):
    path = make_bad_base(kind, tmp_path, victim)
    try:
        before = _state(path)
        env = {**os.environ, "XDG_RUNTIME_DIR": path}
        holder = Holder(ort_host, models, "large", env)
        assert holder.folder and os.path.dirname(holder.folder) == fresh_user_base
        st = os.lstat(fresh_user_base)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
        holder.release()
        assert os.listdir(fresh_user_base) == []
        assert _state(path) == before
    finally:
        _cleanup(path, tmp_path)


def test_plants_under_opening_folder_names_are_never_followed(ort_host, models, base, victim, tmp_path):
    """A link to a folder full of 'stale' ones, FIFOs, files and an old half-made link named like opening
    folders: the C open's stale cleanup neither follows nor removes them, and the open works."""
    plants = {FOLDER_PREFIX + "link": "link", NEW_PREFIX + "link": "link", FOLDER_PREFIX + "fifo": "fifo",
              FOLDER_PREFIX + "file": "file"}
    if os.getuid() == 0:  # a folder of another uid's, unlocked: not this user's to remove
        plants[FOLDER_PREFIX + "foreign"] = "foreign"
    for name, kind in plants.items():
        p = os.path.join(base, name)
        if kind == "foreign":
            os.mkdir(p, 0o700)
            Path(p, "t0.bin").write_bytes(b"theirs")
            os.chown(Path(p, "t0.bin"), NOBODY, NOBODY)
            os.chown(p, NOBODY, NOBODY)
        elif kind == "link":
            os.symlink(victim, p)
            os.utime(p, (0, 0), follow_symlinks=False)
        elif kind == "fifo":
            os.mkfifo(p, 0o600)
        else:
            Path(p).write_bytes(b"x")
    assert run_sealed(ort_host, models, "large", tmp_path).name == "ok"
    assert sorted(os.listdir(base)) == sorted(plants)  # only the plants: nothing of ours left, none of them touched
    if "foreign" in plants.values():
        assert Path(base, FOLDER_PREFIX + "foreign", "t0.bin").read_bytes() == b"theirs"
    for name, kind in plants.items():
        if kind == "foreign":
            subprocess.run(["rm", "-rf", os.path.join(base, name)], check=True)
        else:
            os.unlink(os.path.join(base, name))


def _small_tmpfs(folder: Path, options: str) -> list[str] | None:
    """A command prefix running its command with a tmpfs of ``options`` mounted on ``folder`` (private mount
    namespace), or None where this process cannot mount."""
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
           f'mount -t tmpfs -o {options},mode=0700 ortseal-test "$1" && shift && exec "$@"', "sh", str(folder)]
    if os.getuid() != 0 or subprocess.run(["which", "unshare"], capture_output=True, check=False).returncode or \
            subprocess.run(cmd + ["true"], capture_output=True, check=False).returncode:
        return None
    return cmd


@pytest.mark.parametrize("options", ["size=8m", "nr_inodes=3"])
def test_no_room_in_the_ram_folder_opens_in_memory(ort_host, models, quiet_env, tmp_path, monkeypatch, options):
    """A 8 MiB tmpfs (as a container's /dev/shm) has no room for 20 MiB of weights: found by the free-space
    check; one with 3 inodes lets the folder be made but not its files: found while filling. Either way the
    default route opens in memory, bit-identical, and the explicit RAM route is an error that says why."""
    base = tmp_path / "small-base"
    base.mkdir(mode=0o700)
    prefix = _small_tmpfs(base, options)
    if prefix is None:
        pytest.skip("needs root and mount namespaces (unshare --mount) to mount a small tmpfs")
    d, folders = models
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(base))

    def host(*args) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, str(ort_host.exe), "sealed", str(d / "keys.json"), "-", "0",
                               str(folders["large"] / "sealed.onnx"), str(d / "in.bin"), str(tmp_path / "out.bin"),
                               *args], capture_output=True, text=True, timeout=300, check=False)

    done = host()
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr
    plain = plain_outputs(ort_host, models, "large", tmp_path)
    assert read_tensors(tmp_path / "out.bin")["x5"].tobytes() == plain["x5"].tobytes()
    monkeypatch.setenv(ROUTE_ENV, "ram")
    done = host()
    assert done.returncode != 0 and "error" in done.stdout, done.stdout + done.stderr
    assert ("less than" in done.stdout) if options.startswith("size") else ("No space left" in done.stdout)


# -- Python and C sharing a base -------------------------------------------------------------------

HOLD_PYTHON = """
    import sys
    from ortseal.model.ramdir import private_folder
    with private_folder(sys.argv[1]) as folder:
        fd = folder.create("t0.bin")
        print(folder.path, flush=True)
        sys.stdin.readline()
"""


def test_c_stale_cleanup_spares_a_live_python_opening_and_removes_a_dead_one(ort_host, models, base, tmp_path):
    live = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD_PYTHON), base], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    dead = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD_PYTHON), base], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        live_folder, dead_folder = live.stdout.readline().strip(), dead.stdout.readline().strip()
        dead.kill()
        dead.wait()
        assert os.path.isdir(dead_folder)  # a killed opener leaves its folder, unlocked
        assert run_sealed(ort_host, models, "large", tmp_path).name == "ok"  # its stale cleanup runs first
        assert not os.path.exists(dead_folder)
        assert os.path.isfile(os.path.join(live_folder, "t0.bin"))  # locked: spared
    finally:
        live.communicate("go\n", timeout=60)
    assert live.returncode == 0 and not os.path.exists(live_folder)


def test_python_stale_cleanup_spares_a_live_c_opening_and_removes_a_dead_one(ort_host, models, base):
    live, dead = Holder(ort_host, models, "large"), Holder(ort_host, models, "large")
    try:
        assert live.folder and dead.folder and live.folder != dead.folder
        dead.kill()
        assert os.listdir(dead.folder)  # killed while holding its files
        removed = remove_stale_folders(base)
        assert removed == [dead.folder] and not os.path.exists(dead.folder)
        assert sorted(os.listdir(live.folder)) == [f"t{i}.bin" for i in range(5)]  # locked: spared
        assert "folder-after -" in live.release()
    finally:
        for h in (live, dead):
            if h.proc.poll() is None:
                h.kill()
    assert openings(base) == []


# -- a second local user -----------------------------------------------------------------------------

@needs_second_user
@needs_shm
@pytest.mark.parametrize("kind", ["symlink", "own-folder", "own-sticky-folder", "fifo", "file"])
def test_another_user_squatting_the_per_user_folder_against_c(kind, ort_host, models, quiet_env, fresh_user_base,
                                                              victim, tmp_path, monkeypatch):
    as_nobody(PLANT, kind, fresh_user_base, str(victim))
    planted = _state(fresh_user_base)
    holder = Holder(ort_host, models, "large")
    assert holder.folder is None  # skipped: the open goes on in memory
    holder.release()
    assert run_sealed(ort_host, models, "large", tmp_path).name == "ok"
    plain = plain_outputs(ort_host, models, "large", tmp_path)
    assert read_tensors(tmp_path / "out.bin")["x5"].tobytes() == plain["x5"].tobytes()
    monkeypatch.setenv(RUNTIME_DIR_ENV, SHARED_RAM_DIR)  # pointed at /dev/shm explicitly: refused, typed
    refused = run_sealed(ort_host, models, "large", tmp_path)
    assert refused.name == "unsafe_option" and fresh_user_base in refused.message
    assert _state(fresh_user_base) == planted  # the squatter's object untouched: not chmod-ed, emptied, followed
    assert NOBODY != os.getuid()


@needs_second_user
@needs_shm
@pytest.mark.parametrize("route", ["default", "option"])
def test_another_user_racing_c_openings(route, ort_host, models, quiet_env, fresh_user_base, victim, tmp_path,
                                        monkeypatch):
    """tests/test_ramdir.py's racer (nobody) against 20 C opens: it takes the base name as a link to the
    victim's folder, a folder of its own, a FIFO or a file, and plants links and FIFOs named like opening
    folders in /dev/shm and in the base. Every open works or (the option route) is refused, typed; nothing of
    the victim's is touched and nothing is left behind."""
    if route == "default":
        base = fresh_user_base
    else:
        base = os.path.join(SHARED_RAM_DIR, f"app-{os.getpid()}-{len(os.listdir(SHARED_RAM_DIR))}")
        monkeypatch.setenv(RUNTIME_DIR_ENV, base)
    shm_before = ortseal_entries(SHARED_RAM_DIR)
    racer = subprocess.Popen([*NOBODY_PYTHON, "-c", textwrap.dedent(RACER), str(victim), base, SHARED_RAM_DIR],
                             cwd="/", stdout=subprocess.PIPE, text=True)
    outcomes = {"ram": 0, "memory": 0, "refused": 0}
    try:
        assert racer.stdout.readline().strip() == "ready"
        for i in range(20):
            remove_anything(base)
            if i % 2:  # a C process starts slower than the racer loops: half the time the victim is first
                with contextlib.suppress(FileExistsError):
                    os.mkdir(base, 0o700)
            if route == "option":
                result = run_sealed(ort_host, models, "large", tmp_path)
                assert result.name in ("ok", "unsafe_option"), result
                outcomes["ram" if result.name == "ok" else "refused"] += 1
            else:
                holder = Holder(ort_host, models, "large")
                assert holder.folder is None or os.path.dirname(holder.folder) == base
                outcomes["memory" if holder.folder is None else "ram"] += 1
                assert "folder-after -" in holder.release()
            st = os.lstat(base)
            if st.st_uid == os.getuid() and stat.S_ISDIR(st.st_mode):
                assert os.listdir(base) == []  # nothing left behind, nothing planted inside
    finally:
        racer.send_signal(signal.SIGTERM)
        out, _ = racer.communicate(timeout=60)
        for entry in os.scandir(SHARED_RAM_DIR):  # the attacker's plants
            if entry.name.startswith((FOLDER_PREFIX, NEW_PREFIX)) and entry.stat(follow_symlinks=False).st_uid == NOBODY:
                remove_anything(entry.path)
        remove_anything(base)
    stats = json.loads(out.strip().splitlines()[-1])
    print(route, outcomes, stats)
    assert racer.returncode == 0 and stats["shm_planted"] > 0  # the attacker really ran
    assert sum(outcomes.values()) == 20 and outcomes["ram"] > 0  # opened through the RAM folder under attack too
    assert ortseal_entries(SHARED_RAM_DIR) <= shm_before  # no opening folder made in /dev/shm itself


@pytest.mark.slow
def test_c_attacks_in_a_private_dev_shm():
    """The second-user tests above, in a mount namespace with a fresh tmpfs on /dev/shm (as root)."""
    if not MAKES_PRIVATE_SHM:
        pytest.skip("needs root, setpriv and mount namespaces (unshare --mount); the attacks then run directly")
    r = subprocess.run(PRIVATE_SHM + [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                                      __file__, "-k", "another_user"],
                       env={**os.environ, INSIDE_ENV: "1"}, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                       check=False)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-4000:]
    assert "7 passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-4000:]
