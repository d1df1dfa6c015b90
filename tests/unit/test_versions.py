"""One list of Python versions: requires-python, the classifiers and the
cibuildwheel build list name the same ones (CI tests each of them)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, which pytest itself requires there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pyproject() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def claimed(pyproject) -> list[tuple[int, int]]:
    found = [re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c)
             for c in pyproject["project"]["classifiers"]]
    return [(3, int(m.group(1))) for m in found if m]


def test_the_classifiers_name_consecutive_versions_from_requires_python(pyproject):
    versions = claimed(pyproject)
    low = re.fullmatch(r">=3\.(\d+)", pyproject["project"]["requires-python"])
    assert low, "requires-python is a lower bound: >=3.N"
    assert versions == [(3, n) for n in range(int(low.group(1)), versions[-1][1] + 1)]


def test_cibuildwheel_builds_exactly_the_claimed_versions(pyproject):
    build = pyproject["tool"]["cibuildwheel"]["build"].split()
    assert build == [f"cp3{minor}-*" for _, minor in claimed(pyproject)]


def test_this_python_is_a_claimed_version(pyproject):
    assert sys.version_info[:2] in claimed(pyproject)
