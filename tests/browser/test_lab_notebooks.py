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

from lab import NOTEBOOKS, Checks, Lab, Notebook, dropdown, listing, widget_button

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


def run_notebook(page, lab, name: str, check: Checks) -> Notebook:
    nb = Notebook(page, lab, name).open()
    nb.run_all()
    errors = nb.errors()
    assert not errors, f"{name}: error output:\n" + "\n---\n".join(errors)
    text = nb.output_text()
    for fallback in FALLBACKS:
        check(fallback not in text, f"text fallback shown in a browser that renders widgets: {fallback!r}")
    return nb


def table_cells(nb: Notebook) -> list[str]:
    return nb.panel.locator(".jp-OutputArea-output table td").all_inner_texts()


def check_readable_tables(nb: Notebook, check: Checks) -> None:
    cells = table_cells(nb)
    bad = [c for c in cells if BAD_CELLS.search(c.strip()) or c.strip() in ("NaN", "None", "<NA>", "nan")]
    check(not bad, f"unreadable table cells {bad[:10]}")
    headers = nb.panel.locator(".jp-OutputArea-output table th").all_inner_texts()
    check("..." not in [h.strip() for h in headers], "a table is cut off (columns elided)")
    raw = [c for c in cells if re.fullmatch(r"\d{6,}(\.0)?", c.strip())]
    check(not raw, f"raw byte counts in tables (no unit, no separators): {raw[:5]}")
    decimal = [c for c in cells + headers if DECIMAL_SIZE.search(c)]
    check(not decimal, f"decimal size units in tables: {decimal[:5]}")
    # a table wider than its output either fits or sits in a frame that scrolls
    overflow = nb.page.evaluate("""() => [...document.querySelectorAll(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output table')]
        .filter(t => { const out = t.closest('.jp-OutputArea-output');
                       if (t.scrollWidth <= out.clientWidth + 2) return false;
                       let e = t.parentElement;
                       while (e && e !== out) { const s = getComputedStyle(e).overflowX;
                                                if ((s === 'auto' || s === 'scroll')
                                                    && e.clientWidth <= out.clientWidth + 2) return false;
                                                e = e.parentElement; }
                       const s = getComputedStyle(out).overflowX;
                       return !(s === 'auto' || s === 'scroll'); }).length""")
    check(overflow == 0, f"{overflow} table(s) wider than the output and not scrollable")


def test_01_inventory_explorer(page, lab, deployment, folder_before):
    check = Checks("01")
    nb = run_notebook(page, lab, "01_inventory_and_offload.ipynb", check)
    check_readable_tables(nb, check)
    explorers = nb.panel.locator(".widget-vbox:has(> .widget-hbox button:has-text('Walk payload'))")
    check(explorers.count() == 1, f"the explorer is displayed {explorers.count()} times")
    box = explorers.first
    for label in ("service", "projector", "flag"):  # the dropdowns start on "any", not blank
        shown = dropdown(box, label).evaluate("s => s.selectedIndex >= 0 ? s.options[s.selectedIndex].text : ''")
        check(shown == "any", f"the {label} dropdown starts on {shown!r}, not 'any'")
    options = [o.replace("\xa0", " ") for o in box.locator(".widget-select select option").all_inner_texts()]
    assert options, "no rows listed"
    check(not any(" vv" in o for o in options), f"versions read 'vv': {options[:2]}")
    # largest state first: the 60 MB projection offloaded at payload level, not its 0.6 KiB envelope
    check(options[0].startswith("default/CustomerDirectory v3  ·  state 57.2 MiB, stored ")
          and "in blobs" in options[0], f"first row listed: {options[0]!r}")
    # filter: one projector, then back to any
    dropdown(box, "projector").select_option(label="AuditTrail")
    page.wait_for_function("b => b.querySelectorAll('.widget-select select option').length === 2",
                           arg=box.element_handle())
    dropdown(box, "projector").select_option(index=0)
    page.wait_for_function("([b, n]) => b.querySelectorAll('.widget-select select option').length === n",
                           arg=[box.element_handle(), deployment.rows])
    big = next(i for i, o in enumerate(options) if "CustomerDirectory" in o)
    box.locator(".widget-select select").select_option(index=big)
    details = box.locator(".sekiops-details").first
    page.wait_for_function("e => /projectorName: CustomerDirectory/.test(e.textContent)",
                           arg=details.element_handle())
    check("MiB)" in details.inner_text(), "row details give sizes without a unit")
    # walk the payload: progress, then the chart and the table of paths
    widget_button(box, "Walk payload").click()
    status = box.locator(".widget-hbox:has(.widget-hprogress) > .widget-label").last
    page.wait_for_function("e => /(walked in| in \\d)/.test(e.textContent)", arg=status.element_handle(),
                           timeout=120_000)
    check("57.2 MiB walked in" in status.inner_text(), f"walk status reads {status.inner_text()!r}")
    box.locator("img.sekiops-anatomy-chart[src^='blob:'], img.sekiops-anatomy-chart[src^='data:']").first.wait_for()
    pane = box.locator(".sekiops-anatomy-text").first
    # the chart and the text are two widget updates: wait for the text too
    page.wait_for_function("e => e.textContent.includes('$.customers')", arg=pane.element_handle(), timeout=30_000)
    text = pane.inner_text()
    check("$.customers[]" in text, "the anatomy shows no paths")
    check("(values hidden: business data)" in text, "payload string values (business data) shown unasked")
    nb.screenshot("01_inventory_explorer", box, block="start")
    nb.close()
    check.done()


