"""Charts of an inventory (matplotlib, imported lazily): sizes vs Sekiban's thresholds, offload
ratios per projector, risk flag counts. Every function returns a ``matplotlib.figure.Figure``
built without pyplot (no global state, works headless); :func:`show` displays one in a notebook
as a PNG whatever the backend.
"""

from __future__ import annotations

import io
import math

from ..units import format_bytes
from .inventory import FLAG_COLUMNS, THRESHOLDS, flag_counts as counts

_COLORS = {"envelope": "#4472c4", "payload": "#ed7d31"}
_LINE_STYLES = ["--", "-.", ":", "-"]


def _figure(width: float = 9, height: float = 4.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _fmt_bytes(n: float) -> str:
    """Sizes in charts: binary units with the unit named (sekiops.units), as everywhere else."""
    return format_bytes(n)


def size_distribution(df, title: str | None = None):
    """Histogram (log-spaced bins) of envelope sizes (``storedBytes``) and, when known, compressed
    payload sizes, with Sekiban's thresholds as vertical lines."""
    import numpy as np

    fig, ax = _figure()
    env = _positive(df, "storedBytes")
    pay = _positive(df, "payloadCompressedBytes")
    values = np.concatenate([env, pay]) if len(pay) else env
    lo = max(1.0, float(values.min()) / 2) if len(values) else 100.0
    hi = max(float(values.max()) * 2 if len(values) else 1e7, max(THRESHOLDS.values()) * 1.5)
    bins = np.logspace(math.log10(lo), math.log10(hi), 40)
    if len(env):
        ax.hist(env, bins=bins, alpha=0.7, color=_COLORS["envelope"], label=f"envelope (storedBytes), {len(env)} rows")
    if len(pay):
        ax.hist(pay, bins=bins, alpha=0.6, color=_COLORS["payload"],
                label=f"payload compressed, {len(pay)} rows")
    for i, (name, value) in enumerate(THRESHOLDS.items()):
        ax.axvline(value, color="black", linestyle=_LINE_STYLES[i % len(_LINE_STYLES)], linewidth=1.2,
                   label=name.replace("Cosmos 2 MB item", f"Cosmos item limit ({_fmt_bytes(value)})"))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_bytes_axis())
    ax.set_xlabel("size (log scale)")
    ax.set_ylabel("rows")
    ax.set_title(title or "Snapshot sizes vs Sekiban thresholds")
    ax.legend(fontsize=8, loc="upper left")
    if not len(values):
        ax.text(0.5, 0.5, "no sizes", transform=ax.transAxes, ha="center")
    return fig


def _positive(df, col):
    import numpy as np
    import pandas as pd

    if df is None or len(df) == 0 or col not in df:
        return np.zeros(0)
    s = pd.to_numeric(df[col], errors="coerce").dropna()
    return s[s > 0].to_numpy(dtype=float)


def offload_ratios(summary, title: str | None = None):
    """Horizontal bars per projector: share of bytes and of rows in blob storage (from
    :func:`sekiops.ops.inventory.offload_summary`)."""
    import numpy as np

    s = summary[summary["projectorName"] != "(all)"] if summary is not None and len(summary) else summary
    n = 0 if s is None else len(s)
    fig, ax = _figure(9, max(2.5, 0.45 * n + 1.5))
    if not n:
        ax.text(0.5, 0.5, "no snapshot rows", transform=ax.transAxes, ha="center")
        ax.set_axis_off()
        return fig
    labels = [f"{r.serviceId}/{r.projectorName}" if s["serviceId"].nunique() > 1 else str(r.projectorName)
              for r in s.itertuples()]
    y = np.arange(n)
    byte_ratio = s["offloadedByteRatio"].fillna(0).to_numpy(dtype=float)
    row_ratio = s["offloadedRowRatio"].fillna(0).to_numpy(dtype=float)
    ax.barh(y - 0.2, byte_ratio, height=0.4, color=_COLORS["envelope"], label="bytes in blobs")
    ax.barh(y + 0.2, row_ratio, height=0.4, color=_COLORS["payload"], label="rows offloaded (any level)")
    for yi, (b, total) in enumerate(zip(byte_ratio, s["totalBytes"], strict=True)):
        ax.text(min(b, 1.0) + 0.01, yi - 0.2, f"{b:.0%} of {_fmt_bytes(float(total))}", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.25)
    ax.set_xlabel("offload ratio")
    ax.set_title(title or "Offload ratio per projector")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def flag_counts(df, title: str | None = None):
    """Bars: how many rows raise each risk flag."""
    c = counts(df)
    fig, ax = _figure(9, 4)
    names = [f[5:] for f in FLAG_COLUMNS]
    values = [int(c.get(f, 0)) for f in FLAG_COLUMNS]
    bars = ax.bar(range(len(names)), values, color=["#c00000" if v else "#a6a6a6" for v in values])
    for b, v in zip(bars, values, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, v, str(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("rows")
    ax.set_title(title or "Risk flags")
    return fig


def anatomy_bars(report, limit: int = 15, title: str | None = None):
    """Horizontal bars: the biggest paths of an anatomy report (root excluded)."""
    rows = [r for r in report.paths if r["depth"] > 0]
    rows = sorted(rows, key=lambda r: -r["bytes"])[:limit]
    fig, ax = _figure(9, max(2.5, 0.35 * len(rows) + 1.5))
    if not rows:
        ax.text(0.5, 0.5, "no paths", transform=ax.transAxes, ha="center")
        ax.set_axis_off()
        return fig
    ax.barh(range(len(rows)), [r["bytes"] for r in rows], color=_COLORS["envelope"])
    ax.set_yticks(range(len(rows)), [r["path"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    for i, r in enumerate(rows):
        ax.text(r["bytes"], i, f" {r['share']:.1%}", va="center", fontsize=7)
    ax.set_xlabel("raw JSON bytes")
    ax.xaxis.set_major_formatter(_bytes_axis())
    ax.set_title(title or f"Where the bytes are ({_fmt_bytes(report.total_bytes)} payload)")
    return fig


def _bytes_axis():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: _fmt_bytes(v) if v > 0 else "0")


def png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def show(fig) -> None:
    """Display a figure in a notebook as a PNG (works headless and with any backend)."""
    from IPython.display import Image, display

    display(Image(png(fig)))
