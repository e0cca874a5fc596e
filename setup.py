"""Build step for the one C file in sekiops: the streaming JSON validator persist runs on every
payload (sekiops/pipeline/_jsonvalid.c, loaded with ctypes, no Python API). Optional: without a
C compiler the build goes on and the check uses libyajl instead (correct, about half as fast).
Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sekiops.pipeline._jsonvalid", ["sekiops/pipeline/_jsonvalid.c"],
                             extra_compile_args=["-O2"], optional=True)])
