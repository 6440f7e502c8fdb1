"""libortseal installs as a package a C++ project finds with find_package(ortseal) or pkg-config: the
README "From C or C++" commands, run here (examples/open_model opens the model vector through ORT)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from native_host import NATIVE, ort_headers, ort_library, shim_dir_arg

HERE = Path(__file__).parent / "vectors"
pytestmark = pytest.mark.slow  # a second CMake build and install, and a consumer project


def run(*cmd: str | os.PathLike[str], env: dict | None = None) -> str:
    done = subprocess.run(["nice", "-n", "10", *map(str, cmd)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed")
    headers = ort_headers()
    if headers is None:
        pytest.skip("ONNX Runtime's C headers are not available")
    work = tmp_path_factory.mktemp("install")
    prefix, build = work / "prefix", work / "build"
    run("cmake", "-S", NATIVE, "-B", build, f"-DCMAKE_INSTALL_PREFIX={prefix}", "-DORTSEAL_BUILD_TESTS=OFF",
        f"-DORTSEAL_ORT_INCLUDE_DIR={headers}", shim_dir_arg())
    run("cmake", "--build", build, "-j2")
    run("cmake", "--install", build)
    return prefix, headers


def test_find_package_builds_the_example_that_opens_a_sealed_model(installed, tmp_path):
    prefix, headers = installed
    # the wheel's libonnxruntime.so.1.NN.0 has the soname libonnxruntime.so.1: give the loader that name
    ort_dir = tmp_path / "ort"
    ort_dir.mkdir()
    (ort_dir / "libonnxruntime.so.1").symlink_to(ort_library())
    build = tmp_path / "example"
    run("cmake", "-S", NATIVE / "examples" / "open_model", "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}",
        f"-DORT_INCLUDE_DIR={headers}", f"-DORT_LIBRARY={ort_dir / 'libonnxruntime.so.1'}")
    run("cmake", "--build", build)
    env = {**os.environ, "LD_LIBRARY_PATH": f"{prefix / 'lib'}:{ort_dir}"}
    out = run(build / "open_model", HERE / "keyset_v1.json", HERE / "mul_1.sealed.onnx", env=env)
    assert out.strip() == "opened mul_1 (release 1): 1 inputs"
    done = subprocess.run([str(build / "open_model"), str(HERE / "keyset_v1_public_scoped.json"),
                           str(HERE / "mul_1.sealed.onnx")], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "refused (key_not_found)" in done.stderr


def test_pkg_config_compiles_a_c_program(installed, tmp_path):
    prefix, _ = installed
    if not shutil.which("pkg-config"):
        pytest.skip("pkg-config is not installed")
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    flags = run("pkg-config", "--cflags", "--libs", "ortseal", env=env).split()
    (tmp_path / "main.c").write_text('#include <ortseal.h>\n#include <stdio.h>\n'
                                     'int main(void) { puts(ortseal_code_name(ORTSEAL_E_TAMPERED)); return 0; }\n')
    run("cc", "-std=c11", tmp_path / "main.c", "-o", tmp_path / "main", *flags)
    out = run(tmp_path / "main", env={**env, "LD_LIBRARY_PATH": str(prefix / "lib")})
    assert out.strip() == "tampered"
