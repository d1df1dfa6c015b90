"""The dependency rule of ARCHITECTURE.md, enforced by reading the imports.

Layers, lowest first; a module imports only from its own layer or below
(imports inside functions and under TYPE_CHECKING count too):

1. base: errors, options, backoff, sqltext, _loader, steps
2. core: _core and its twin, the other compiled extensions and their twins
3. drivers: drivers/ (the client adapters)
4. features: source (their contract), transaction, query/, writes/
5. pool: pool/ (the facade composes the policy with the features)
6. top: monitoring/, cli/, sqlalchemy (the SQLAlchemy pool classes), compat/
   (psycopg_pool's API), the package's __init__ and __main__

And only drivers/ looks at which client library a connection or an error
comes from: nowhere else reads ``__module__`` or tests ``isinstance`` against
a client library's classes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "fastpool"

LAYERS = [
    ("base", ("errors", "options", "backoff", "sqltext", "_loader", "steps")),
    ("core", ("_core", "_core_py", "_bulkenc", "_bulkenc_py", "_mysqlstatus", "_pgstatus")),
    ("drivers", ("drivers",)),
    ("features", ("source", "transaction", "query", "writes")),
    ("pool", ("pool",)),
    ("cluster", ("cluster",)),
    ("top", ("monitoring", "cli", "sqlalchemy", "compat", "__init__", "__main__")),
]
RANK = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}
CLIENT_MODULES = {"sqlite3", "psycopg", "MySQLdb", "asyncpg", "aiosqlite", "asyncmy", "aiomysql"}


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def top_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def fastpool_imports(tree: ast.AST, path: Path) -> list[tuple[int, str]]:
    """(line, first component under fastpool) of every fastpool import."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "fastpool" and len(parts) > 1:
                    found.append((node.lineno, parts[1]))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "fastpool":
                continue
            if len(parts) > 1:
                found.append((node.lineno, parts[1]))
            else:  # from fastpool import x
                found.extend((node.lineno, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_a_module_imports_only_its_own_layer_or_below(path):
    mine = top_of(path)
    assert mine in RANK, f"{path}: not in any layer of ARCHITECTURE.md; add it to LAYERS"
    tree = ast.parse(path.read_text(), str(path))
    for line, target in fastpool_imports(tree, path):
        assert target in RANK, f"{path}:{line} imports fastpool.{target}, which has no layer"
        assert RANK[target] <= RANK[mine], (
            f"{path}:{line}: {mine} ({LAYERS[RANK[mine]][0]}) imports fastpool.{target} "
            f"({LAYERS[RANK[target]][0]}), a higher layer")


def test_no_feature_module_imports_the_pool():
    for path in modules():
        if LAYERS[RANK[top_of(path)]][0] != "features":
            continue
        tree = ast.parse(path.read_text(), str(path))
        assert all(target != "pool" for _, target in fastpool_imports(tree, path)), path


def client_sniffing(tree: ast.AST) -> list[tuple[int, str]]:
    """Places that look at which client library an object comes from."""
    names_from_clients = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names_from_clients |= {a.asname or a.name for a in node.names
                                   if a.name.split(".")[0] in CLIENT_MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module \
                and node.module.split(".")[0] in CLIENT_MODULES:
            names_from_clients |= {a.asname or a.name for a in node.names}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "__module__":
            found.append((node.lineno, "reads __module__"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
            for sub in ast.walk(node.args[1]):
                if isinstance(sub, ast.Name) and sub.id in names_from_clients:
                    found.append((node.lineno, f"isinstance against {sub.id}"))
    return found


def test_only_drivers_look_at_a_clients_module():
    offenders = []
    for path in modules():
        if top_of(path) == "drivers":
            continue
        tree = ast.parse(path.read_text(), str(path))
        offenders += [f"{path.relative_to(SRC)}:{line}: {what}"
                      for line, what in client_sniffing(tree)]
    assert offenders == []


def test_the_rule_checker_sees_a_violation(tmp_path):
    """The checks above can fail: a feature importing the pool and sniffing a
    client's module is caught."""
    bad = ast.parse("import sqlite3\nfrom fastpool.pool import Pool\n"
                    "def f(conn):\n"
                    "    return type(conn).__module__, isinstance(conn, sqlite3.Connection)\n")
    assert (2, "pool") in fastpool_imports(bad, tmp_path)
    assert {what for _, what in client_sniffing(bad)} == {
        "reads __module__", "isinstance against sqlite3"}
