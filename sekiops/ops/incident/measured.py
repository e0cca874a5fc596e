"""Measured persist memory (sekiops' own Python processes) and the benchmark charts of notebooks 03/04.

What these measure: the RSS of a fresh process per persist (:func:`measure_persist_memory` comes from
:mod:`sekiops.ops.bench`). The ``legacy`` mode is Sekiban's byte[] path *modelled in Python from
Sekiban's source*, run by the benchmark's child, not measured on .NET; charts and tables say so
(:data:`sekiops.ops.capacity.MODEL_NOTE`), and its peak is never filed under a product metric name.
"""

from __future__ import annotations

from ...units import format_bytes, format_count, format_duration
from ..bench.commands import MODE_LABELS, MODELLED
from .base import PAYLOAD_OFFLOAD_THRESHOLD, MiB, fmt_mem, fmt_size


def memory_over_time_chart(frame, summaries: dict | None = None, title: str | None = None):
    """RSS over time of each persist run (one line per mode), with its peak marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = {"legacy": "#c00000", "streaming": "#2f75b5"}
    frame = frame[frame["rss_bytes"] >= MiB]  # the sample taken before the exec
    for label, g in frame.groupby("label", sort=False):
        peak = (summaries or {}).get(label, {}).get("peak_bytes") or g["rss_bytes"].max()
        ax.plot(g["t_s"], g["rss_bytes"] / MiB, color=colors.get(label, "gray"), linewidth=1.6,
                label=f"{label}" + (" (Sekiban's byte[] path, modelled in Python)" if label == "legacy" else "")
                + f": peak {fmt_mem(peak)}")
    if summaries:
        size = next((s.get("state_bytes") for s in summaries.values() if s.get("state_bytes")), None)
        if size:
            ax.set_title(title or f"Process memory (RSS) during one persist of a {fmt_size(size)} state, legacy vs "
                                  "streaming")
    if not ax.get_title():
        ax.set_title(title or "Process memory during one persist, legacy vs streaming")
    ax.set_xlabel("seconds since the process started")
    ax.set_ylabel("RSS (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    return fig


#: Persist summary fields under the metric names Sekiban's design asked for (section 7). The names are
#: Sekiban's; :data:`METRIC_MEANING` says what sekiops puts in each.
PERSIST_METRIC_NAMES = [("projection_snapshot_tempfile_bytes", "tempfile_bytes"),
                        ("projection_snapshot_upload_bytes", "upload_bytes"),
                        ("projection_snapshot_offload_ratio", "offload_ratio"),
                        ("projection_persist_peak_managed_memory_bytes", "peak_bytes"),
                        ("projection_snapshot_build_ms", "build_ms"),
                        ("projection_snapshot_upload_ms", "upload_ms"),
                        ("projection_snapshot_persist_ms", "total_ms")]


#: what sekiops records under each of Sekiban's metric names (the names stay Sekiban's)
METRIC_MEANING = {
    "projection_snapshot_tempfile_bytes": "bytes sekiops spooled to its temp file",
    "projection_snapshot_upload_bytes": "bytes sent to blob storage",
    "projection_snapshot_offload_ratio": "bytes in blob storage / bytes stored",
    "projection_persist_peak_managed_memory_bytes": "peak process RSS of the sekiops process (Python has no "
                                                    "managed heap; RSS is what the container limit counts)",
    "projection_snapshot_build_ms": "time to build the payload and envelope",
    "projection_snapshot_upload_ms": "time spent uploading",
    "projection_snapshot_persist_ms": "whole persist",
    "projection_snapshot_original_bytes": "state JSON bytes",
    "projection_restore_tempfile_bytes": "bytes sekiops spooled to a restore temp file",
    "projection_restore_download_bytes": "bytes read from blob storage",
    "projection_restore_peak_memory_bytes": "peak process RSS of the sekiops process during the restore",
    "projection_restore_read_ms": "time to read the envelope",
    "projection_restore_decode_ms": "time to gunzip the payload to the output",
    "projection_restore_ms": "whole restore",
    "projection_restore_original_bytes": "state bytes written",
}


def metric_value_text(metric: str, value) -> str:
    """A metric value for reading: bytes in binary units, ratios as %, durations in ms/s."""
    if value is None or value != value:
        return "–"
    if metric.endswith("_ratio"):
        return f"{float(value):.1%}"
    if metric.endswith("_ms"):
        return format_duration(float(value) / 1000.0)
    if metric.endswith("_bytes"):
        return f"{format_bytes(value)} ({format_count(value)} B)"
    return format_count(value)


def recorded_metrics_table(recorded):
    """:func:`sekiops.metrics.collected_metrics` (long form) as one row per operation x metric:
    Sekiban's metric name, what sekiops puts in it, the value formatted."""
    import pandas as pd

    rows = []
    frame = pd.DataFrame(recorded)
    if not len(frame):
        return pd.DataFrame(columns=["operation", "metric (Sekiban's name)", "what sekiops records", "value"])
    for _, r in frame.iterrows():
        if str(r["metric"]).endswith("_count"):
            continue
        rows.append({"operation": f"{r['op']} {r['projector']} ({r['mode']})",
                     "metric (Sekiban's name)": r["metric"],
                     "what sekiops records": METRIC_MEANING.get(r["metric"], ""),
                     "value": metric_value_text(str(r["metric"]), r["value"])})
    return pd.DataFrame.from_records(rows)


