"""Inventory explorer for notebooks: filter rows by service / projector / risk flag, pick one, see
its details and walk its payload (anatomy) with a progress bar.

``explorer(df, state, blob)`` shows ipywidgets when a notebook frontend can render them, and
degrades to plain printed output otherwise (headless papermill / nbconvert runs, no ipywidgets).
``mode="widgets"|"plain"`` forces one; ``SEKIOPS_WIDGETS=0|1`` too. ipywidgets, IPython and
matplotlib are imported lazily.
"""

from __future__ import annotations

import os
import sys

from ..ops.inventory import FLAG_COLUMNS

DETAIL_FIELDS = ["serviceId", "projectorName", "projectorVersion", "lifecycle", "eventsProcessed", "envelopeVersion",
                 "storedLocation", "storedBytes", "isOffloaded", "offloadKey", "envelopeFormat", "payloadOffloaded",
                 "payloadKey", "payloadOriginalBytes", "payloadCompressedBytes", "cosmosItemBytes", "base64Inflation",
                 "keyStyle", "buildSource", "updatedAt", "lastSortableUniqueId", "error"]
HEADLESS_PARENTS = ("papermill", "nbclient", "nbconvert", "pytest", "jupyter-execute", "jupyter_execute")


# --- selection (shared by both modes) -------------------------------------------------------------


def filter_rows(df, service: str | None = None, projector: str | None = None, flag: str | None = None):
    """Rows matching the filters (None = any); ``flag`` is a flag column, or ``"none"`` for clean rows."""
    out = df
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
        if isinstance(v, (int,)) and not isinstance(v, bool) and f.endswith("Bytes"):
            v = f"{v:,}"
        lines.append(f"{f:>24}: {v}")
    flags = row_flags(rec)
    lines.append(f"{'flags':>24}: {', '.join(flags) if flags else '-'}")
    return "\n".join(lines)


def _label(rec) -> str:
    size = _get(rec, "storedBytes")
    size = f"{int(size):,} B" if size is not None else "? B"
    flags = row_flags(rec)
    return (f"{rec['serviceId']}/{rec['projectorName']} v{rec['projectorVersion']}  {size}"
            + (f"  [{', '.join(flags)}]" if flags else ""))


def default_row(df):
    """The largest active row by bytes stored (inline + blobs; else the largest row), first in store
    order on a tie, or None for an empty frame."""
    if df is None or len(df) == 0:
        return None
    active = df[df["lifecycle"] == "active"]
    pool = active if len(active) else df
    sizes = pool["inlineBytes"].fillna(0).astype("int64") + pool["blobBytes"].fillna(0).astype("int64")
    return pool.loc[sizes.idxmax()]


def _find_row(state, rec):
    from ..pipeline.restore import find_row
    from ..ops.audit import scoped_store

    store = scoped_store(state, rec["serviceId"]) if state.service_id != rec["serviceId"] else state
    return store, find_row(store, rec["projectorName"], rec["projectorVersion"], include_tombstoned=True)


def run_anatomy(state, blob, rec, depth: int = 3, top: int = 10, progress=None):
    """Walk the payload of the inventory row ``rec``."""
    from ..ops.anatomy import anatomy

    store, row = _find_row(state, rec)
    return anatomy(store, blob, projector_name=row.projector_name, row=row, depth=depth, top=top,
                   progress=progress)


# --- mode -------------------------------------------------------------------------------------------


