"""Set-up respects the machine: scripts install into the project's .venv, never the system interpreter."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def system_python() -> str | None:
    """The interpreter bootstrap makes the venv from (PYTHON, default python3 on PATH)."""
    return shutil.which(os.environ.get("PYTHON", "python3"))


def freeze(python: str) -> str:
    return subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}).stdout


def test_scripts_run_the_projects_own_environment():
    for name in ("demo", "test"):
        text = (ROOT / "scripts" / name).read_text()
        assert ".venv" in text and "/bin/python" in text, f"scripts/{name} must run .venv's python"
    boot = (ROOT / "scripts" / "bootstrap").read_text()
    assert '-m venv "$VENV"' in boot and '"$VENV_PY" -m pip install' in boot
    assert '"$PYTHON" -m pip' not in boot, "bootstrap must never pip-install into the system interpreter"


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the suite runs outside a virtual environment")
def test_bootstrap_leaves_the_system_interpreter_untouched():
    python = system_python()
    if python is None or os.path.realpath(python).startswith(os.path.realpath(sys.prefix)):
        pytest.skip("no separate system interpreter on PATH")
    before = freeze(python)
    p = subprocess.run([str(ROOT / "scripts" / "bootstrap"), "--python-only"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env={**os.environ, "SEKIOPS_VENV": sys.prefix})
    assert p.returncode == 0, p.stderr
    assert freeze(python) == before, "bootstrap changed the system interpreter's packages"
    assert pathlib.Path(sys.prefix, "bin", "python").exists()