def test_02_defaults_plan_and_migrate_a_row(page, lab, deployment, ops_home, lab_root, folder_before):
    check = Checks("02 with the demo's defaults")
    nb = run_notebook(page, lab, "02_guarded_migration.ipynb", check)
    text = nb.output_text()
    check("rows to change: 1" in text, "the demo's defaults plan nothing to migrate")
    flags = re.findall(r"--(?:execute|continue|journal)\b", nb.panel.inner_text())
    check(not flags, f"CLI flags in the notebook's messages: {sorted(set(flags))}")
    console = nb.panel.locator(".widget-vbox:has(button:has-text('Run canary'))").first
    run_canary, run_all = widget_button(console, "Run canary"), widget_button(console, "Run all")
    assert run_canary.is_disabled() and run_all.is_disabled()
    confirm = console.locator(".widget-text input").first
    confirm.fill("somebody-else")
    page.wait_for_timeout(300)
    assert run_canary.is_disabled()
    confirm.fill("default", force=True)
    page.wait_for_timeout(500)
    if check(not run_canary.is_disabled(), "the console stays locked after typing the service id"):
        run_canary.click()
        status = console.locator(".widget-html").nth(2)
        page.wait_for_function("e => /(complete|canary|error|failed)/.test(e.textContent)",
                               arg=status.element_handle(), timeout=60_000)
        check("complete" in status.inner_text(), f"status after Run canary: {status.inner_text()!r}")
        check("done <b>1</b>" in console.locator(".widget-html").nth(1).inner_html(), "no row migrated")
        m = re.search(r"audit record: (\S+\.json)", status.inner_text())
        check(m and m.group(1).startswith(str(ops_home)),
              f"audit record not in the operations folder: {m and m.group(1)}")
        check(run_canary.is_disabled() and run_all.is_disabled(), "the console stays unlocked with nothing left")
    nb.screenshot("02_guarded_migration_sqlite", console)
    nb.close()
    check.done()


def test_02_a_console_with_nothing_to_do_stays_locked(page, lab, lab_root, folder_before):
    check = Checks("02 with nothing to do")
    nbnode = nbformat.read(str(lab_root / "02_guarded_migration.ipynb"), as_version=4)
    src = re.sub(r"^projector = None", 'projector = "FeatureFlags"', nbnode.cells[1].source, flags=re.M)
    assert src != nbnode.cells[1].source
    nbnode.cells[1].source = src
    nbformat.write(nbnode, str(lab_root / "02_nothing_to_do.ipynb"))
    try:
        nb = run_notebook(page, lab, "02_nothing_to_do.ipynb", check)
        console = nb.panel.locator(".widget-vbox:has(button:has-text('Run canary'))").first
        assert "0 item(s) planned" in console.inner_text()
        check("nothing to migrate" in console.inner_text(), "the console does not say there is nothing to do")
        confirm = console.locator(".widget-text input").first
        confirm.fill("default", force=True)
        page.wait_for_timeout(500)
        check(widget_button(console, "Run canary").is_disabled() and widget_button(console, "Run all").is_disabled(),
              "a console with nothing to do unlocks")
        nb.close()
    finally:
        (lab_root / "02_nothing_to_do.ipynb").unlink()
    check.done()


