"""Chooses between fastpool's compiled extensions and their pure-Python twins.

``FASTPOOL_IMPL`` is read here and nowhere else, with one meaning for every
extension (the core, the bulk encoder, the MySQL status reader):

- ``c``: the compiled module is required; an ImportError lists what was tried;
- ``python``: the pure-Python twin;
- unset (or empty): the compiled module, else the twin.

Any other value is an ImportError naming the valid ones. The variable is read
at each call, so a test may switch it between loads of an extension (the core
is loaded once, when ``fastpool`` is imported). The module returned says which
one it is by its ``__name__`` (and by ``__impl__``, ``"compiled"`` or
``"python"``, where it sets one).
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

_VALUES = {"": "auto", "c": "compiled", "python": "python"}


def implementation() -> str:
    """What FASTPOOL_IMPL asks for: ``"auto"``, ``"compiled"`` or ``"python"``."""
    raw = os.environ.get("FASTPOOL_IMPL", "")
    impl = _VALUES.get(raw)
    if impl is None:
        raise ImportError(f"FASTPOOL_IMPL={raw!r} is not valid: use 'c' (compiled code), "
                          "'python' (the pure-Python twins), or leave it unset (compiled "
                          "if it imports, else Python)")
    return impl


def load_extension(compiled: str, twin: str, *, what: str | None = None) -> ModuleType:
    """The compiled module ``compiled`` or its pure-Python ``twin``, as
    FASTPOOL_IMPL says; ``what`` names it in errors (default: ``compiled``)::

        encoders = load_extension("fastpool._bulkenc", "fastpool._bulkenc_py")
        encoders.__impl__  # "compiled" or "python"
    """
    impl = implementation()
    name = what or compiled
    tried: list[str] = []
    if impl != "python":
        try:
            return importlib.import_module(compiled)
        except ImportError as exc:
            tried.append(f"{compiled} (compiled): {exc}")
            if impl == "compiled":
                raise ImportError(
                    f"FASTPOOL_IMPL asks for the compiled {name}, but it cannot be imported. "
                    f"Tried: {'; '.join(tried)}. Reinstall fastpool from a wheel, or build "
                    "it with a C compiler and Cython (pip install .)") from exc
    try:
        return importlib.import_module(twin)
    except ImportError as exc:
        tried.append(f"{twin} (pure Python): {exc}")
        raise ImportError(f"neither the compiled {name} nor its pure-Python twin could be "
                          f"imported. Tried: {'; '.join(tried)}") from exc


def load_core() -> ModuleType:
    """Load the core and bind it as ``fastpool._core`` (the twin too, so that
    ``from fastpool import _core`` finds whichever was chosen)."""
    module = load_extension("fastpool._core", "fastpool._core_py", what="core")
    sys.modules["fastpool._core"] = module
    return module
