"""Leak detection: where was a connection that is held too long acquired?

Only active when a pool has ``leak_threshold``: then every acquisition records
a cheap stack (code objects and line numbers, no source lines and no frame
references, so nothing stays alive), formatted only if the connection is
reported. With leak detection off, the core never calls in here.
"""

from __future__ import annotations

import linecache
import os
import sys
from types import CodeType, FrameType

Holder = tuple[tuple[CodeType, int], ...]

# Frames anywhere in fastpool (any subpackage) are not the acquire site.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FRAMES = 32


def capture_stack() -> Holder:
    """The caller's stack outside fastpool, innermost first."""
    frame: FrameType | None = sys._getframe(1)
    frames: list[tuple[CodeType, int]] = []
    while frame is not None and len(frames) < MAX_FRAMES:
        code = frame.f_code
        if not frames and code.co_filename.startswith(_PACKAGE_DIR):
            frame = frame.f_back  # skip fastpool's own frames at the top
            continue
        frames.append((code, frame.f_lineno))
        frame = frame.f_back
    return tuple(frames)


def capture_task_stack(task_name: str) -> tuple[object, ...]:
    """``capture_stack()`` in an asyncio task, led by the task's name: a
    coroutine's stack runs from the task's step down to the acquire site."""
    return (task_name, *capture_stack())


def _split(holder: object) -> tuple[str | None, Holder]:
    if not isinstance(holder, tuple) or not holder:
        return None, ()
    if isinstance(holder[0], str):
        return holder[0], holder[1:]
    return None, holder


def format_stack(holder: object) -> str:
    """A traceback-style text of a captured stack, outermost call first."""
    task, frames = _split(holder)
    if not frames:
        return "  (acquisition site not recorded)"
    lines = [f"  in asyncio task {task!r}"] if task is not None else []
    for code, lineno in reversed(frames):
        lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}')
        source = linecache.getline(code.co_filename, lineno).strip()
        if source:
            lines.append(f"    {source}")
    return "\n".join(lines)


def acquire_site(holder: object) -> str | None:
    """``file:line in function`` of the innermost recorded frame, for monitoring."""
    _, frames = _split(holder)
    if not frames:
        return None
    code, lineno = frames[0]
    return f"{code.co_filename}:{lineno} in {code.co_name}"
