"""Post-incident analysis of a snapshot OOM: timeline, findings, recommended settings, charts.

After a production OOM the SRE has two exports (see :mod:`sekiops.ops.logs`): Sekiban's snapshot
log events (Application Insights / Log Analytics) and the container's memory metrics (Azure
Monitor). This module lines them up and says what happened, in words a reader without the code
can follow; notebook 04 and ``sekiops report incident`` only call it::

    from sekiops.ops import incident
    rep = incident.analyse("traces.csv", "memory.csv", time_from="2026-03-10T02:00Z",
                           time_to="2026-03-10T04:00Z", memory_limit="4GiB")
    rep.timeline                      # one row per event / memory sample, aligned
    rep.findings                      # list of dicts: severity, title, text, time
    rep.recommendations               # list of dicts: setting, value, why
    incident.timeline_chart(rep)      # matplotlib Figure (no pyplot: works headless)

The timeline
    one row per Sekiban event (persist byte[] / streaming, restore, failures, catch-up) and per
    memory sample, sorted by time, inside ``[time_from, time_to]``, for one service (events that
    carry a ``ServiceId`` dimension) and optionally some projectors (``CustomerDirectory`` matches
    ``CustomerDirectoryProjector``: names are compared without a ``Projector`` suffix, case-blind).
    Restarts become rows of their own (``kind == "restart"``). Each event row carries the memory
    sample nearest in time (``memory_time``, ``working_set_bytes``, ``memory_percent``) and the
    highest memory share of the limit in the following ``follow`` window (``peak_after_percent``).

The memory limit
    given (``"4GiB"``, bytes), else inferred from the export (working set / memory percentage),
    else 4 GiB (:data:`sekiops.ops.capacity.DEFAULT_MEMORY_LIMIT`). ``rep.limit_source`` says which.

Restarts
    Azure's restart count is exported per interval (``Total``) or as a running count per replica
    (``Maximum``). A series that never goes down and keeps a non-zero plateau is taken as a running
    count and differenced (``restarts_cumulative`` forces either reading).

Capacity
    :func:`sekiops.ops.capacity.capacity_table` on the inventory (when a state store is given) and
    on the projections the logs show (their largest envelope in the window; the state size is the
    restore's ``OriginalSize`` when it differs from the envelope, else estimated from the envelope).

Evidence is optional
    logs alone, metrics alone or an inventory alone: ``rep.lacks`` names what the report was not
    given, and the scope table and notes say what that leaves out.

The Sekiban version
    ``sekiban_version`` (default the current release, dcb-v10.23): before 10.23 the grain's restore
    holds the whole payload and object graph; from 10.23 an offloaded payload restores streaming
    (small memory, but free disk the size of the payload for its temp file) while an inline Base64
    payload is still decoded in memory. Findings, recommendations and the capacity table say which
    version they assume.

Modules: :mod:`.inputs` (window, limit, exports, filters), :mod:`.memory`, :mod:`.timeline`,
:mod:`.analyse` (:func:`analyse`), :mod:`.findings` (one function per finding),
:mod:`.recommend`, :mod:`.text` (Markdown and tables), :mod:`.charts`, :mod:`.measured`
(sekiops' own measured processes and benchmark charts), :mod:`.render` (the HTML report). The
interactive timeline is :func:`sekiops.widgets.timeline.timeline_explorer`.
"""

from __future__ import annotations

from ..bench.timeline import measure_persist_memory
from .analyse import IncidentReport, analyse, incident_capacity, load_analysis, log_inventory
from .base import (
    CATCH_UP_BATCH_RANGE,
    CATCH_UP_KINDS,
    COSMOS_RECORD_THRESHOLD,
    FAILURE_KINDS,
    FALLBACK_KINDS,
    HEADROOM,
    KIND_LABELS,
    MAX_CAPACITY_FINDINGS,
    PAYLOAD_OFFLOAD_THRESHOLD,
    PERSIST_KINDS,
    RESTORE_KINDS,
    SEVERITY_ORDER,
    TEMP_FILES_GUARD,
    TIMELINE_COLUMNS,
    GiB,
    MiB,
    category,
    fmt_clock,
    fmt_delta,
    fmt_mem,
    fmt_size,
    fmt_time,
)
from .charts import capacity_chart, persist_size_chart, timeline_chart
from .findings import FINDERS, findings
from .inputs import filter_events, load_events, load_memory, parse_limit, parse_when, projector_key
from .measured import (
    METRIC_MEANING,
    PERSIST_METRIC_NAMES,
    bench_peak_chart,
    memory_over_time_chart,
    offload_ratio_chart,
    overhead_chart,
    persist_metrics_frame,
    recorded_metrics_table,
    throughput_upload_chart,
)
from .memory import infer_memory_limit, memory_breach, memory_series, restart_increments
from .recommend import recommendations
from .text import (
    capacity_display,
    events_table,
    findings_markdown,
    recommendations_frame,
    recommendations_markdown,
    scope_markdown,
)
from .timeline import build_timeline

__all__ = [
    "IncidentReport", "analyse", "load_analysis", "incident_capacity", "log_inventory", "findings", "FINDERS",
    "recommendations", "build_timeline", "filter_events", "load_events", "load_memory", "parse_limit",
    "parse_when", "projector_key", "infer_memory_limit", "memory_breach", "memory_series", "restart_increments",
    "timeline_chart", "persist_size_chart", "capacity_chart", "bench_peak_chart", "throughput_upload_chart",
    "offload_ratio_chart", "overhead_chart", "memory_over_time_chart", "measure_persist_memory",
    "persist_metrics_frame", "recorded_metrics_table", "METRIC_MEANING", "PERSIST_METRIC_NAMES",
    "capacity_display", "events_table", "findings_markdown", "recommendations_frame", "recommendations_markdown",
    "scope_markdown", "category", "fmt_clock", "fmt_delta", "fmt_mem", "fmt_size", "fmt_time", "KIND_LABELS",
    "SEVERITY_ORDER", "TIMELINE_COLUMNS", "PERSIST_KINDS", "RESTORE_KINDS", "FAILURE_KINDS", "FALLBACK_KINDS",
    "CATCH_UP_KINDS", "PAYLOAD_OFFLOAD_THRESHOLD", "COSMOS_RECORD_THRESHOLD", "TEMP_FILES_GUARD",
    "CATCH_UP_BATCH_RANGE", "HEADROOM", "MAX_CAPACITY_FINDINGS", "GiB", "MiB",
]
