from collections.abc import Callable, Iterator, Sequence
from typing import Any

__impl__: str

GENERIC: int
INT2: int
INT4: int
INT8: int
FLOAT4: int
FLOAT8: int
TEXT: int
BYTEA: int
BOOL: int
TIMESTAMPTZ: int
TIMESTAMP: int
DATE: int
SIGNATURE: bytes
TRAILER: bytes

ErrorFactory = Callable[[int, int, str, BaseException | None], BaseException]

class Encoder:
    @property
    def rows(self) -> int: ...
    @property
    def done(self) -> bool: ...
    def __init__(self, kinds: Sequence[int], fallbacks: Sequence[Callable[[Any], Any] | None],
                 *, binary: bool, error: ErrorFactory) -> None: ...
    def encode(self, it: Iterator[Any], max_bytes: int, max_rows: int) -> bytes: ...

class ValuesEncoder:
    pending: Any
    @property
    def rows(self) -> int: ...
    @property
    def done(self) -> bool: ...
    def __init__(self, ncols: int, string_literal: Callable[[bytes], bytes],
                 fallback: Callable[[Any], bytes], encoding: str, *,
                 error: ErrorFactory) -> None: ...
    def encode(self, it: Iterator[Any], max_bytes: int, max_rows: int) -> bytes: ...
