"""Notebook 02 (guarded migration) headless under papermill, and its console's guards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sekiops.ops.migrate import RunOptions, make_plan, open_endpoints
from sekiops.state import open_state_store
from sekiops.state.base import iter_rows

from test_migrate import put_rows, tree  # noqa: E402 - shared row builders

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "02_guarded_migration.ipynb"


def outputs_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            parts.append("".join((out.get("data") or {}).get("text/plain", "")))
    return "\n".join(parts)


def test_notebook_plans_refuses_unconfirmed_and_executes(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", str(tmp_path / "spool"))
    db, blob_url, journal = f"sqlite:///{work}/state.db", f"file://{work}/blobs", str(work / "nb.jsonl")
    state = open_state_store(db)
    put_rows(state, 12, fmts=("v9", "json"))
    params = dict(kind="reencode", state_url=db, blob_url=blob_url, journal=journal, canary=0)
    before = tree(str(work))

    planned = out / "plan.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(planned), parameters=params, kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path))
    text = outputs_text(planned)
    assert "rows to change: 12" in text and "estimated time" in text and "dry-run" in text
    assert tree(str(work)) == before  # planning wrote nothing

    refused = out / "refused.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="confirm_service"):
        papermill.execute_notebook(str(NOTEBOOK), str(refused), parameters={**params, "execute": True,
                                   "confirm_service": "someone-else"}, kernel_name="python3",
                                   progress_bar=False, cwd=str(tmp_path))
    assert tree(str(work)) == before

    executed = out / "executed.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(executed), parameters={**params, "execute": True,
                               "confirm_service": "default"}, kernel_name="python3", progress_bar=False,
                               cwd=str(tmp_path))
    text = outputs_text(executed)
    assert "complete: migrate reencode: 12 done" in text  # the executed notebook is the audit record
    assert all(r.build_source == "SEKIOPS_MIGRATE" and r.revision == 2 for r in iter_rows(state))
    assert os.path.exists(journal) and any(p.name.startswith("nb.jsonl.audit-") for p in work.iterdir())


def test_console_needs_the_target_service_named(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    from sekiops.widgets.migration_console import MigrationConsole

    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", str(tmp_path / "spool"))
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    state = open_state_store(db, service_id="orders")
    put_rows(state, 8, fmts=("v9",))
    with open_endpoints("reencode", db, blob_url, service_id="orders") as ep:
        console = MigrationConsole(make_plan("reencode", ep), ep,
                                   RunOptions(journal=str(tmp_path / "c.jsonl"), canary=3))
        assert "orders" in console.title.value
        console.run_canary.click()  # locked: nothing runs
        assert console.wait() is None and console.run_canary.disabled
        console.confirm.value = "default"
        assert console.run_canary.disabled and console.run_all.disabled
        console.confirm.value = "orders"
        assert not console.run_canary.disabled
        console.run_canary.click()
        result = console.wait(30)
        assert result.status == "canary" and result.counts["done"] == 3 and console.bar.value == 3
        console.run_all.click()
        result = console.wait(30)
        assert result.status == "complete" and result.counts["done"] == 5 and result.counts["already"] == 3
        assert "done <b>5</b>" in console.counts.value
    assert sorted(r.revision for r in iter_rows(state)) == [2] * 8
    audit = json.loads(Path(result.audit).read_text())
    assert audit["status"] == "complete" and audit["where"]["serviceId"] == "orders"
