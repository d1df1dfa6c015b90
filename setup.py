"""Declares the compiled extensions; everything else is in pyproject.toml.

``fastpool._core`` is the pool's hot path; ``fastpool._pgstatus`` reads a
psycopg connection's transaction status in C; ``fastpool._mysqlstatus`` reads a
mysqlclient connection's transaction state (it finds the client library's
function at run time, so it needs no MySQL headers to build);
``fastpool._bulkenc`` encodes rows for bulk loads (COPY data, INSERT values).

FASTPOOL_DEBUG=1 builds with -O0 -g, Cython line tracing and an annotated HTML
report (src/fastpool/_core.html) for profiling and debugging.
"""

import os
import subprocess
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
    Extension(
        "fastpool._bulkenc",
        ["src/fastpool/_bulkenc.pyx"],
        define_macros=macros,
        extra_compile_args=extra,
    ),
]


def mariadb_include_dirs() -> list[str]:
    """Where MariaDB Connector/C's mysql.h is, or [] (optional: it only lets
    _mysqlstatus also see an unread result; the build works without it)."""
    try:
        out = subprocess.run(["pkg-config", "--cflags-only-I", "libmariadb"],
                             capture_output=True, text=True, check=True).stdout
        dirs = [flag[2:] for flag in out.split() if flag.startswith("-I")]
    except (OSError, subprocess.CalledProcessError):
        dirs = ["/usr/include/mariadb", "/usr/local/include/mariadb"]
    return [d for d in dirs if os.path.exists(os.path.join(d, "mysql.h"))][:1]


if sys.platform != "win32":  # dlopen/dlsym; elsewhere the ctypes twin is used
    # psycopg's transaction status read in C for the pool's core (optional:
    # without it the core reads conn.pgconn.transaction_status).
    extensions.append(Extension(
        "fastpool._pgstatus",
        ["src/fastpool/_pgstatus.pyx"],
        libraries=["dl"] if sys.platform.startswith("linux") else [],
        define_macros=macros,
        extra_compile_args=extra,
    ))
    mysql_h = mariadb_include_dirs()
    extensions.append(Extension(
        "fastpool._mysqlstatus",
        ["src/fastpool/_mysqlstatus.pyx"],
        include_dirs=mysql_h,
        libraries=["dl"] if sys.platform.startswith("linux") else [],
        define_macros=macros + ([("FASTPOOL_MYSQL_H", "1")] if mysql_h else []),
        extra_compile_args=extra,
    ))

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"linetrace": DEBUG, "embedsignature": True},
        annotate=DEBUG,
    ),
)
