"""Charts of an incident (matplotlib ``Figure`` objects built without pyplot: they work headless)."""

from __future__ import annotations

from ..capacity import MODEL_NOTE
from .base import HEADROOM, GiB, MiB, fmt_mem
from .inputs import parse_when

_MARKERS = {  # kind -> (label, marker, color)
    "persist_legacy": ("byte[] persist", "v", "#c00000"),
    "persist_streaming": ("streaming persist", "o", "#2f75b5"),
    "persist_details": ("persist", "v", "#7f7f7f"),
    "restore": ("restore", "^", "#548235"),
    "state_restore_success": ("restore succeeded", "P", "#548235"),
    "failure": ("failure event", "X", "black"),
    "catch_up": ("catch-up batch", "|", "#7f6000"),
}
_LANES = ["byte[] persist", "streaming persist", "restore", "failure event", "catch-up batch", "restart"]


def timeline_chart(rep, title: str | None = None, time_from=None, time_to=None):
    """Memory over time against the limit, with persists, restores, failures and restarts marked.

    Top: working set (GiB) with the limit and 90 % lines, restarts as vertical lines, events as
    markers on the memory curve. Bottom: one lane per event type (marker size ~ envelope size).
    """
    import matplotlib.dates as mdates
    import numpy as np
    from matplotlib.figure import Figure

    tl = rep.timeline
    if time_from is not None and len(tl):
        tl = tl[tl["time"] >= parse_when(time_from)]
    if time_to is not None and len(tl):
        tl = tl[tl["time"] <= parse_when(time_to)]
    fig = Figure(figsize=(12, 6.8), layout="constrained")
    ax, lanes = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    limit_gib = rep.memory_limit / GiB
    mem = tl[tl["category"] == "memory"] if len(tl) else tl
    if len(mem):
        x = mem["time"].dt.tz_convert(None).to_numpy()
        y = mem["working_set_bytes"].to_numpy(dtype=float) / GiB
        ax.plot(x, y, color="#404040", linewidth=1.6, label="working set (container)")
        ax.fill_between(x, y, color="#bfbfbf", alpha=0.35, linewidth=0)
        i = int(np.nanargmax(y))
        ax.annotate(f"peak {fmt_mem(y[i] * GiB)} ({y[i] / limit_gib:.0%})", (x[i], y[i]), xytext=(10, 12),
                    textcoords="offset points", fontsize=9, color="#c00000",
                    arrowprops=dict(arrowstyle="->", color="#c00000", lw=0.8))
    else:
        ax.text(0.5, 0.5, "no memory samples in the window", transform=ax.transAxes, ha="center")
    ax.axhline(limit_gib, color="#c00000", linewidth=1.5, label=f"memory limit {fmt_mem(rep.memory_limit)}")
    ax.axhline(limit_gib * 0.9, color="#c00000", linewidth=0.8, linestyle=":", label="90 % of the limit")
    restarts = tl[tl["category"] == "restart"] if len(tl) else tl
    for j, (_, r) in enumerate(restarts.iterrows()):
        t = r["time"].tz_convert(None)
        for a in (ax, lanes):
            a.axvline(t, color="#c00000", linestyle="--", linewidth=1, alpha=0.8,
                      label="restart" if (j == 0 and a is ax) else None)
    events = tl[tl["source"] == "logs"] if len(tl) else tl
    lane_y = {name: i for i, name in enumerate(reversed(_LANES))}
    shown = set()
    if len(events):
        for key, g in _marker_groups(events):
            label, marker, color = _MARKERS[key]
            x = g["time"].dt.tz_convert(None).to_numpy()
            y = _memory_at(mem, g["time"]) / GiB
            ok = ~np.isnan(y)
            if ok.any() and key != "catch_up":
                ax.scatter(x[ok], y[ok], marker=marker, s=70, color=color, edgecolor="white", linewidth=0.6,
                           zorder=5, label=label if label not in shown else None)
                shown.add(label)
            env = g["envelope_bytes"].to_numpy(dtype=float)
            sizes = np.where(np.isnan(env), 40, 25 + 140 * np.sqrt(np.nan_to_num(env) / max(np.nanmax(
                np.append(events["envelope_bytes"].to_numpy(dtype=float), 1.0)), 1.0)))
            lane = label if label in lane_y else "restore" if key == "state_restore_success" else "failure event"
            lanes.scatter(x, np.full(len(x), lane_y[lane]), marker=marker, s=sizes, color=color, alpha=0.85,
                          zorder=4)
    if len(restarts):
        lanes.scatter(restarts["time"].dt.tz_convert(None).to_numpy(), np.full(len(restarts), lane_y["restart"]),
                      marker="*", s=140, color="#c00000", zorder=4)
    lanes.set_yticks(list(lane_y.values()), list(lane_y.keys()), fontsize=8)
    lanes.set_ylim(-0.7, len(_LANES) - 0.3)
    lanes.grid(axis="x", alpha=0.3)
    lanes.set_xlabel("time (UTC)")
    ax.set_ylabel("working set (GiB)")
    top = max(limit_gib * 1.12, (float(mem["working_set_bytes"].max()) / GiB * 1.08) if len(mem) else 0)
    ax.set_ylim(0, top)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=5, frameon=False)
    fig.suptitle(title or "Container memory and snapshot events", fontsize=12)
    lanes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    return fig


