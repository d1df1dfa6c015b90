"""The shared option validators: durations, integers, booleans, choices and
callables are checked here for every part of fastpool, and every bad value
gets a ``ConfigError`` (a ``ValueError``) naming the option, what it must be
and what it got. (Checks of one option's own shape, such as a URL, a table
name or a driver's string options, stay with that option's code, and raise
``ConfigError`` too.)

``owner`` prefixes the message with what the option belongs to
(``"Batcher: max_batch must be ..."``); without it the option's name leads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from fastpool.errors import ConfigError

__all__ = [
    "MAX_INT",
    "MAX_INT64",
    "MAX_POOL_SIZE",
    "MAX_SECONDS",
    "boolean",
    "callable_or_none",
    "choice",
    "integer",
    "integer_or_auto",
    "mapping_or_none",
    "optional_seconds",
    "parameter_sets",
    "parameters",
    "seconds",
]

T = TypeVar("T")

#: The longest duration any option takes (about 31 years): a larger number is
#: a unit mistake, and C's int64 nanoseconds overflow not far beyond it.
MAX_SECONDS = 1e9
#: The largest integer option (unless one says otherwise): a C ``int``, the
#: compiled core's type for sizes and counts (``max_waiting``, slot indexes).
#: Anything larger is a typo, and would otherwise fail as an OverflowError.
MAX_INT = 2**31 - 1
#: The largest pool (``min_size``, ``max_size``, ``max_size_ceiling``): the
#: core reserves a slot per connection up to ``max_size`` at once (about 60
#: bytes each), and no server takes more sessions than this from one process.
MAX_POOL_SIZE = 100_000
#: The bound of integer options the core never holds that may be large (bytes,
#: table rows): what a C ``int64_t`` holds.
MAX_INT64 = 2**63 - 1


def _fail(owner: str | None, name: str, need: str, value: object) -> ConfigError:
    prefix = f"{owner}: " if owner else ""
    return ConfigError(f"{prefix}{name} must be {need}, got {value!r}")


def seconds(name: str, value: object, *, allow_zero: bool = True, or_none: bool = False,
            owner: str | None = None) -> float:
    """A duration: a finite number of seconds >= 0 (> 0 without ``allow_zero``),
    at most MAX_SECONDS; ``or_none`` only changes the message (see optional_seconds)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or math.isnan(value) or value > MAX_SECONDS or value < 0
            or (value == 0 and not allow_zero)):
        need = "a finite number of seconds" + (" >= 0" if allow_zero else " > 0")
        if or_none:
            need += " or None"
        need += f" (at most {MAX_SECONDS:g})"
        raise _fail(owner, name, need, value)
    return float(value)


def optional_seconds(name: str, value: object, *, allow_zero: bool = False,
                     owner: str | None = None) -> float | None:
    """A duration, or None for "no limit"."""
    if value is None:
        return None
    return seconds(name, value, allow_zero=allow_zero, or_none=True, owner=owner)


def integer(name: str, value: object, minimum: int, *, owner: str | None = None,
            maximum: int = MAX_INT) -> int:
    """An int (not a bool) >= ``minimum`` and <= ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not \
            minimum <= value <= maximum:
        raise _fail(owner, name, f"an integer >= {minimum} and <= {maximum}", value)
    return value


def integer_or_auto(name: str, value: object, minimum: int, *, owner: str | None = None,
                    maximum: int = MAX_INT) -> int | None:
    """An int >= ``minimum`` and <= ``maximum``, or the string ``"auto"`` (returned as None)."""
    if isinstance(value, str) and value == "auto":  # str first: an array's == is no bool
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not \
            minimum <= value <= maximum:
        raise _fail(owner, name, f'an integer >= {minimum} and <= {maximum}, or "auto"',
                    value)
    return value


def boolean(name: str, value: object, *, owner: str | None = None) -> bool:
    """True or False (not 0/1: a typo of another option's value)."""
    if not isinstance(value, bool):
        raise _fail(owner, name, "True or False", value)
    return value


def choice(name: str, value: T, allowed: tuple[T, ...], *, owner: str | None = None) -> T:
    """One of ``allowed``."""
    if value not in allowed:
        raise _fail(owner, name, " or ".join(repr(a) for a in allowed), value)
    return value


def mapping_or_none(name: str, value: object, need: str, *, owner: str | None = None,
                    ) -> Mapping[Any, Any]:
    """A mapping (``need`` says of what), or None (returned as an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(owner, name, f"a mapping of {need}, or None", value)
    return value


def callable_or_none(name: str, value: object, *, owner: str | None = None,
                     ) -> Callable[..., Any] | None:
    """A callable, or None."""
    if value is not None and not callable(value):
        raise _fail(owner, name, "callable or None", value)
    return value


# ---- a statement's parameters ---------------------------------------------------
# Not options, but checked once for every feature that sends a statement (the
# query helpers, explain, the batcher) before anything is sent; a TypeError,
# as Python's own for an argument of the wrong type.

def parameters(value: T, where: str = "", *, or_none: bool = True) -> T:
    """A statement's parameters: a sequence (not a string) or a mapping, or
    None for none (unless not ``or_none``). ``where`` names them in the
    message (e.g. ``params_seq[3]``)."""
    tp = type(value)
    if tp is tuple or tp is list or tp is dict or (value is None and or_none):
        return value
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, (Sequence, Mapping)):
        raise TypeError(f"params must be a sequence or a mapping of parameters, "
                        f"got {tp.__name__}{f' ({where})' if where else ''}")
    return value


def parameter_sets(value: Any, name: str = "params_seq") -> Any:
    """``executemany``'s parameter sets: an iterable (not a string or a
    mapping) of ``parameters``. A collection (list, tuple, set...) is checked
    at once; an iterator item by item as it is consumed (the statement's
    transaction is then rolled back when one is bad)."""
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an iterable of parameter sets (sequences or "
                        f"mappings), got {type(value).__name__}")
    if not isinstance(value, Iterator):
        for i, item in enumerate(value):
            parameters(item, f"{name}[{i}]")
        return value
    return _checked_sets(iter(value), name)


def _checked_sets(items: Iterator[Any], name: str) -> Iterator[Any]:
    for i, item in enumerate(items):
        yield parameters(item, f"{name}[{i}]")
