"""Inventory explorer for notebooks: filter rows by service / projector / risk flag, pick one, see
its details and walk its payload (anatomy) with a progress bar.

``explorer(df, state, blob)`` displays the explorer and returns nothing (a notebook cell that ends
with it shows it once). Whether it is the widget, plain printed output or the widget with its
plain fallback is :func:`sekiops.widgets.frontend.display_mode` (the kernel's comm state;
``mode="widgets"|"plain"`` or ``SEKIOPS_WIDGETS=0|1`` force one). :func:`build_widgets` returns the
widget box without displaying it. Rows are listed largest state first (the payload's original size
when the inventory knows it, else the bytes stored inline and in blobs), sizes in binary units.
String values of the payload (business data) are not shown unless ``show_values=True``.
ipywidgets, IPython and matplotlib are imported lazily.
"""

from __future__ import annotations

import io
import sys

from ..ops.anatomy import anatomy
from ..ops.audit import scoped_store
from ..ops.charts import anatomy_bars
from ..ops.inventory import FLAG_COLUMNS
from ..pipeline.restore import find_row
from ..units import format_bytes, format_count, format_duration, format_exact_bytes
from .frontend import BUNDLE, PLAIN, WIDGETS, display_mode, has_frontend, show  # noqa: F401 - WIDGETS, has_frontend re-exported
from .panes import chart_pane, set_chart, set_text, text_pane

DETAIL_FIELDS = ["serviceId", "projectorName", "projectorVersion", "lifecycle", "eventsProcessed", "envelopeVersion",
                 "storedLocation", "storedBytes", "isOffloaded", "offloadKey", "envelopeFormat", "payloadOffloaded",
                 "payloadKey", "payloadOriginalBytes", "payloadCompressedBytes", "cosmosItemBytes", "base64Inflation",
                 "keyStyle", "buildSource", "updatedAt", "lastSortableUniqueId", "error"]
#: "any" in the filter dropdowns (a real value: a dropdown whose value is None shows blank)
ANY = ""


# --- selection (shared by both modes) -------------------------------------------------------------


def filter_rows(df, service: str | None = None, projector: str | None = None, flag: str | None = None):
    """Rows matching the filters (None = any); ``flag`` is a flag column, or ``"none"`` for clean rows."""
    out = df
    flag = flag or None
    if service:
        out = out[out["serviceId"] == service]
    if projector:
        out = out[out["projectorName"] == projector]
    if flag == "none":
        cols = [c for c in FLAG_COLUMNS if c in out]
        out = out[~out[cols].astype(bool).any(axis=1)]
    elif flag:
        out = out[out[flag].astype(bool)]
    return out


def row_flags(rec) -> list[str]:
    return [f[5:] for f in FLAG_COLUMNS if bool(_get(rec, f))]


def _get(rec, key):
    try:
        value = rec[key]
    except (KeyError, IndexError):
        return None
    try:
        import pandas as pd

        if value is pd.NA or (isinstance(value, float) and value != value):
            return None
    except ImportError:  # pragma: no cover
        pass
    return value


def row_details(rec) -> str:
    """A few aligned lines describing one inventory row."""
    lines = []
    for f in DETAIL_FIELDS:
        v = _get(rec, f)
        if v is None:
            continue
        if f.endswith("Bytes") and not isinstance(v, bool):
            v = format_exact_bytes(v)
        elif f == "eventsProcessed":
            v = format_count(v)
        lines.append(f"{f:>24}: {v}")
    flags = row_flags(rec)
    lines.append(f"{'flags':>24}: {', '.join(flags) if flags else '-'}")
    return "\n".join(lines)


def state_bytes(rec) -> int | None:
    """The row's state size (``payloadOriginalBytes``), else None."""
    v = _get(rec, "payloadOriginalBytes")
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def stored_bytes(rec) -> int:
    """Bytes the row occupies: inline in the state store plus in blob storage."""
    total = 0
    for col in ("inlineBytes", "blobBytes"):
        v = _get(rec, col)
        try:
            total += int(v or 0)
        except (TypeError, ValueError):
            pass
    if not total:
        try:
            total = int(_get(rec, "storedBytes") or 0)
        except (TypeError, ValueError):
            total = 0
    return total


def _label(rec) -> str:
    version = str(rec["projectorVersion"])
    state = state_bytes(rec)
    stored = stored_bytes(rec)
    blob = _get(rec, "blobBytes")
    where = " in blobs" if blob and stored and int(blob) >= stored / 2 else ""
    size = ((f"state {format_bytes(state)}, " if state is not None else "state ?, ")
            + f"stored {format_bytes(stored)}{where}")
    flags = row_flags(rec)
    return (f"{rec['serviceId']}/{rec['projectorName']} {version}  ·  {size}"
            + (f"  [{', '.join(flags)}]" if flags else ""))