def persist_metrics_frame(summaries: dict):
    """One row per persist run of :func:`measure_persist_memory`, one column per snapshot metric
    (``projection_snapshot_*`` names), plus where the payload and envelope went.

    Sekiban's metric names hold what sekiops' own persist recorded. The modelled byte[] path is not
    sekiops, and its time is Python's: its row keeps the byte counts (upload, offload ratio, which the
    format decides) but its peak goes to ``modelled_peak_bytes`` and its metric-name columns stay empty."""
    import pandas as pd

    rows = []
    for mode, s in summaries.items():
        modelled = bool(s.get("modelled")) or mode == MODELLED
        row = {"mode": mode, "what": MODE_LABELS.get(mode, mode), "modelled": modelled,
               "state_bytes": s.get("state_bytes"), "ok": s.get("returncode") == 0,
               "payload_location": s.get("payload_location"), "envelope_location": s.get("envelope_location"),
               "compressed_size_bytes": s.get("compressed_size_bytes"),
               "modelled_peak_bytes": s.get("peak_bytes") if modelled else None}
        for metric, field in PERSIST_METRIC_NAMES:
            product_only = field in ("peak_bytes", "build_ms", "upload_ms", "total_ms", "tempfile_bytes")
            row[metric] = None if modelled and product_only else s.get(field)
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _bench_rows(df):
    ok = df[df["ok"].astype(str).str.lower().isin(["true", "1"])]
    return ok[ok["mode"].isin(["legacy", "streaming"])], ok[ok["mode"] == "codec"]


