# Every fixture plugin is registered here, once (not also with -p in pyproject's addopts).
pytest_plugins = ["tests.fix_pool", "tests.fix_db", "tests.fix_proxy", "tests.fix_clock"]
