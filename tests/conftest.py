pytest_plugins = ["tests.fix_pool", "tests.fix_db", "tests.fix_proxy"]
