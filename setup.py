"""Builds the engine-cache shim: a plain C shared library loaded with ctypes (no Python API inside), so
the wheel is ``py3-none-<platform>``: one wheel per platform for every Python 3.10+."""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1 (pyproject.toml asks for it)

SHIM = "ortseal.tensorrt.libortseal_shim"
# The shim needs only libc symbols up to GLIBC_2.3.2 (tests/test_packaging.py checks): manylinux2014.
# Tagged here rather than by auditwheel: auditwheel repair is a separate step after the build (pip install and
# python -m build cannot run it), needs patchelf, and would graft nothing (the shim links libc alone).
MANYLINUX = {"linux_x86_64": "manylinux_2_17_x86_64.manylinux2014_x86_64",
             "linux_aarch64": "manylinux_2_17_aarch64.manylinux2014_aarch64"}


class BuildShim(build_ext):
    """Name the shim ``libortseal_shim.so``, not after the interpreter (it is not a Python extension)."""

    def get_ext_filename(self, fullname: str) -> str:
        if fullname.split(".")[-1] == SHIM.split(".")[-1]:  # called with the full or the last dotted name
            return fullname.replace(".", "/") + ".so"
        return super().get_ext_filename(fullname)

    def get_export_symbols(self, ext: Extension) -> list:
        return ext.export_symbols  # no PyInit_ symbol: there is none


class PlatformWheel(bdist_wheel):
    """Tag ``py3-none-<platform>``: the wheel holds a C library but nothing tied to a Python version."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple:
        _, _, plat = super().get_tag()
        return "py3", "none", MANYLINUX.get(plat, plat) if sys.platform.startswith("linux") else plat


setup(
    ext_modules=[
        Extension(
            SHIM,
            sources=["ortseal/tensorrt/shim.c"],
            extra_compile_args=["-std=c11", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra"],
        )
    ],
    cmdclass={"build_ext": BuildShim, "bdist_wheel": PlatformWheel},
)