def _parent_cmdline() -> str:
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def has_frontend() -> bool:
    """Whether widgets can be rendered: ipywidgets installed, inside an IPython kernel, and not a
    headless run (papermill / nbclient / nbconvert / pytest started the kernel). ``SEKIOPS_WIDGETS``
    = 1/0 overrides."""
    forced = os.environ.get("SEKIOPS_WIDGETS", "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    if ip is None or not hasattr(ip, "kernel"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    parent = _parent_cmdline().lower()
    return not any(p in parent for p in HEADLESS_PARENTS)


def explorer(df, state=None, blob=None, *, mode: str = "auto", depth: int = 3, top: int = 10,
             select: tuple | None = None, max_rows: int = 25, service: str | None = None,
             projector: str | None = None, flag: str | None = None):
    """Show the explorer (widgets or plain output; see the module docstring). Returns the widget
    box in widget mode, else None."""
    if mode == "auto":
        mode = "widgets" if has_frontend() else "plain"
    if mode == "widgets":
        from IPython.display import display

        box = build_widgets(df, state, blob, depth=depth, top=top)
        display(box)
        return box
    plain(df, state, blob, depth=depth, top=top, select=select, max_rows=max_rows, service=service,
          projector=projector, flag=flag)
    return None


# --- plain output --------------------------------------------------------------------------------------


def plain(df, state=None, blob=None, *, depth: int = 3, top: int = 10, select: tuple | None = None,
          max_rows: int = 25, service=None, projector=None, flag=None, out=None) -> None:
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
    shown = rows.assign(_size=rows["storedBytes"].fillna(0).astype("int64")).sort_values("_size", ascending=False)
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
                    w(f"  ... {m}% ({done:,} of {total:,} bytes)\n")
                    marks.discard(m)
    try:
        report = run_anatomy(state, blob, rec, depth=depth, top=top, progress=progress)
    except Exception as exc:  # noqa: BLE001 - show, don't crash the notebook
        w(f"  cannot walk this payload: {exc}\n")
        return
    w(report.table(limit=40) + "\n")


# --- widgets --------------------------------------------------------------------------------------------


def build_widgets(df, state=None, blob=None, *, depth: int = 3, top: int = 10):
    """The ipywidgets explorer (a VBox)."""
    import ipywidgets as W

    services = sorted(df["serviceId"].dropna().unique().tolist()) if len(df) else []
    projectors = sorted(df["projectorName"].dropna().unique().tolist()) if len(df) else []
    svc = W.Dropdown(options=[("any", None)] + [(s, s) for s in services], description="service")
    proj = W.Dropdown(options=[("any", None)] + [(p, p) for p in projectors], description="projector")
    flag = W.Dropdown(options=[("any", None), ("no flags", "none")] + [(f[5:], f) for f in FLAG_COLUMNS],
                      description="flag")
    rows = W.Select(options=[], rows=10, layout=W.Layout(width="100%"))
    details = W.Output(layout=W.Layout(border="1px solid #ddd"))
    depth_w = W.BoundedIntText(value=depth, min=1, max=12, description="depth")
    walk = W.Button(description="Walk payload", icon="search", disabled=state is None)
    bar = W.IntProgress(value=0, min=0, max=1000, description="anatomy", layout=W.Layout(width="60%"))
    status = W.Label()
    result = W.Output()

    def refresh(*_):
        sub = filter_rows(df, svc.value, proj.value, flag.value)
        sub = sub.assign(_size=sub["storedBytes"].fillna(0).astype("int64")).sort_values("_size", ascending=False)
        rows.options = [(_label(r), i) for i, r in sub.iterrows()]
        if rows.options:
            rows.value = rows.options[0][1]
        else:
            details.clear_output()

    def show_details(*_):
        details.clear_output()
        if rows.value is None:
            return
        with details:
            print(row_details(df.loc[rows.value]))

    def do_walk(_):
        if rows.value is None or state is None:
            return
        rec = df.loc[rows.value]
        expected = _get(rec, "payloadOriginalBytes")
        bar.value, bar.bar_style = 0, "info"
        status.value = "reading..."
        result.clear_output()

        def progress(done, total):
            total = total or expected
            if total:
                bar.value = min(1000, int(done * 1000 / total))
            status.value = f"{done:,} bytes" + (f" of {total:,}" if total else "")
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
        status.value = f"{report.total_bytes:,} bytes in {report.seconds:.2f} s"
        with result:
            from ..ops.charts import anatomy_bars, show

            show(anatomy_bars(report))
            print(report.table(limit=40))

    svc.observe(refresh, "value")
    proj.observe(refresh, "value")
    flag.observe(refresh, "value")
    rows.observe(show_details, "value")
    walk.on_click(do_walk)
    refresh()
    show_details()
    return W.VBox([W.HBox([svc, proj, flag]), rows, details, W.HBox([depth_w, walk]), W.HBox([bar, status]), result])
