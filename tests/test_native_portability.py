"""libortseal's portability: the core is plain C11 with the OS layer in one file. The Windows build,
cross-compiled with Debian's mingw-w64 (native/cmake/mingw-w64.cmake), compiles every source, os_win.c
included; ortseal.dll links against everything but OpenSSL's code (no Windows libcrypto here: an import
library names libcrypto-3-x64.dll, native/cmake/openssl_headers_only.cmake), each name it imports checked
against OpenSSL 3.0's own export list; the keyless shim links as a DLL exporting ORT's decrypt/encrypt. Under
Wine (where installed), the Windows test host loads the shim as ORT does and runs os_win.c's file checks;
nothing here runs on Windows itself (docs/support-matrix.md)."""

from __future__ import annotations

import os
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
                 "-DORTSEAL_BUILD_TESTS=OFF", "-DORTSEAL_WIN_TEST_HOST=ON", shim_dir_arg()]
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


LINUX_LIBCRYPTO = Path("/usr/lib/x86_64-linux-gnu/libcrypto.so.3")


def pe_imports(path: Path) -> dict[str, set[str]]:
    """DLL name (lower case) -> the names a PE file imports from it."""
    text = subprocess.run([OBJDUMP, "-p", str(path)], capture_output=True, text=True, check=True).stdout
    out: dict[str, set[str]] = {}
    for block in text.split("DLL Name: ")[1:]:
        name, _, rest = block.partition("\n")
        body = rest.split("\n\n", 1)[0]
        out[name.strip().lower()] = set(re.findall(r"^\s+[0-9a-f]+\s+\d+\s+(\S+)$", body, re.MULTILINE))
    return out


@needs_mingw
@pytest.mark.skipif(not LINUX_LIBCRYPTO.exists() or not shutil.which("objdump"),
                    reason="no x86-64 Linux libcrypto.so.3 to read OpenSSL 3.0's exported names from")
def test_every_libcrypto_import_is_an_openssl_3_0_export(windows_build):
    """ortseal.dll is linked against an import library generated from crypto.c, not a real libcrypto: this
    checks that library's names against OpenSSL's own. OpenSSL generates its Windows export table and its
    Linux version script from one list (util/libcrypto.num), so a name the Linux libcrypto.so.3 exports with
    the version OPENSSL_3.0.0 is exported by every OpenSSL 3.x libcrypto-3-x64.dll: the DLL would load beside
    any of them."""
    imports = pe_imports(windows_build / "ortseal.dll")["libcrypto-3-x64.dll"]
    table = subprocess.run(["objdump", "-T", str(LINUX_LIBCRYPTO)], capture_output=True, text=True, check=True).stdout
    exported = set(re.findall(r"\bOPENSSL_3\.0\.0\s+(\S+)$", table, re.MULTILINE))
    assert imports and imports <= exported, imports - exported
    assert {"EVP_EncryptInit_ex", "EVP_DigestVerify", "EVP_KDF_derive"} <= imports  # AES-GCM, Ed25519, HKDF/scrypt


WINE = shutil.which("wine64") or ("/usr/lib/wine/wine64" if Path("/usr/lib/wine/wine64").exists() else None)
WIN_HOST_CHECKS = {  # native/tests/win_host.c: every check it makes on any Windows (the symlink one needs one)
    "shim-loads", "shim-exports", "shim-refuses-unregistered", "shim-registers", "shim-routes-decrypt",
    "shim-routes-encrypt", "shim-unregisters", "write-atomic", "read-engine", "cleanup-leaves-live-writer",
    "cleanup-new-rules", "cleanup-removes-dead-writer", "refuses-file-open-for-writing", "refuses-folder-as-engine",
    "open-dir", "open-in-folder", *(f"refuses-name {n}" for n in ("CON", "nul.txt", "COM1.data", "a.", "a ",
                                                                   "x:stream", "..\\up", "sub/x", "..")),
}


@needs_mingw
@pytest.mark.skipif(WINE is None, reason="Wine is not installed (apt-get install wine64)")
def test_the_windows_host_runs_the_shim_and_the_file_checks_under_wine(windows_build, tmp_path):
    """The shim DLL loaded and called by name as ORT's TensorRT EP does; os_win.c's atomic write, stale cleanup
    (a live writer's temp file shared with nobody stays, a dead one's goes; .new only once old), share modes,
    folder and name refusals, on Wine's Windows API."""
    run = tmp_path / "run"
    (run / "files").mkdir(parents=True)
    for name in ("ortseal_win_host.exe", "ortseal_shim.dll"):
        shutil.copy(windows_build / name, run / name)
    env = dict(os.environ, WINEPREFIX=str(tmp_path / "wineprefix"), WINEDEBUG="-all")
    windows_path = "Z:" + str(run / "files").replace("/", "\\")
    done = subprocess.run([WINE, str(run / "ortseal_win_host.exe"), windows_path], cwd=run, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and not [line for line in lines if line.startswith("FAIL")], done.stdout + done.stderr
    assert {line[3:] for line in lines if line.startswith("ok ")} >= WIN_HOST_CHECKS, done.stdout
