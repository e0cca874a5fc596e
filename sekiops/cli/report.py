"""``sekiops report incident``: the post-incident report (notebook 04) as standalone HTML, no code."""

from __future__ import annotations

import os

NOTEBOOK = "04_post_incident_report.ipynb"


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
        "store's inventory too) and what to set. Runs notebooks/04_post_incident_report.ipynb and writes its "
        "HTML (no code cells). Prints the findings.")
    i.add_argument("--logs", required=True, metavar="FILE", help="Sekiban traces export (CSV or JSON, may be gzipped)")
    i.add_argument("--metrics", required=True, metavar="FILE", help="container memory export (CSV or JSON)")
    i.add_argument("--from", dest="time_from", metavar="T", help="window start, e.g. 2026-03-10T02:00:00Z "
                   "(default: the start of the data)")
    i.add_argument("--to", dest="time_to", metavar="T", help="window end (default: the end of the data)")
    i.add_argument("--service-id", default="default", help="Sekiban ServiceId (default: %(default)s)")
    i.add_argument("--projector", action="append", metavar="NAME",
                   help="only these projectors (repeatable; CustomerDirectory matches CustomerDirectoryProjector)")
    i.add_argument("--state", metavar="URL", help="snapshot store for the inventory in the capacity table "
                   "(default: $SEKIOPS_STATE_URL; none: capacity from the logs only)")
    i.add_argument("--blob", metavar="URL", help="blob store (default: $SEKIOPS_BLOB_URL)")
    i.add_argument("--memory-limit", metavar="SIZE", help="the container's memory limit, e.g. 4GiB (default: "
                   "inferred from the export's working set / memory percentage, else 4GiB)")
    i.add_argument("--app-baseline", metavar="SIZE", help="memory the app holds besides snapshots, for the "
                   "capacity model (default 1.5GiB)")
    i.add_argument("--bench-results", metavar="FILE", help="results of 'sekiops bench --out' for the capacity "
                   "model (default: its built-in measurements)")
    i.add_argument("--out", required=True, metavar="HTML", help="where to write the report")
    i.add_argument("--ipynb", metavar="FILE", help="also keep the executed notebook here")
    i.add_argument("--timeout", type=int, default=900, metavar="S",
                   help="seconds per notebook cell (default %(default)s)")
    i.set_defaults(func=run_incident)


def _check_file(path: str, what: str) -> str:
    from ..errors import UsageError

    if path != "-" and not os.path.exists(path):
        raise UsageError(f"{what} file {path!r} not found")
    if os.path.isdir(path):
        raise UsageError(f"{what} file {path!r} is a directory")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} file {path!r} is not readable")
    return os.path.abspath(path)


def run_incident(args) -> int:
    import tempfile

    from ..errors import SekiopsError, UsageError
    from ..ops import incident, report
    from ..urls import redact

    logs = _check_file(args.logs, "logs")
    metrics = _check_file(args.metrics, "metrics")
    bench = _check_file(args.bench_results, "benchmark results") if args.bench_results else None
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        raise UsageError(f"--out {args.out!r} is a directory; give the HTML file's path")
    if not os.path.isdir(os.path.dirname(out)):
        raise UsageError(f"--out {args.out!r}: folder {os.path.dirname(out)!r} does not exist")
    incident.parse_limit(args.memory_limit)
    incident.parse_limit(args.app_baseline)
    state_url = args.state or os.environ.get("SEKIOPS_STATE_URL") or None
    blob_url = args.blob or os.environ.get("SEKIOPS_BLOB_URL") or None
    projectors = ",".join(args.projector) if args.projector else None

    if state_url:
        _check_store(state_url, blob_url, args.service_id)
    # Read both exports here first: a bad file is one error line, not a failed notebook.
    rep = incident.analyse(logs, metrics, args.time_from, args.time_to, service_id=args.service_id,
                           projectors=projectors, memory_limit=args.memory_limit, app_baseline=args.app_baseline,
                           state_url=state_url, blob_url=blob_url, bench_df=bench)
    if rep.sources["logsEventsTotal"] == 0:
        raise SekiopsError(f"logs file {args.logs!r}: no Sekiban snapshot events in it "
                           f"({'; '.join(rep.notes) or 'nothing recognised'})")
    if rep.sources["memorySamplesTotal"] == 0:
        raise SekiopsError(f"metrics file {args.metrics!r}: no memory samples in it")
    if not len(rep.events) and not len(rep.memory):
        raise SekiopsError(f"nothing between {incident.fmt_time(rep.time_from)} and {incident.fmt_time(rep.time_to)}"
                           " in either file: check --from/--to (UTC), --service-id and --projector")

    params = {"logs_file": logs, "metrics_file": metrics, "time_from": args.time_from, "time_to": args.time_to,
              "service_id": args.service_id, "projectors": projectors, "memory_limit": args.memory_limit,
              "app_baseline": args.app_baseline, "bench_results": bench, "timeline_mode": "plain"}
    # Store URLs reach the kernel through its environment, never as notebook parameters: the executed
    # notebook keeps its parameters, and a URL may carry a password.
    saved = {k: os.environ.get(k) for k in ("SEKIOPS_STATE_URL", "SEKIOPS_BLOB_URL", "SEKIOPS_WIDGETS")}
    env = {"SEKIOPS_STATE_URL": state_url, "SEKIOPS_BLOB_URL": blob_url, "SEKIOPS_WIDGETS": "0"}
    try:
        for k, v in env.items():
            if v:
                os.environ[k] = v
            else:
                os.environ.pop(k, None)
        with tempfile.TemporaryDirectory(prefix="sekiops-report-") as work:
            ipynb = os.path.join(work, "report.ipynb")
            try:
                with _kernel_stderr(os.path.join(work, "kernel.log")):
                    report.run_notebook(NOTEBOOK, params, ipynb, cwd=work, timeout=args.timeout)
            except SekiopsError as exc:
                raise SekiopsError(redact(str(exc)).replace(f" (executed copy: {ipynb})", "")) from None
            report.export_html(ipynb, out + ".partial")
            os.replace(out + ".partial", out)
            if args.ipynb:
                import shutil

                shutil.copyfile(ipynb, os.path.abspath(args.ipynb))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    print(f"report: {out}")
    for f in rep.findings:
        print(f"[{f['severity']}] {f['title']}: {f['text']}")
    return 0


def _check_store(state_url: str, blob_url: str | None, service_id: str) -> None:
    from ..blob import open_blob_store
    from ..state import open_state_store

    state = open_state_store(state_url, service_id=service_id, create=False)
    try:
        state.list_page(limit=1)
    finally:
        state.close()
    if blob_url:
        open_blob_store(blob_url).close()


class _kernel_stderr:
    """Send the stderr the notebook kernel inherits (start-up warnings) to a file, not the terminal."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(self.fd, 2)
        return self

    def __exit__(self, *exc):
        import sys

        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        os.close(self.fd)
