"""Declares the compiled core; everything else is in pyproject.toml.

FASTPOOL_DEBUG=1 builds with -O0 -g, Cython line tracing and an annotated HTML
report (src/fastpool/_core.html) for profiling and debugging.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTPOOL_DEBUG", "") not in ("", "0")

macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
extra = ["-O0", "-g"] if DEBUG else ["-O2"]

ext = Extension(
    "fastpool._core",
    ["src/fastpool/_core.pyx"],
    define_macros=macros,
    extra_compile_args=extra,
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={"linetrace": DEBUG, "embedsignature": True},
        annotate=DEBUG,
    ),
)
