"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README has no sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def ci_commands():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_readme_opens_with_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert "fastpool bench" in commands[0]
    assert commands[1].startswith("bash scripts/test")


def readme_command_line(commands):
    """Where CI runs the README's test command (its output may be piped on)."""
    lines = [i for i, line in enumerate(commands)
             if line == readme_commands()[1] or line.startswith(readme_commands()[1] + " ")]
    assert lines, "CI does not run the README's test command"
    return lines[0]


def test_ci_runs_the_readme_test_command():
    readme_command_line(ci_commands())


def test_ci_runs_the_test_script_then_the_other_pythons():
    # The README's command on the default Python, then the suite on every other
    # claimed Python against its installed wheel (scripts/matrix).
    commands = ci_commands()
    matrix = [i for i, line in enumerate(commands) if "bash scripts/matrix --test" in line]
    assert matrix and readme_command_line(commands) < matrix[0]


def test_the_test_script_exists_and_parses():
    bash, script, *_ = shlex.split(readme_commands()[1])
    assert bash == "bash"
    path = ROOT / script
    assert path.is_file(), f"{script} named in the README is missing"
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    # Installs the test extra, then hands its arguments to pytest.
    assert "-m pip install -e '.[test]'" in text
    assert re.search(r'^exec .*-m pytest "\$@"$', text, re.M)


def test_the_test_extra_brings_mysqlclient():
    # Without mysqlclient every MariaDB test skips, so the README's command
    # would not run them.
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    test = " ".join(extras["test"])
    assert re.search(r"fastpool\[[^\]]*\bmysql\b", test), extras["test"]
    assert "pytest-timeout" in test   # pyproject's `timeout` needs it


def test_the_asyncio_example_runs(tmp_path):
    """The README's first asyncio example, as a user would paste it (SQLite via aiosqlite)."""
    pytest.importorskip("aiosqlite")
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## asyncio"):]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example and "create_async_pool" in example.group(1)
    (tmp_path / "example.py").write_text(example.group(1))
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["(1,)", "1"]
