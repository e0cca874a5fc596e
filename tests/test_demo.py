"""``sekiops demo`` as a new user meets it: quiet stderr, one unit convention, and a way on.

The demo runs for real (small state, notebooks rendered through papermill), then the commands it
prints at the end are run exactly as printed, with the environment its ``export`` lines set.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKIOPS_")}
    env["SEKIOPS_SPOOL_DIR"] = str(work / "spool")
    proc = subprocess.run([sys.executable, "-m", "sekiops", "demo", "--dir", str(work / "d"), "--size", "3MB"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900)
    return work, env, proc


def _next_steps(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Try it next"))
    return [line.strip() for line in lines[start + 1:] if line.startswith("  ")]


def test_demo_stderr_is_progress_only(demo_run):
    _, _, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line in proc.stderr.splitlines():
        assert "WARNING" not in line and "Warning" not in line, line
        assert not line.startswith(("[IPKernelApp]", "Traceback")), line
    assert "[3/3] rendering notebooks to HTML" in proc.stderr


def test_demo_speaks_binary_units(demo_run):
    _, _, proc = demo_run
    text = proc.stdout + proc.stderr
    assert re.search(r"\d MiB\b", proc.stdout), proc.stdout
    # no decimal MB anywhere the demo speaks (progress, table, summary lines)
    assert not re.search(r"\d ?MB\b|\bMB/s\b|_mb\b", text), re.findall(r".*(?:MB\b|_mb\b).*", text)
    header = next(line for line in proc.stdout.splitlines() if line.startswith("op "))
    assert header.split() == ["op", "path", "state", "peak", "RSS", "over", "idle", "time", "throughput", "ok"]
    modelled = [line for line in proc.stdout.splitlines() if "byte[] path, modelled" in line and "not timed" in line]
    assert len(modelled) == 2  # persist and restore, memory only


def test_demo_ends_with_exports_and_three_commands_that_work(demo_run):
    work, env, proc = demo_run
    steps = _next_steps(proc.stdout)
    exports = [s for s in steps if s.startswith("export ")]
    commands = [s for s in steps if not s.startswith(("export ", "source "))]
    assert [e.split("=")[0] for e in exports] == ["export SEKIOPS_STATE_URL", "export SEKIOPS_BLOB_URL"]
    assert len(commands) == 3
    run_env = dict(env)
    for line in exports:
        name, value = shlex.split(line[len("export "):])[0].split("=", 1)
        run_env[name] = value
    outputs = []
    for line in commands:
        argv = shlex.split(line)
        if argv[0] == "sekiops":
            argv = [sys.executable, "-m", "sekiops", *argv[1:]]
        r = subprocess.run(argv, cwd=work, env=run_env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (line, r.stderr)
        outputs.append(r.stdout)
    inventory, anatomy, audit = outputs
    assert "CustomerDirectory" in inventory and "tombstoned" in inventory
    assert "$." in anatomy
    assert re.search(r"\b1 orphan", audit), audit


def test_readme_repeats_the_demo_commands(demo_run):
    _, _, proc = demo_run
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Try it on the demo"):]
    section = section[:section.index("\n## ", 3)]
    for line in _next_steps(proc.stdout):
        if line.startswith("export "):
            assert line.split("=")[0] in section, line
        elif not line.startswith("source "):
            assert line in section, line
