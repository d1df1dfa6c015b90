"""The core's declared contract with its policy, and how FASTPOOL_IMPL picks code.

The compiled core calls four methods it does not implement: ``_acquire_slow``,
``_release_slow``, ``_release_unknown`` and ``_capture_holder``. They are
declared on both cores (and in ``_core.pyi``) with defaults that name what is
missing, and a policy mixin listed before the core in the MRO (as in
``class Pool(PoolPolicy, PoolCore)``) overrides them even though the calls come
from C. These tests drive bare cores over real SQLite connections, without the
pool's policy.
"""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import fastpool
from fastpool import _core_py
from tests.fix_pool import IN_CI

HOOKS = ("_acquire_slow", "_release_slow", "_release_unknown", "_capture_holder")
HOUR_NS = 3600 * 10**9
SRC = Path(fastpool.__file__).parent


def start(pool: Any, conns: list[sqlite3.Connection], *, track_holders: bool = False) -> None:
    """What the policy does: configure the core (sqlite3's ``in_transaction``
    is the status it reads) and register the connections."""
    pool._set_policy(lifo=True, bypass_ns=HOUR_NS, max_open=max(len(conns), 1),
                     status_attr="in_transaction", idle_status=False,
                     always_slow_release=False, track_holders=track_holders)
    now = pool._now_ns()
    for conn in conns:
        pool._add(conn, conn, now, now + HOUR_NS)


def core_under_policy(core: ModuleType, *, without: str | None = None) -> Any:
    """A bare core under a plain policy mixin listed first, as in
    ``class Pool(PoolPolicy, PoolCore)``; ``without`` leaves one hook out."""
    policy: type = RecordingPolicy
    if without is not None:
        # Not inherited either: the core's declaration is all that remains.
        policy = type("IncompletePolicy", (), {
            k: v for k, v in vars(RecordingPolicy).items() if k in HOOKS and k != without})
    pool = type("Pool", (policy, core.PoolCore), {})()
    pool.calls = []
    return pool


class RecordingPolicy:
    """A plain mixin, as PoolPolicy is: every hook records its call and does
    the least a policy must (the slow release rolls back or commits, and shelves)."""

    calls: list[tuple[Any, ...]]

    def _acquire_slow(self, timeout: float | None, idx: int) -> Any:
        self.calls.append(("_acquire_slow", timeout, idx))
        return "lent by the policy"

    def _release_slow(self, idx: int, commit: bool) -> None:
        self.calls.append(("_release_slow", idx, commit))
        conn = self._conn_at(idx)  # type: ignore[attr-defined]
        if commit:
            conn.commit()
        else:
            conn.rollback()
        self._putback(idx)  # type: ignore[attr-defined]

    def _release_unknown(self, conn: Any) -> None:
        self.calls.append(("_release_unknown", conn))

    def _capture_holder(self) -> object:
        self.calls.append(("_capture_holder",))
        return "acquired at test line"


def test_hooks_are_declared_on_both_cores_with_defaults_naming_what_is_missing(core):
    bare = core.PoolCore()
    for name in HOOKS:
        assert callable(getattr(core.PoolCore, name)), name
    with pytest.raises(NotImplementedError, match="_acquire_slow must be provided by the pool's"):
        bare._acquire_slow(None, -1)
    with pytest.raises(NotImplementedError, match="_release_slow must be provided by the pool's"):
        bare._release_slow(0, False)
    with pytest.raises(NotImplementedError, match="_release_unknown must be provided by the"):
        bare._release_unknown(object())
    assert bare._capture_holder() is None


