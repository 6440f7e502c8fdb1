"""The private RAM folders sealed models open into (ortseal.model.ramdir): real folders, real files, and a
second local user (``setpriv`` as root) planting links, FIFOs, files and folders where ortseal works."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from models import transformer_like

import ortseal
from ortseal import KeySet, OrtsealError, UnsafeOptionError
from ortseal.model import ramdir
from ortseal.model.ramdir import (
    FOLDER_PREFIX,
    NEW_PREFIX,
    RUNTIME_DIR_ENV,
    SHARED_RAM_DIR,
    STALE_NEW_SECONDS,
    is_ram_backed,
    private_folder,
    remove_stale_folders,
    runtime_dirs,
)

CPU = ["CPUExecutionProvider"]
ROOT = Path(__file__).parents[1]
USER_BASE = f"{SHARED_RAM_DIR}/ortseal-{os.getuid()}"
NOBODY = 65534  # setpriv --reuid=nobody

needs_shm = pytest.mark.skipif(not os.path.isdir(SHARED_RAM_DIR) or not is_ram_backed(SHARED_RAM_DIR),
                               reason="no RAM-backed /dev/shm here")


def _nobody_python() -> list[str] | None:
    """``setpriv`` running a python as nobody, or None where this process cannot switch users."""
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        return None
    for python in (sys.executable, "/usr/bin/python3"):
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", python]
        with_probe = subprocess.run(cmd + ["-c", "import os; print(os.getuid())"], capture_output=True, text=True,
                                    cwd="/")
        if with_probe.returncode == 0 and with_probe.stdout.strip() == str(NOBODY):
            return cmd
    return None


NOBODY_PYTHON = _nobody_python()
INSIDE_ENV = "ORTSEAL_TEST_PRIVATE_SHM"  # set for the pytest that test_attacks_in_a_private_dev_shm runs
INSIDE = os.environ.get(INSIDE_ENV) == "1"
PRIVATE_SHM = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs -o mode=1777,size=1g ortseal-test /dev/shm && exec "$@"', "sh"]


def _can_make_private_shm() -> bool:
    if INSIDE or NOBODY_PYTHON is None or shutil.which("unshare") is None:
        return False
    return subprocess.run(PRIVATE_SHM + ["true"], capture_output=True).returncode == 0


MAKES_PRIVATE_SHM = _can_make_private_shm()
# The attacks plant links named like opening folders in /dev/shm: where a mount namespace can be had, they
# run in a /dev/shm of their own (test_attacks_in_a_private_dev_shm), so that no other process on the
# machine sees them; elsewhere they run here directly.
needs_second_user = pytest.mark.skipif(NOBODY_PYTHON is None or MAKES_PRIVATE_SHM,
                                       reason="needs root with setpriv (to run the attacker as a second uid, nobody), "
                                       "as CI runs" if NOBODY_PYTHON is None else
                                       "run by test_attacks_in_a_private_dev_shm, in a /dev/shm of their own")


def as_nobody(script: str, *args: str) -> str:
    r = subprocess.run([*NOBODY_PYTHON, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                       cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def fs_magic(path: str) -> int:
    """The file system's magic number as coreutils ``stat -f`` reads it: the oracle for is_ram_backed."""
    return int(subprocess.run(["stat", "-f", "-c", "%t", path], capture_output=True, text=True,
                              check=True).stdout, 16)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (links not followed): type, owner, mode and content digest."""
    out: dict[str, tuple] = {".": (os.lstat(folder).st_mode, os.lstat(folder).st_uid)}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            out[str(p.relative_to(folder))] = (st.st_mode, st.st_uid, digest)
    return out


def remove_anything(path: str) -> None:
    """Remove whatever is at ``path`` (as root: also what the attacker planted), never following a link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        aside = f"{path}.removed-{secrets.token_hex(4)}"  # out of the racing attacker's way first
        os.rename(path, aside)
        shutil.rmtree(aside)  # fd-based on Linux: never follows a link inside
    else:
        os.unlink(path)


