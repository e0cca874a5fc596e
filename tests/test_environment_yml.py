"""environment.yml (for conda users) must list exactly pyproject.toml's runtime dependencies."""

from __future__ import annotations

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: PyPI name -> conda-forge name, where they differ
CONDA_NAMES = {"isal": "python-isal"}
#: conda packages with no PyPI counterpart: the C libraries a wheel would have bundled
#: (ijson's wheel ships libyajl; conda's ijson links a separate yajl package)
CONDA_ONLY = {"yajl"}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
    name = m.group(1).lower().replace("_", "-")
    return CONDA_NAMES.get(name, name), m.group(3).replace(" ", "")


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_name_and_spec(r) for r in data["project"]["dependencies"])


def _environment() -> dict[str, str]:
    deps: dict[str, str] = {}
    in_deps = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        m = re.match(r"^  - ([A-Za-z0-9_.-]+)\s*(.*)$", line)
        if in_deps and m and m.group(1) not in ("pip", "python", *CONDA_ONLY):
            deps[m.group(1).lower()] = m.group(2).replace(" ", "")
    return deps


def test_environment_yml_mirrors_pyproject():
    assert _environment() == _pyproject()


def test_environment_yml_pins_python_and_installs_the_package():
    text = (ROOT / "environment.yml").read_text()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"python{requires}" in text.replace(" ", "")
    assert "- -e ." in text
