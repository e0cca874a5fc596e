"""The report's words and tables: findings and settings as Markdown, the scope, the events and capacity tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..capacity import MODEL_NOTE, estimate_caption, streams_offloaded_restore
from .base import KIND_LABELS, _f, _md, fmt_clock, fmt_delta, fmt_mem, fmt_size, fmt_time


def findings_markdown(items: Sequence[dict]) -> str:
    """Findings as a Markdown list, most severe first, with a severity badge."""
    color = {"critical": "#c00000", "warning": "#c55a11", "info": "#2f75b5", "ok": "#548235"}
    lines = []
    for f in items:
        sev = f["severity"]
        badge = f'<span style="color:{color.get(sev, "black")}">●</span> **{sev.upper()}**'
        lines.append(f"- {badge} — **{f['title']}**: {f['text']}")
    return "\n".join(lines)


def recommendations_frame(items: Sequence[dict]):
    import pandas as pd

    return pd.DataFrame.from_records(list(items), columns=["setting", "value", "why"])


def recommendations_markdown(items: Sequence[dict]) -> str:
    lines = ["| setting | recommended | why |", "|---|---|---|"]
    for r in items:
        lines.append(f"| {_md(r['setting'])} | {_md(r['value'])} | {_md(r['why'])} |")
    return "\n".join(lines)


def scope_markdown(rep) -> str:
    """Where the evidence comes from and what was looked at (a Markdown table)."""
    src = rep.sources
    mem = rep.memory
    rows = [
        ("time window", f"{fmt_time(rep.time_from)} → {fmt_time(rep.time_to)}"
         if rep.time_from is not None else "(no data)"),
        ("service", rep.service_id or "(all)"),
        ("projectors", ", ".join(rep.projectors) if rep.projectors else "(all)"),
        ("Sekiban log events", f"{len(rep.events):,} in the window of {src['logsEventsTotal']:,} in {src['logs']} "
                               f"({src.get('logsFormat') or '?'})" if src.get("logs")
         else "**not given**: no logs export, so no persists, restores or failures"),
        ("memory samples", f"{len(mem):,} in the window of {src['memorySamplesTotal']:,} in {src['metrics']} "
                           f"({src.get('metricsFormat') or '?'})" if src.get("metrics")
         else "**not given**: no metrics export, so no memory curve and no restarts"),
        ("memory limit", f"{fmt_mem(rep.memory_limit)} ({rep.limit_source})"),
        ("snapshot store inventory", src.get("inventory") or "**not given** (no state store): capacity from the "
                                                            "logs only"),
        ("Sekiban version assumed", f"{rep.sekiban_version} (" + (
            "offloaded payloads restore streaming, inline payloads in memory" if streams_offloaded_restore(
                rep.sekiban_version) else "restore holds the whole payload") + ")"),
        ("capacity model", f"estimates: app baseline {fmt_mem(rep.app_baseline)}; costs: {src.get('bench')} "
                           f"(byte[] paths {MODEL_NOTE})"),
    ]
    if rep.lacks:
        rows.insert(0, ("evidence missing", ", ".join(rep.lacks) + ": the findings below cannot use it"))
    return "| | |\n|---|---|\n" + "\n".join(f"| {_md(a)} | {_md(b)} |" for a, b in rows)


def events_table(rep, limit: int = 80, categories: Iterable[str] | None = None):
    """The event rows of the timeline, for reading: time, what, projector, size, memory then."""
    import pandas as pd

    tl = rep.timeline
    keep = set(categories or ("persist", "restore", "failure", "restart", "catch_up"))
    ev = tl[tl["category"].isin(keep)] if len(tl) else tl
    if "catch_up" in keep and len(ev):  # a catch-up batch only when its batch size changes
        cu = ev["kind"] == "catch_up_batch_summary"
        head = ev.loc[cu, "detail"].fillna("").str.split(",").str[0]
        changed = head != head.shift()
        ev = ev[~cu | changed.reindex(ev.index, fill_value=True)]
    rows = []
    for _, r in ev.head(limit).iterrows():
        rows.append({"time (UTC)": fmt_clock(r["time"]) if r["time"] is not None else "",
                     "what": KIND_LABELS.get(r["kind"], r["kind"]),
                     "projector": r["projectorName"] if isinstance(r["projectorName"], str) else "",
                     "size": fmt_size(r["envelope_bytes"]) if _f(r["envelope_bytes"]) is not None else "",
                     "memory then": f"{r['memory_percent'] / 100:.0%}" if _f(r["memory_percent"]) is not None else "",
                     f"max in next {fmt_delta(pd.Timedelta(rep.follow))}": f"{r['peak_after_percent'] / 100:.0%}"
                     if _f(r["peak_after_percent"]) is not None else "",
                     "detail": r["detail"] or ""})
    return pd.DataFrame.from_records(rows, columns=["time (UTC)", "what", "projector", "size", "memory then",
                                                    f"max in next {fmt_delta(pd.Timedelta(rep.follow))}", "detail"])


CAPACITY_COLUMNS = ["source", "projection", "state size", "size from", "byte[] peak (est.)",
                    "Sekiban grain peak (est.)", "grain restore", "temp disk", "streaming peak (est.)", "verdict"]


def capacity_display(cap, limit: int | None = 25):
    """The capacity table for reading: sizes in binary units, one row per projection, the ``limit``
    with the largest byte[] peak (every row from the logs; None: all rows). ``attrs["more"]`` counts
    the rest; ``attrs["caption"]`` says these are estimates and what they rest on."""
    import pandas as pd

    more = 0
    if cap is not None and limit is not None and len(cap) > limit:
        logs = cap[cap["source"] == "logs"]
        inv = cap[cap["source"] != "logs"]
        keep = inv.head(max(limit - len(logs), 0))
        more = len(inv) - len(keep)
        cap = pd.concat([logs, keep]).sort_values("legacyPeakBytes", ascending=False, na_position="last",
                                                  kind="stable")

    caption = estimate_caption(cap) if cap is not None else ""
    if cap is None or not len(cap):
        frame = pd.DataFrame(columns=CAPACITY_COLUMNS)
        frame.attrs.update(more=0, caption=caption)
        return frame
    rows = []
    for _, r in cap.iterrows():
        version = "" if r["source"] == "logs" else f" {r['projectorVersion']}"
        rows.append({"source": r["source"], "projection": f"{r['projectorName']}{version}",
                     "state size": fmt_size(r["payloadOriginalBytes"]) if _f(r["payloadOriginalBytes"]) else "?",
                     "size from": r["sizeSource"],
                     "byte[] peak (est.)": fmt_mem(r["legacyPeakBytes"]),
                     "Sekiban grain peak (est.)": fmt_mem(r["mixedPeakBytes"]),
                     "grain restore": str(r.get("grainRestorePath") or "–"),
                     "temp disk": fmt_size(r.get("restoreTempDiskBytes")) if _f(r.get("restoreTempDiskBytes")) else "–",
                     "streaming peak (est.)": fmt_mem(r["streamingPeakBytes"]), "verdict": r["verdict"]})
    frame = pd.DataFrame.from_records(rows, columns=CAPACITY_COLUMNS)
    frame.attrs.update(more=more, caption=caption)
    return frame


