"""Chooses the core: the compiled ``fastpool._core`` or its pure-Python twin.

``FASTPOOL_IMPL=c`` requires the compiled core, ``FASTPOOL_IMPL=python`` uses
the twin, and by default the compiled core is preferred with the twin as a
fallback. ``fastpool._core.__impl__`` says which one loaded.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

_CHOICES = {"": "auto", "c": "compiled", "compiled": "compiled", "cython": "compiled",
            "python": "python", "py": "python"}


def load_core() -> ModuleType:
    raw = os.environ.get("FASTPOOL_IMPL", "")
    impl = _CHOICES.get(raw.strip().lower())
    if impl is None:
        raise ImportError(f"FASTPOOL_IMPL={raw!r} is not valid: use 'c' (the compiled core) "
                          "or 'python' (the pure-Python twin), or leave it unset")
    tried: list[str] = []
    if impl in ("auto", "compiled"):
        try:
            return importlib.import_module("fastpool._core")
        except ImportError as exc:
            tried.append(f"fastpool._core (compiled): {exc}")
            if impl == "compiled":
                raise ImportError(
                    "FASTPOOL_IMPL asks for the compiled core, but it cannot be imported. "
                    f"Tried: {'; '.join(tried)}. Reinstall fastpool from a wheel, or build "
                    "it with a C compiler and Cython (pip install .)") from exc
    try:
        module = importlib.import_module("fastpool._core_py")
    except ImportError as exc:
        tried.append(f"fastpool._core_py (pure Python): {exc}")
        raise ImportError(f"no fastpool core could be imported. Tried: {'; '.join(tried)}") \
            from exc
    sys.modules["fastpool._core"] = module
    return module