def sort_rows(df):
    """Largest first: by state size (payloadOriginalBytes), then by bytes stored."""
    if df is None or not len(df):
        return df
    keys = df.assign(_state=[state_bytes(r) or 0 for _, r in df.iterrows()],
                     _stored=[stored_bytes(r) for _, r in df.iterrows()])
    return keys.sort_values(["_state", "_stored"], ascending=False, kind="stable").drop(columns=["_state", "_stored"])


def default_row(df):
    """The largest active row (state size, else bytes stored), first in store order on a tie, or None."""
    if df is None or len(df) == 0:
        return None
    active = df[df["lifecycle"] == "active"]
    pool = active if len(active) else df
    return sort_rows(pool).iloc[0]


def _find_row(state, rec):
    store = scoped_store(state, rec["serviceId"]) if state.service_id != rec["serviceId"] else state
    return store, find_row(store, rec["projectorName"], rec["projectorVersion"], include_tombstoned=True)


def run_anatomy(state, blob, rec, depth: int = 3, top: int = 10, progress=None):
    """Walk the payload of the inventory row ``rec``."""
    store, row = _find_row(state, rec)
    return anatomy(store, blob, projector_name=row.projector_name, row=row, depth=depth, top=top,
                   progress=progress)


# --- display -------------------------------------------------------------------------------------


def anatomy_text(report, limit: int = 40, show_values: bool = False) -> str:
    """An anatomy report for reading: sizes in binary units; string values only with ``show_values``."""
    lines = [f"payload {format_bytes(report.total_bytes)} ({format_count(report.total_bytes)} B) walked in "
             f"{format_duration(report.seconds)}, max depth {report.max_depth}", ""]
    rows = report.paths[:limit]
    w = max([len("path")] + [len("  " * r["depth"] + r["path"]) for r in rows])
    lines.append(f"{'path'.ljust(w)}  {'size':>11}  {'share':>6}  {'count':>11}  {'items':>11}")
    for r in rows:
        items = "" if r["items"] is None else format_count(r["items"])
        lines.append(f"{('  ' * r['depth'] + r['path']).ljust(w)}  {format_bytes(r['bytes']):>11}  "
                     f"{r['share'] * 100:5.1f}%  {format_count(r['count']):>11}  {items:>11}")
    if len(report.paths) > limit:
        lines.append(f"... {len(report.paths) - limit} more paths")
    if report.biggest_strings:
        lines += ["", "biggest strings" + ("" if show_values else " (values hidden: business data)") + ":"]
        for s in report.biggest_strings:
            tail = f"  {s['prefix']!r}" if show_values else ""
            lines.append(f"  {format_bytes(s['length']):>11}  {s['path']}  {s['role']}{tail}")
    return "\n".join(lines)


def explorer(df, state=None, blob=None, *, mode: str = "auto", depth: int = 3, top: int = 10,
             select: tuple | None = None, max_rows: int = 25, service: str | None = None,
             projector: str | None = None, flag: str | None = None, show_values: bool = False) -> None:
    """Display the explorer (see the module docstring); returns None."""
    how = display_mode(mode)
    if how == PLAIN:
        plain(df, state, blob, depth=depth, top=top, select=select, max_rows=max_rows, service=service,
              projector=projector, flag=flag, show_values=show_values)
        return

    box = build_widgets(df, state, blob, depth=depth, top=top, show_values=show_values)
    fallback = None
    if how == BUNDLE:
        buf = io.StringIO()
        plain(df, state, blob, depth=depth, top=top, select=select, max_rows=max_rows, service=service,
              projector=projector, flag=flag, out=buf, show_values=show_values)
        fallback = buf.getvalue()
    show(box, fallback, mode=how)


# --- plain output --------------------------------------------------------------------------------------


