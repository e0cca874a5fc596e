"""``sekiops report incident``: the post-incident report (notebook 04) as standalone HTML, no code.

Argument parsing only: the analysis and the rendering are :mod:`sekiops.ops.incident.render`.
"""

from __future__ import annotations

import math
import os

from ..errors import UsageError
from .main import DURATION_HELP, SIZE_HELP, duration_type

# The command's implementation (sekiops.ops, the pipelines, the stores) is imported inside its
# function: every command module loads to build the parser, and `sekiops --help` needs none of it.


def register(sub) -> None:
    p = sub.add_parser("report", help="reports rendered from the notebooks as HTML (without code): incident",
                       description="Render a report notebook headless (papermill) and export it as standalone "
                       "HTML without code cells (nbconvert).")
    rsub = p.add_subparsers(dest="report_command", metavar="REPORT", parser_class=type(p))
    rsub.required = True
    i = rsub.add_parser(
        "incident", help="post-incident report: memory timeline, findings, capacity, recommended settings",
        description="Line up Sekiban's snapshot log events (an Application Insights / Log Analytics export) with "
        "the container's memory and restarts (an Azure Monitor export) over a time window; say what led to the "
        "restarts, which projections cannot fit the memory limit (capacity model; with --state, the snapshot "
        "store's inventory too) and what to set. Each piece of evidence is optional (logs alone, metrics alone "
        "or an inventory alone): the report says which evidence it lacks. Runs "
        "notebooks/04_post_incident_report.ipynb on the analysis and writes its HTML (no code cells). Prints "
        "the findings.")
    i.add_argument("--logs", metavar="FILE", help="Sekiban traces export (CSV or JSON, may be gzipped)")
    i.add_argument("--metrics", metavar="FILE", help="container memory export (CSV or JSON)")
    i.add_argument("--from", dest="time_from", metavar="T", help="window start, e.g. 2026-03-10T02:00:00Z "
                   "(default: the start of the data)")
    i.add_argument("--to", dest="time_to", metavar="T", help="window end (default: the end of the data)")
    i.add_argument("--service-id", default="default", help="Sekiban ServiceId (default: %(default)s)")
    i.add_argument("--projector", action="append", metavar="NAME",
                   help="only these projectors (repeatable; CustomerDirectory matches CustomerDirectoryProjector)")
    i.add_argument("--state", metavar="URL", help="snapshot store for the inventory in the capacity table "
                   "(default: $SEKIOPS_STATE_URL; none: capacity from the logs only)")
    i.add_argument("--blob", metavar="URL", help="blob store (default: $SEKIOPS_BLOB_URL)")
    i.add_argument("--memory-limit", metavar="SIZE", help=f"the container's memory limit ({SIZE_HELP}; default: "
                   "inferred from the export's working set / memory percentage, else 4GiB)")
    i.add_argument("--app-baseline", metavar="SIZE", help="memory the app holds besides snapshots, for the "
                   f"capacity model ({SIZE_HELP}; default 1.5GiB)")
    i.add_argument("--sekiban-version", metavar="V", help="the Sekiban release the findings and the capacity "
                   "model assume, e.g. 10.22 (default: the current one, 10.23: offloaded payloads restore "
                   "streaming in the grain, inline payloads in memory)")
    i.add_argument("--bench-results", metavar="FILE", help="results of 'sekiops bench --out' for the capacity "
                   "model (default: its built-in measurements)")
    i.add_argument("--out", required=True, metavar="HTML", help="where to write the report")
    i.add_argument("--ipynb", metavar="FILE", help="also keep the executed notebook here")
    i.add_argument("--timeout", type=duration_type("--timeout"), default=900.0, metavar="DURATION",
                   help=f"deadline per notebook cell ({DURATION_HELP}; default 15m)")
    i.set_defaults(func=run_incident)


def run_incident(args) -> int:
    from ..ops.incident.render import analyse_for_report, render_incident_report

    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        raise UsageError(f"--out {args.out!r} is a directory; give the HTML file's path")
    if not os.path.isdir(os.path.dirname(out)):
        raise UsageError(f"--out {args.out!r}: folder {os.path.dirname(out)!r} does not exist")
    rep = analyse_for_report(
        logs=args.logs, metrics=args.metrics, time_from=args.time_from, time_to=args.time_to,
        service_id=args.service_id, projectors=",".join(args.projector) if args.projector else None,
        state_url=args.state or os.environ.get("SEKIOPS_STATE_URL") or None,
        blob_url=args.blob or os.environ.get("SEKIOPS_BLOB_URL") or None, memory_limit=args.memory_limit,
        app_baseline=args.app_baseline, bench_results=args.bench_results, sekiban_version=args.sekiban_version)
    render_incident_report(rep, out, ipynb_copy=args.ipynb, timeout=max(1, math.ceil(args.timeout)))
    print(f"report: {out}")
    if rep.lacks:
        print(f"evidence not given: {', '.join(rep.lacks)}")
    for f in rep.findings:
        print(f"[{f['severity']}] {f['title']}: {f['text']}")
    return 0
