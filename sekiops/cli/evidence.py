"""``sekiops logs`` and ``sekiops metrics-import``: evidence from Azure exports."""

from __future__ import annotations

import math
import sys

from .main import print_json


def register(sub) -> None:
    p = sub.add_parser(
        "logs", help="parse Sekiban snapshot log events from an Application Insights / Log Analytics export",
        description="Parse Sekiban's snapshot log events (1017 PersistDetails, streaming and byte[]; 1018 "
        "RestoreDetails; 1002/1003/1008/1012/1021/1022/1023/1025) from an export: CSV, a JSON array, JSON "
        "lines or the Log Analytics API shape {\"tables\": [...]}, with the rendered message and/or "
        "customDimensions. Prints one row per event and a final '# parsed N events, skipped M lines' "
        "summary; lines that are not Sekiban snapshot events are counted, never fatal.")
    p.add_argument("file", metavar="FILE", help="the export (CSV or JSON, optionally gzipped), or - for stdin")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--kind", action="append", metavar="KIND",
                   help="only these kinds (persist_streaming, persist_legacy, restore, state_restore_failed ...); "
                   "repeatable")
    p.add_argument("--projector", help="only events of this ProjectorName")
    p.add_argument("--message", action="store_true", help="also print the rendered message of each event")
    p.set_defaults(func=run_logs)

    m = sub.add_parser(
        "metrics-import", help="read container memory metrics from an Azure Monitor export",
        description="Read container memory over time (working set bytes, memory percent, restarts) from an "
        "Azure Monitor / Log Analytics export (CSV or JSON; wide columns such as WorkingSetBytes / "
        "MemoryPercentage / RestartCount, or long MetricName + Average/Maximum rows). Prints one row per "
        "sample and a final summary with the peak.")
    m.add_argument("file", metavar="FILE", help="the export (CSV or JSON, optionally gzipped), or - for stdin")
    m.add_argument("--format", choices=["table", "csv", "json"], default="table")
    m.set_defaults(func=run_metrics_import)


# --- sekiops logs -------------------------------------------------------------------------------


def run_logs(args) -> int:
    from ..ops.logs import BASE_COLUMNS, parse_log_file

    result = parse_log_file(args.file, include_message=args.message)
    frame = result.frame
    parsed = len(frame)
    if args.kind:
        frame = frame[frame["kind"].isin(args.kind)]
    if args.projector:
        frame = frame[frame["projectorName"] == args.projector]
    records = [_event_record(r) for r in frame.to_dict("records")]
    summary = result.summary_line()
    if len(frame) != parsed:
        summary = summary.replace(f"# parsed {parsed} events", f"# parsed {parsed} events ({len(frame)} shown)", 1)
    if args.format == "json":
        print_json({"events": records, "parsed": parsed, "skipped": result.skipped,
                    "skippedReasons": result.skipped_reasons, "sourceFormat": result.source_format})
        return 0
    if args.format == "csv":
        import csv

        cols = list(frame.columns)
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(cols)
        for rec in records:
            w.writerow(["" if rec.get(c) is None else _cell(rec.get(c)) for c in cols])
    else:
        cols = BASE_COLUMNS + ["values"] + (["message"] if args.message else [])
        rows = []
        for rec in records:
            values = " ".join(f"{k}={_cell(v)}" for k, v in rec.items()
                              if k not in BASE_COLUMNS and k != "message")
            row = {c: rec.get(c) for c in BASE_COLUMNS}
            row["values"] = values
            if args.message:
                row["message"] = rec.get("message")
            rows.append(row)
        _table(rows, cols, empty="(no Sekiban snapshot events)")
    print(summary)
    sys.stdout.flush()
    return 0


def _event_record(row: dict) -> dict:
    """One event for output: missing values left out, times ISO-8601 UTC, numbers plain."""
    out = {}
    for k, v in row.items():
        v = _plain(v)
        if v is None and k not in ("time", "eventId", "kind", "projectorName"):
            continue
        out[k] = v
    return out


def _plain(v):
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


def _cell(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _table(rows: list[dict], cols: list[str], empty: str) -> None:
    if not rows:
        print(empty)
        return
    cells = [[("" if r.get(c) is None else _cell(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


# --- sekiops metrics-import ---------------------------------------------------------------------


def run_metrics_import(args) -> int:
    from ..ops.logs import parse_container_memory

    result = parse_container_memory(args.file)
    frame = result.frame
    records = [_event_record(r) for r in frame.to_dict("records")]
    peak_ws = frame["working_set_bytes"].max() if len(frame) else None
    peak_pct = frame["memory_percent"].max() if len(frame) else None
    restarts = frame["restarts"].sum(min_count=1) if len(frame) else None
    peak_ws, peak_pct, restarts = _plain(peak_ws), _plain(peak_pct), _plain(restarts)
    if args.format == "json":
        print_json({"samples": records, "parsed": len(frame), "skipped": result.skipped,
                    "skippedReasons": result.skipped_reasons, "peakWorkingSetBytes": peak_ws,
                    "peakMemoryPercent": peak_pct, "restarts": restarts, "notes": result.notes,
                    "sourceFormat": result.source_format})
        return 0
    cols = list(frame.columns)
    if args.format == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(cols)
        for rec in records:
            w.writerow(["" if rec.get(c) is None else _cell(rec.get(c)) for c in cols])
    else:
        _table(records, cols, empty="(no memory samples)")
    extra = []
    if peak_ws is not None:
        extra.append(f"peak working set {peak_ws} bytes ({peak_ws / 2**30:.2f} GiB)")
    if peak_pct is not None:
        extra.append(f"peak memory {peak_pct}%")
    if restarts is not None:
        extra.append(f"restarts {restarts}")
    line = result.summary_line("samples")
    print(line + ("; " + "; ".join(extra) if extra else ""))
    for note in result.notes:
        print(f"# note: {note}")
    sys.stdout.flush()
    return 0