def plain(df, state=None, blob=None, *, depth: int = 3, top: int = 10, select: tuple | None = None,
          max_rows: int = 25, service=None, projector=None, flag=None, out=None, show_values: bool = False) -> None:
    """Printed version of the explorer: filtered rows, one row's details, its anatomy."""
    out = out or sys.stdout
    w = out.write
    w("Explorer (plain output: no widget frontend)\n")
    if df is None or len(df) == 0:
        w("no snapshot rows\n")
        return
    rows = filter_rows(df, service, projector, flag)
    w(f"filters: service={service or 'any'} projector={projector or 'any'} flag={flag or 'any'} -> "
      f"{len(rows)} of {len(df)} rows\n")
    shown = sort_rows(rows)
    for _, rec in shown.head(max_rows).iterrows():
        w(f"  {_label(rec)}\n")
    if len(shown) > max_rows:
        w(f"  ... {len(shown) - max_rows} more\n")
    if select is not None:
        s = list(select)
        match = df[(df["serviceId"] == s[0]) & (df["projectorName"] == s[1]) & (df["projectorVersion"] == s[2])] \
            if len(s) == 3 else df[(df["projectorName"] == s[0]) & (df["projectorVersion"] == s[1])]
        rec = match.iloc[0] if len(match) else None
    else:
        rec = default_row(rows if len(rows) else df)
    if rec is None:
        w("selected row not found\n")
        return
    w(f"\nselected: {_label(rec)}\n{row_details(rec)}\n")
    if state is None:
        return
    w(f"\nanatomy (depth {depth}):\n")
    marks = {25, 50, 75, 100}

    def progress(done, total):
        if total:
            pct = int(done * 100 / total)
            for m in sorted(marks):
                if pct >= m:
                    w(f"  ... {m}% ({format_bytes(done)} of {format_bytes(total)})\n")
                    marks.discard(m)
    try:
        report = run_anatomy(state, blob, rec, depth=depth, top=top, progress=progress)
    except Exception as exc:  # noqa: BLE001 - show, don't crash the notebook
        w(f"  cannot walk this payload: {exc}\n")
        return
    w(anatomy_text(report, limit=40, show_values=show_values) + "\n")


# --- widgets --------------------------------------------------------------------------------------------


def build_widgets(df, state=None, blob=None, *, depth: int = 3, top: int = 10, show_values: bool = False):
    """The ipywidgets explorer (a VBox; not displayed)."""
    import ipywidgets as W

    services = sorted(df["serviceId"].dropna().unique().tolist()) if len(df) else []
    projectors = sorted(df["projectorName"].dropna().unique().tolist()) if len(df) else []
    svc = W.Dropdown(options=[("any", ANY)] + [(s, s) for s in services], value=ANY, description="service")
    proj = W.Dropdown(options=[("any", ANY)] + [(p, p) for p in projectors], value=ANY, description="projector")
    flag = W.Dropdown(options=[("any", ANY), ("no flags", "none")] + [(f[5:], f) for f in FLAG_COLUMNS], value=ANY,
                      description="flag")
    count = W.HTML()
    rows = W.Select(options=[], rows=10, layout=W.Layout(width="100%"))
    details = text_pane("sekiops-details", border="1px solid #ddd", max_height="320px", overflow="auto")
    depth_w = W.BoundedIntText(value=depth, min=1, max=12, description="depth")
    walk = W.Button(description="Walk payload", icon="search", disabled=state is None)
    bar = W.IntProgress(value=0, min=0, max=1000, description="anatomy", layout=W.Layout(width="60%"))
    status = W.Label()
    result_chart = chart_pane("sekiops-anatomy-chart")
    result_text = text_pane("sekiops-anatomy-text", overflow="auto")

    def refresh(*_):
        sub = sort_rows(filter_rows(df, svc.value or None, proj.value or None, flag.value or None))
        count.value = f"{len(sub):,} of {len(df):,} rows"
        rows.options = [(_label(r), i) for i, r in sub.iterrows()]
        if rows.options:
            rows.value = rows.options[0][1]
        else:
            set_text(details, "")

    def show_details(*_):
        set_text(details, "" if rows.value is None else row_details(df.loc[rows.value]))

    def do_walk(_):
        if rows.value is None or state is None:
            return
        rec = df.loc[rows.value]
        expected = _get(rec, "payloadOriginalBytes")
        bar.value, bar.bar_style = 0, "info"
        status.value = "reading..."
        set_chart(result_chart, None)
        set_text(result_text, "")

        def progress(done, total):
            total = total or expected
            if total:
                bar.value = min(1000, int(done * 1000 / total))
            status.value = format_bytes(done) + (f" of {format_bytes(total)}" if total else "")
        walk.disabled = True
        try:
            report = run_anatomy(state, blob, rec, depth=depth_w.value, top=top, progress=progress)
        except Exception as exc:  # noqa: BLE001
            bar.bar_style = "danger"
            status.value = f"failed: {exc}"[:300]
            return
        finally:
            walk.disabled = state is None
        bar.value, bar.bar_style = 1000, "success"
        status.value = f"{format_bytes(report.total_bytes)} walked in {format_duration(report.seconds)}"

        set_chart(result_chart, anatomy_bars(report))
        set_text(result_text, anatomy_text(report, limit=40, show_values=show_values))

    svc.observe(refresh, "value")
    proj.observe(refresh, "value")
    flag.observe(refresh, "value")
    rows.observe(show_details, "value")
    walk.on_click(do_walk)
    refresh()
    show_details()
    return W.VBox([W.HBox([svc, proj, flag, count]), rows, details, W.HBox([depth_w, walk]), W.HBox([bar, status]),
                   W.VBox([result_chart, result_text], layout=W.Layout(overflow="auto"))])