def bench_peak_chart(df, title: str | None = None):
    """Peak memory (kernel high-water mark of the process) vs state size, legacy vs streaming, per op."""
    from matplotlib.figure import Figure

    pipe, _ = _bench_rows(df)
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colors = {"legacy": "#c00000", "streaming": "#2f75b5"}
    for ax, op in zip(axes, ("persist", "restore"), strict=True):
        g = pipe[pipe["op"] == op]
        for mode in ("legacy", "streaming"):
            m = g[g["mode"] == mode].groupby("size_bytes", as_index=False).agg(
                peak=("peak_rss_bytes", "max"), base=("baseline_rss_bytes", "max"))
            if not len(m):
                continue
            ax.plot(m["size_bytes"] / MiB, m["peak"] / MiB, marker="o", color=colors[mode], linewidth=1.8,
                    label=f"{mode}: peak RSS")
            if m["base"].notna().any():
                ax.plot(m["size_bytes"] / MiB, m["base"] / MiB, linestyle=":", marker="_", markersize=14,
                        color=colors[mode], linewidth=1, label=f"{mode}: same command on a tiny state")
        if len(g):
            top = float(g["size_bytes"].max()) / MiB
            ax.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--",
                    label="= state size")
            ax.set_xlim(0, top * 1.08)
            ax.set_ylim(bottom=0)
        else:
            ax.text(0.5, 0.5, f"no {op} rows", transform=ax.transAxes, ha="center")
        ax.set_title(op)
        ax.set_xlabel("state size (MiB of JSON)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("peak process memory, RSS (MiB)")
    fig.suptitle(title or "Peak memory vs state size: legacy (Sekiban's byte[] path, modelled in Python) vs streaming",
                 fontsize=12)
    return fig


def throughput_upload_chart(df, title: str | None = None):
    """Left: streaming throughput (MiB of state JSON per second) per op, with gzip alone for reference
    (the legacy model is not timed).
    Right: bytes each persist sent to blob storage (the offloaded payload) vs the state size."""
    import numpy as np
    from matplotlib.figure import Figure

    pipe, codec = _bench_rows(df)
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    ax, up = fig.subplots(1, 2)
    colors = {("persist", "legacy"): "#c00000", ("persist", "streaming"): "#2f75b5",
              ("restore", "legacy"): "#ed7d31", ("restore", "streaming"): "#548235"}
    # no time comparison against the legacy model: its timings are Python's, not .NET's
    for (op, mode), g in pipe[pipe["mode"] == "streaming"].groupby(["op", "mode"], sort=True):
        m = g.groupby("size_bytes", as_index=False)["throughput_mib_s"].max()
        ax.plot(m["size_bytes"] / MiB, m["throughput_mib_s"], marker="o",
                color=colors.get((op, mode), "gray"), label=f"{op} {mode}")
    for direction, style in (("compress", "--"), ("decompress", ":")):
        c = codec[codec["op"] == direction]
        if len(c):
            m = c.groupby("size_bytes", as_index=False)["throughput_mib_s"].max()
            ax.plot(m["size_bytes"] / MiB, m["throughput_mib_s"], linestyle=style, marker="x", color="black",
                    linewidth=1, label=f"gzip {direction} alone")
    if len(pipe):
        ax.set_xlim(0, float(pipe["size_bytes"].max()) / MiB * 1.08)
        ax.set_ylim(bottom=0)
    ax.set_xlabel("state size (MiB of JSON)")
    ax.set_ylabel("MiB/s of state JSON")
    ax.set_title("Streaming throughput vs gzip alone (the legacy model is not timed: it is Python, not .NET)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    p = pipe[pipe["op"] == "persist"]
    if len(p):
        sizes = sorted(p["size_bytes"].unique())
        width = 0.38
        x = np.arange(len(sizes))
        for i, mode in enumerate(("legacy", "streaming")):
            vals = []
            for s in sizes:
                r = p[(p["mode"] == mode) & (p["size_bytes"] == s)]
                blob = r[r["payload_location"].astype(str) == "blob"]
                vals.append(float(blob["compressed_bytes"].max()) / MiB if len(blob) else 0.0)
            up.bar(x + (i - 0.5) * width, vals, width=width, color=colors[("persist", mode)], label=f"persist {mode}")
        up.set_xticks(x, [fmt_size(s) for s in sizes])
        up.axhline(PAYLOAD_OFFLOAD_THRESHOLD / MiB, color="black", linestyle=":", linewidth=1,
                   label="payload offload threshold (1,560,576 B)")
        up.set_ylabel("MiB uploaded to blob storage")
        up.set_xlabel("state size")
        up.legend(fontsize=8)
    else:
        up.text(0.5, 0.5, "no persist rows", transform=up.transAxes, ha="center")
    up.set_title("Upload bytes per persist (gzip payload offloaded)")
    up.grid(alpha=0.3, axis="y")
    fig.suptitle(title or "Throughput and upload bytes", fontsize=12)
    return fig


def offload_ratio_chart(metrics_frame, title: str | None = None):
    """Bars: ``projection_snapshot_offload_ratio`` (uploaded / stored bytes) and upload MB per persist run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.add_subplot()
    if metrics_frame is None or not len(metrics_frame):
        ax.text(0.5, 0.5, "no persist runs", transform=ax.transAxes, ha="center")
        ax.set_axis_off()
        return fig
    labels = [f"{MODE_LABELS.get(r.mode, r.mode)} ({fmt_size(r.state_bytes)} state)"
              for r in metrics_frame.itertuples()]
    ratios = metrics_frame["projection_snapshot_offload_ratio"].astype(float).fillna(0).to_numpy()
    bars = ax.barh(range(len(labels)), ratios,
                   color=["#c00000" if m == MODELLED else "#2f75b5" for m in metrics_frame["mode"]])
    for b, r, up in zip(bars, ratios, metrics_frame["projection_snapshot_upload_bytes"], strict=True):
        ax.text(min(r, 1.0) + 0.01, b.get_y() + b.get_height() / 2, f"{r:.1%} ({fmt_size(up)} uploaded)",
                va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.set_xlim(0, 1.3)
    ax.set_xlabel("offload ratio: bytes in blob storage / bytes stored")
    ax.set_title(title or "Offload ratio per persist")
    return fig


def overhead_chart(bench_df, title: str | None = None):
    """Memory an operation costs over the idle program (``overhead_bytes``) vs the state size, per
    op and mode: a benchmark frame, or :func:`sekiops.ops.capacity.default_bench` (the built-in one)."""
    import pandas as pd
    from matplotlib.figure import Figure

    frame = pd.DataFrame(bench_df)
    if "ok" in frame.columns:
        frame = frame[frame["ok"].astype(str).str.lower().isin(["true", "1"])]
    frame = frame[frame["mode"].isin(["legacy", "streaming"])]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.add_subplot()
    styles = {("persist", "legacy"): ("#c00000", "v", "-"), ("restore", "legacy"): ("#ed7d31", "^", "-"),
              ("persist", "streaming"): ("#2f75b5", "o", "--"), ("restore", "streaming"): ("#548235", "s", "--")}
    for (op, mode), g in frame.groupby(["op", "mode"], sort=True):
        m = g.groupby("size_bytes", as_index=False)["overhead_bytes"].max().sort_values("size_bytes")
        color, marker, line = styles.get((op, mode), ("gray", "o", "-"))
        ax.plot(m["size_bytes"] / MiB, m["overhead_bytes"] / MiB, color=color, marker=marker, linestyle=line,
                linewidth=1.8, label=f"{op} {mode}" + (" (modelled)" if mode == "legacy" else ""))
    if len(frame):
        top = float(frame["size_bytes"].max()) / MiB
        ax.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle=":", label="= state size")
        ax.set_xlim(0, top * 1.08)
        ax.set_ylim(bottom=0)
    else:
        ax.text(0.5, 0.5, "no measurements", transform=ax.transAxes, ha="center")
    ax.set_xlabel("state size (MiB of JSON)")
    ax.set_ylabel("memory over the idle program (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title(title or "Memory sekiops' Python processes cost per persist / restore: legacy (Sekiban's byte[] "
                          "path, modelled in Python) vs streaming", fontsize=10)
    return fig
