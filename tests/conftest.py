# Every fixture plugin is registered here, once (not also with -p in pyproject's addopts).
import os

import pytest

pytest_plugins = ["tests.fix_pool", "tests.fix_db", "tests.fix_proxy", "tests.fix_clock",
                  "tests.fix_replicas", "tests.fix_pgbouncer"]

#: The fixtures that run a test body over both cores ("compiled", "python").
CORE_FIXTURES = ("pool_cls", "async_pool_cls", "core")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """FASTPOOL_TEST_CORES=compiled leaves out the runs over the pure-Python
    twin: scripts/matrix sets it on the Pythons beside the default, which test
    the installed wheel's compiled core (the twin runs on the default Python)."""
    if os.environ.get("FASTPOOL_TEST_CORES", "both") != "compiled":
        return
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        twin = any(params.get(name) == "python" for name in CORE_FIXTURES)
        (drop if twin else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
