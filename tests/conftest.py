pytest_plugins = ["tests.fix_pool"]