@pytest.fixture
def victim():
    """A folder of this user's on tmpfs, 0700, holding files and folders named like ortseal's: if ortseal ever
    followed a link to it, it would pass every check, and stale cleanup would find 'stale' folders in it."""
    if not os.path.isdir(SHARED_RAM_DIR):
        pytest.skip("no /dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="victim-", dir=SHARED_RAM_DIR))
    (folder / "notes.txt").write_bytes(secrets.token_bytes(4096))
    for name in (FOLDER_PREFIX + "bait", NEW_PREFIX + "bait", "sub"):
        (folder / name).mkdir(mode=0o700)
        (folder / name / "t0.bin").write_bytes(secrets.token_bytes(1000))
    old = os.stat(folder).st_mtime - 10 * STALE_NEW_SECONDS
    os.utime(folder / (NEW_PREFIX + "bait"), (old, old))
    before = snapshot(folder)
    yield folder
    assert snapshot(folder) == before, "a file of the victim's was changed or deleted"
    shutil.rmtree(folder)


@pytest.fixture
def fresh_user_base():
    """/dev/shm/ortseal-<uid> removed before and after the test (as the test leaves it: planted or not)."""
    remove_anything(USER_BASE)
    yield USER_BASE
    remove_anything(USER_BASE)


@pytest.fixture
def quiet_env(monkeypatch):
    monkeypatch.delenv(RUNTIME_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(ramdir, "_warned", set())  # each test sees its own warnings


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("ramdir")
    transformer_like(d / "model.onnx")
    keys = KeySet.generate()
    ortseal.seal_model(d / "model.onnx", d / "sealed.onnx", keys, min_bytes=64, progress=False)
    feeds = {"ids": np.random.default_rng(0).integers(0, 512, (2, 16), dtype=np.int64)}
    expected = ort.InferenceSession(str(d / "model.onnx"), providers=CPU).run(None, feeds)
    return d / "sealed.onnx", keys, feeds, expected


def open_and_run(model, monkeypatch, caplog) -> str:
    """Open the sealed model through the RAM-file route if any base is usable; check its outputs are
    bit-identical to the plain model's. Returns the folder it opened into, or "memory"."""
    path, keys, feeds, expected = model
    monkeypatch.setattr("ortseal.model.open.SMALL_MODEL_BYTES", 0)  # every open goes through RAM files
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="ortseal"):
        got = ortseal.InferenceSession(str(path), providers=CPU, keys=keys).run(None, feeds)
    assert [g.tobytes() for g in got] == [e.tobytes() for e in expected]
    opened = [r.args[2] for r in caplog.records if r.msg.startswith("ortseal: %s verified and decrypted")
              and r.args[2] != "memory"]
    if opened:
        assert not os.path.exists(opened[0]), "the opening folder outlived the session"
        return opened[0]
    assert "opening in memory instead" in caplog.text
    return "memory"


def ortseal_entries(folder: str) -> set[str]:
    """This user's entries in ``folder`` named like opening folders."""
    with os.scandir(folder) as it:
        return {e.name for e in it if e.name.startswith((FOLDER_PREFIX, NEW_PREFIX))
                and e.stat(follow_symlinks=False).st_uid == os.getuid()}


# -- the file system type ----------------------------------------------------------------------------

def test_is_ram_backed_agrees_with_stat_f(tmp_path):
    paths = [p for p in (SHARED_RAM_DIR, str(tmp_path), "/proc", "/", str(ROOT)) if os.path.exists(p)]
    for p in paths:
        expected = fs_magic(p) in (0x01021994, 0x858458F6)
        assert is_ram_backed(p) is expected, p
        fd = os.open(p, os.O_RDONLY)
        try:
            assert is_ram_backed(fd) is expected, p
        finally:
            os.close(fd)
    assert not is_ram_backed("/proc") and not is_ram_backed(str(tmp_path / "missing"))


def test_is_ram_backed_knows_ramfs(tmp_path):
    mount = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t ramfs ortseal-test "$1" && shift && exec "$@"', "sh", str(tmp_path)]
    if os.getuid() != 0 or shutil.which("unshare") is None or \
            subprocess.run(mount + ["true"], capture_output=True).returncode != 0:
        pytest.skip("needs root and mount namespaces to mount a ramfs")
    r = subprocess.run(mount + ["stat", "-f", "-c", "%t", str(tmp_path)], capture_output=True, text=True)
    assert int(r.stdout, 16) == 0x858458F6
    r = subprocess.run(mount + [sys.executable, "-c", "import sys; from ortseal.model.ramdir import is_ram_backed; "
                                "print(is_ram_backed(sys.argv[1]))", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == "True", r.stderr


# -- which bases are used ----------------------------------------------------------------------------

@needs_shm
def test_default_base_is_a_private_per_user_folder(quiet_env, fresh_user_base, model, monkeypatch, caplog):
    old = os.umask(0o022)
    try:
        assert runtime_dirs() == [fresh_user_base]
    finally:
        os.umask(old)
    st = os.lstat(fresh_user_base)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    opened = open_and_run(model, monkeypatch, caplog)
    assert os.path.dirname(opened) == fresh_user_base
    assert os.listdir(fresh_user_base) == []  # nothing left behind


@needs_shm
def test_xdg_runtime_dir_is_used_first_when_private(quiet_env, fresh_user_base, model, monkeypatch, caplog):
    xdg = tempfile.mkdtemp(dir=SHARED_RAM_DIR)  # 0700, this user's, on tmpfs: like /run/user/<uid>
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
        assert runtime_dirs() == [xdg, fresh_user_base]
        assert os.path.dirname(open_and_run(model, monkeypatch, caplog)) == xdg
        assert os.listdir(xdg) == []
    finally:
        shutil.rmtree(xdg)


def _disk_folder(tmp_path: Path) -> Path:
    for candidate in (tmp_path, ROOT):
        if not is_ram_backed(str(candidate)):
            return Path(tempfile.mkdtemp(dir=candidate, prefix=".ramdir-test-"))
    pytest.skip("no folder on a persistent disk here")


BAD_BASES = ["symlink", "wrong-mode", "wrong-owner", "on-disk", "fifo", "file", "parent-of-another-user",
             "parent-writable-by-all"]


def make_bad_base(kind: str, tmp_path: Path, victim: Path) -> str:
    """A would-be base that must be refused; ``victim`` is a private tmpfs folder that passes every check."""
    if kind in ("wrong-owner", "parent-of-another-user") and os.getuid() != 0:
        pytest.skip("needs root to give a folder to another uid")
    path = str(victim.parent / f"bad-{secrets.token_hex(6)}")
    if kind == "symlink":
        os.symlink(victim, path)  # to a folder that would pass every check
    elif kind == "wrong-mode":
        os.mkdir(path, 0o700)
        os.chmod(path, 0o755)
    elif kind == "wrong-owner":
        os.mkdir(path, 0o700)
        os.chown(path, NOBODY, NOBODY)
    elif kind == "on-disk":
        path = str(_disk_folder(tmp_path))
    elif kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "file":
        Path(path).write_bytes(b"")
    else:  # a private folder inside one that another user could swap it out of
        os.mkdir(path, 0o755)
        if kind == "parent-of-another-user":
            os.chown(path, NOBODY, NOBODY)
        else:
            os.chmod(path, 0o777)
        path = os.path.join(path, "base")
        os.mkdir(path, 0o700)
    return path


REASONS = {"symlink": "symbolic link", "wrong-mode": "mode 0755", "wrong-owner": f"owned by uid {NOBODY}",
           "on-disk": "not on tmpfs or ramfs", "fifo": "is a FIFO", "file": "is not a folder",
           "parent-of-another-user": f"owned by uid {NOBODY}, who could replace",
           "parent-writable-by-all": "writable by other users"}


def _state(path: str) -> tuple:
    st = os.lstat(path)
    listing = sorted(os.listdir(path)) if stat.S_ISDIR(st.st_mode) else None
    return st.st_mode, st.st_uid, st.st_ino, listing


def _cleanup(path: str, tmp_path: Path) -> None:
    if path.startswith(SHARED_RAM_DIR):
        top = os.path.join(SHARED_RAM_DIR, Path(path).relative_to(SHARED_RAM_DIR).parts[0])
        remove_anything(top)
    else:
        remove_anything(path)


@needs_shm
@pytest.mark.parametrize("kind", BAD_BASES)
def test_bad_xdg_runtime_dir_is_skipped_with_a_warning(kind, quiet_env, fresh_user_base, victim, tmp_path,
                                                       monkeypatch, caplog, model):
    path = make_bad_base(kind, tmp_path, victim)
    try:
        before = _state(path)
        monkeypatch.setenv("XDG_RUNTIME_DIR", path)
        with caplog.at_level(logging.WARNING, logger="ortseal"):
            assert runtime_dirs() == [fresh_user_base]
        assert REASONS[kind] in caplog.text and path in caplog.text
        assert os.path.dirname(open_and_run(model, monkeypatch, caplog)) == fresh_user_base
        assert _state(path) == before  # nothing made in it, nothing chmod-ed (through a link or not)
    finally:
        _cleanup(path, tmp_path)


@needs_shm
@pytest.mark.parametrize("kind", BAD_BASES)
def test_bad_runtime_dir_option_is_refused(kind, quiet_env, fresh_user_base, victim, tmp_path, monkeypatch, model):
    path = make_bad_base(kind, tmp_path, victim)
    try:
        before = _state(path)
        monkeypatch.setenv(RUNTIME_DIR_ENV, path)
        with pytest.raises(UnsafeOptionError, match=REASONS[kind]):
            runtime_dirs()
        sealed, keys, *_ = model
        with pytest.raises(UnsafeOptionError, match=f"{RUNTIME_DIR_ENV}={path}"):
            ortseal.InferenceSession(str(sealed), providers=CPU, keys=keys)
        assert _state(path) == before
        with pytest.raises(UnsafeOptionError), private_folder(path):
            pass
        with pytest.raises(UnsafeOptionError):
            remove_stale_folders(path)
        assert _state(path) == before
    finally:
        _cleanup(path, tmp_path)


@needs_shm
def test_runtime_dir_option_is_made_private_if_missing(quiet_env, tmp_path, monkeypatch, model, caplog):
    wanted = os.path.join(SHARED_RAM_DIR, f"app-{secrets.token_hex(6)}")
    monkeypatch.setenv(RUNTIME_DIR_ENV, wanted)
    old = os.umask(0o002)
    try:
        assert runtime_dirs() == [wanted]
        st = os.lstat(wanted)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
        assert os.path.dirname(open_and_run(model, monkeypatch, caplog)) == wanted
        assert os.listdir(wanted) == []
    finally:
        os.umask(old)
        remove_anything(wanted)
    on_disk = _disk_folder(tmp_path) / "base"
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(on_disk))
    with pytest.raises(UnsafeOptionError, match="tmpfs or ramfs"):
        runtime_dirs()
    assert not on_disk.exists()  # nothing made on a persistent disk


@needs_shm
def test_runtime_dir_option_naming_dev_shm_means_the_per_user_folder(quiet_env, fresh_user_base, monkeypatch):
    monkeypatch.setenv(RUNTIME_DIR_ENV, SHARED_RAM_DIR)
    assert runtime_dirs() == [fresh_user_base]
    monkeypatch.setenv(RUNTIME_DIR_ENV, "none")
    assert runtime_dirs() == []


# -- the private folder --------------------------------------------------------------------------------

@needs_shm
def test_private_folder_makes_owns_and_removes_only_its_own(quiet_env, fresh_user_base, victim):
    base = runtime_dirs()[0]
    unlinked: list[str] = []

    def parallel(fn, names):
        unlinked.extend(names)
        for name in names:
            fn(name)

    old = os.umask(0o277)  # a umask that would leave the owner unable to use the folder
    try:
        with private_folder(base, parallel=parallel) as folder:
            st = os.lstat(folder.path)
            assert os.path.dirname(folder.path) == base and os.path.basename(folder.path).startswith(FOLDER_PREFIX)
            assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
            assert (os.fstat(folder.fd).st_ino, os.fstat(folder.fd).st_dev) == (st.st_ino, st.st_dev)
            fd = folder.create("t0.bin")
            os.write(fd, b"x" * 5000)
            os.close(fd)
            assert stat.S_IMODE(os.lstat(os.path.join(folder.path, "t0.bin")).st_mode) & 0o077 == 0
            vfs = os.statvfs(folder.path)
            assert 0 < folder.free_bytes() <= vfs.f_blocks * vfs.f_frsize
            # Links planted in it (only this user could) are neither written through nor followed on removal.
            os.symlink(victim / "notes.txt", os.path.join(folder.path, "t1.bin"))
            with pytest.raises(FileExistsError):
                folder.create("t1.bin")
            os.symlink(victim, os.path.join(folder.path, "linked-folder"))
            os.mkdir(os.path.join(folder.path, "sub"))
            os.symlink(victim, os.path.join(folder.path, "sub", FOLDER_PREFIX + "x"))
            with pytest.raises(ValueError):
                folder.create("../escape")
    finally:
        os.umask(old)
    assert unlinked == ["t0.bin"]  # only the names it created are unlinked in parallel
    assert not os.path.lexists(folder.path) and os.listdir(base) == []


@needs_shm
def test_stale_cleanup_removes_dead_openers_folders_and_nothing_else(quiet_env, fresh_user_base, victim):
    base = runtime_dirs()[0]
    dead = Path(base) / (FOLDER_PREFIX + "dead")
    dead.mkdir(mode=0o700)
    (dead / "t0.bin").write_bytes(b"plaintext")
    os.symlink(victim, dead / "link")  # removed itself; the victim's folder stays
    half_made = Path(base) / (NEW_PREFIX + "old")
    half_made.mkdir(mode=0o700)
    old = os.stat(half_made).st_mtime - 10 * STALE_NEW_SECONDS
    os.utime(half_made, (old, old))
    young = Path(base) / (NEW_PREFIX + "young")  # a live opener may be about to lock it
    young.mkdir(mode=0o700)
    planted_link = Path(base) / (FOLDER_PREFIX + "link")
    os.symlink(victim, planted_link)  # not a folder ortseal made: left alone, never followed
    live = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from ortseal.model.ramdir import private_folder
        with private_folder(sys.argv[1]) as f:
            print(f.path, flush=True)
            sys.stdin.read()
    """), base], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        live_path = live.stdout.readline().strip()
        removed = remove_stale_folders(base)
        assert sorted(removed) == sorted([str(dead), str(half_made)])
        assert os.path.isdir(live_path) and young.is_dir() and planted_link.is_symlink()
    finally:
        live.communicate("", timeout=60)
    assert live.returncode == 0 and not os.path.lexists(live_path)
    assert remove_stale_folders(base) == []


# -- a second local user ---------------------------------------------------------------------------

PLANT = """
    import os, sys
    kind, path, victim = sys.argv[1:4]
    if kind == "symlink":
        os.symlink(victim, path)
    elif kind in ("own-folder", "own-sticky-folder"):
        os.mkdir(path)
        os.chmod(path, 0o1777 if kind == "own-sticky-folder" else 0o700)
        # inside it, links named like ortseal's folders, to the victim's folder
        for name in ("ortseal-open-planted", ".ortseal-open-new-planted"):
            os.symlink(victim, os.path.join(path, name))
    elif kind == "fifo":
        os.mkfifo(path, 0o666)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
"""
PLANTS = ["symlink", "own-folder", "own-sticky-folder", "fifo", "file"]


@needs_second_user
@needs_shm
@pytest.mark.parametrize("kind", PLANTS)
def test_another_user_squatting_the_per_user_folder(kind, quiet_env, fresh_user_base, victim, model, monkeypatch,
                                                    caplog):
    as_nobody(PLANT, kind, fresh_user_base, str(victim))
    planted = _state(fresh_user_base)
    with caplog.at_level(logging.WARNING, logger="ortseal"):
        assert runtime_dirs() == []
    assert f"not opening models in {fresh_user_base}" in caplog.text
    assert open_and_run(model, monkeypatch, caplog) == "memory"  # still opens, bit-identical
    with pytest.raises(UnsafeOptionError):
        remove_stale_folders(fresh_user_base)
    # the application pointing ortseal at /dev/shm explicitly: refused, typed
    monkeypatch.setenv(RUNTIME_DIR_ENV, SHARED_RAM_DIR)
    sealed, keys, *_ = model
    with pytest.raises(UnsafeOptionError, match=fresh_user_base):
        ortseal.InferenceSession(str(sealed), providers=CPU, keys=keys)
    assert _state(fresh_user_base) == planted  # the squatter's object untouched: not chmod-ed, not emptied, not followed


RACER = """
    import json, os, secrets, signal, sys
    victim, base, shm = sys.argv[1:4]
    stop = False
    def on_term(*_):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    stats = {"base_planted": 0, "base_taken": 0, "shm_planted": 0, "inner_planted": 0, "inner_denied": 0,
             "followed_new": 0}
    kinds = ["symlink", "folder", "sticky-folder", "fifo", "file"]
    print("ready", flush=True)
    i = 0
    while not stop:
        kind = kinds[i % len(kinds)]
        i += 1
        try:  # take the victim's base name before the victim does
            if kind == "symlink":
                os.symlink(victim, base)
            elif kind.endswith("folder"):
                os.mkdir(base)
                os.chmod(base, 0o1777 if kind == "sticky-folder" else 0o777)
            elif kind == "fifo":
                os.mkfifo(base, 0o666)
            else:
                os.close(os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            stats["base_planted"] += 1
        except FileExistsError:
            stats["base_taken"] += 1
        for where in (shm, base):
            try:
                names = os.listdir(where)
            except OSError:
                stats["inner_denied"] += 1
                continue
            # the original attack: a link named like the final folder as soon as a new folder appears
            for name in names:
                if name.startswith(".ortseal-open-new-"):
                    try:
                        os.symlink(victim, os.path.join(where, "ortseal-open-" + name[len(".ortseal-open-new-"):]))
                        stats["followed_new"] += 1
                    except OSError:
                        pass
            if where == shm and stats["shm_planted"] >= 300:
                continue
            token = secrets.token_hex(8)
            try:
                os.symlink(victim, os.path.join(where, "ortseal-open-" + token))
                os.symlink(victim, os.path.join(where, ".ortseal-open-new-" + token))
                os.mkfifo(os.path.join(where, "ortseal-open-f" + token))
                stats["shm_planted" if where == shm else "inner_planted"] += 1
            except OSError:
                stats["inner_denied"] += 1
    print(json.dumps(stats), flush=True)
"""


@needs_second_user
@needs_shm
@pytest.mark.parametrize("route", ["default", "option"])
def test_another_user_racing_the_opening(route, quiet_env, fresh_user_base, victim, model, monkeypatch, caplog):
    """The attacker (nobody) loops: takes the victim's base name as a link to the victim's folder, a folder
    of its own (sticky or not), a FIFO or a file; plants links and FIFOs named like opening folders in
    /dev/shm and in the base; links each new folder's final name as it appears. Before each open the victim
    (root) clears the base name, so each open races the attacker for it."""
    if route == "default":
        base = fresh_user_base
    else:
        base = os.path.join(SHARED_RAM_DIR, f"app-{secrets.token_hex(6)}")
        monkeypatch.setenv(RUNTIME_DIR_ENV, base)
    shm_before = ortseal_entries(SHARED_RAM_DIR)
    racer = subprocess.Popen([*NOBODY_PYTHON, "-c", textwrap.dedent(RACER), str(victim), base, SHARED_RAM_DIR],
                             cwd="/", stdout=subprocess.PIPE, text=True)
    outcomes: dict[str, int] = {"ram": 0, "memory": 0, "refused": 0}
    try:
        assert racer.stdout.readline().strip() == "ready"
        for _ in range(30):
            remove_anything(base)
            try:
                opened = open_and_run(model, monkeypatch, caplog)
            except OrtsealError as exc:  # typed; only the option route may refuse (its base was taken)
                assert route == "option" and isinstance(exc, UnsafeOptionError), exc
                outcomes["refused"] += 1
                continue
            if opened == "memory":
                assert route == "default"
                outcomes["memory"] += 1
            else:
                assert os.path.dirname(opened) == base
                outcomes["ram"] += 1
            st = os.lstat(base)
            if st.st_uid == os.getuid() and stat.S_ISDIR(st.st_mode):
                assert os.listdir(base) == []  # nothing left behind, nothing planted inside
    finally:
        racer.send_signal(signal.SIGTERM)
        out, _ = racer.communicate(timeout=60)
        stats = json.loads(out.strip().splitlines()[-1])
        for entry in os.scandir(SHARED_RAM_DIR):  # the attacker's plants
            if entry.name.startswith(("ortseal-open-", ".ortseal-open-new-")) and \
                    entry.stat(follow_symlinks=False).st_uid == NOBODY:
                remove_anything(entry.path)
        remove_anything(base)
    print(route, outcomes, stats)
    assert racer.returncode == 0 and stats["shm_planted"] > 0  # the attacker really ran
    assert sum(outcomes.values()) == 30
    assert ortseal_entries(SHARED_RAM_DIR) <= shm_before  # ortseal made no opening folder in /dev/shm itself


@pytest.mark.slow
def test_attacks_in_a_private_dev_shm():
    """The second-user tests above, in a mount namespace with a fresh tmpfs on /dev/shm (as root)."""
    if not MAKES_PRIVATE_SHM:
        pytest.skip("needs root, setpriv and mount namespaces (unshare --mount); the attacks then run directly"
                    if not INSIDE else "already inside")
    expected = sum(1 for line in subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", __file__, "-k",
         "another_user"], cwd=ROOT, capture_output=True, text=True).stdout.splitlines() if "::test_" in line)
    r = subprocess.run(PRIVATE_SHM + [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-s",
                                      __file__, "-k", "another_user"],
                       env={**os.environ, INSIDE_ENV: "1"}, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-4000:]
    assert expected >= 6 and f"{expected} passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-4000:]
