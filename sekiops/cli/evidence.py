"""``sekiops logs`` and ``sekiops metrics-import``: evidence from Azure exports."""

from __future__ import annotations

import sys

# The command's implementation (sekiops.ops, the pipelines, the stores) is imported inside its
# function: every command module loads to build the parser, and `sekiops --help` needs none of it.


def register(sub) -> None:
    p = sub.add_parser(
        "logs", help="parse Sekiban snapshot log events from an Application Insights / Log Analytics export",
        description="Parse Sekiban's snapshot log events (1017 PersistDetails, streaming and byte[]; 1018 "
        "RestoreDetails; 1002/1003/1008/1012/1021/1022/1023/1025; the dcb-v10.23 'Snapshot restore buffered "
        "fallback', kind restore_buffered_fallback, which has no event id) from an export: CSV, a JSON array, "
        "JSON lines, the Log Analytics API shape {\"tables\": [...]}, or console text (kubectl logs), with "
        "the rendered message and/or customDimensions. Prints one row per event and a final '# parsed N "
        "events, skipped M lines' summary; lines that are not Sekiban snapshot events, and rows holding a NUL "
        "or a raw control character, are counted, never fatal. Only a file binary from its first bytes is "
        "refused.")
    p.add_argument("file", metavar="FILE", help="the export (CSV, JSON or console text, optionally gzipped), "
                   "or - for stdin")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--kind", action="append", metavar="KIND",
                   help="only these kinds (persist_streaming, persist_legacy, restore, restore_buffered_fallback, "
                   "state_restore_failed ...); repeatable")
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


def run_logs(args) -> int:
    from ..ops.logs import parse_log_file
    from ..ops.logs.report import render_events

    result = parse_log_file(args.file, include_message=args.message)
    sys.stdout.write(render_events(result, args.format, kinds=args.kind, projector=args.projector,
                                   message=args.message))
    sys.stdout.flush()
    return 0


def run_metrics_import(args) -> int:
    from ..ops.logs import parse_container_memory
    from ..ops.logs.report import render_memory

    sys.stdout.write(render_memory(parse_container_memory(args.file), args.format))
    sys.stdout.flush()
    return 0