def test_core_calls_the_hooks_of_a_policy_mixin_listed_before_it(core, connect):
    pool = core_under_policy(core)
    start(pool, [], track_holders=True)
    # Nothing idle: the policy is asked (and what it returns is what acquire returns).
    assert pool.acquire(2.5) == "lent by the policy"
    # A timeout the fast path does not take goes to the policy unchecked.
    assert pool.acquire(-1) == "lent by the policy"
    assert pool.calls == [("_acquire_slow", 2.5, -1), ("_acquire_slow", -1, -1)]

    conn = connect()
    start(pool, [conn], track_holders=True)
    pool.calls.clear()
    assert pool.acquire() is conn  # the fast path; it records the holder
    assert pool._holders()[0][2] == "acquired at test line"
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    conn.execute("INSERT INTO t VALUES (1)")  # a transaction is open now
    pool.release(conn)
    idx = pool._slot_of(conn)
    with pool.connection() as same:
        same.execute("INSERT INTO t VALUES (2)")
    stranger = connect()
    pool.release(stranger)
    assert pool.calls == [("_capture_holder",), ("_release_slow", idx, False),
                          ("_capture_holder",), ("_release_slow", idx, True),
                          ("_release_unknown", stranger)]
    assert conn.execute("SELECT x FROM t").fetchall() == [(2,)]  # 1 rolled back, 2 committed
    assert pool._sizes() == (1, 1, 0, 0)  # shelved by the policy: open, idle, in use, waiting


@pytest.mark.parametrize("missing", ["_acquire_slow", "_release_slow", "_release_unknown"])
def test_a_policy_without_a_hook_gets_not_implemented_error_naming_it(core, connect, missing):
    pool = core_under_policy(core, without=missing)
    conn = connect()
    start(pool, [conn])
    with pytest.raises(NotImplementedError, match=f"^{missing} must be provided by the pool's"):
        if missing == "_acquire_slow":
            pool.acquire()  # takes the one idle connection
            pool.acquire()  # nothing idle: the slow path
        elif missing == "_release_slow":
            got = pool.acquire()
            got.execute("BEGIN")
            pool.release(got)  # a transaction is open: the slow path
        else:
            pool.release(connect())


def test_a_policy_without_capture_holder_records_none(core, connect):
    pool = core_under_policy(core, without="_capture_holder")
    conn = connect()
    start(pool, [conn], track_holders=True)
    assert pool.acquire() is conn
    assert pool._holders()[0][2] is None
    pool.release(conn)


