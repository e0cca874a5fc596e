"""Notebook 02 (guarded migration) headless under papermill, and its console's guards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sekiops.ops.migrate import RunOptions, make_plan, open_endpoints
from sekiops.state import open_state_store
from sekiops.state.base import iter_rows
from test_migrate import put_rows, tree

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
    assert "rows to change: 12" in text and "estimated time" in text and "dry run: nothing was written" in text
    assert "execute=True" in text and "--execute" not in text and "--continue" not in text
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
    assert "complete: done 12, skipped 0, failed 0" in text  # the executed notebook is a record of the run
    assert all(r.build_source == "SEKIOPS_MIGRATE" and r.revision == 2 for r in iter_rows(state))
    assert os.path.exists(journal) and any(p.name.startswith("nb.jsonl.audit-") for p in work.iterdir())


def test_console_needs_the_target_service_named(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    from sekiops.widgets.migration_console import MigrationConsole

    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("SEKIOPS_HOME", str(tmp_path / "home"))
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
        # the documented flow: after the canary, Run all is pressable without retyping the confirmation
        assert not console.run_all.disabled and not console.run_canary.disabled
        assert console.pause.disabled and console.stop.disabled
        assert "press Run all" in console.status.value and "--continue" not in console.status.value
        console.run_all.click()
        result = console.wait(30)
        assert result.status == "complete" and result.counts["done"] == 5 and result.counts["already"] == 3
        assert "done <b>5</b>" in console.counts.value
        assert console.run_all.disabled  # complete: nothing left to run
    assert sorted(r.revision for r in iter_rows(state)) == [2] * 8
    audit = json.loads(Path(result.audit).read_text())
    assert audit["status"] == "complete" and audit["where"]["serviceId"] == "orders"


def test_console_with_nothing_to_do_stays_locked_and_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    from sekiops.widgets.migration_console import MigrationConsole, plan_summary

    home = tmp_path / "home"
    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("SEKIOPS_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    state = open_state_store(db)
    put_rows(state, 3, fmts=("v10",))  # nothing to reencode
    before = tree(str(tmp_path))
    with open_endpoints("reencode", db, blob_url) as ep:
        plan = make_plan("reencode", ep)
        assert not plan.items and "nothing to migrate" in plan_summary(plan)
        console = MigrationConsole(plan, ep)
        assert "nothing to migrate" in console.status.value and console.confirm.disabled
        console.confirm.value = "default"
        assert console.run_canary.disabled and console.run_all.disabled
        console.run_all.click()
        assert console.wait(5) is None
    after = tree(str(tmp_path))
    assert {k for k in after if not k.startswith("home")} == {k for k in before if not k.startswith("home")}
    assert not list((home / "migrations").glob("*.jsonl")) if (home / "migrations").exists() else True


def test_notebook_journal_defaults_to_the_operations_folder(tmp_path, monkeypatch):
    from sekiops.home import migration_journal, ops_home

    monkeypatch.setenv("SEKIOPS_HOME", str(tmp_path / "ops"))
    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", str(tmp_path / "spool"))
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    state = open_state_store(db)
    put_rows(state, 2, fmts=("v9",))
    with open_endpoints("reencode", db, blob_url) as ep:
        a = migration_journal(make_plan("reencode", ep))
        b = migration_journal(make_plan("reencode", ep, projector="P0"))
    assert ops_home() == tmp_path / "ops" and (os.stat(tmp_path / "ops").st_mode & 0o777) == 0o700
    assert a.startswith(str(tmp_path / "ops" / "migrations")) and a.endswith(".jsonl")
    assert a != b  # changed parameters: a journal of their own, never "belongs to another migration"
    monkeypatch.delenv("SEKIOPS_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert ops_home() == tmp_path / "xdg" / "sekiops"


def test_notebook_wording_names_parameters_not_flags():
    from sekiops.widgets.migration_console import notebook_wording

    text = notebook_wording("dry run: nothing was written; pass --execute to migrate 3 item(s); check them, then "
                            "rerun with --continue for the remaining 2; use another --journal or --threshold BYTES")
    assert "--" not in text
    assert "execute=True" in text and "Run all" in text and "journal" in text and "threshold parameter" in text
