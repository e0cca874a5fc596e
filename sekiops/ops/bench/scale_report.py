"""Issue 18's results for people: persist/restore ratios, stage costs, audits at scale, migrations.

:func:`plot_scale` draws one figure of four panels from what the benchmarks return (every
panel is measured, except the dashed bounds in the first, which are modelled from the measured
stage costs and labelled so); :func:`markdown` writes the same numbers as tables.
"""

from __future__ import annotations

import math

from ...units import MiB

MB = 10**6


def _ok(rows):
    return [r for r in rows or [] if r.get("ok")]


def _num(v) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def plot_scale(persist=None, stages: dict | None = None, audit: list | None = None, migrate: list | None = None,
               title: str | None = None):
    """A matplotlib Figure: (1) persist/restore throughput over the codec alone, per variant, with the
    modelled bounds; (2) CPU ms per MiB of each stage; (3) audit peak RSS and time by blob count;
    (4) migration rows/s by concurrency."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 9.5), layout="constrained")
    (ax_ratio, ax_stage), (ax_audit, ax_mig) = fig.subplots(2, 2)

    # (1) ratios, measured (paired medians), with the modelled bounds
    if persist is not None and len(persist):
        df = persist[(persist["ok"] == True) & (persist["mode"] == "streaming")]  # noqa: E712
        df = df.assign(variant=df["variant"].fillna("").astype(str))
        labels, op_vals, proc_vals = [], [], []
        for (op, variant, size), g in df.groupby(["op", "variant", "size_label"], sort=False):
            r = g.iloc[0]
            labels.append(f"{op} {size}" + (f"\n[{variant}]" if variant else "\n[default]"))
            op_vals.append(_num(r.get("paired_ratio_to_codec")) or _num(r.get("ratio_to_codec")) or 0)
            proc_vals.append(_num(r.get("paired_process_ratio_to_codec")) or 0)
        x = range(len(labels))
        ax_ratio.bar([i - 0.2 for i in x], op_vals, 0.4, label="inside the operation (paired median)",
                     color="tab:blue")
        ax_ratio.bar([i + 0.2 for i in x], proc_vals, 0.4, label="whole process (start-up included)",
                     color="tab:cyan")
        for i, v in enumerate(op_vals):
            ax_ratio.text(i - 0.2, v + 0.02, f"{v:.2f}", ha="center", fontsize=7)
        ax_ratio.set_xticks(list(x), labels, fontsize=7)
        ax_ratio.axhline(1.0, color="black", linewidth=0.6, linestyle=":")
        ax_ratio.axhline(1.5, color="tab:red", linewidth=0.8, linestyle="--", label="goal: persist 1.5x")
        ax_ratio.axhline(0.95, color="tab:green", linewidth=0.8, linestyle="--", label="goal: restore 0.95x")
        if stages and stages.get("bounds"):
            for name, style, color in (("native", "-.", "tab:purple"), ("yajl", ":", "tab:purple"),
                                       ("no check (for comparison)", ":", "gray")):
                b = stages["bounds"]["by_checker"].get(name)
                if b:
                    what = "no check at all" if name.startswith("no check") else f"the {name} check"
                    ax_ratio.axhline(b["bound_ratio_to_codec"], color=color, linewidth=1, linestyle=style,
                                     label=f"persist bound with {what}, modelled ({b['bound_ratio_to_codec']:.2f}x)")
        ax_ratio.set(ylabel="throughput / single-thread codec alone",
                     title="Persist and restore against gzip alone (measured, one run, interleaved rounds)")
        ax_ratio.set_ylim(0, max([1.6] + op_vals) + 0.55)
        ax_ratio.legend(fontsize=7, loc="upper left", ncol=2)
        ax_ratio.grid(True, axis="y", alpha=0.3)

    # (2) stage costs
    if stages:
        rows = [r for r in stages["stages"] if r["side"] in ("persist", "codec")]
        names = [r["stage"] for r in rows]
        vals = [r["cpu_ms_per_mib"] for r in rows]
        colors = ["tab:red" if n.startswith("json check") else "gray" if r["side"] == "codec" else "tab:blue"
                  for n, r in zip(names, rows, strict=True)]
        ax_stage.barh(range(len(names)), vals, color=colors)
        for i, v in enumerate(vals):
            ax_stage.text(v + 0.02, i, f"{v:.2f}", va="center", fontsize=7)
        ax_stage.set_yticks(range(len(names)), names, fontsize=7)
        ax_stage.invert_yaxis()
        ax_stage.set(xlabel="CPU ms per MiB of state JSON, one thread (measured)",
                     title=f"Where persist's CPU goes ({stages.get('gzip_backend')}, {stages.get('cores')} cores)")
        ax_stage.grid(True, axis="x", alpha=0.3)

    # (3) audits
    ok = [r for r in _ok(audit) if r["blobs"] > 0]
    if ok:
        by_store: dict[str, list] = {}
        for r in ok:
            n_rows = r.get("rows")
            what = ("rows = 10% of blobs" if n_rows == r["blobs"] // 10 else f"{n_rows:,} rows") if n_rows is not None \
                else "rows"
            by_store.setdefault(f"{r.get('store', 'local')}, {what}", []).append(r)
        ax_t = ax_audit.twinx()
        for store, rs in by_store.items():
            rs = sorted(rs, key=lambda r: r["blobs"])
            xs = [r["blobs"] for r in rs]
            ax_audit.plot(xs, [r["peak_rss_bytes"] / MiB for r in rs], marker="o", label=f"peak RSS ({store})")
            ax_t.plot(xs, [r["wall_s"] for r in rs], marker="s", linestyle="--", label=f"wall s ({store})")
        ax_audit.axhline(200 * 1e6 / MiB, color="tab:red", linewidth=0.8, linestyle="--",
                         label="goal: < 200 MB (190.7 MiB)")
        ax_audit.set(xscale="log", xlabel="blobs in the container", ylabel="peak RSS (MiB, kernel, wait4)",
                     title="sekiops audit-blobs over large containers (measured, fresh processes)")
        ax_audit.set_ylim(bottom=0)
        ax_t.set_yscale("log")
        ax_t.set_ylabel("wall time (s)")
        h1, l1 = ax_audit.get_legend_handles_labels()
        h2, l2 = ax_t.get_legend_handles_labels()
        ax_audit.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
        ax_audit.grid(True, alpha=0.3)

    # (4) migrations
    ok = _ok(migrate)
    if ok:
        rates: dict[str, dict[int, list[float]]] = {}
        for r in ok:
            rates.setdefault(r["store"], {}).setdefault(r["concurrency"], []).append(r["rows_per_s"])
        for store, levels in rates.items():
            cs = sorted(levels)
            ax_mig.plot(cs, [max(levels[c]) for c in cs], marker="o", label=store)
            for c in cs:
                ax_mig.text(c, max(levels[c]), f" {max(levels[c]):.1f}", fontsize=7)
        delay = ok[0].get("delay_ms")
        ax_mig.set(xscale="log", xlabel="concurrency (rows in flight)", ylabel="rows/s (whole process)",
                   title=f"sekiops migrate run offload, +{delay:g} ms per call (latency proxy, measured)")
        concurrencies = sorted({r["concurrency"] for r in ok})
        ax_mig.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax_mig.legend(fontsize=8)
        ax_mig.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def markdown(persist=None, stages: dict | None = None, audit: list | None = None, migrate: list | None = None) -> str:
    """The same numbers as Markdown tables."""
    out = []
    if persist is not None and len(persist):
        out.append("| op | size | variant | threads | check | op s | MiB/s | codec MiB/s | x codec (best) | "
                   "x codec (paired median) | whole process x codec (paired) | peak RSS over idle MiB |")
        out.append("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        df = persist[(persist["mode"] == "streaming")]
        for _, r in df.iterrows():
            overhead = _num(r.get("overhead_bytes"))
            out.append("| {op} | {size} | {variant} | {threads} | {check} | {op_s} | {mbs} | {codec} | {rb} | {rp} | "
                       "{pp} | {ov} |".format(
                           op=r["op"], size=r["size_label"], variant=r.get("variant") or "default",
                           threads=_fmt(r.get("threads"), "{:.0f}"), check=_text(r.get("json_check")),
                           op_s=_fmt(r.get("op_s"), "{:.3f}"), mbs=_fmt(r.get("throughput_mib_s"), "{:.0f}"),
                           codec=_fmt(r.get("codec_mib_s"), "{:.0f}"), rb=_fmt(r.get("ratio_to_codec"), "{:.2f}"),
                           rp=_fmt(r.get("paired_ratio_to_codec"), "{:.2f}"),
                           pp=_fmt(r.get("paired_process_ratio_to_codec"), "{:.2f}"),
                           ov=_fmt(overhead and overhead / MiB, "{:.1f}")))
        out.append("")
    if stages:
        out.append("| stage (one thread) | CPU ms per MiB | MiB/s |")
        out.append("|---|---:|---:|")
        for r in stages["stages"]:
            out.append(f"| {r['stage']} | {r['cpu_ms_per_mib']:.3f} | {r['mib_s_one_thread']:,.0f} |")
        b = stages.get("bounds")
        if b:
            out.append("")
            out.append(f"Modelled from those costs (not measured): persist on {b['cores']} cores, "
                       f"{b['threads']} compression threads:")
            out.append("")
            out.append("| JSON check | CPU ms per MiB | bound MiB/s | bound / codec alone | limited by |")
            out.append("|---|---:|---:|---:|---|")
            for name, v in b["by_checker"].items():
                out.append(f"| {name} | {v['cpu_ms_per_mib']:.2f} | {v['bound_mib_s']:.0f} | "
                           f"{v['bound_ratio_to_codec']:.2f}x | {v.get('limited_by', '-')} |")
        out.append("")
    if audit:
        out.append("| blobs | store | rows (referenced blobs) | orphans | peak RSS MiB | over idle MiB | wall s "
                   "| audit s |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in audit:
            out.append(f"| {r['blobs']:,} | {r.get('store', 'local')} | {_fmt(r.get('referenced'), '{:,}')} | "
                       f"{_fmt(r.get('orphans'), '{:,}')} | {r['peak_rss_bytes'] / MiB:.1f} | "
                       f"{_fmt(_num(r.get('overhead_bytes')) and r['overhead_bytes'] / MiB, '{:.1f}')} | "
                       f"{r['wall_s']:.2f} | {_fmt(r.get('audit_s'), '{:.2f}')} |")
        out.append("")
    if migrate:
        out.append("| stores | concurrency | rows | wall s | rows/s | +ms per call | ok |")
        out.append("|---|---:|---:|---:|---:|---:|---|")
        for r in migrate:
            out.append(f"| {r['store']} | {r['concurrency']} | {_fmt(r.get('done'), '{}')} | "
                       f"{_fmt(r.get('wall_s'), '{:.2f}')} | {_fmt(r.get('rows_per_s'), '{:.2f}')} | "
                       f"{_fmt(r.get('delay_ms'), '{:g}')} | {'yes' if r.get('ok') else r.get('error')} |")
    return "\n".join(out) + "\n"


def _text(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else str(v)


def _fmt(v, spec: str) -> str:
    v2 = _num(v) if not isinstance(v, str) else v
    if v2 is None or v2 == "":
        return "–"
    try:
        return spec.format(int(v2) if "," in spec or spec == "{}" else v2)
    except (TypeError, ValueError):
        return str(v)
