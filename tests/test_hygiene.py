"""The code checks pass: ruff (pyproject.toml's [tool.ruff]) over the repository, mypy
([tool.mypy]) over sekiops/; and the package says it is typed (sekiops/py.typed, shipped).

.ci/run runs the same checks first (scripts/lint); here they make ``scripts/test`` cover them too.
ruff and mypy come with the test extra: a missing one is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(tool) is None:
        pytest.fail(f"{tool} is not installed in {sys.prefix}: install the test extra (pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_ruff_finds_nothing():
    p = _run("ruff", "check", "--no-cache", "--output-format", "concise")
    assert p.returncode == 0, f"ruff check found problems:\n{p.stdout}{p.stderr}"


def test_mypy_finds_nothing():
    p = _run("mypy")
    assert p.returncode == 0, f"mypy found problems:\n{p.stdout}{p.stderr}"


def test_the_package_is_marked_typed_and_ships_the_marker():
    assert (ROOT / "sekiops" / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in data["tool"]["setuptools"]["package-data"]["sekiops"]


def test_the_checks_run_before_the_tests_in_ci():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("scripts/lint") < ci.index("scripts/test")
    lint = (ROOT / "scripts" / "lint").read_text()
    assert "-m ruff check" in lint and "-m mypy" in lint
