from typing import Any

IDLE: int
IN_TRANSACTION: int
BROKEN: int
SEES_UNREAD_RESULTS: bool

def bind(library: str) -> bool: ...

class ServerStatus:
    connection: Any
    def __init__(self, connection: Any) -> None: ...
    @property
    def trans(self) -> int: ...
    @property
    def socket(self) -> int: ...
