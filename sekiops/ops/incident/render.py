"""The post-incident report as standalone HTML: analyse once, then render notebook 04 on that analysis.

``sekiops report incident`` is only argument parsing around :func:`render_incident_report`: the
analysis runs once, here (its errors are one clear :class:`~sekiops.errors.SekiopsError` before any
notebook starts), and the notebook receives it through a private hand-off file
(``analysis_file``), so it shows exactly what was analysed instead of analysing again.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ...blob import open_blob_store
from ...errors import SekiopsError, UsageError
from ...state import open_state_store
from ...urls import redact
from .. import report
from .analyse import IncidentReport, analyse
from .base import fmt_time
from .inputs import parse_limit

NOTEBOOK = "04_post_incident_report.ipynb"
TITLE = "Post-incident report: snapshot memory and restarts"


def _check_file(path: str | None, what: str) -> str | None:
    if path is None or path == "":
        return None
    if path != "-" and not os.path.exists(path):
        raise UsageError(f"{what} file {path!r} not found")
    if os.path.isdir(path):
        raise UsageError(f"{what} file {path!r} is a directory")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} file {path!r} is not readable")
    return os.path.abspath(path)


def _check_store(state_url: str, blob_url: str | None, service_id: str) -> None:
    state = open_state_store(state_url, service_id=service_id, create=False)
    try:
        state.list_page(limit=1)
    finally:
        state.close()
    if blob_url:
        blob = open_blob_store(blob_url)
        if blob is not None:
            blob.close()


def analyse_for_report(*, logs=None, metrics=None, time_from=None, time_to=None, service_id: str = "default",
                       projectors=None, state_url: str | None = None, blob_url: str | None = None,
                       memory_limit=None, app_baseline=None, bench_results=None,
                       sekiban_version=None) -> IncidentReport:
    """Check the inputs (one clear error each) and run :func:`analyse` once."""
    logs = _check_file(logs, "logs")
    metrics = _check_file(metrics, "metrics")
    bench = _check_file(bench_results, "benchmark results")
    parse_limit(memory_limit)
    parse_limit(app_baseline)
    if not (logs or metrics or state_url):
        raise UsageError("no evidence: give a logs export (--logs), a metrics export (--metrics) or a snapshot "
                         "store for the inventory (--state or $SEKIOPS_STATE_URL)")
    if state_url:
        _check_store(state_url, blob_url, service_id)
    rep = analyse(logs, metrics, time_from, time_to, service_id=service_id, projectors=projectors,
                  memory_limit=memory_limit, app_baseline=app_baseline, state_url=state_url, blob_url=blob_url,
                  bench_df=bench, sekiban_version=sekiban_version)
    if logs and rep.sources["logsEventsTotal"] == 0:
        raise SekiopsError(f"logs file {logs!r}: no Sekiban snapshot events in it "
                           f"({'; '.join(n for n in rep.notes if n.startswith('logs')) or 'nothing recognised'})")
    if metrics and rep.sources["memorySamplesTotal"] == 0:
        raise SekiopsError(f"metrics file {metrics!r}: no memory samples in it")
    if (logs or metrics) and not len(rep.events) and not len(rep.memory) and rep.time_from is not None:
        raise SekiopsError(f"nothing between {fmt_time(rep.time_from)} and {fmt_time(rep.time_to)} in the "
                           "exports: check the window (UTC), the service id and the projectors")
    return rep


def render_incident_report(rep: IncidentReport, out_html: str, *, ipynb_copy: str | None = None,
                           timeout: int = 900) -> str:
    """Render notebook 04 on ``rep`` (no second analysis) to ``out_html`` (written atomically)."""
    out = os.path.abspath(out_html)
    if os.path.isdir(out):
        raise UsageError(f"report path {out_html!r} is a directory; give the HTML file's path")
    if not os.path.isdir(os.path.dirname(out)):
        raise UsageError(f"report path {out_html!r}: folder {os.path.dirname(out)!r} does not exist")
    with tempfile.TemporaryDirectory(prefix="sekiops-report-") as work:
        analysis = rep.save(os.path.join(work, "analysis.pickle"))
        ipynb = os.path.join(work, "report.ipynb")
        params = {"analysis_file": analysis, "timeline_mode": "plain"}
        try:
            with report.kernel_stderr(os.path.join(work, "kernel.log")):
                report.run_notebook(NOTEBOOK, params, ipynb, cwd=work, timeout=timeout)
        except SekiopsError as exc:
            raise SekiopsError(redact(str(exc)).replace(f" (executed copy: {ipynb})", "")) from None
        report.export_html(ipynb, out + ".partial", title=TITLE)
        os.replace(out + ".partial", out)
        if ipynb_copy:
            shutil.copyfile(ipynb, os.path.abspath(ipynb_copy))
    return out
