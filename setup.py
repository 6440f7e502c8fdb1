"""Builds the engine-cache shim: a plain C shared library loaded with ctypes (no Python API inside)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ortseal.ep_plugin._ortseal_shim",
            sources=["ortseal/ep_plugin/shim.c"],
            extra_compile_args=["-std=c11", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra"],
        )
    ]
)