def _stub_methods() -> dict[str, ast.FunctionDef]:
    tree = ast.parse((SRC / "_core.pyi").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PoolCore")
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_the_stub_declares_the_hooks_and_the_clock_with_docstrings():
    stub = _stub_methods()
    expected = {"_acquire_slow": ["self", "timeout", "idx"],
                "_release_slow": ["self", "idx", "commit"],
                "_release_unknown": ["self", "conn"],
                "_capture_holder": ["self"],
                "_now_ns": ["self"],
                "_set_clock": ["self", "clock"]}
    for name, params in expected.items():
        assert name in stub, name
        assert [a.arg for a in stub[name].args.args] == params, name
        assert ast.get_docstring(stub[name]), name
        twin = getattr(_core_py.PoolCore, name)
        assert list(twin.__code__.co_varnames[:twin.__code__.co_argcount]) == params, name


def test_the_stub_and_both_cores_have_the_same_policy_api(core):
    stub = {name for name in _stub_methods() if not name.startswith("__")}
    runtime = {name for name in dir(core.PoolCore) if not name.startswith("__")}
    # Everything the stub promises exists (a name only in the stub would pass
    # mypy and fail at run time).
    assert stub <= runtime, stub - runtime
    if core.__impl__ == "compiled":  # the twin may keep helpers of its own
        assert runtime <= stub, runtime - stub


# ---- FASTPOOL_IMPL ---------------------------------------------------------------

# Runs in a fresh interpreter: loads fastpool/_loader.py by path (it needs only
# the standard library), then asks for a pair of stand-in modules.
_LOAD = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("fp_loader", sys.argv[1])
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    try:
        module = loader.load_extension(sys.argv[2], sys.argv[3])
        print(json.dumps({"loaded": module.__name__}))
    except ImportError as exc:
        print(json.dumps({"error": str(exc)}))
""")


def load_in_subprocess(tmp_path: Path, value: str | None, compiled: str, twin: str) -> Any:
    for name, kind in ((f"{tmp_path.name}_ext", "compiled"), (f"{tmp_path.name}_ext_py", "python")):
        (tmp_path / f"{name}.py").write_text(f"__impl__ = {kind!r}\n")
    env = {k: v for k, v in os.environ.items() if k != "FASTPOOL_IMPL"}
    if value is not None:
        env["FASTPOOL_IMPL"] = value
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _LOAD, str(SRC / "_loader.py"),
                           compiled.format(p=tmp_path.name), twin.format(p=tmp_path.name)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


BUILT, MISSING, TWIN, NO_TWIN = "{p}_ext", "{p}_ext_missing", "{p}_ext_py", "{p}_ext_py_missing"


@pytest.mark.parametrize(("value", "compiled", "twin", "expected"), [
    (None, BUILT, TWIN, "{p}_ext"),           # unset: compiled preferred
    (None, MISSING, TWIN, "{p}_ext_py"),      # ... with the twin as fallback
    ("", BUILT, TWIN, "{p}_ext"),             # empty is unset
    ("", MISSING, TWIN, "{p}_ext_py"),
    ("c", BUILT, TWIN, "{p}_ext"),
    ("python", BUILT, TWIN, "{p}_ext_py"),    # the twin even when compiled code exists
    ("python", MISSING, TWIN, "{p}_ext_py"),
])
def test_fastpool_impl_chooses_compiled_code_or_the_twin(tmp_path, value, compiled, twin,
                                                         expected):
    got = load_in_subprocess(tmp_path, value, compiled, twin)
    assert got == {"loaded": expected.format(p=tmp_path.name)}


def test_fastpool_impl_c_requires_compiled_code_and_says_what_was_tried(tmp_path):
    got = load_in_subprocess(tmp_path, "c", MISSING, TWIN)
    missing = MISSING.format(p=tmp_path.name)
    assert got["error"].startswith(f"FASTPOOL_IMPL asks for the compiled {missing}, but it "
                                   "cannot be imported. Tried: "
                                   f"{missing} (compiled): No module named '{missing}'")


def test_without_compiled_code_or_twin_the_error_lists_both(tmp_path):
    got = load_in_subprocess(tmp_path, None, MISSING, NO_TWIN)
    missing, no_twin = MISSING.format(p=tmp_path.name), NO_TWIN.format(p=tmp_path.name)
    assert f"Tried: {missing} (compiled): " in got["error"]
    assert f"; {no_twin} (pure Python): " in got["error"]
    got = load_in_subprocess(tmp_path, "python", BUILT, NO_TWIN)
    assert f"Tried: {no_twin} (pure Python): " in got["error"]
    assert "(compiled)" not in got["error"]  # python never tries compiled code


@pytest.mark.parametrize("value", ["rust", "C", "py", "compiled", "cython", " python", "auto"])
def test_any_other_fastpool_impl_is_an_import_error_naming_the_valid_values(tmp_path, value):
    got = load_in_subprocess(tmp_path, value, BUILT, TWIN)
    assert got["error"].startswith(f"FASTPOOL_IMPL={value!r} is not valid: use 'c' ")
    assert "'python'" in got["error"] and "leave it unset" in got["error"]


@pytest.mark.parametrize("value", ["c", "python"])
def test_every_extension_of_fastpool_follows_fastpool_impl(value):
    code = textwrap.dedent("""
        import json, fastpool
        from fastpool._loader import load_extension
        pairs = [("fastpool._core", "fastpool._core_py"),
                 ("fastpool._bulkenc", "fastpool._bulkenc_py"),
                 ("fastpool._mysqlstatus", "fastpool.drivers._mysqlstatus_py")]
        print(json.dumps([fastpool._core.__impl__] + [
            load_extension(compiled, twin).__name__ for compiled, twin in pairs[1:]]))
    """)
    env = {**os.environ, "FASTPOOL_IMPL": value}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    if value == "c" and proc.returncode != 0 and not IN_CI \
            and "asks for the compiled" in proc.stderr:
        pytest.skip("compiled extensions not built")
    assert proc.returncode == 0, proc.stderr
    if value == "c":
        assert json.loads(proc.stdout) == ["compiled", "fastpool._bulkenc",
                                           "fastpool._mysqlstatus"]
    else:
        assert json.loads(proc.stdout) == ["python", "fastpool._bulkenc_py",
                                           "fastpool.drivers._mysqlstatus_py"]