def _memory_at(mem, times):
    """Working set at ``times``, interpolated between samples (NaN outside the samples)."""
    import numpy as np

    if mem is None or not len(mem):
        return np.full(len(times), np.nan)
    m = mem.dropna(subset=["working_set_bytes"])
    if not len(m):
        return np.full(len(times), np.nan)
    xs = m["time"].astype("int64").to_numpy(dtype=float)
    x = times.astype("int64").to_numpy(dtype=float)
    return np.interp(x, xs, m["working_set_bytes"].to_numpy(dtype=float), left=np.nan, right=np.nan)


def _marker_groups(events):
    out = []
    for key in ("persist_legacy", "persist_streaming", "persist_details", "restore", "state_restore_success"):
        g = events[events["kind"] == key]
        if len(g):
            out.append((key, g))
    f = events[events["category"] == "failure"]
    if len(f):
        out.append(("failure", f))
    c = events[events["category"] == "catch_up"]
    if len(c):
        out.append(("catch_up", c))
    return out


def persist_size_chart(rep, title: str | None = None):
    """Envelope size per persist (byte[] EnvelopeSize, streaming TempFileBytes) per projector, over time (MiB)."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    tl = rep.timeline
    p = tl[(tl["category"] == "persist") & tl["envelope_bytes"].notna()] if len(tl) else tl
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax = fig.add_subplot()
    if not len(p):
        ax.text(0.5, 0.5, "no persist events with a size in the window", transform=ax.transAxes, ha="center")
        ax.set_axis_off()
        return fig
    colors = ["#2f75b5", "#c55a11", "#548235", "#7030a0", "#bf9000", "#404040"]
    for i, (name, g) in enumerate(p.groupby("projectorName", sort=True)):
        c = colors[i % len(colors)]
        for kind, marker, style in (("persist_legacy", "v", "-"), ("persist_streaming", "o", "--")):
            k = g[g["kind"] == kind]
            if len(k):
                ax.plot(k["time"].dt.tz_convert(None), k["envelope_bytes"] / MiB, marker=marker, linestyle=style,
                        color=c, label=f"{name}: " + ("byte[] EnvelopeSize" if kind == "persist_legacy"
                                                      else "streaming TempFileBytes"))
    ax.set_ylabel("MiB")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "Snapshot size per persist")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    return fig


def capacity_chart(cap, memory_limit: int, title: str | None = None, limit_rows: int = 12):
    """Estimated peak per projection (byte[], Sekiban's grain at the assumed version, fully streaming)
    against the limit; the byte[] costs are modelled (see :data:`sekiops.ops.capacity.MODEL_NOTE`)."""
    import numpy as np
    from matplotlib.figure import Figure

    known = cap[cap["legacyPeakBytes"].notna()].head(limit_rows) if cap is not None and len(cap) else None
    n = 0 if known is None else len(known)
    fig = Figure(figsize=(12, max(2.6, 0.55 * n + 1.6)), layout="constrained")
    ax = fig.add_subplot()
    if known is None or not n:
        ax.text(0.5, 0.5, "no projection with a known size", transform=ax.transAxes, ha="center")
        ax.set_axis_off()
        return fig
    y = np.arange(n)
    labels = [f"{r.projectorName} (logs)" if r.source == "logs"
              else f"{r.projectorName} {r.projectorVersion} (inventory)" for r in known.itertuples()]
    version = (cap.attrs or {}).get("sekibanVersion", "")
    for off, col, color, label in ((-0.27, "legacyPeakBytes", "#c00000", "byte[] persist + restore (modelled)"),
                                   (0.0, "mixedPeakBytes", "#ed7d31", f"Sekiban's grain {version}".strip()),
                                   (0.27, "streamingPeakBytes", "#2f75b5", "streaming persist + restore")):
        vals = known[col].astype(float).to_numpy() / GiB
        ax.barh(y + off, vals, height=0.25, color=color, label=label)
    ax.axvline(memory_limit / GiB, color="black", linewidth=1.5, label=f"limit {fmt_mem(memory_limit)}")
    ax.axvline(memory_limit / GiB * HEADROOM, color="black", linewidth=0.8, linestyle=":",
               label=f"{HEADROOM:.0%} of the limit")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"estimated peak memory (GiB); byte[] costs {MODEL_NOTE}", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title or "Estimated peak memory per projection vs the limit")
    return fig


