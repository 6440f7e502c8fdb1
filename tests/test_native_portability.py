"""libortseal's portability: the core is plain C11 with the OS layer in one file; the Windows build
(Debian's mingw-w64) links the shim as a DLL exporting ORT's decrypt/encrypt and compiles every source,
os_win.c included (the Windows file checks are compiled here, run only on Windows)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from native_host import NATIVE, ort_headers


def test_windows_cross_build(tmp_path):
    if not shutil.which("x86_64-w64-mingw32-gcc"):
        pytest.skip("mingw-w64 is not installed (apt-get install mingw-w64)")
    headers = ort_headers()
    env = {"PATH": "/usr/bin:/bin", **({"ORTSEAL_ORT_INCLUDE_DIR": str(headers)} if headers else {})}
    done = subprocess.run(["nice", "-n", "10", "sh", str(NATIVE / "tools" / "check-mingw.sh"), str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ortseal_shim.dll").is_file() and (tmp_path / "os_win.o").is_file()
    assert (tmp_path / "session.o").is_file() or headers is None


def test_only_the_os_layer_touches_the_os():
    """Every system call lives in os_posix.c / os_win.c: the rest includes no POSIX or Windows header."""
    for src in (NATIVE / "src").glob("*.c"):
        if src.name.startswith("os_"):
            continue
        text = src.read_text()
        for header in ("<unistd.h>", "<fcntl.h>", "<sys/", "<windows.h>", "<pthread.h>", "<dlfcn.h>"):
            assert header not in text, f"{src.name} includes {header}"
