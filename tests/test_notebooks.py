"""Every notebook under notebooks/ runs headless (papermill, kernel python3) against an embedded
default deployment (SQLite + local blob directory) of 1,000 rows that has inline and offloaded rows
at both levels, a v9 row, a tombstone and an orphan blob. Any cell error fails the test."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from test_inventory import MANY_ROWS as ROWS, embedded_urls, many_rows_deployment

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture
def deployment(tmp_path_factory):
    return many_rows_deployment(tmp_path_factory)


def _copy(deployment, tmp_path) -> tuple[str, str]:
    """A private copy of the deployment (a notebook may write journals or migrate in place)."""
    base, _ = deployment
    shutil.copy(base / "dep.db", tmp_path / "dep.db")
    shutil.copytree(base / "dep-blobs", tmp_path / "dep-blobs")
    return embedded_urls(tmp_path, "dep")


def _outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out.get("text", ""))
            elif out.get("output_type") == "error":
                text.append(f"ERROR {out.get('ename')}: {out.get('evalue')}")
            else:
                text.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def test_there_are_notebooks():
    assert any(p.name.startswith("01_inventory_and_offload") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless(path, deployment, tmp_path, monkeypatch):
    import papermill as pm

    state_url, blob_url = _copy(deployment, tmp_path)
    monkeypatch.setenv("SEKIOPS_STATE_URL", state_url)
    monkeypatch.setenv("SEKIOPS_BLOB_URL", blob_url)
    monkeypatch.setenv("SEKIOPS_HOME", str(tmp_path.parent / f"{tmp_path.name}-home"))
    out = tmp_path / f"{path.stem}.out.ipynb"
    before = {p.name for p in tmp_path.iterdir()}
    t = time.perf_counter()
    pm.execute_notebook(str(path), str(out), parameters={"state_url": state_url, "blob_url": blob_url},
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False, execution_timeout=600)
    seconds = time.perf_counter() - t
    nb = nbformat.read(str(out), as_version=4)
    text = _outputs(nb)
    assert "ERROR" not in text
    # the working directory (a notebook's folder) holds nothing new but the executed copy
    assert {p.name for p in tmp_path.iterdir()} - before == {out.name}
    print(f"\n{path.name}: {ROWS} rows, {seconds:.1f} s (kernel start included)")
    if path.name.startswith("01_"):
        _, info = deployment
        assert seconds < 60, f"notebook 01 over {ROWS} rows took {seconds:.1f} s"
        assert f"{ROWS} rows in" in text
        assert "Explorer (plain output" in text and "anatomy (depth 3)" in text
        assert "certified: 1 orphan(s)" in text and "services covered (store): default" in text
        images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
        assert images >= 3


def test_explorer_without_a_frontend(tmp_path, capsys):
    """The explorer's widgets work with no frontend attached, and plain mode prints the same."""
    from sekiops.blob import open_blob_store
    from sekiops.ops.inventory import inventory
    from sekiops.state import open_state_store
    from sekiops.widgets import explorer as ex
    from sekiops.widgets.frontend import display_mode
    from test_inventory import build_deployment

    state_url, blob_url = embedded_urls(tmp_path)
    state, blob = open_state_store(state_url), open_blob_store(blob_url)
    build_deployment(state, blob)
    df = inventory(state, blob)
    assert display_mode() == "plain"  # no kernel here: nothing could render a widget
    assert ex.explorer(df, state, blob, depth=2) is None  # auto -> plain; displays, returns nothing
    out = capsys.readouterr().out
    assert "Explorer (plain output" in out
    # largest state first (payloadOriginalBytes), sizes in binary units, versions as stored (no "vv")
    assert "selected: default/RecOffBig 1  ·  state 200 KiB, stored 89.7 KiB in blobs" in out
    assert "$.customers[]" in out and "100%" in out and "(values hidden: business data)" in out
    box = ex.build_widgets(df, state, blob, depth=3)
    svc, proj, flag, count = box.children[0].children
    assert (svc.value, proj.value, flag.value) == ("", "", "")  # "any", not a blank dropdown
    assert svc.label == proj.label == flag.label == "any"
    rows = box.children[1]
    assert len(rows.options) == len(df) and count.value == f"{len(df)} of {len(df)} rows"
    assert rows.options[0][0].startswith("default/RecOffBig 1  ·  state 200 KiB")
    flag.value = "flag_v9_envelope"
    labels = [label for label, _ in rows.options]
    assert len(labels) == 1 and re.fullmatch(r"default/Legacy9 1  ·  state 1\.15 KiB, stored 8\d\d B  \[v9_envelope\]",
                                             labels[0]), labels
    flag.value = ""
    proj.value = "Both"
    details = box.children[2]
    assert "projectorName: Both" in details.value and "&lt;" not in details.value[:40]
    walk = box.children[3].children[1]
    bar, status = box.children[4].children
    walk.click()
    assert bar.value == 1000 and bar.bar_style == "success", status.value
    assert "walked in" in status.value and "KiB" in status.value
    chart, text = box.children[5].children  # panes hold their content as state (no Output capture)
    assert chart.value[:4] == b"\x89PNG" and "$." in text.value
    ex.plain(df, state, blob, flag="flag_tombstoned", select=("Old", "1"))
    out = capsys.readouterr().out
    assert "1 of 13 rows" in out and "lifecycle: tombstoned" in out
    state.close()


def test_display_mode_comes_from_the_kernel_comm_state(monkeypatch):
    """Widgets vs plain is decided from the kernel's comm state, never from process command lines."""
    import ipywidgets
    from IPython.core.interactiveshell import InteractiveShell

    from sekiops.widgets import frontend

    monkeypatch.delenv("SEKIOPS_WIDGETS", raising=False)
    assert frontend.display_mode() == "plain"  # no kernel

    class Kernel:  # an IPython shell with a kernel attribute: what ipykernel gives
        comm_manager = object()

    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell, "kernel", Kernel(), raising=False)
    monkeypatch.setattr(frontend, "kernel_comm_manager", lambda: Kernel.comm_manager)
    monkeypatch.setattr(ipywidgets.Widget, "_control_comm", None)
    assert frontend.display_mode() == "bundle"  # a kernel, no widget frontend seen yet: widget + fallback
    monkeypatch.setattr(ipywidgets.Widget, "_control_comm", object())
    assert frontend.display_mode() == "widgets"  # a widget frontend opened the control comm
    monkeypatch.setenv("SEKIOPS_WIDGETS", "0")
    assert frontend.display_mode() == "plain"
    InteractiveShell.clear_instance()
    import inspect

    import sekiops.widgets.explorer as ex
    import sekiops.widgets.timeline as tl
    for mod in (frontend, ex, tl):
        assert "cmdline" not in inspect.getsource(mod) and "/proc/" not in inspect.getsource(mod)


def test_bundle_shows_the_widget_and_keeps_the_text_fallback(monkeypatch):
    """In 'bundle' mode one output carries the widget view and the plain text (papermill keeps the text)."""
    import ipywidgets as W
    from IPython.core import display_functions

    from sekiops.widgets import frontend

    shown = []
    monkeypatch.setattr(display_functions, "display", lambda *a, **k: shown.append((a, k)))
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append((a, k)))
    frontend.show(W.Button(description="x"), "the plain text", mode="bundle")
    assert len(shown) == 1
    (data,), kw = shown[0]
    assert kw == {"raw": True} and data["text/plain"] == "the plain text"
    assert "application/vnd.jupyter.widget-view+json" in data
