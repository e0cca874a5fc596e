"""A benchmark frame for people: progress lines, the table, the chart, results files.

Wherever a number of the modelled Sekiban byte[] path appears (``mode == "legacy"``) it is
labelled as such: modelled in Python from Sekiban's source, not measured on .NET. Its rows carry
memory only, and the chart's time panels show sekiops alone.
"""

from __future__ import annotations

import json
import math

from ...units import GiB, MiB, format_bytes, format_duration
from .commands import MODE_LABELS, MODELLED, MODELLED_NOTE
from .scenarios import COLUMNS, TIME_COLUMNS

#: The CLI's table: sizes in MiB (2^20 bytes), as docs/benchmarks.md reports them.
TABLE_COLUMNS = ["op", "mode", "variant", "backend", "size_label", "gzip_backend", "ok", "peak_rss_mib",
                 "baseline_rss_mib", "overhead_mib", "overhead_ratio", "wall_s", "op_s", "throughput_mib_s",
                 "codec_mib_s", "ratio_to_codec", "paired_ratio_to_codec", "process_ratio_to_codec",
                 "paired_process_ratio_to_codec", "codec_zlib_mib_s", "ratio_to_zlib_codec", "threads", "json_check",
                 "payload_location", "envelope_location", "error"]
FOOTNOTE = f"legacy (modelled) = Sekiban's byte[] path, {MODELLED_NOTE}: memory only, no times"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def mode_label(mode: str) -> str:
    return f"{MODE_LABELS[MODELLED]} ({MODELLED_NOTE})" if mode == MODELLED else MODE_LABELS.get(mode, mode)


def scenario_line(row: dict) -> str:
    modelled = row["mode"] == MODELLED
    what = "Sekiban byte[] path, modelled" if modelled else row["mode"]
    if row.get("variant"):
        what += f" [{row['variant']}]"
    head = f"{row['op']} {what} {row['backend']} {row['size_label']} gzip={row['gzip_backend']}"
    if not row["ok"]:
        return f"{head}: FAILED: {row['error']}"
    parts = [f"peak {format_bytes(row['peak_rss_bytes'])} (+{format_bytes(row['overhead_bytes'])} over idle)"]
    if modelled:
        parts.append(MODELLED_NOTE)
    else:
        parts.append(format_duration(row["op_s"] if not _missing(row["op_s"]) else row["wall_s"]))
        if row["throughput_mib_s"]:
            t = f"{row['throughput_mib_s']} MiB/s"
            if row["ratio_to_codec"]:
                t += f" ({row['ratio_to_codec']}x codec"
                if row.get("paired_ratio_to_codec") and (row.get("repeat") or 1) > 1:
                    t += f", paired median {row['paired_ratio_to_codec']}x"
                if row.get("process_ratio_to_codec"):
                    t += f"; whole process {row['process_ratio_to_codec']}x"
                t += ")"
            parts.append(t)
    parts.append(f"payload {row['payload_location']}")
    return f"{head}: " + ", ".join(parts)


def codec_line(row: dict) -> str:
    head = f"codec {row['op']} {row['size_label']} gzip={row['gzip_backend']}"
    if not row["ok"]:
        return f"{head}: FAILED: {row['error']}"
    return (f"{head}: {format_duration(row['op_s'])}, {row['throughput_mib_s']} MiB/s, "
            f"peak {format_bytes(row['peak_rss_bytes'])}")


def table_frame(df):
    """The benchmark frame with sizes in MiB (2^20 bytes) and the modelled mode marked, for humans."""
    out = df.copy()
    for col in ("peak_rss", "baseline_rss", "overhead"):
        out[f"{col}_mib"] = (out[f"{col}_bytes"].astype("float64") / MiB).round(1)
    out["mode"] = out["mode"].map(lambda m: f"{m} (modelled)" if m == MODELLED else m)
    return out[[c for c in TABLE_COLUMNS if c in out.columns]]


