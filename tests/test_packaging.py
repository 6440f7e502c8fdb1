"""The published artifacts: the wheel (one per platform, for every Python 3.10+) and the sdist (everything
needed to build and test). The wheel is installed in a fresh virtual environment, not editable, and the
whole test suite runs against it from the sdist's files."""

from __future__ import annotations

import os
import platform
import re
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSIDE = "ORTSEAL_PACKAGING_TEST_RUN"  # set for the suite this test runs, which must not run it again
MANYLINUX_GLIBC = (2, 17)


def glibc_needed(library: bytes) -> tuple[int, ...]:
    """The highest GLIBC symbol version an ELF library asks for (from its version-needed strings). Enough for a
    library that links libc alone (no auditwheel needed: it would add two test dependencies to say the same)."""
    versions = [tuple(int(p) for p in m.split(b".")) for m in re.findall(rb"GLIBC_(\d+(?:\.\d+)+)", library)]
    return max(versions, default=(0,))


def venv_seeing_this_environment(venv: Path) -> str:
    """A fresh virtual environment whose Python also sees the packages of the one running the tests (after its
    own): the test dependencies come from here, offline, whether the tests run in a virtual environment or in
    the machine's Python (``--system-site-packages`` would link the *base* interpreter's, empty in a venv).
    A ``.pth`` file lists this environment's site folders; their own ``.pth`` files are not run, so an
    editable ortseal installed here stays out. Returns the new environment's python."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                         capture_output=True, text=True, timeout=120).stdout.strip()
    sites = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    (Path(own) / "running-environment.pth").write_text("".join(f"{p}\n" for p in sites if os.path.isdir(p)))
    return python


@pytest.mark.slow
def test_wheel_and_sdist_build_install_and_pass_the_tests(tmp_path):
    if os.environ.get(INSIDE):
        pytest.skip("this is the suite the packaging test runs against the installed wheel")
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "-o", str(dist), str(ROOT)], capture_output=True, text=True,
                           timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    tag = wheel.name.split("-", 2)[2]
    assert tag.startswith("py3-none-"), wheel.name  # not tied to one Python
    if sys.platform == "linux" and platform.machine() == "x86_64":
        assert tag == "py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        shim = z.read("ortseal/tensorrt/libortseal_shim.so")
        assert any(n.endswith("dist-info/licenses/LICENSE") or n.endswith("dist-info/LICENSE") for n in names)
    assert glibc_needed(shim) <= MANYLINUX_GLIBC, f"the shim needs glibc {glibc_needed(shim)}: above manylinux2014"

    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (src,) = (tmp_path / "src").iterdir()
    for needed in ("LICENSE", "README.md", "docs/format.md", "tools/convert.py", "tools/gpu_smoke.py",
                   "tests/conftest.py", "tests/models.py", "tests/corpus.py", "tests/vectors/blob_v2.json",
                   "benchmarks/bench_open.py", "ortseal/tensorrt/shim.c", ".ci/run"):
        assert (src / needed).exists(), f"the sdist lacks {needed}"

    venv = tmp_path / "venv"
    python = venv_seeing_this_environment(venv)
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    shutil.rmtree(src / "ortseal")  # the tests must import the installed wheel, not these sources
    where = subprocess.run([python, "-c", "import ortseal, ortseal.tensorrt.shim as s; print(ortseal.__file__); "
                            "print(s.shim_path())"], capture_output=True, text=True, cwd=src, timeout=120)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), where.stdout
    env = {**os.environ, INSIDE: "1"}
    # The quick tier (CONTRIBUTING.md: every module, minutes): what is checked here is the installed wheel, and
    # the slow cases (backend suite, corpus, native 2 GiB...) already ran against the sources in this same suite.
    tests = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow and not hf",
                            "tests"], cwd=src, env=env,
                           capture_output=True, text=True, timeout=3600)
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
