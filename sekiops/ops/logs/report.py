"""Parsed exports as text: what ``sekiops logs`` and ``sekiops metrics-import`` print.

Events and samples as a table (one line each, named values as ``Key=value``), CSV or JSON, and
the summary line saying how many rows were parsed and how many skipped, and why.
"""

from __future__ import annotations

import csv
import io
import json
import math

from .events import BASE_COLUMNS, ParseResult


def plain(v):
    """A frame cell as plain Python: None for missing, ISO-8601 UTC for times, ints for whole floats."""
    import pandas as pd

    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
        if isinstance(v, float) and math.isnan(v):
            return None
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def records(frame) -> list[dict]:
    """Rows for output: missing values left out (the base columns always there), cells plain."""
    out = []
    for row in frame.to_dict("records"):
        rec = {}
        for k, v in row.items():
            v = plain(v)
            if v is None and k not in BASE_COLUMNS:
                continue
            rec[k] = v
        out.append(rec)
    return out


def _cell(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _table(rows: list[dict], cols: list[str], empty: str) -> str:
    if not rows:
        return empty + "\n"
    cells = [[("" if r.get(c) is None else _cell(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def _csv(cols: list[str], recs: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for rec in recs:
        w.writerow(["" if rec.get(c) is None else _cell(rec.get(c)) for c in cols])
    return buf.getvalue()


def render_events(result: ParseResult, fmt: str = "table", kinds=None, projector: str | None = None,
                  message: bool = False) -> str:
    """``sekiops logs``: the events (only ``kinds`` / ``projector`` when given) and the summary line."""
    frame = result.frame
    parsed = len(frame)
    if kinds:
        frame = frame[frame["kind"].isin(list(kinds))]
    if projector:
        frame = frame[frame["projectorName"] == projector]
    recs = records(frame)
    if fmt == "json":
        return json.dumps({"events": recs, "parsed": parsed, "skipped": result.skipped,
                           "skippedReasons": result.skipped_reasons, "sourceFormat": result.source_format},
                          indent=2, default=str) + "\n"
    summary = result.summary_line()
    if len(frame) != parsed:
        summary = summary.replace(f"# parsed {parsed} events", f"# parsed {parsed} events ({len(frame)} shown)", 1)
    if fmt == "csv":
        body = _csv(list(frame.columns), recs)
    else:
        cols = BASE_COLUMNS + ["values"] + (["message"] if message else [])
        rows = []
        for rec in recs:
            row = {c: rec.get(c) for c in BASE_COLUMNS}
            row["values"] = " ".join(f"{k}={_cell(v)}" for k, v in rec.items()
                                     if k not in BASE_COLUMNS and k != "message")
            if message:
                row["message"] = rec.get("message")
            rows.append(row)
        body = _table(rows, cols, empty="(no Sekiban snapshot events)")
    return body + summary + "\n"


def memory_summary(frame) -> dict:
    """Peak working set (bytes), peak memory percent and restarts over the samples (None when absent)."""
    if not len(frame):
        return {"peakWorkingSetBytes": None, "peakMemoryPercent": None, "restarts": None}
    return {"peakWorkingSetBytes": plain(frame["working_set_bytes"].max()),
            "peakMemoryPercent": plain(frame["memory_percent"].max()),
            "restarts": plain(frame["restarts"].sum(min_count=1))}


def render_memory(result: ParseResult, fmt: str = "table") -> str:
    """``sekiops metrics-import``: the samples, the summary line with the peak, and any notes."""
    frame = result.frame
    recs = records(frame)
    peaks = memory_summary(frame)
    if fmt == "json":
        return json.dumps({"samples": recs, "parsed": len(frame), "skipped": result.skipped,
                           "skippedReasons": result.skipped_reasons, **peaks, "notes": result.notes,
                           "sourceFormat": result.source_format}, indent=2, default=str) + "\n"
    cols = list(frame.columns)
    body = _csv(cols, recs) if fmt == "csv" else _table(recs, cols, empty="(no memory samples)")
    extra = []
    if peaks["peakWorkingSetBytes"] is not None:
        ws = peaks["peakWorkingSetBytes"]
        extra.append(f"peak working set {ws} bytes ({ws / 2**30:.2f} GiB)")
    if peaks["peakMemoryPercent"] is not None:
        extra.append(f"peak memory {peaks['peakMemoryPercent']}%")
    if peaks["restarts"] is not None:
        extra.append(f"restarts {peaks['restarts']}")
    line = result.summary_line("samples") + ("; " + "; ".join(extra) if extra else "")
    return body + line + "\n" + "".join(f"# note: {note}\n" for note in result.notes)
