"""Declares the compiled extensions; everything else is in pyproject.toml.

``fastpool._core`` is the pool's hot path; ``fastpool._mysqlstatus`` reads a
mysqlclient connection's transaction state (it finds the client library's
function at run time, so it needs no MySQL headers to build).

FASTPOOL_DEBUG=1 builds with -O0 -g, Cython line tracing and an annotated HTML
report (src/fastpool/_core.html) for profiling and debugging.
"""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTPOOL_DEBUG", "") not in ("", "0")

macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
extra = ["-O0", "-g"] if DEBUG else ["-O2"]

extensions = [
    Extension(
        "fastpool._core",
        ["src/fastpool/_core.pyx"],
        define_macros=macros,
        extra_compile_args=extra,
    ),
]
if sys.platform != "win32":  # dlopen/dlsym; the ctypes twin serves Windows
    extensions.append(Extension(
        "fastpool._mysqlstatus",
        ["src/fastpool/_mysqlstatus.pyx"],
        libraries=["dl"] if sys.platform.startswith("linux") else [],
        define_macros=macros,
        extra_compile_args=extra,
    ))

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"linetrace": DEBUG, "embedsignature": True},
        annotate=DEBUG,
    ),
)
