"""The house's layers only point down (docs/architecture.md), checked on the source with ``ast``.

Every ``import`` and ``from ... import`` in every module of the package, at the top or inside a
function, resolved to an absolute module name:

* ``ops``, ``pipeline``, ``format``, ``state``, ``blob`` never import ``sekiops.cli`` or
  ``sekiops.widgets`` (nor ipywidgets: a UI is the widgets' job);
* ``pipeline``, ``format``, ``state``, ``blob`` never import ``sekiops.ops``; ``format``, ``state``
  and ``blob`` never import ``sekiops.pipeline``; ``format`` imports neither ``state`` nor ``blob``;
* ``format`` does no I/O of its own: no I/O modules, no ``open()``, no ``os`` call but the environment;
* Sekiban's byte[] path, modelled (``sekiops.ops.bench.modelled``), is imported by the benchmark's
  child entry point only, so it runs in benchmark child processes and nowhere in the product.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sekiops"

LOWER = ("sekiops.ops", "sekiops.pipeline", "sekiops.format", "sekiops.state", "sekiops.blob")
NEVER_UP = {
    "sekiops.ops": ("sekiops.cli", "sekiops.widgets", "ipywidgets"),
    "sekiops.pipeline": ("sekiops.cli", "sekiops.widgets", "ipywidgets", "sekiops.ops"),
    "sekiops.state": ("sekiops.cli", "sekiops.widgets", "ipywidgets", "sekiops.ops", "sekiops.pipeline"),
    "sekiops.blob": ("sekiops.cli", "sekiops.widgets", "ipywidgets", "sekiops.ops", "sekiops.pipeline"),
    "sekiops.format": ("sekiops.cli", "sekiops.widgets", "ipywidgets", "sekiops.ops", "sekiops.pipeline",
                       "sekiops.state", "sekiops.blob", "sekiops.metrics"),
}
FORMAT_NO_IO = ("socket", "ssl", "http", "urllib", "subprocess", "sqlite3", "psycopg", "azure", "boto3", "botocore",
                "requests", "shutil", "tempfile", "pathlib", "glob", "fcntl", "mmap", "select", "signal",
                "multiprocessing", "asyncio")
OS_ALLOWED = {"environ", "getenv"}
MODEL = "sekiops.ops.bench.modelled"
MODEL_IMPORTERS = {"sekiops.ops.bench.__main__"}

#: Upward imports tolerated for now (none: the incident timeline widget moved to sekiops/widgets/).
#: An entry here must still be real (test_known_exceptions_are_still_real) so it cannot outlive its fix.
KNOWN: set[tuple[str, str]] = set()


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), is_pkg, path


MODULES = list(_modules())


def _imports(name: str, is_pkg: bool, path: Path):
    """(imported module, line) for every import in the file, relative ones made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, node.lineno
            for alias in node.names:  # from . import x: x may be a module
                yield f"{mod}.{alias.name}", node.lineno


def _under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def _violations():
    found = {}
    for name, is_pkg, path in MODULES:
        layer = next((lay for lay in NEVER_UP if _under(name, lay)), None)
        for mod, line in _imports(name, is_pkg, path):
            if layer is not None:
                for bad in NEVER_UP[layer]:
                    if _under(mod, bad) and not (layer == "sekiops.ops" and _under(name, "sekiops.ops")
                                                 and bad == "sekiops.ops"):
                        found.setdefault((name, bad), f"{path.relative_to(ROOT.parent)}:{line} imports {mod}")
            if _under(mod, MODEL) and not _under(name, MODEL) and name not in MODEL_IMPORTERS:
                found.setdefault((name, MODEL), f"{path.relative_to(ROOT.parent)}:{line} imports the model {mod}")
    return found


def test_the_walker_sees_the_package():
    names = {n for n, _, _ in MODULES}
    assert {"sekiops.cli.main", "sekiops.ops.bench", "sekiops.ops.bench.modelled.dotnet", "sekiops.format.envelope",
            "sekiops.pipeline.persist"} <= names
    imports = {m for m, _ in _imports("sekiops.ops.bench.__main__", False, ROOT / "ops" / "bench" / "__main__.py")}
    assert "sekiops.ops.bench.modelled.persist" in imports and "sekiops.errors" in imports


def test_layers_only_point_down():
    found = _violations()
    new = {k: v for k, v in found.items() if k not in KNOWN}
    assert not new, "upward imports:\n" + "\n".join(sorted(new.values()))


def test_known_exceptions_are_still_real():
    """When the known exception is fixed, drop it from KNOWN so the rule covers that module again."""
    stale = KNOWN - set(_violations())
    assert not stale, f"no longer imported, remove from KNOWN: {sorted(stale)}"


def test_the_model_runs_only_in_benchmark_children():
    importers = {name for name, is_pkg, path in MODULES if not _under(name, MODEL)
                 for mod, _ in _imports(name, is_pkg, path) if _under(mod, MODEL)}
    assert importers == MODEL_IMPORTERS
    # and the product's persist knows no modes any more
    source = (ROOT / "pipeline" / "persist.py").read_text()
    assert "legacy" not in source.lower() and "byte_array" not in source


@pytest.mark.parametrize("path", sorted((ROOT / "format").glob("*.py")), ids=lambda p: p.name)
def test_format_does_no_io(path):
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for mod in mods:
                if any(_under(mod, bad) for bad in FORMAT_NO_IO):
                    problems.append(f"line {node.lineno}: imports {mod}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            problems.append(f"line {node.lineno}: open()")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
              and node.attr not in OS_ALLOWED):
            problems.append(f"line {node.lineno}: os.{node.attr}")
    assert not problems, f"{path.name} does I/O: {problems}"


def test_the_cli_modules_hold_no_benchmark_or_parsing_logic():
    """The CLI parses arguments and prints: the benchmark, log and anatomy commands call one ops function."""
    for name in ("bench", "evidence", "ops_reports"):
        source = (ROOT / "cli" / f"{name}.py").read_text()
        tree = ast.parse(source)
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        private = [f.name for f in funcs if f.name.startswith("_")]
        assert not private, f"cli/{name}.py has helpers {private}: logic belongs in ops"
        assert os.path.getsize(ROOT / "cli" / f"{name}.py") < 8000