def test_03_memory_metrics(page, lab, folder_before):
    check = Checks("03")
    nb = run_notebook(page, lab, "03_memory_and_upload_metrics.ipynb", check)
    check_readable_tables(nb, check)
    panel = nb.panel.inner_text()
    recorded = nb.panel.locator(
        ".jp-OutputArea-output table:has(td:text-is('projection_persist_peak_managed_memory_bytes'))").last
    rows = recorded.locator("tr:has(td:text-is('projection_persist_peak_managed_memory_bytes'))").all_inner_texts()
    check(rows and all("peak process RSS" in r for r in rows),
          f"the recorded-in-process table does not say the memory metric is process RSS: {rows[:1]}")
    check("modelled in Python from Sekiban's source, not measured on .NET" in panel,
          "the legacy numbers are not labelled as modelled")
    nb.screenshot("03_memory_metrics", recorded if recorded.count() else None)
    nb.close()
    check.done()


def test_04_timeline_filter_and_zoom(page, lab, folder_before):
    check = Checks("04")
    nb = run_notebook(page, lab, "04_post_incident_report.ipynb", check)
    check_readable_tables(nb, check)
    text = nb.panel.inner_text()
    check("Proof of the fix: measured" not in text, "modelled numbers called 'Proof of the fix: measured'")
    check("Sekiban version assumed" in text and "dcb-v10.23" in text, "the report does not say which Sekiban version")
    cap = nb.panel.locator(".jp-OutputArea-output table:has(th:text-is('projection'))").first
    cap_text = cap.inner_text() if cap.count() else ""
    check(re.search(r"logs\s+CustomerDirectory", cap_text) and re.search(r"inventory\s+CustomerDirectory v3", cap_text),
          "the capacity table does not show the deployment's projections beside the evidence's")
    timelines = nb.panel.locator(".widget-vbox:has(.widget-dropdown:has(label:text-is('projector')))"
                                 ":has(.widget-slider)")
    check(timelines.count() == 1, f"the timeline explorer is displayed {timelines.count()} times")
    if timelines.count():
        box = timelines.first
        image = box.locator("img.sekiops-timeline-chart").first
        image.wait_for()
        caption = box.locator(".widget-html").first
        before_caption, before_src = caption.inner_text(), image.get_attribute("src")
        # filter: one projector -> the chart is redrawn
        dropdown(box, "projector").select_option(label="OrderSummary")
        page.wait_for_function("([i, s]) => i.src && i.src !== s", arg=[image.element_handle(), before_src])
        check("OrderSummary" in caption.inner_text(), f"caption after the filter: {caption.inner_text()!r}")
        filtered_src = image.get_attribute("src")
        # zoom: drag the window's start handle a quarter of the way right, as with a mouse
        handle = box.locator(".noUi-handle-lower, .noUi-handle").first
        handle.evaluate("e => e.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(300)
        track = box.locator(".noUi-target").first.bounding_box()
        h = handle.bounding_box()
        x, y = h["x"] + h["width"] / 2, h["y"] + h["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + track["width"] * 0.25, y, steps=12)
        page.mouse.up()
        try:
            page.wait_for_function("e => /^02:[1-5]\\d–04:00 UTC/.test(e.textContent)", arg=caption.element_handle(),
                                   timeout=20_000)
        except Exception:  # noqa: BLE001 - reported below
            pass
        page.wait_for_function("([i, s]) => i.src && i.src !== s", arg=[image.element_handle(), filtered_src])
        check(re.match(r"02:[1-5]\d–04:00 UTC", caption.inner_text()) is not None,
              f"caption after zooming: {caption.inner_text()!r} (was {before_caption!r})")
        nb.screenshot("04_post_incident_timeline", box)
    else:
        nb.screenshot("04_post_incident_timeline")
    nb.close()
    check.done()


def test_running_every_notebook_left_no_file_in_the_notebooks_folder(lab_root, folder_before):
    left = sorted(listing(lab_root) - folder_before)
    assert not left, f"files left in the notebooks folder: {left}"
