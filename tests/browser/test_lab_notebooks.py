"""The four notebooks as an SRE uses them: JupyterLab 4 in Chromium, widgets on, on the demo deployment.

Each test opens a notebook, runs all cells, asserts there is no error output and no text fallback,
drives its widgets as an SRE would and asserts what the user sees (text, enabled/disabled state,
the chart image changing), then takes a screenshot (``build/screenshots/``, a CI artifact). The
notebook folder is a copy the lab serves; the last test checks that running them left no file in it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

from lab import NOTEBOOKS, Lab, Notebook, dropdown, listing, widget_button

#: what a text fallback says (a widget replaced by text in a browser that renders widgets)
FALLBACKS = ("plain output: no widget frontend", "interactive timeline: open this notebook", "console unavailable")
#: cells that must never show to a reader
BAD_CELLS = re.compile(r"(^|\s)(NaN|None|<NA>|nan)(\s|$)")
#: decimal sizes: one unit convention (binary, named) everywhere
DECIMAL_SIZE = re.compile(r"\d (kB|MB|GB)\b")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from sekiops.ops.demo_deployment import build_demo_deployment

    return build_demo_deployment(str(tmp_path_factory.mktemp("demo") / "deployment"), big_bytes=60_000_000)


@pytest.fixture(scope="module")
def lab_root():
    # a folder whose path says "sekiops", as a user's checkout does (notebooks/ of a sekiops clone)
    base = Path(tempfile.mkdtemp(prefix="sekiops-lab-"))
    root = base / "sekiops" / "notebooks"
    root.mkdir(parents=True)
    for nb in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ops_home(tmp_path_factory):
    return tmp_path_factory.mktemp("sekiops-home")


@pytest.fixture(scope="module")
def lab(lab_root, deployment, ops_home, tmp_path_factory):
    spool = tmp_path_factory.mktemp("spool")
    server = Lab(lab_root, {"SEKIOPS_STATE_URL": deployment.state_url, "SEKIOPS_BLOB_URL": deployment.blob_url,
                            "SEKIOPS_HOME": str(ops_home), "SEKIOPS_SPOOL_DIR": str(spool)}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def folder_before(lab_root):
    return listing(lab_root)


def run_notebook(page, lab, name: str) -> Notebook:
    nb = Notebook(page, lab, name).open()
    nb.run_all()
    errors = nb.errors()
    assert not errors, f"{name}: error output:\n" + "\n---\n".join(errors)
    text = nb.output_text()
    for fallback in FALLBACKS:
        assert fallback not in text, f"{name}: text fallback shown in a browser that renders widgets: {fallback!r}"
    return nb


def table_cells(nb: Notebook) -> list[str]:
    return nb.panel.locator(".jp-OutputArea-output table td").all_inner_texts()


def assert_readable_tables(nb: Notebook) -> None:
    cells = table_cells(nb)
    bad = [c for c in cells if BAD_CELLS.search(c.strip()) or c.strip() in ("NaN", "None", "<NA>", "nan")]
    assert not bad, f"{nb.name}: unreadable table cells {bad[:10]}"
    headers = nb.panel.locator(".jp-OutputArea-output table th").all_inner_texts()
    assert "..." not in [h.strip() for h in headers], f"{nb.name}: a table is cut off (columns elided)"
    decimal = [c for c in cells + headers if DECIMAL_SIZE.search(c)]
    assert not decimal, f"{nb.name}: decimal size units in tables: {decimal[:5]}"
    # a table wider than its output either fits or sits in a frame that scrolls
    overflow = nb.page.evaluate("""() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output table')]
        .filter(t => { const out = t.closest('.jp-OutputArea-output');
                       if (t.scrollWidth <= out.clientWidth + 2) return false;
                       let e = t.parentElement;
                       while (e && e !== out) { const s = getComputedStyle(e).overflowX;
                                                if ((s === 'auto' || s === 'scroll') && e.clientWidth <= out.clientWidth + 2) return false;
                                                e = e.parentElement; }
                       const s = getComputedStyle(out).overflowX; return !(s === 'auto' || s === 'scroll'); }).length""")
    assert overflow == 0, f"{nb.name}: {overflow} table(s) wider than the output and not scrollable"


def test_01_inventory_explorer(page, lab, deployment, folder_before):
    nb = run_notebook(page, lab, "01_inventory_and_offload.ipynb")
    assert_readable_tables(nb)
    explorers = nb.panel.locator(".widget-vbox:has(> .widget-hbox button:has-text('Walk payload'))")
    assert explorers.count() == 1, f"the explorer is displayed {explorers.count()} times"
    box = explorers.first
    for label in ("service", "projector", "flag"):  # the dropdowns start on "any", not blank
        sel = dropdown(box, label)
        assert sel.evaluate("s => s.options[s.selectedIndex] ? s.options[s.selectedIndex].text : ''") == "any", label
    options = [o.replace("\xa0", " ") for o in box.locator(".widget-select select option").all_inner_texts()]
    assert options, "no rows listed"
    assert not any(" vv" in o for o in options), options[:3]
    # largest state first: the 60 MB projection offloaded at payload level, not its 0.6 KiB envelope
    assert options[0].startswith("default/CustomerDirectory v3  ·  state 57.2 MiB, stored "), options[0]
    assert "in blobs" in options[0] and not re.search(r"\d B$", options[0].split("·")[1].strip())
    # filter: one projector, then back to any
    dropdown(box, "projector").select_option(label="AuditTrail")
    page.wait_for_function("b => b.querySelectorAll('.widget-select select option').length === 2",
                           arg=box.element_handle())
    assert box.locator(".widget-html").first.inner_text().strip() == f"2 of {deployment.rows} rows"
    dropdown(box, "projector").select_option(label="any")
    page.wait_for_function("([b, n]) => b.querySelectorAll('.widget-select select option').length === n",
                           arg=[box.element_handle(), deployment.rows])
    box.locator(".widget-select select").select_option(index=0)
    details = box.locator(".widget-output").first
    assert "projectorName: CustomerDirectory" in details.inner_text()
    assert "payloadOriginalBytes: 60,000" in details.inner_text() or "MiB)" in details.inner_text()
    # walk the payload: progress, then the chart and the table of paths
    widget_button(box, "Walk payload").click()
    status = box.locator(".widget-label").last
    page.wait_for_function("e => /walked in/.test(e.textContent)", arg=status.element_handle(), timeout=120_000)
    assert "57.2 MiB walked in" in status.inner_text()
    result = box.locator(".widget-output").last
    result.locator("img").first.wait_for()
    text = result.inner_text()
    assert "$.customers[]" in text and "(values hidden: business data)" in text
    nb.screenshot("01_inventory_explorer", result.locator("img").first)
    nb.close()


def test_02_defaults_plan_and_migrate_a_row(page, lab, deployment, ops_home, lab_root, folder_before):
    nb = run_notebook(page, lab, "02_guarded_migration.ipynb")
    text = nb.output_text()
    assert "rows to change: 1" in text, "the demo's defaults plan nothing to migrate"
    assert not re.search(r"--(execute|continue|journal)\b", text), "CLI flags in the notebook's messages"
    console = nb.panel.locator(".widget-vbox:has(button:has-text('Run canary'))").first
    assert "1 item(s) planned" in console.inner_text()
    run_canary, run_all = widget_button(console, "Run canary"), widget_button(console, "Run all")
    assert run_canary.is_disabled() and run_all.is_disabled()
    confirm = console.locator(".widget-text input").first
    confirm.fill("somebody-else")
    assert run_canary.is_disabled()
    confirm.fill("default")
    page.wait_for_function("b => !b.disabled", arg=run_canary.element_handle())
    run_canary.click()
    status = console.locator(".widget-html").nth(2)
    page.wait_for_function("e => /complete/.test(e.textContent)", arg=status.element_handle(), timeout=60_000)
    assert "done <b>1</b>" in console.locator(".widget-html").nth(1).inner_html()
    audit = re.search(r"audit record: (\S+\.json)", status.inner_text()).group(1)
    assert audit.startswith(str(ops_home)), audit  # the operations folder, not the notebook's
    assert run_canary.is_disabled() and run_all.is_disabled()  # nothing left to run
    nb.screenshot("02_guarded_migration_sqlite", console)
    nb.close()
    from sekiops.ops.migrate import make_plan, open_endpoints

    with open_endpoints("offload", deployment.state_url, deployment.blob_url) as ep:
        assert not make_plan("offload", ep).items  # the row moved


def test_02_a_console_with_nothing_to_do_stays_locked(page, lab, lab_root, folder_before):
    nbnode = nbformat.read(str(lab_root / "02_guarded_migration.ipynb"), as_version=4)
    src = nbnode.cells[1].source.replace('projector = None ', 'projector = "FeatureFlags"')
    assert src != nbnode.cells[1].source
    nbnode.cells[1].source = src
    nbformat.write(nbnode, str(lab_root / "02_nothing_to_do.ipynb"))
    try:
        nb = run_notebook(page, lab, "02_nothing_to_do.ipynb")
        console = nb.panel.locator(".widget-vbox:has(button:has-text('Run canary'))").first
        assert "0 item(s) planned" in console.inner_text()
        assert "nothing to migrate" in console.inner_text()
        confirm = console.locator(".widget-text input").first
        assert confirm.is_disabled()
        confirm.fill("default", force=True)
        page.wait_for_timeout(500)
        assert widget_button(console, "Run canary").is_disabled() and widget_button(console, "Run all").is_disabled()
        nb.close()
    finally:
        (lab_root / "02_nothing_to_do.ipynb").unlink()


def test_03_memory_metrics(page, lab, folder_before):
    nb = run_notebook(page, lab, "03_memory_and_upload_metrics.ipynb")
    assert_readable_tables(nb)
    text = nb.output_text()
    assert "peak process RSS" in text  # what sekiops puts under Sekiban's "managed memory" name
    recorded = nb.panel.locator(".jp-OutputArea-output table:has(th:text-is('what sekiops records'))").last
    rows = recorded.locator("tr:has(td:text-is('projection_persist_peak_managed_memory_bytes'))").all_inner_texts()
    assert rows and all("peak process RSS" in r and "MiB" in r for r in rows), rows
    assert "modelled in Python from Sekiban's source, not measured on .NET" in nb.panel.inner_text()
    nb.screenshot("03_memory_metrics", recorded)
    nb.close()


def test_04_timeline_filter_and_zoom(page, lab, folder_before):
    nb = run_notebook(page, lab, "04_post_incident_report.ipynb")
    assert_readable_tables(nb)
    text = nb.panel.inner_text()
    assert "Proof of the fix: measured" not in text
    assert "Sekiban version assumed" in text and "dcb-v10.23" in text
    # the capacity table shows the logs' and the inventory's view of the same projection
    cap = nb.panel.locator(".jp-OutputArea-output table:has(th:text-is('grain restore'))").first
    cap_text = cap.inner_text()
    assert re.search(r"logs\s+CustomerDirectory", cap_text) and re.search(r"inventory\s+CustomerDirectory v3", cap_text)
    timelines = nb.panel.locator(".widget-vbox:has(.widget-dropdown:has(label:text-is('projector')))"
                                 ":has(.widget-slider)")
    assert timelines.count() == 1, f"the timeline explorer is displayed {timelines.count()} times"
    box = timelines.first
    caption = box.locator(".widget-html").first
    image = box.locator(".widget-output img").first
    image.wait_for()
    before_caption, before_src = caption.inner_text(), image.get_attribute("src")
    assert before_caption.startswith("02:00–04:00 UTC, all projectors")
    # filter: one projector -> the caption and the chart change
    dropdown(box, "projector").select_option(label="OrderSummary")
    page.wait_for_function("([c, t]) => c.textContent !== t", arg=[caption.element_handle(), before_caption])
    assert "OrderSummary" in caption.inner_text()
    page.wait_for_function("([i, s]) => { const img = i.querySelector('img'); return img && img.src !== s; }",
                           arg=[box.locator(".widget-output").first.element_handle(), before_src])
    filtered_src = box.locator(".widget-output img").first.get_attribute("src")
    # zoom: move the window's start with the keyboard, as on the slider handle
    handle = box.locator(".noUi-handle-lower, .noUi-handle").first
    handle.focus()
    for _ in range(30):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("e => /^02:[1-5]\\d–04:00 UTC/.test(e.textContent)", arg=caption.element_handle())
    page.wait_for_function("([i, s]) => { const img = i.querySelector('img'); return img && img.src !== s; }",
                           arg=[box.locator(".widget-output").first.element_handle(), filtered_src])
    nb.screenshot("04_post_incident_timeline", box)
    nb.close()


def test_running_every_notebook_left_no_file_in_the_notebooks_folder(lab_root, folder_before):
    assert listing(lab_root) == folder_before
