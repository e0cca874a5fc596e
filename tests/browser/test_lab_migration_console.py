"""Notebook 02's console on PostgreSQL + Azurite, in JupyterLab in Chromium, as an SRE runs it:
type the confirmation, run the canary, check, run all, pause and resume, stop, see the counts and
the audit record, then finish the run. Asserts what the user sees: the buttons' enabled state,
the counts, the status line, the audit record's path."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import nbformat
import pytest

from lab import NOTEBOOKS, Checks, Lab, Notebook, listing, widget_button

ROWS = 24


@pytest.fixture(scope="module")
def pg_deployment(postgres_server, azurite):
    from rows import put_inline_rows
    from sekiops.state import open_state_store

    service = "orders-" + uuid.uuid4().hex[:6]
    state = open_state_store(postgres_server.url, service_id=service)
    put_inline_rows(state, [f"Order{i:02d}" for i in range(ROWS)], payload_bytes=150_000)
    state.close()
    return {"state_url": postgres_server.url, "blob_url": f"azblob://nb{uuid.uuid4().hex[:10]}", "service": service,
            "connection_string": azurite.connection_string}


@pytest.fixture(scope="module")
def lab_root(pg_deployment):
    base = Path(tempfile.mkdtemp(prefix="sekiops-lab-"))
    root = base / "notebooks"
    root.mkdir()
    nb = nbformat.read(str(NOTEBOOKS / "02_guarded_migration.ipynb"), as_version=4)
    # the SRE's parameters: this service, a threshold that makes every row a candidate, a canary of 3,
    # and a rate limit so a person (and this test) can pause and stop between rows
    src = nb.cells[1].source
    for old, new in (('service_id = "default"', f'service_id = "{pg_deployment["service"]}"'),
                     ("threshold = None ", "threshold = 100_000 "), ("canary = 10 ", "canary = 3 "),
                     ("rate = None ", "rate = 2.0 ")):
        assert old in src, old
        src = src.replace(old, new)
    nb.cells[1].source = src
    nbformat.write(nb, str(root / "02_guarded_migration.ipynb"))
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(lab_root, pg_deployment, tmp_path_factory):
    home = tmp_path_factory.mktemp("sekiops-home")
    # store URLs reach the kernel through its environment, never the notebook (the URL has a password)
    server = Lab(lab_root, {"SEKIOPS_STATE_URL": pg_deployment["state_url"],
                            "SEKIOPS_BLOB_URL": pg_deployment["blob_url"],
                            "AZURE_STORAGE_CONNECTION_STRING": pg_deployment["connection_string"],
                            "SEKIOPS_HOME": str(home), "SEKIOPS_SPOOL_DIR": str(tmp_path_factory.mktemp("spool"))})
    server.home = home
    server.start()
    yield server
    server.stop()


def counts(console) -> dict:
    text = console.locator(".widget-html").nth(1).inner_text().replace("\xa0", " ")
    return {k: int(v.replace(",", "")) for k, v in re.findall(r"(done|skipped|failed|earlier runs) ([\d,]+)", text)}


def test_console_canary_run_all_pause_resume_stop(page, lab, lab_root, pg_deployment):
    before = listing(lab_root)
    nb = Notebook(page, lab, "02_guarded_migration.ipynb").open()
    nb.run_all()
    assert not nb.errors(), nb.errors()
    text = nb.output_text()
    assert f"rows to change: {ROWS}" in text
    assert pg_deployment["connection_string"] not in nb.panel.inner_text()
    assert "AccountKey=" not in nb.panel.inner_text() and ":" + "@" not in nb.panel.inner_text().replace("::", "")
    console = nb.panel.locator(".widget-vbox:has(button:has-text('Run canary'))").first
    assert f"{ROWS} item(s) planned" in console.inner_text()
    run_canary, run_all = widget_button(console, "Run canary"), widget_button(console, "Run all")
    pause, stop = widget_button(console, "Pause"), widget_button(console, "Stop")
    status = console.locator(".widget-html").nth(2)
    assert run_canary.is_disabled() and run_all.is_disabled() and pause.is_disabled() and stop.is_disabled()

    confirm = console.locator(".widget-text input").first
    confirm.fill("default")  # not the target service
    page.wait_for_timeout(300)
    assert run_canary.is_disabled() and run_all.is_disabled()
    confirm.fill(pg_deployment["service"])
    page.wait_for_function("b => !b.disabled", arg=run_canary.element_handle())

    # the canary: 3 rows migrated and verified, then the console waits for the operator
    check = Checks("02 console on PostgreSQL + Azurite")
    run_canary.click()
    page.wait_for_function("e => /canary passed/.test(e.textContent)", arg=status.element_handle(), timeout=60_000)
    assert counts(console)["done"] == 3
    # the documented flow goes on without retyping the confirmation (the user waits a moment at most)
    try:
        page.wait_for_function("b => !b.disabled", arg=run_all.element_handle(), timeout=5_000)
    except Exception:  # noqa: BLE001 - reported below
        pass
    if not check(not run_all.is_disabled() and not run_canary.is_disabled(),
                 "after the canary, Run canary / Run all stay disabled until the confirmation is retyped"):
        confirm.fill("")  # what a user has to do then, so the rest of the scenario can be seen
        confirm.fill(pg_deployment["service"])
    check("press Run all" in status.inner_text() and "--continue" not in status.inner_text(),
          f"the status after the canary names a CLI flag, not the button: {status.inner_text()[:120]!r}")
    check(pause.is_disabled() and stop.is_disabled(), "Pause/Stop stay enabled with no run")

    # run all, pause between rows, resume, then stop
    run_all.click()
    page.wait_for_function("b => !b.disabled", arg=pause.element_handle())
    page.wait_for_function("c => /done <b>([4-9]|\\d\\d)<\\/b>/.test(c.innerHTML)",
                           arg=console.locator(".widget-html").nth(1).element_handle(), timeout=30_000)
    pause.click()
    page.wait_for_function("e => /paused/.test(e.textContent)", arg=status.element_handle(), timeout=30_000)
    assert widget_button(console, "Resume").is_visible()
    held = counts(console)["done"]
    page.wait_for_timeout(2500)  # at 2 rows/s, 5 rows would have gone by
    assert counts(console)["done"] == held, "rows migrated while paused"
    assert run_all.is_disabled() and run_canary.is_disabled()
    nb.screenshot("02_guarded_migration_paused", console)
    widget_button(console, "Resume").click()
    page.wait_for_function("([c, n]) => { const m = /done <b>(\\d+)<\\/b>/.exec(c.innerHTML); return m && +m[1] > n; }",
                           arg=[console.locator(".widget-html").nth(1).element_handle(), held], timeout=30_000)
    stop.click()
    page.wait_for_function("e => /stopped/.test(e.textContent)", arg=status.element_handle(), timeout=30_000)
    stopped = counts(console)
    assert 3 < stopped["done"] + stopped.get("earlier runs", 0) < ROWS
    check("press Run all to resume" in status.inner_text(), "the stopped status does not say how to resume")
    audit = re.search(r"audit record: (\S+\.json)", status.inner_text()).group(1)
    check(audit.startswith(str(lab.home)), f"the audit record is not in the operations folder: {audit}")
    record = json.loads(Path(audit).read_text())
    assert record["status"] == "stopped"
    try:
        page.wait_for_function("b => !b.disabled", arg=run_all.element_handle(), timeout=5_000)
    except Exception:  # noqa: BLE001 - reported below
        pass
    if not check(not run_all.is_disabled(), "after a stop, Run all stays disabled"):  # a stopped run resumes
        confirm.fill("")
        confirm.fill(pg_deployment["service"])

    # finish: the rest of the rows, then nothing left to run
    run_all.click()
    page.wait_for_function("e => /complete/.test(e.textContent)", arg=status.element_handle(), timeout=60_000)
    final = counts(console)
    check(final["done"] + final.get("earlier runs", 0) == ROWS and final["failed"] == 0,
          f"the final counts do not add up to the {ROWS} planned rows: {final}")
    check(run_all.is_disabled() and run_canary.is_disabled(), "a completed console stays unlocked")
    nb.screenshot("02_guarded_migration", console)
    nb.close()

    from sekiops.state import open_state_store
    from sekiops.state.base import iter_rows

    state = open_state_store(pg_deployment["state_url"], service_id=pg_deployment["service"])
    try:
        check(all(r.is_offloaded for r in iter_rows(state)), "rows left inline after the run")  # all in Azurite
    finally:
        state.close()
    left = sorted(listing(lab_root) - before)
    check(not left, f"journal, backup or audit record next to the notebook: {left}")
    check.done()
