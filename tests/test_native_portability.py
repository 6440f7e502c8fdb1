"""libortseal's portability: the core is plain C11 with the OS layer in one file. The Windows build,
cross-compiled with Debian's mingw-w64 (native/cmake/mingw-w64.cmake), compiles every source, os_win.c
included; ortseal.dll links against everything but OpenSSL's code (no Windows libcrypto here: an import
library names libcrypto-3-x64.dll, native/cmake/openssl_headers_only.cmake); the keyless shim links as a DLL
exporting ORT's decrypt/encrypt. Nothing here runs on Windows (docs/support-matrix.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from native_host import NATIVE, shim_dir_arg

CC = "x86_64-w64-mingw32-gcc"
OBJDUMP = "x86_64-w64-mingw32-objdump"

needs_mingw = pytest.mark.skipif(not (shutil.which(CC) and shutil.which(OBJDUMP) and shutil.which("cmake")),
                                 reason=f"{CC} is not installed (apt-get install mingw-w64 cmake)")


@pytest.fixture(scope="module")
def windows_build(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("native-windows")  # fresh: a cache from another toolchain would not do
    configure = ["cmake", "-S", str(NATIVE), "-B", str(folder), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_TOOLCHAIN_FILE={NATIVE / 'cmake' / 'mingw-w64.cmake'}", "-DORTSEAL_COMPILE_ONLY=ON",
                 "-DORTSEAL_BUILD_TESTS=OFF", shim_dir_arg()]
    for cmd in (configure, ["cmake", "--build", str(folder), "-j2"]):
        done = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True, check=False)
        if done.returncode and cmd is configure and "libssl-dev" in done.stdout + done.stderr:
            pytest.skip("OpenSSL 3's headers are not installed (apt-get install libssl-dev)")
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return folder


def pe(path: Path) -> tuple[str, set[str], set[str]]:
    """The file format, the names a PE file exports, and the DLLs it imports from."""
    text = subprocess.run([OBJDUMP, "-p", str(path)], capture_output=True, text=True, check=True).stdout
    fmt = re.search(r"file format (\S+)", text).group(1)
    table = text.split("[Ordinal/Name Pointer] Table", 1)
    exports = set(re.findall(r"^\s*\[\s*\d+\]\s+(\S+)$", table[1], re.MULTILINE)) if len(table) > 1 else set()
    imports = {name.lower() for name in re.findall(r"DLL Name: (\S+)", text)}
    return fmt, exports, imports


@needs_mingw
def test_shim_dll_exports_orts_decrypt_and_encrypt(windows_build):
    fmt, exports, imports = pe(windows_build / "ortseal_shim.dll")
    assert fmt == "pei-x86-64"
    assert exports == {"decrypt", "encrypt", "ortseal_shim_register", "ortseal_shim_unregister",
                       "ortseal_shim_abi_version"}
    # winpthreads and libgcc are linked in: the DLL needs only what every Windows has.
    assert imports <= {"kernel32.dll", "msvcrt.dll"}, imports


@needs_mingw
def test_every_core_source_compiles_for_windows(windows_build):
    objects = {p.name for p in (windows_build / "CMakeFiles" / "ortseal.dir").rglob("*.obj")}
    sources = {p.name for p in (NATIVE / "src").glob("*.c")} - {"os_posix.c", "session.c"}
    assert {f"{s}.obj" for s in sources} <= objects, sources


@needs_mingw
def test_core_dll_exports_the_c_api_and_imports_only_windows_and_libcrypto(windows_build):
    fmt, exports, imports = pe(windows_build / "ortseal.dll")
    assert fmt == "pei-x86-64"
    header = (NATIVE / "include" / "ortseal.h").read_text()
    declared = set(re.findall(r"ORTSEAL_API [^;(]*?\b(ortseal_\w+)\s*\(", header))
    assert declared and declared == exports, declared ^ exports
    assert imports == {"kernel32.dll", "msvcrt.dll", "ntdll.dll", "libcrypto-3-x64.dll"}, imports


def test_only_the_os_layer_touches_the_os():
    """Every system call lives in os_posix.c / os_win.c: the rest includes no POSIX or Windows header."""
    for src in (NATIVE / "src").glob("*.c"):
        if src.name.startswith("os_"):
            continue
        text = src.read_text()
        for header in ("<unistd.h>", "<fcntl.h>", "<sys/", "<windows.h>", "<pthread.h>", "<dlfcn.h>"):
            assert header not in text, f"{src.name} includes {header}"
