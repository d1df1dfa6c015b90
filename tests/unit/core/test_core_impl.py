"""The compiled core and its pure-Python twin: selection and API parity."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastpool
from fastpool import _core_py
from tests.fix_pool import IN_CI


def impl_in_subprocess(value):
    env = {**os.environ}
    if value is None:
        env.pop("FASTPOOL_IMPL", None)
    else:
        env["FASTPOOL_IMPL"] = value
    return subprocess.run(
        [sys.executable, "-c", "import fastpool; print(fastpool._core.__impl__)"],
        env=env, capture_output=True, text=True, timeout=60)


def test_default_loads_the_compiled_core_in_ci():
    proc = impl_in_subprocess(None)
    assert proc.returncode == 0, proc.stderr
    if IN_CI:
        assert proc.stdout.strip() == "compiled"
    else:
        assert proc.stdout.strip() in ("compiled", "python")


def test_python_twin_is_chosen_by_environment_variable():
    proc = impl_in_subprocess("python")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python"


def test_invalid_choice_is_a_clear_import_error():
    proc = impl_in_subprocess("rust")
    assert proc.returncode != 0
    assert "FASTPOOL_IMPL='rust' is not valid" in proc.stderr


def test_both_cores_have_the_same_api():
    def api(module):
        names = {n for n in dir(module.PoolCore) if not n.startswith("__")}
        consts = {n for n in dir(module) if n.isupper()}
        return names, consts

    if fastpool._core.__impl__ != "compiled":
        pytest.skip("compiled core not built")
    compiled_names, compiled_consts = api(fastpool._core)
    py_names, py_consts = api(_core_py)
    assert compiled_names <= py_names, compiled_names - py_names
    assert compiled_consts <= py_consts, compiled_consts - py_consts
    for name in compiled_consts:
        assert getattr(fastpool._core, name) == getattr(_core_py, name), name


def test_asking_for_the_compiled_core_when_it_is_missing_is_a_clear_error():
    code = ("import sys; sys.modules['fastpool._core'] = None\n"
            "import fastpool")
    env = {**os.environ, "FASTPOOL_IMPL": "c"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "FASTPOOL_IMPL asks for the compiled core, but it cannot be imported" in proc.stderr
    assert "Tried: fastpool._core (compiled)" in proc.stderr


def test_an_installed_wheel_is_the_fastpool_under_test():
    """scripts/matrix (CI on the other Pythons) runs the suite against the wheel
    it installed in a venv and names that venv's site-packages here: fastpool
    and its compiled core must come from there, never from src/."""
    site = os.environ.get("FASTPOOL_EXPECT_INSTALLED")
    if not site:
        pytest.skip("not a run against an installed wheel (see scripts/matrix)")
    site_dir = os.path.realpath(site) + os.sep
    assert os.path.realpath(fastpool.__file__).startswith(site_dir), fastpool.__file__
    assert fastpool._core.__impl__ == "compiled"
    assert os.path.realpath(fastpool._core.__file__).startswith(site_dir), fastpool._core.__file__