def render(df, fmt: str) -> str:
    """The frame as ``table`` (with the modelled footnote when it has modelled rows), ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps(json.loads(df.to_json(orient="records")), indent=2) + "\n"
    if fmt == "csv":
        return df.to_csv(index=False)
    t = table_frame(df).astype(object).where(lambda x: x.notna(), "")
    text = t.to_string(index=False) + "\n"
    if (df["mode"] == MODELLED).any():
        text += f"# {FOOTNOTE}\n"
    return text


# --- chart --------------------------------------------------------------------------------------


def plot_benchmark(df, title: str | None = None):
    """A matplotlib Figure: memory overhead, throughput (with the codec floor), ratio to the codec.

    Memory shows every (op, mode, backend, gzip); the modelled byte[] path is labelled as the model
    it is and appears in the memory panel only. Codec rows are the best throughput per size.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(16, 7.6), layout="constrained")
    axes = fig.subplots(1, 3)
    ok = df[df["ok"] == True]  # noqa: E712 - pandas mask
    pipe = ok[ok["mode"] != "codec"]
    codec = ok[ok["mode"] == "codec"]
    colors = {("persist", "streaming"): "tab:blue", ("persist", MODELLED): "tab:red",
              ("restore", "streaming"): "tab:green", ("restore", MODELLED): "tab:orange",
              ("anatomy", "streaming"): "tab:purple"}
    markers = ["^", "s", "o", "D", "v", "P", "X"]
    backend_marker = {b: markers[i % len(markers)] for i, b in enumerate(sorted(pipe["backend"].unique()))}
    # a fifth gzip backend, if ever, draws the default solid line
    gz_style = dict(zip(sorted(ok["gzip_backend"].dropna().unique()), ["-", "--", ":", "-."], strict=False))

    ax_mem, ax_tp, ax_ratio = axes
    pipe = pipe.assign(variant=pipe["variant"].fillna("").astype(str))
    for (op, mode, variant, backend, gz), g in pipe.groupby(["op", "mode", "variant", "backend", "gzip_backend"],
                                                            sort=True):
        g = g.groupby("size_bytes", as_index=False).agg(
            {"overhead_bytes": "max", "throughput_mib_s": "max", "ratio_to_codec": "max"})
        what = "Sekiban byte[] path, modelled" if mode == MODELLED else mode
        if variant:
            what += f" [{variant}]"
        variant_colors = {"threads=1": "tab:cyan", "check=yajl": "tab:olive"}
        color = colors.get((op, mode), "gray") if not variant else variant_colors.get(variant, "tab:brown")
        kw = dict(color=color, marker=backend_marker[backend],
                  linestyle=gz_style.get(gz, "-"), label=f"{op} {what} ({backend}, gzip {gz})", markersize=6)
        x = g["size_bytes"] / MiB
        ax_mem.plot(x, g["overhead_bytes"].astype(float).clip(lower=MiB / 10) / MiB, **kw)
        if mode != MODELLED:
            ax_tp.plot(x, g["throughput_mib_s"], **kw)
            ax_ratio.plot(x, g["ratio_to_codec"], **kw)
    if len(pipe):
        xs = sorted(pipe["size_bytes"].unique() / MiB)
        ax_mem.plot(xs, xs, color="black", linewidth=0.8, linestyle=":", label="= state size")
        ax_mem.axhline(64, color="gray", linewidth=0.8, linestyle="--", label="64 MiB budget")
    codec_handles = []
    for (op, gz), g in codec.groupby(["op", "gzip_backend"], sort=True):
        g = g.groupby("size_bytes", as_index=False)["throughput_mib_s"].max()
        (h,) = ax_tp.plot(g["size_bytes"] / MiB, g["throughput_mib_s"], color="black" if op == "compress" else "gray",
                          linestyle=gz_style.get(gz, "-"), linewidth=1.4, marker=".",
                          label=f"codec {op} alone (gzip {gz})")
        codec_handles.append(h)
    ax_ratio.axhline(0.8, color="gray", linewidth=0.8, linestyle="--")
    ax_ratio.axhline(1.0, color="black", linewidth=0.6, linestyle=":")

    ax_mem.set(xscale="log", yscale="log", xlabel="state size (MiB, uncompressed JSON)",
               ylabel="peak RSS - idle baseline (MiB)", title="Memory overhead (kernel peak RSS, wait4)")
    ax_tp.set(xscale="log", xlabel="state size (MiB)", ylabel="MiB/s of state JSON",
              title="sekiops throughput inside the operation (best run)")
    ax_ratio.set(xscale="log", xlabel="state size (MiB)", ylabel="pipeline / codec-alone throughput",
                 title="Ratio to the codec alone (dashed: 0.8x target)")
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    blank = FuncFormatter(lambda v, _pos: "")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(blank)
    ax_mem.yaxis.set_major_formatter(plain)
    ax_mem.yaxis.set_minor_formatter(blank)
    if codec_handles:
        ax_tp.legend(handles=codec_handles, fontsize=8, loc="best")
    handles, labels = ax_mem.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    if (pipe["mode"] == MODELLED).any():
        ax_mem.text(0.01, 0.99, f"Sekiban byte[] path:\n{MODELLED_NOTE}", transform=ax_mem.transAxes,
                    fontsize=7.5, va="top", ha="left", color="tab:red")
    machine = df.attrs.get("machine") if hasattr(df, "attrs") else None
    if title is None and machine:
        title = (f"sekiops bench -- {machine.get('nproc')} CPU {machine.get('cpu_model')}, "
                 f"{(machine.get('ram_bytes') or 0) / GiB:.0f} GiB RAM, Python {machine.get('python')}, "
                 f"default gzip {machine.get('gzip_backend')}"
                 + (f", sekiops {machine['sekiops_commit']}" if machine.get("sekiops_commit") else ""))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --- results files ------------------------------------------------------------------------------


def save_results(df, path: str) -> None:
    """Write a benchmark frame as ``.csv`` or ``.json`` (records, with the machine info)."""
    if path.endswith(".json"):
        doc = {"machine": df.attrs.get("machine"), "modelled": FOOTNOTE,
               "rows": json.loads(df.to_json(orient="records"))}
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    else:
        df.to_csv(path, index=False)


def load_results(path: str):
    """A frame saved by :func:`save_results` (or by an older sekiops: modelled rows lose their times)."""
    import pandas as pd

    if path.endswith(".json"):
        with open(path) as f:
            doc = json.load(f)
        rows = doc["rows"] if isinstance(doc, dict) else doc
        df = pd.DataFrame(rows)
        if isinstance(doc, dict) and doc.get("machine"):
            df.attrs["machine"] = doc["machine"]
    else:
        df = pd.read_csv(path)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    modelled = df["mode"] == MODELLED
    df["modelled"] = modelled
    if modelled.any():
        df.loc[modelled, TIME_COLUMNS] = None
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
