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

The "proof of the fix" helpers (:func:`measure_persist_memory`, :func:`memory_over_time_chart`)
run ``python -m sekiops persist --mode legacy|streaming`` on a generated state and sample its RSS
over time (:func:`sekiops.metrics.sample_command`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
import sys
from typing import Any, Iterable, Sequence

from ..errors import SekiopsError, UsageError
from .capacity import DEFAULT_APP_BASELINE, DEFAULT_MEMORY_LIMIT, capacity_table
from .logs import ParseResult, parse_container_memory, parse_log_file, parse_time

GiB = 2**30
MiB = 2**20

PERSIST_KINDS = ("persist_legacy", "persist_streaming", "persist_details")
RESTORE_KINDS = ("restore", "state_restore_success")
FAILURE_KINDS = ("state_restore_failed", "blob_read_failed", "state_not_found",
                 "integrity_guard_blocked_persist", "integrity_guard_blocked_restore")
CATCH_UP_KINDS = ("full_catch_up_initiated", "catch_up_batch_summary")

#: How each kind is named for a reader.
KIND_LABELS = {
    "persist_legacy": "byte[] persist", "persist_streaming": "streaming persist",
    "persist_details": "persist", "restore": "restore (RestoreDetails)",
    "state_restore_success": "restore succeeded", "state_restore_failed": "StateRestoreFailed",
    "blob_read_failed": "BlobReadFailed", "state_not_found": "StateNotFound",
    "integrity_guard_blocked_persist": "integrity guard blocked a persist",
    "integrity_guard_blocked_restore": "integrity guard blocked a restore",
    "full_catch_up_initiated": "full catch-up started", "catch_up_batch_summary": "catch-up batch",
    "restart": "container restart", "memory": "memory sample",
}

TIMELINE_COLUMNS = ["time", "source", "category", "kind", "projectorName", "envelope_bytes", "state_bytes",
                    "peak_memory_bytes", "events_processed", "working_set_bytes", "memory_percent", "restarts",
                    "memory_time", "peak_after_percent", "instance", "detail"]

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2, "ok": 3}

#: Sekiban's defaults and the seed's recommended settings (format reference 6 and 7; design seed).
PAYLOAD_OFFLOAD_THRESHOLD = 1_560_576
COSMOS_RECORD_THRESHOLD = 1_000_000
TEMP_FILES_GUARD = 500 * MiB
CATCH_UP_BATCH_RANGE = (200, 500)
HEADROOM = 0.80  # keep the predicted peak at or under this share of the limit
MAX_CAPACITY_FINDINGS = 5  # inventory rows named one by one in the findings (logs rows: all)


def category(kind: str | None) -> str:
    """``persist``, ``restore``, ``failure``, ``catch_up``, ``restart``, ``memory`` or ``other``."""
    if kind in PERSIST_KINDS:
        return "persist"
    if kind in RESTORE_KINDS:
        return "restore"
    if kind in FAILURE_KINDS:
        return "failure"
    if kind in CATCH_UP_KINDS:
        return "catch_up"
    if kind in ("restart", "memory"):
        return kind
    return "other"


# --- parsing inputs -------------------------------------------------------------------------------


def parse_when(value, name: str = "time"):
    """A window bound as a UTC ``pandas.Timestamp`` (None for None/empty). Naive times are UTC."""
    import pandas as pd

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (pd.Timestamp, _dt.datetime)):
        t = pd.Timestamp(value)
    else:
        parsed = parse_time(value)
        if parsed is None:
            try:
                parsed = pd.Timestamp(str(value).strip())
            except (ValueError, TypeError):
                raise UsageError(f"{name} {value!r} is not a time (use e.g. 2026-03-10T02:00:00Z)") from None
        t = pd.Timestamp(parsed)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def parse_limit(value) -> int | None:
    """``"4GiB"``, ``"4096MiB"``, ``4294967296`` -> bytes; None, ``""`` or ``"auto"`` -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto", "none")):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    from .bench import parse_size

    try:
        n = parse_size(value)
    except ValueError as exc:
        raise UsageError(f"memory limit {value!r}: {exc}") from None
    if n < 16 * MiB:
        raise UsageError(f"memory limit {value!r} is implausibly small (bytes? use e.g. 4GiB)")
    return n


def _load(source, parser, what: str):
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source.copy(), {"skipped": source.attrs.get("skipped", 0),
                               "skippedReasons": source.attrs.get("skippedReasons", {}),
                               "sourceFormat": source.attrs.get("sourceFormat", "DataFrame"),
                               "rows": len(source), "notes": list(source.attrs.get("notes", []))}
    if isinstance(source, ParseResult):
        result = source
    else:
        path = os.fspath(source) if not isinstance(source, (bytes, bytearray)) and not hasattr(source, "read") \
            else source
        if isinstance(path, str) and path != "-":
            if not os.path.exists(path):
                raise UsageError(f"{what} file {path!r} not found")
            if os.path.isdir(path):
                raise UsageError(f"{what} file {path!r} is a directory")
        try:
            result = parser(path)
        except SekiopsError as exc:
            name = path if isinstance(path, str) else "<data>"
            msg = str(exc)
            if msg.startswith(f"{name}: "):
                msg = msg[len(name) + 2:]
            raise SekiopsError(f"{what} file {name!r}: {msg}") from None
        except UnicodeDecodeError as exc:
            raise SekiopsError(f"{what} file {path!r}: not text ({exc.reason})") from None
    frame = result.frame
    return frame, {"skipped": result.skipped, "skippedReasons": dict(result.skipped_reasons),
                   "sourceFormat": result.source_format, "rows": result.rows, "notes": list(result.notes or [])}


def load_events(source):
    """Sekiban events (DataFrame as :func:`~sekiops.ops.logs.parse_log_file` gives) and load info."""
    return _load(source, parse_log_file, "logs")


def load_memory(source):
    """Container memory samples (as :func:`~sekiops.ops.logs.parse_container_memory`) and load info."""
    return _load(source, parse_container_memory, "metrics")


# --- names and filters ----------------------------------------------------------------------------


def projector_key(name) -> str:
    """``CustomerDirectoryProjector`` and ``customer-directory`` -> ``customerdirectory``."""
    s = re.sub(r"[^0-9a-z]", "", str(name or "").lower())
    return s[:-len("projector")] if s.endswith("projector") and len(s) > len("projector") else s


def _projector_list(projectors) -> list[str] | None:
    if projectors is None:
        return None
    if isinstance(projectors, str):
        projectors = [p for p in re.split(r"[,\s]+", projectors) if p]
    names = [str(p) for p in projectors if str(p).strip()]
    return names or None


def _service_column(frame) -> str | None:
    for c in ("ServiceId", "serviceId", "service_id", "Service", "ServiceName"):
        if c in frame.columns:
            return c
    return None


def filter_events(events, time_from=None, time_to=None, service_id: str | None = None, projectors=None):
    """Events inside the window, of the service (when events say theirs) and of the projectors."""
    frame = events
    if len(frame) and time_from is not None:
        frame = frame[frame["time"] >= time_from]
    if len(frame) and time_to is not None:
        frame = frame[frame["time"] <= time_to]
    col = _service_column(frame)
    if service_id and col is not None and len(frame):
        values = frame[col]
        frame = frame[values.isna() | (values.astype(str) == str(service_id))]
    names = _projector_list(projectors)
    if names and len(frame):
        keys = {projector_key(n) for n in names}
        frame = frame[frame["projectorName"].map(lambda n: projector_key(n) in keys)]
    return frame.reset_index(drop=True)


# --- memory ---------------------------------------------------------------------------------------


def infer_memory_limit(memory) -> int | None:
    """The limit implied by working set / memory percentage (median), snapped to 1/4 GiB when close."""
    import numpy as np

    if memory is None or not len(memory) or "memory_percent" not in memory or "working_set_bytes" not in memory:
        return None
    both = memory.dropna(subset=["working_set_bytes", "memory_percent"])
    both = both[(both["memory_percent"] > 1) & (both["working_set_bytes"] > 0)]
    if both.empty:
        return None
    limit = float(np.median(both["working_set_bytes"] * 100.0 / both["memory_percent"]))
    quarter = GiB / 4
    snapped = round(limit / quarter) * quarter
    if snapped and abs(snapped - limit) / snapped < 0.02:
        return int(snapped)
    return int(round(limit / MiB) * MiB)


def restart_increments(restarts, cumulative: bool | None = None):
    """Restarts per sample from an exported restart count (see the module docstring)."""
    import pandas as pd

    s = pd.to_numeric(restarts, errors="coerce")
    if cumulative is None:
        present = s.dropna()
        diffs = present.diff().dropna()
        nonzero = int((present > 0).sum())
        cumulative = bool(len(present) > 1 and (diffs >= 0).all() and nonzero > int((diffs > 0).sum())
                          and present.iloc[-1] > 0)
    if cumulative:
        filled = s.ffill().fillna(0)
        inc = filled.diff().fillna(0).clip(lower=0)
        return inc
    return s.fillna(0).clip(lower=0)


def memory_series(memory, memory_limit: int, restarts_cumulative: bool | None = None):
    """One row per sample time (replicas: the largest working set, restarts added): ``time``,
    ``working_set_bytes``, ``memory_percent`` (of ``memory_limit``, filled both ways), ``restarts``."""
    import pandas as pd

    cols = ["time", "working_set_bytes", "memory_percent", "restarts"]
    if memory is None or not len(memory):
        return pd.DataFrame(columns=cols)
    m = memory.copy()
    if "replica" in m.columns:
        m["restarts"] = m.groupby("replica", dropna=False)["restarts"].transform(
            lambda s: restart_increments(s, restarts_cumulative))
        m = m.groupby("time", as_index=False).agg(working_set_bytes=("working_set_bytes", "max"),
                                                  memory_percent=("memory_percent", "max"),
                                                  restarts=("restarts", "sum"))
    else:
        m = m.groupby("time", as_index=False).agg(working_set_bytes=("working_set_bytes", "max"),
                                                  memory_percent=("memory_percent", "max"),
                                                  restarts=("restarts", "max"))
        m["restarts"] = restart_increments(m["restarts"], restarts_cumulative).to_numpy()
    ws = m["working_set_bytes"].astype(float)
    pct = m["memory_percent"].astype(float)
    m["working_set_bytes"] = ws.fillna(pct * memory_limit / 100.0)
    m["memory_percent"] = pct.fillna(ws * 100.0 / memory_limit)
    m = m.dropna(subset=["working_set_bytes"], how="all")
    return m[cols].sort_values("time").reset_index(drop=True)


# --- the timeline ---------------------------------------------------------------------------------


def _num(rec: dict, *names):
    for n in names:
        f = _f(rec.get(n))
        if f is not None:
            return f
    return None


def _event_sizes(rec: dict) -> tuple[float | None, float | None]:
    """(envelope bytes, state bytes) an event tells."""
    kind = rec.get("kind")
    if kind == "persist_legacy":
        return _num(rec, "EnvelopeSize"), None
    if kind == "persist_streaming":
        return _num(rec, "TempFileBytes"), None
    if kind == "restore":
        envelope = _num(rec, "StateDataLen")
        original, compressed = _num(rec, "OriginalSize"), _num(rec, "CompressedSize")
        state = original if original is not None and (compressed is None or original > compressed) else None
        return envelope, state
    return None, None


def _detail(rec: dict) -> str:
    kind = rec.get("kind")
    env, state = _event_sizes(rec)
    parts = []
    if kind == "persist_legacy":
        parts.append(f"EnvelopeSize={fmt_size(env)}" if env is not None else "")
        if _num(rec, "EventsProcessed") is not None:
            parts.append(f"Events={int(_num(rec, 'EventsProcessed')):,}")
    elif kind == "persist_streaming":
        for name, label in (("TempFileBytes", "TempFileBytes"), ("PeakMemory", "PeakMemory")):
            if _num(rec, name) is not None:
                parts.append(f"{label}={fmt_size(_num(rec, name))}")
        for name in ("BuildMs", "UploadMs"):
            if _num(rec, name) is not None:
                parts.append(f"{name}={int(_num(rec, name)):,}")
    elif kind == "restore":
        if env is not None:
            parts.append(f"StateDataLen={fmt_size(env)}")
        if state is not None:
            parts.append(f"state {fmt_size(state)}")
    elif kind == "catch_up_batch_summary":
        for name in ("RequestedMaxCount", "FetchedCount", "ReadElapsedMs"):
            if _num(rec, name) is not None:
                parts.append(f"{name}={int(_num(rec, name)):,}")
    elif kind in FAILURE_KINDS:
        for name in ("Error", "OffloadKey", "Reason"):
            v = rec.get(name)
            if isinstance(v, str) and v:
                parts.append(f"{name}: {v[:120]}")
    return ", ".join(p for p in parts if p)


def build_timeline(events, memory, memory_limit: int, tolerance: str = "3min", follow: str = "5min"):
    """The aligned timeline (columns :data:`TIMELINE_COLUMNS`), from already filtered events and a
    :func:`memory_series` frame."""
    import numpy as np
    import pandas as pd

    rows = []
    for rec in events.to_dict("records"):
        env, state = _event_sizes(rec)
        rows.append({"time": rec["time"], "source": "logs", "category": category(rec.get("kind")),
                     "kind": rec.get("kind"), "projectorName": rec.get("projectorName"),
                     "envelope_bytes": env, "state_bytes": state,
                     "peak_memory_bytes": _num(rec, "PeakMemory"),
                     "events_processed": _num(rec, "EventsProcessed", "Events", "RecordEvents"),
                     "instance": rec.get("instance"), "detail": _detail(rec)})
    ev = pd.DataFrame.from_records(rows, columns=[c for c in TIMELINE_COLUMNS
                                                  if c not in ("working_set_bytes", "memory_percent", "restarts",
                                                               "memory_time", "peak_after_percent")])
    ev["time"] = pd.to_datetime(ev["time"], utc=True)
    mem = memory.copy()
    if len(ev) and len(mem):
        ev = ev.sort_values("time", kind="stable")
        probe = mem[["time", "working_set_bytes", "memory_percent"]].rename(columns={"time": "memory_time"})
        probe["time"] = probe["memory_time"]
        ev = pd.merge_asof(ev, probe, on="time", direction="nearest", tolerance=pd.Timedelta(tolerance))
        times = mem["time"].to_numpy()
        pcts = mem["memory_percent"].to_numpy(dtype=float)
        horizon = pd.Timedelta(follow).to_timedelta64()
        after = []
        for t in ev["time"].to_numpy():
            sel = (times >= t) & (times <= t + horizon)
            after.append(float(np.nanmax(pcts[sel])) if sel.any() and not np.isnan(pcts[sel]).all() else np.nan)
        ev["peak_after_percent"] = after
    else:
        for c in ("memory_time", "working_set_bytes", "memory_percent", "peak_after_percent"):
            ev[c] = np.nan
    ev["restarts"] = np.nan
    parts = [ev]
    if len(mem):
        m = mem.assign(source="metrics", category="memory", kind="memory", projectorName=None,
                       memory_time=mem["time"], detail="")
        parts.append(m)
        r = mem[mem["restarts"] > 0]
        if len(r):
            parts.append(r.assign(source="metrics", category="restart", kind="restart", projectorName=None,
                                  memory_time=r["time"],
                                  detail=[f"{int(n)} restart{'s' if n != 1 else ''} in the interval"
                                          for n in r["restarts"]]))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=TIMELINE_COLUMNS)
    tl = pd.concat([p.reindex(columns=TIMELINE_COLUMNS) for p in parts], ignore_index=True)
    order = {"memory": 0, "restart": 1}
    tl["_o"] = tl["category"].map(lambda c: order.get(c, 2))
    tl = tl.sort_values(["time", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)
    for c in ("envelope_bytes", "state_bytes", "peak_memory_bytes", "events_processed", "working_set_bytes",
              "memory_percent", "restarts", "peak_after_percent"):
        tl[c] = pd.to_numeric(tl[c], errors="coerce").astype("float64")
    tl["time"] = pd.to_datetime(tl["time"], utc=True)
    tl["memory_time"] = pd.to_datetime(tl["memory_time"], utc=True)
    return tl


# --- the report -----------------------------------------------------------------------------------


@dataclasses.dataclass
class IncidentReport:
    """Everything the report shows (see :func:`analyse`)."""

    timeline: Any
    events: Any
    memory: Any
    capacity: Any
    findings: list
    recommendations: list
    memory_limit: int
    limit_source: str
    time_from: Any
    time_to: Any
    service_id: str | None
    projectors: list | None
    sources: dict
    notes: list
    app_baseline: int
    follow: str = "5min"

    def summary(self) -> dict:
        """Headline numbers (JSON-friendly)."""
        tl = self.timeline
        mem = self.memory
        counts = tl[tl["source"] == "logs"]["kind"].value_counts().to_dict() if len(tl) else {}
        return {"window": [_iso(self.time_from), _iso(self.time_to)], "serviceId": self.service_id,
                "memoryLimitBytes": self.memory_limit, "limitSource": self.limit_source,
                "events": int((tl["source"] == "logs").sum()) if len(tl) else 0,
                "eventsByKind": {str(k): int(v) for k, v in counts.items()},
                "memorySamples": len(mem),
                "peakWorkingSetBytes": None if mem.empty else float(mem["working_set_bytes"].max()),
                "peakMemoryPercent": None if mem.empty else float(mem["memory_percent"].max()),
                "restarts": 0 if mem.empty else int(mem["restarts"].sum()),
                "findings": [f["text"] for f in self.findings]}


def _iso(t) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def analyse(logs, metrics, time_from=None, time_to=None, *, service_id: str | None = None, projectors=None,
            memory_limit=None, inventory_df=None, state_url: str | None = None, blob_url: str | None = None,
            bench_df=None, app_baseline=None, restarts_cumulative: bool | None = None,
            lookback: str = "15min", follow: str = "5min") -> IncidentReport:
    """Read both exports, filter them, build the timeline, the capacity table, findings and settings.

    ``logs`` / ``metrics``: paths (or DataFrames / ParseResults). ``time_from`` / ``time_to``:
    the window (None: the span of the data). ``state_url`` (+ ``blob_url``): read the inventory for
    the capacity table (a failure becomes a note, the log-derived capacity remains).
    ``bench_df``: a benchmark frame or a path to one (``sekiops bench --out``) for the capacity model.
    """
    import pandas as pd

    events_all, events_info = load_events(logs)
    memory_all, memory_info = load_memory(metrics)
    t0 = parse_when(time_from, "time_from")
    t1 = parse_when(time_to, "time_to")
    if t0 is not None and t1 is not None and t0 >= t1:
        raise UsageError(f"time_from {_iso(t0)} is not before time_to {_iso(t1)}")
    if t0 is None or t1 is None:
        spans = [f["time"].dropna() for f in (events_all, memory_all) if len(f)]
        if spans:
            allt = pd.concat(spans)
            given = "time_from" if t0 is not None else "time_to"
            t0 = t0 if t0 is not None else allt.min()
            t1 = t1 if t1 is not None else allt.max()
            if t0 >= t1:
                raise UsageError(f"{given} is outside the data: the exports run from {_iso(allt.min())} to "
                                 f"{_iso(allt.max())}")
    names = _projector_list(projectors)
    events = filter_events(events_all, t0, t1, service_id, names)
    notes: list[str] = []
    limit = parse_limit(memory_limit)
    limit_source = "given"
    if limit is None:
        limit = infer_memory_limit(memory_all)
        limit_source = "inferred from working set / memory percentage" if limit else "default (4 GiB)"
        limit = limit or DEFAULT_MEMORY_LIMIT
    else:
        implied = infer_memory_limit(memory_all)
        if implied and abs(implied - limit) / limit > 0.05:
            notes.append(f"the export's memory percentage implies a limit of {fmt_mem(implied)}, not the "
                         f"{fmt_mem(limit)} given: percentages below are of the given limit")
    window_mem = memory_all
    if len(window_mem):
        if t0 is not None:
            window_mem = window_mem[window_mem["time"] >= t0]
        if t1 is not None:
            window_mem = window_mem[window_mem["time"] <= t1]
    memory = memory_series(window_mem, limit, restarts_cumulative)
    if len(memory) and memory["memory_percent"].isna().all() and memory["working_set_bytes"].isna().all():
        memory = memory.iloc[0:0]
    timeline = build_timeline(events, memory, limit, follow=follow)
    for what, info in (("logs", events_info), ("metrics", memory_info)):
        if info.get("skipped"):
            reasons = ", ".join(f"{k} ({v})" for k, v in sorted(info["skippedReasons"].items(), key=lambda kv: -kv[1]))
            notes.append(f"{what}: {info['skipped']} line(s) not used: {reasons}")
        notes.extend(f"{what}: {n}" for n in info.get("notes", []))
    if not len(events):
        notes.append("no Sekiban snapshot events in the window" + (f" for {', '.join(names)}" if names else ""))
    if not len(memory):
        notes.append("no container memory samples in the window")
    baseline = DEFAULT_APP_BASELINE if app_baseline in (None, "") else parse_limit(app_baseline) \
        if not isinstance(app_baseline, (int, float)) else int(app_baseline)
    bench = _bench(bench_df, notes)
    inv = inventory_df
    inv_source = None
    if inv is None and state_url:
        inv, inv_source = _read_inventory(state_url, blob_url, service_id, notes)
    elif inv is not None:
        inv_source = "given"
    capacity = incident_capacity(events, inv, limit, bench, baseline, service_id, names, notes)
    rep = IncidentReport(timeline=timeline, events=events, memory=memory, capacity=capacity, findings=[],
                         recommendations=[], memory_limit=int(limit), limit_source=limit_source, time_from=t0,
                         time_to=t1, service_id=service_id, projectors=names,
                         sources={"logs": _source_name(logs), "metrics": _source_name(metrics),
                                  "logsFormat": events_info.get("sourceFormat"),
                                  "metricsFormat": memory_info.get("sourceFormat"),
                                  "logsEventsTotal": len(events_all), "memorySamplesTotal": len(memory_all),
                                  "inventory": inv_source,
                                  "bench": "given" if bench is not None else "built-in measured default"},
                         notes=notes, app_baseline=int(baseline), follow=follow)
    rep.findings = findings(rep, lookback=lookback)
    rep.recommendations = recommendations(rep)
    return rep


def _source_name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source)) or os.fspath(source)
    return type(source).__name__


def _bench(bench_df, notes: list):
    if bench_df is None or (isinstance(bench_df, str) and not bench_df.strip()):
        return None
    if isinstance(bench_df, (str, os.PathLike)):
        from .bench import load_results

        path = os.fspath(bench_df)
        if not os.path.isfile(path):
            notes.append(f"benchmark results {os.path.basename(path)!r} not found: the capacity model uses its "
                         "built-in measurements")
            return None
        try:
            bench_df = load_results(path)
        except Exception as exc:  # noqa: BLE001 - a bad CSV must not sink the report
            notes.append(f"benchmark results {os.path.basename(path)!r} unreadable ({exc}): built-in measurements used")
            return None
    return _usable_bench(bench_df, notes)


def _usable_bench(bench_df, notes: list):
    """The benchmark frame when it can be extrapolated: at least two state sizes for some op x mode.
    With one size the capacity model fits a line through the origin, which turns a fixed cost (the
    streaming path's few MB) into a per-byte one and predicts nonsense far from the measured size."""
    import pandas as pd

    frame = pd.DataFrame(bench_df)
    if not {"op", "mode", "size_bytes"} <= set(frame.columns):
        return bench_df
    pipe = frame[frame["mode"].isin(["legacy", "streaming"])]
    sizes = pipe.groupby(["op", "mode"])["size_bytes"].nunique()
    if len(sizes) and int(sizes.max()) >= 2:
        return bench_df
    notes.append("the benchmark results have one state size per operation: too few to extrapolate, so the "
                 "capacity model uses its built-in measurements (run `sekiops bench` with two sizes or more)")
    return None


def _read_inventory(state_url, blob_url, service_id, notes):
    from ..blob import open_blob_store
    from ..state import open_state_store
    from ..urls import redact
    from .inventory import inventory

    try:
        state = open_state_store(state_url, service_id=service_id or "default", create=False)
        try:
            blob = open_blob_store(blob_url) if blob_url else None
            try:
                df = inventory(state, blob, read_envelope_heads=True)
            finally:
                if blob is not None:
                    blob.close()
        finally:
            state.close()
        return df, redact(str(state_url))
    except SekiopsError as exc:
        notes.append(f"inventory of {redact(str(state_url))} not read: {redact(str(exc))}")
        return None, None


def log_inventory(events, service_id: str | None = None):
    """One inventory-like row per projector seen in the logs: its largest envelope in the window
    (``compressedSizeBytes``, as Sekiban sets it) and, when a restore told it, the state size."""
    import pandas as pd

    rows = []
    if len(events):
        for name, g in events.groupby("projectorName", dropna=True, sort=True):
            env, state, src = None, None, []
            for rec in g.to_dict("records"):
                e, s = _event_sizes(rec)
                if e is not None and (env is None or e > env):
                    env = e
                    src = rec["kind"]
                if s is not None and (state is None or s > state):
                    state = s
            if env is None and state is None:
                continue
            rows.append({"serviceId": service_id or "(logs)", "projectorName": name, "projectorVersion": "(logs)",
                         "lifecycle": "active", "payloadOriginalBytes": state, "compressedSizeBytes": env,
                         "storedBytes": env, "payloadOffloaded": False, "sizeFrom": src})
    return pd.DataFrame.from_records(rows, columns=["serviceId", "projectorName", "projectorVersion", "lifecycle",
                                                    "payloadOriginalBytes", "compressedSizeBytes", "storedBytes",
                                                    "payloadOffloaded", "sizeFrom"])


def incident_capacity(events, inventory_df, memory_limit: int, bench_df=None, app_baseline: int = DEFAULT_APP_BASELINE,
                      service_id: str | None = None, projectors=None, notes: list | None = None):
    """:func:`~sekiops.ops.capacity.capacity_table` of the projections in the logs and (when given)
    of the inventory, with a ``source`` column (``logs`` / ``inventory``); largest legacy peak first."""
    import pandas as pd

    frames = []
    logs_inv = log_inventory(events, service_id)
    if len(logs_inv):
        cap = capacity_table(logs_inv, bench_df, memory_limit=memory_limit, app_baseline=app_baseline)
        cap.insert(0, "source", "logs")
        frames.append(cap)
    if inventory_df is not None and len(inventory_df):
        inv = pd.DataFrame(inventory_df)
        if service_id and "serviceId" in inv.columns:
            inv = inv[inv["serviceId"].astype(str) == str(service_id)]
        names = _projector_list(projectors)
        if names and "projectorName" in inv.columns:
            keys = {projector_key(n) for n in names}
            inv = inv[inv["projectorName"].map(lambda n: projector_key(n) in keys)]
        if len(inv):
            cap = capacity_table(inv, bench_df, memory_limit=memory_limit, app_baseline=app_baseline)
            cap.insert(0, "source", "inventory")
            frames.append(cap)
        elif notes is not None:
            notes.append("the inventory has no rows for this service / these projectors")
    if not frames:
        empty = capacity_table(pd.DataFrame(columns=["projectorName"]), bench_df, memory_limit=memory_limit,
                               app_baseline=app_baseline)
        empty.insert(0, "source", pd.Series(dtype=object))
        return empty
    attrs = frames[0].attrs
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values("legacyPeakBytes", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    out.attrs.update(attrs)
    return out


# --- findings -------------------------------------------------------------------------------------


def _finding(severity: str, key: str, title: str, text: str, time=None, **evidence) -> dict:
    return {"severity": severity, "id": key, "title": title, "text": text,
            "time": None if time is None else _iso(time), **evidence}


def findings(rep: IncidentReport, lookback: str = "15min") -> list[dict]:
    """What happened, in sentences, each with ``severity`` (critical, warning, info, ok), ``id``,
    ``title``, ``text`` and ``time``; most severe first."""
    import pandas as pd

    out: list[dict] = []
    tl, mem, limit = rep.timeline, rep.memory, rep.memory_limit
    events = tl[tl["source"] == "logs"] if len(tl) else tl
    restarts = mem[mem["restarts"] > 0] if len(mem) else mem
    n_restarts = int(restarts["restarts"].sum()) if len(restarts) else 0
    lb = pd.Timedelta(lookback)
    first_streaming = None
    if len(events):
        s = events[events["kind"] == "persist_streaming"]
        if len(s):
            first_streaming = s["time"].min()

    # 1. the first time memory reached the limit, and what came just before it
    breach = memory_breach(mem, first_streaming)
    if breach is not None:
        start, peak = breach
        pct = float(peak["memory_percent"]) / 100.0
        trigger = _trigger(events, start["time"], lb)
        after = restarts[restarts["time"] >= start["time"]] if len(restarts) else restarts
        if first_streaming is not None and len(after):
            after = after[after["time"] < first_streaming]
        n_after = int(after["restarts"].sum()) if len(after) else 0
        text = (f"Memory reached {pct:.0%} of the {fmt_mem(limit)} limit ({fmt_mem(peak['working_set_bytes'])} "
                f"working set) at {fmt_time(peak['time'])}")
        if trigger is not None:
            text += (f", {fmt_delta(peak['time'] - trigger['time'])} after {_kind_phrase(trigger)} of "
                     f"{trigger['projectorName']}{_size_phrase(trigger)}")
        if n_after:
            times = ", ".join(fmt_clock(t) for t in after["time"])
            text += f"; {n_after} restart{'s' if n_after != 1 else ''} followed ({times})"
        text += "."
        top = mem.loc[mem["memory_percent"].idxmax()]
        if top["time"] != peak["time"] and float(top["memory_percent"]) > float(peak["memory_percent"]) + 0.5:
            t2 = _trigger(events, top["time"], lb)
            text += (f" The highest sample was {float(top['memory_percent']) / 100:.0%} at {fmt_clock(top['time'])}"
                     + (f", after {_kind_phrase(t2)} of {t2['projectorName']}" if t2 is not None else "") + ".")
        severity = "critical" if pct >= 0.9 or n_after else "warning" if pct >= 0.8 else "info"
        out.append(_finding(severity, "memory_peak", "Memory reached the limit" if pct >= 0.9 else "Memory peak",
                            text, peak["time"], percent=round(pct * 100, 1),
                            workingSetBytes=float(peak["working_set_bytes"]), restartsAfter=n_after,
                            trigger=None if trigger is None else {
                                "kind": trigger["kind"], "projectorName": trigger["projectorName"],
                                "time": _iso(trigger["time"]), "envelopeBytes": _f(trigger["envelope_bytes"])}))

    # 2. restarts: each with the memory just before it and the last snapshot event
    if len(restarts):
        parts, oom = [], 0
        for _, r in restarts.iterrows():
            prev = mem[(mem["time"] < r["time"]) & (mem["time"] >= r["time"] - pd.Timedelta("5min"))]
            high = float(prev["memory_percent"].max()) / 100.0 if len(prev) else float("nan")
            if high == high and high >= 0.9:
                oom += int(r["restarts"])
            trig = _trigger(events, r["time"], lb)
            what = f"after {_kind_phrase(trig)} of {trig['projectorName']}" if trig is not None else ""
            tail = f", {what}" if what else ""
            parts.append(f"{fmt_clock(r['time'])} (memory {high:.0%} of the limit just before{tail})"
                         if high == high else f"{fmt_clock(r['time'])}")
        text = (f"The container restarted {_times(n_restarts)}: " + "; ".join(parts) + ".")
        if oom:
            text += (" It followed memory at 90 % of the limit or more: an out-of-memory kill." if n_restarts == 1
                     else f" {'All' if oom == n_restarts else oom} of them followed memory at 90 % of the limit or "
                     "more: out-of-memory kills.")
        out.append(_finding("critical" if oom else "warning", "restarts", "Restarts", text, restarts["time"].iloc[0],
                            restarts=n_restarts, oomKills=oom))

    # 3. growth of byte[] persists per projector
    legacy = events[events["kind"] == "persist_legacy"] if len(events) else events
    for name, g in (legacy.groupby("projectorName") if len(legacy) else []):
        g = g.dropna(subset=["envelope_bytes"])
        if len(g) < 2:
            continue
        first, last = g.iloc[0], g.iloc[-1]
        span = last["time"] - first["time"]
        growth = last["envelope_bytes"] / first["envelope_bytes"] - 1 if first["envelope_bytes"] else 0
        peaks = g["peak_after_percent"].dropna()
        text = (f"{len(g)} byte[] persists of {name} between {fmt_clock(first['time'])} and {fmt_clock(last['time'])}"
                f" (every {fmt_delta(span / (len(g) - 1))} on average); EnvelopeSize went from "
                f"{fmt_size(first['envelope_bytes'])} to {fmt_size(last['envelope_bytes'])} ({growth:+.0%}).")
        if len(peaks):
            text += (f" Within {fmt_delta(pd.Timedelta(_follow_of(rep)))} after them memory peaked at up to "
                     f"{peaks.max() / 100:.0%} of the limit.")
        big = g["envelope_bytes"].max()
        sev = "warning" if growth > 0.25 or (len(peaks) and peaks.max() >= 90) else "info"
        out.append(_finding(sev, f"legacy_persists:{name}", f"byte[] persists of {name}", text, first["time"],
                            projectorName=name, persists=len(g), maxEnvelopeBytes=float(big)))

    # 4. failures
    fails = events[events["category"] == "failure"] if len(events) else events
    if len(fails):
        groups = []
        for (kind, name), g in fails.groupby(["kind", "projectorName"], dropna=False, sort=False):
            first_detail = next((d for d in g["detail"] if d), "")
            groups.append(f"{len(g)} × {KIND_LABELS.get(kind, kind)} ({name}"
                          + (f"; {first_detail}" if first_detail else "") + ")")
        text = f"{len(fails)} snapshot failure event{'s' if len(fails) != 1 else ''}: " + "; ".join(groups) + "."
        if len(restarts):
            after_restart = fails[fails["time"] >= restarts["time"].min()]
            if len(after_restart):
                text += (f" {len(after_restart)} of them came after the first restart: the restarted container "
                         "could not load the snapshot.")
        oom_errors = fails["detail"].str.contains("OutOfMemory", case=False, na=False).sum()
        if oom_errors:
            text += f" {oom_errors} name{'s' if oom_errors == 1 else ''} an OutOfMemoryException."
        out.append(_finding("critical" if oom_errors or len(restarts) else "warning", "failures",
                            "Snapshot failures", text, fails["time"].iloc[0], failures=len(fails)))

    # 5. restores that ran memory up
    rest = events[events["kind"] == "restore"] if len(events) else events
    if len(rest):
        hot = rest[rest["peak_after_percent"] >= 90]
        if rest["state_bytes"].notna().any():
            size = f", up to {fmt_size(rest['state_bytes'].max())} of state"
        elif rest["envelope_bytes"].notna().any():
            size = f", envelopes up to {fmt_size(rest['envelope_bytes'].max())}"
        else:
            size = ""
        text = (f"{len(rest)} restore{'s' if len(rest) != 1 else ''} (RestoreDetails) of "
                f"{', '.join(sorted(rest['projectorName'].dropna().unique()))}{size}.")
        if len(hot):
            text += (f" {len(hot)} of them were followed by memory at 90 % of the limit or more within "
                     f"{fmt_delta(pd.Timedelta(_follow_of(rep)))}: Sekiban's restore materialises the whole payload "
                     "and the object graph at once (format reference, section 7).")
        out.append(_finding("critical" if len(hot) else "info", "restores", "Restores", text, rest["time"].iloc[0],
                            restores=len(rest), hotRestores=len(hot)))

    # 6. streaming persists: the fix
    if first_streaming is not None:
        s = events[events["kind"] == "persist_streaming"]
        after_mem = mem[mem["time"] >= first_streaming] if len(mem) else mem
        after_restarts = int(after_mem["restarts"].sum()) if len(after_mem) else 0
        pm = s["peak_memory_bytes"].dropna()
        tf = s["envelope_bytes"].dropna()
        names = ", ".join(sorted(s["projectorName"].dropna().unique()))
        plural = "s" if len(s) != 1 else ""
        text = f"{len(s)} StreamingPersist event{plural} ({names}) from {fmt_clock(first_streaming)}"
        if len(pm):
            span = fmt_size(pm.max()) if pm.min() == pm.max() else f"{fmt_size(pm.min())}–{fmt_size(pm.max())}"
            text += f": PeakMemory {span} ({pm.max() / limit:.0%} of the limit)"
        if len(tf):
            text += f", TempFileBytes up to {fmt_size(tf.max())}"
        text += "."
        if len(after_mem):
            mx = float(after_mem["memory_percent"].max()) / 100.0
            text += (f" After the switch the container's memory peaked at {mx:.0%} of the limit "
                     f"({fmt_mem(after_mem['working_set_bytes'].max())})"
                     + (f" with {after_restarts} restart(s)." if after_restarts else " with no restart."))
            before = mem[mem["time"] < first_streaming]
            if len(before):
                text += f" Before it: {float(before['memory_percent'].max()) / 100:.0%}."
            sev = "ok" if mx < HEADROOM and not after_restarts else "warning"
        else:
            sev = "info"
        text += " (PeakMemory is a managed-heap sample after the upload, not a true peak.)"
        out.append(_finding(sev, "streaming", "After the switch to streaming persist", text, first_streaming,
                            streamingPersists=len(s)))

    # 7. capacity: projections whose predicted legacy peak exceeds the limit
    cap = rep.capacity
    if cap is not None and len(cap):
        over = cap[cap["legacyOOM"].fillna(False).astype(bool)]
        shown = pd.concat([over[over["source"] == "logs"], over[over["source"] != "logs"].head(MAX_CAPACITY_FINDINGS)])
        for _, r in shown.iterrows():
            origin = "from the logs" if r["source"] == "logs" else f"inventory {r['projectorVersion']}"
            text = (f"{r['projectorName']} ({origin}"
                    f", state ≈ {fmt_size(r['payloadOriginalBytes'])}): predicted legacy peak "
                    f"{fmt_mem(r['legacyPeakBytes'])} > the {fmt_mem(limit)} limit; Sekiban's grain today "
                    f"(streaming persist, byte[] restore) {fmt_mem(r['mixedPeakBytes'])}"
                    f"{' (still over)' if bool(r['mixedOOM']) else ''}; fully streaming "
                    f"{fmt_mem(r['streamingPeakBytes'])}{' (still over)' if bool(r['streamingOOM']) else ''}.")
            out.append(_finding("critical" if r["source"] == "logs" else "warning",
                                f"capacity:{r['source']}:{r['projectorName']}:{r['projectorVersion']}",
                                f"Capacity: {r['projectorName']}", text, None,
                                projectorName=r["projectorName"], source=r["source"],
                                legacyPeakBytes=_f(r["legacyPeakBytes"]),
                                streamingPeakBytes=_f(r["streamingPeakBytes"])))
        if len(over) > len(shown):
            rest = over.drop(shown.index)
            out.append(_finding("warning", "capacity:more", "Capacity: more projections",
                                f"{len(rest)} more inventory row(s) exceed the {fmt_mem(limit)} limit under legacy "
                                "persist and restore (largest predicted peak "
                                f"{fmt_mem(rest['legacyPeakBytes'].max())}): "
                                "see the capacity table.", None, rows=len(rest)))
        if over.empty:
            known = cap["legacyPeakBytes"].notna().sum()
            out.append(_finding("ok", "capacity", "Capacity",
                                f"No projection's predicted legacy peak exceeds the {fmt_mem(limit)} limit "
                                f"({known} projection(s) with a known size).", None))
    if not out:
        out.append(_finding("info", "nothing", "Nothing found",
                            "No snapshot events or memory samples in the window: check the time window, the "
                            "service and the projector filter.", None))
    out.sort(key=lambda f: SEVERITY_ORDER.get(f["severity"], 9))
    return out


def memory_breach(mem, before=None, threshold: float = 90.0):
    """The first episode of memory at ``threshold`` % of the limit or more (before ``before``, when
    given): ``(first sample, highest sample of the episode)``; the episode ends at the first restart
    or when memory falls under half the threshold. Without such a sample: the highest sample."""
    if mem is None or not len(mem):
        return None
    scope = mem if before is None else mem[mem["time"] < before]
    if not len(scope):
        scope = mem
    hot = scope[scope["memory_percent"] >= threshold]
    if hot.empty:
        top = scope.loc[scope["memory_percent"].idxmax()]
        return top, top
    first = hot.iloc[0]
    rest = scope[scope["time"] >= first["time"]]
    end = len(rest)
    for i, (_, r) in enumerate(rest.iterrows()):
        if i and (r["restarts"] > 0 or r["memory_percent"] < threshold / 2):
            end = i
            break
    episode = rest.iloc[:end]
    return first, episode.loc[episode["memory_percent"].idxmax()]


def _f(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _follow_of(rep) -> str:
    return rep.follow


def _trigger(events, when, lookback):
    """The last persist or restore before ``when`` within ``lookback`` (a timeline row), or None."""
    if events is None or not len(events):
        return None
    c = events[(events["category"].isin(["persist", "restore"])) & (events["kind"] != "state_restore_success")
               & (events["time"] <= when) & (events["time"] >= when - lookback)]
    if c.empty:
        return None
    return c.iloc[-1]


def _kind_phrase(row) -> str:
    return {"persist_legacy": "a legacy (byte[]) persist", "persist_streaming": "a streaming persist",
            "restore": "a restore", "persist_details": "a persist"}.get(row["kind"],
                                                                        KIND_LABELS.get(row["kind"], row["kind"]))


def _size_phrase(row) -> str:
    env = _f(row["envelope_bytes"])
    if env is None:
        return ""
    label = {"persist_legacy": "EnvelopeSize", "persist_streaming": "TempFileBytes",
             "restore": "StateDataLen"}.get(row["kind"], "size")
    return f" with {label}={int(env):,} ({fmt_size(env)})"


# --- recommended settings -------------------------------------------------------------------------


def recommendations(rep: IncidentReport) -> list[dict]:
    """Settings to apply, each ``{"setting", "value", "why"}``, from the evidence and the seed."""
    import pandas as pd

    out = []
    tl, cap, limit = rep.timeline, rep.capacity, rep.memory_limit
    events = tl[tl["source"] == "logs"] if len(tl) else tl
    legacy = events[events["kind"] == "persist_legacy"] if len(events) else events
    streaming = events[events["kind"] == "persist_streaming"] if len(events) else events
    known = cap[cap["legacyPeakBytes"].notna()] if cap is not None and len(cap) else None
    over = known[known["legacyOOM"].astype(bool)] if known is not None else None
    big_names = sorted(set(over["projectorName"])) if over is not None and len(over) else []

    why = "the byte[] path builds the whole snapshot in memory before saving it"
    if len(legacy):
        mx = legacy["envelope_bytes"].max()
        why = (f"{len(legacy)} byte[] persists in the window (EnvelopeSize up to {fmt_size(mx)}) each built the "
               "whole envelope in memory; the streaming path spools to a temp file and uploads from it")
    if len(streaming):
        why += f"; {len(streaming)} streaming persists after the switch kept memory flat"
    out.append({"setting": "Snapshot persist", "value": "streaming (temp file + stream upload)", "why": why + "."})

    why = ("Sekiban's restore still materialises the whole payload and the object graph at once (format reference, "
           "section 7)")
    if over is not None and len(over):
        mixed = over[over["mixedOOM"].astype(bool)]
        if len(mixed):
            why += (f"; with streaming persist alone, {', '.join(sorted(set(mixed['projectorName'])))} still "
                    f"exceeds the limit on restore (predicted {fmt_mem(mixed['mixedPeakBytes'].max())})")
    rest = events[events["kind"] == "restore"] if len(events) else events
    if len(rest) and (rest["peak_after_percent"] >= 90).any():
        why += "; restores in the window were followed by memory at the limit"
    out.append({"setting": "Snapshot restore", "value": "streaming restore (sekiops restore; stream the blob)",
                "why": why + "."})

    batch_text = None
    raw = rep.events
    if len(raw) and "RequestedMaxCount" in raw.columns:
        cu = raw[raw["kind"] == "catch_up_batch_summary"]
        vals = pd.to_numeric(cu["RequestedMaxCount"], errors="coerce")
        cu = cu.assign(_n=vals).dropna(subset=["_n"])
        if len(cu):
            breach = memory_breach(rep.memory, None)
            before = cu[cu["time"] <= breach[0]["time"]] if breach is not None else cu
            then = int(before["_n"].max()) if len(before) else int(cu["_n"].max())
            latest = int(cu["_n"].iloc[-1])
            batch_text = f"the logs show catch-up batches of RequestedMaxCount={then:,}"
            batch_text += " before memory reached the limit" if breach is not None and len(before) else ""
            if latest != then:
                batch_text += f" (latest: {latest:,})"
    lo, hi = CATCH_UP_BATCH_RANGE
    why = "smaller catch-up batches keep fewer events and intermediate state in memory between persists"
    if batch_text:
        why = batch_text + "; " + why
    out.append({"setting": "CatchUpBatchSize", "value": f"{lo}–{hi}",
                "why": why + " (design seed's initial setting)."})

    why = ("Sekiban offloads a compressed payload above 1,560,576 bytes; keep it, or lower it, well below the "
           "Cosmos DB 2 MB item limit")
    if big_names:
        why += f"; force offload for the large projections ({', '.join(big_names)})"
    out.append({"setting": "Payload offload threshold (OffloadThresholdBytes)",
                "value": f"≤ {PAYLOAD_OFFLOAD_THRESHOLD:,} bytes (default); force offload for large projections",
                "why": why + "."})
    out.append({"setting": "Record-level offload threshold (Cosmos DB)",
                "value": f"≤ {COSMOS_RECORD_THRESHOLD:,} bytes",
                "why": "an envelope above it goes to blob storage instead of the 2 MB Cosmos item; the Base64 in "
                       "StateData costs memory and RU."})

    # memory limit headroom from the capacity model
    if known is not None and len(known):
        top_mixed = float(known["mixedPeakBytes"].max())
        top_stream = float(known["streamingPeakBytes"].max())
        need_mixed = _round_up(top_mixed / HEADROOM, GiB / 2)
        need_stream = _round_up(top_stream / HEADROOM, GiB / 2)
        value = (f"≥ {fmt_mem(need_stream)} with streaming persist + restore "
                 f"(predicted peak {fmt_mem(top_stream)}); ≥ {fmt_mem(need_mixed)} while the restore is byte[] "
                 f"(predicted {fmt_mem(top_mixed)})")
        why = (f"keep the predicted peak at or under {HEADROOM:.0%} of the limit; the current limit is "
               f"{fmt_mem(limit)} (app baseline {fmt_mem(rep.app_baseline)} assumed, see the capacity model)")
    else:
        value = f"keep the peak working set under {HEADROOM:.0%} of the limit"
        why = "no projection size known; measure with `sekiops inventory` and `sekiops bench`"
    mem = rep.memory
    if len(mem):
        why += f"; observed peak {float(mem['memory_percent'].max()) / 100:.0%} of {fmt_mem(limit)}"
    out.append({"setting": "Container memory limit", "value": value, "why": why + "."})

    temp = streaming["envelope_bytes"].max() if len(streaming) else None
    env = legacy["envelope_bytes"].max() if len(legacy) else None
    biggest = max([v for v in (temp, env) if v is not None and v == v], default=None)
    if biggest:
        value = f"≥ {fmt_size(_round_up(2 * biggest, 10**8))} free under the temp directory"
        why = (f"the streaming persist spools the whole envelope (up to {fmt_size(biggest)} in the window) to a temp "
               "file before the upload")
        if biggest >= TEMP_FILES_GUARD:
            why += ("; Sekiban's grain refuses to spool when its temp files already total ≥ 500 MiB, so one file "
                    "this size blocks the next persist until it is deleted")
        out.append({"setting": "Temp file space (ephemeral storage)", "value": value, "why": why + "."})
    out.append({"setting": "Alerting", "value": f"alert at working set ≥ {HEADROOM:.0%} of the limit and on any "
                "restart; export projection_snapshot_* metrics",
                "why": "Sekiban logs but never exports the snapshot metrics; sekiops records them "
                       "(sekiops.metrics, OpenTelemetry)."})
    return out


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _round_up(x: float, step: float) -> float:
    return math.ceil(x / step) * step


# --- formatting -----------------------------------------------------------------------------------


def fmt_size(n) -> str:
    """Decimal size: ``421 MB``, ``1.42 GB`` (what Sekiban logs are bytes of)."""
    n = _f(n)
    if n is None:
        return "?"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{n:.0f} B"


def fmt_mem(n) -> str:
    """Binary size for memory: ``3.95 GiB``, ``512 MiB``."""
    n = _f(n)
    if n is None:
        return "?"
    if abs(n) >= GiB:
        v = n / GiB
        return f"{v:.3g} GiB" if v != int(v) else f"{int(v)} GiB"
    return f"{n / MiB:.0f} MiB"


def fmt_time(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_clock(t) -> str:
    return t.strftime("%H:%M:%S")


def fmt_delta(d) -> str:
    import pandas as pd

    s = int(round(pd.Timedelta(d).total_seconds()))
    if s < 90:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


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


def _md(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def scope_markdown(rep: IncidentReport) -> str:
    """Where the evidence comes from and what was looked at (a Markdown table)."""
    src = rep.sources
    mem = rep.memory
    rows = [
        ("time window", f"{fmt_time(rep.time_from)} → {fmt_time(rep.time_to)}"
         if rep.time_from is not None else "(no data)"),
        ("service", rep.service_id or "(all)"),
        ("projectors", ", ".join(rep.projectors) if rep.projectors else "(all)"),
        ("Sekiban log events", f"{len(rep.events)} in the window of {src['logsEventsTotal']} in {src['logs']} "
                               f"({src.get('logsFormat') or '?'})"),
        ("memory samples", f"{len(mem)} in the window of {src['memorySamplesTotal']} in {src['metrics']} "
                           f"({src.get('metricsFormat') or '?'})"),
        ("memory limit", f"{fmt_mem(rep.memory_limit)} ({rep.limit_source})"),
        ("snapshot store inventory", src.get("inventory") or "not read (no state store given)"),
        ("capacity model", f"app baseline {fmt_mem(rep.app_baseline)}; measurements: {src.get('bench')}"),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {_md(a)} | {_md(b)} |" for a, b in rows)


def events_table(rep: IncidentReport, limit: int = 80, categories: Iterable[str] | None = None):
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


def capacity_display(cap, limit: int | None = 25):
    """The capacity table for reading: sizes in MB/GiB, one row per projection, the ``limit`` with
    the largest legacy peak (every row from the logs; None: all rows). ``attrs["more"]`` counts the rest."""
    import pandas as pd

    more = 0
    if cap is not None and limit is not None and len(cap) > limit:
        logs = cap[cap["source"] == "logs"]
        inv = cap[cap["source"] != "logs"]
        keep = inv.head(max(limit - len(logs), 0))
        more = len(inv) - len(keep)
        cap = pd.concat([logs, keep]).sort_values("legacyPeakBytes", ascending=False, na_position="last",
                                                  kind="stable")

    if cap is None or not len(cap):
        return pd.DataFrame(columns=["source", "projection", "state size", "legacy peak", "today's grain peak",
                                     "streaming peak", "verdict"])
    rows = []
    for _, r in cap.iterrows():
        version = "" if r["source"] == "logs" else f" {r['projectorVersion']}"
        rows.append({"source": r["source"], "projection": f"{r['projectorName']}{version}",
                     "state size": fmt_size(r["payloadOriginalBytes"]) if _f(r["payloadOriginalBytes"]) else "?",
                     "size from": r["sizeSource"],
                     "legacy peak": fmt_mem(r["legacyPeakBytes"]),
                     "today's grain peak": fmt_mem(r["mixedPeakBytes"]),
                     "streaming peak": fmt_mem(r["streamingPeakBytes"]), "verdict": r["verdict"]})
    frame = pd.DataFrame.from_records(rows)
    frame.attrs["more"] = more
    return frame


# --- charts ---------------------------------------------------------------------------------------

_MARKERS = {  # kind -> (label, marker, color)
    "persist_legacy": ("byte[] persist", "v", "#c00000"),
    "persist_streaming": ("streaming persist", "o", "#2f75b5"),
    "persist_details": ("persist", "v", "#7f7f7f"),
    "restore": ("restore", "^", "#548235"),
    "state_restore_success": ("restore succeeded", "P", "#548235"),
    "failure": ("failure event", "X", "black"),
    "catch_up": ("catch-up batch", "|", "#7f6000"),
}
_LANES = ["byte[] persist", "streaming persist", "restore", "failure event", "catch-up batch", "restart"]


def timeline_chart(rep: IncidentReport, title: str | None = None, time_from=None, time_to=None):
    """Memory over time against the limit, with persists, restores, failures and restarts marked.

    Top: working set (GiB) with the limit and 90 % lines, restarts as vertical lines, events as
    markers on the memory curve. Bottom: one lane per event type (marker size ~ envelope size).
    """
    import matplotlib.dates as mdates
    import numpy as np
    from matplotlib.figure import Figure

    tl = rep.timeline
    if time_from is not None and len(tl):
        tl = tl[tl["time"] >= parse_when(time_from)]
    if time_to is not None and len(tl):
        tl = tl[tl["time"] <= parse_when(time_to)]
    fig = Figure(figsize=(12, 6.8), layout="constrained")
    ax, lanes = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    limit_gib = rep.memory_limit / GiB
    mem = tl[tl["category"] == "memory"] if len(tl) else tl
    if len(mem):
        x = mem["time"].dt.tz_convert(None).to_numpy()
        y = mem["working_set_bytes"].to_numpy(dtype=float) / GiB
        ax.plot(x, y, color="#404040", linewidth=1.6, label="working set (container)")
        ax.fill_between(x, y, color="#bfbfbf", alpha=0.35, linewidth=0)
        i = int(np.nanargmax(y))
        ax.annotate(f"peak {y[i]:.2f} GiB ({y[i] / limit_gib:.0%})", (x[i], y[i]), xytext=(10, 12),
                    textcoords="offset points", fontsize=9, color="#c00000",
                    arrowprops=dict(arrowstyle="->", color="#c00000", lw=0.8))
    else:
        ax.text(0.5, 0.5, "no memory samples in the window", transform=ax.transAxes, ha="center")
    ax.axhline(limit_gib, color="#c00000", linewidth=1.5, label=f"memory limit {fmt_mem(rep.memory_limit)}")
    ax.axhline(limit_gib * 0.9, color="#c00000", linewidth=0.8, linestyle=":", label="90 % of the limit")
    restarts = tl[tl["category"] == "restart"] if len(tl) else tl
    for j, (_, r) in enumerate(restarts.iterrows()):
        t = r["time"].tz_convert(None)
        for a in (ax, lanes):
            a.axvline(t, color="#c00000", linestyle="--", linewidth=1, alpha=0.8,
                      label="restart" if (j == 0 and a is ax) else None)
    events = tl[tl["source"] == "logs"] if len(tl) else tl
    lane_y = {name: i for i, name in enumerate(reversed(_LANES))}
    shown = set()
    if len(events):
        for key, g in _marker_groups(events):
            label, marker, color = _MARKERS[key]
            x = g["time"].dt.tz_convert(None).to_numpy()
            y = _memory_at(mem, g["time"]) / GiB
            ok = ~np.isnan(y)
            if ok.any() and key != "catch_up":
                ax.scatter(x[ok], y[ok], marker=marker, s=70, color=color, edgecolor="white", linewidth=0.6,
                           zorder=5, label=label if label not in shown else None)
                shown.add(label)
            env = g["envelope_bytes"].to_numpy(dtype=float)
            sizes = np.where(np.isnan(env), 40, 25 + 140 * np.sqrt(np.nan_to_num(env) / max(np.nanmax(
                np.append(events["envelope_bytes"].to_numpy(dtype=float), 1.0)), 1.0)))
            lane = label if label in lane_y else "restore" if key == "state_restore_success" else "failure event"
            lanes.scatter(x, np.full(len(x), lane_y[lane]), marker=marker, s=sizes, color=color, alpha=0.85,
                          zorder=4)
    if len(restarts):
        lanes.scatter(restarts["time"].dt.tz_convert(None).to_numpy(), np.full(len(restarts), lane_y["restart"]),
                      marker="*", s=140, color="#c00000", zorder=4)
    lanes.set_yticks(list(lane_y.values()), list(lane_y.keys()), fontsize=8)
    lanes.set_ylim(-0.7, len(_LANES) - 0.3)
    lanes.grid(axis="x", alpha=0.3)
    lanes.set_xlabel("time (UTC)")
    ax.set_ylabel("GiB")
    top = max(limit_gib * 1.12, (float(mem["working_set_bytes"].max()) / GiB * 1.08) if len(mem) else 0)
    ax.set_ylim(0, top)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=5, frameon=False)
    fig.suptitle(title or "Container memory and snapshot events", fontsize=12)
    lanes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    return fig


def _memory_at(mem, times):
    """Working set at ``times``, interpolated between samples (NaN outside the samples)."""
    import numpy as np

    if mem is None or not len(mem):
        return np.full(len(times), np.nan)
    m = mem.dropna(subset=["working_set_bytes"])
    if not len(m):
        return np.full(len(times), np.nan)
    xs = m["time"].astype("int64").to_numpy(dtype=float)
    x = times.astype("int64").to_numpy(dtype=float)
    return np.interp(x, xs, m["working_set_bytes"].to_numpy(dtype=float), left=np.nan, right=np.nan)


def _marker_groups(events):
    out = []
    for key in ("persist_legacy", "persist_streaming", "persist_details", "restore", "state_restore_success"):
        g = events[events["kind"] == key]
        if len(g):
            out.append((key, g))
    f = events[events["category"] == "failure"]
    if len(f):
        out.append(("failure", f))
    c = events[events["category"] == "catch_up"]
    if len(c):
        out.append(("catch_up", c))
    return out


def persist_size_chart(rep: IncidentReport, title: str | None = None):
    """Envelope size per persist (byte[] EnvelopeSize, streaming TempFileBytes) per projector, over time."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    tl = rep.timeline
    p = tl[(tl["category"] == "persist") & tl["envelope_bytes"].notna()] if len(tl) else tl
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax = fig.add_subplot()
    if not len(p):
        ax.text(0.5, 0.5, "no persist events with a size in the window", transform=ax.transAxes, ha="center")
        ax.set_axis_off()
        return fig
    colors = ["#2f75b5", "#c55a11", "#548235", "#7030a0", "#bf9000", "#404040"]
    for i, (name, g) in enumerate(p.groupby("projectorName", sort=True)):
        c = colors[i % len(colors)]
        for kind, marker, style in (("persist_legacy", "v", "-"), ("persist_streaming", "o", "--")):
            k = g[g["kind"] == kind]
            if len(k):
                ax.plot(k["time"].dt.tz_convert(None), k["envelope_bytes"] / 1e6, marker=marker, linestyle=style,
                        color=c, label=f"{name}: " + ("byte[] EnvelopeSize" if kind == "persist_legacy"
                                                      else "streaming TempFileBytes"))
    ax.set_ylabel("MB")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "Snapshot size per persist")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    return fig


def capacity_chart(cap, memory_limit: int, title: str | None = None, limit_rows: int = 12):
    """Predicted peak per projection (legacy, today's grain, fully streaming) against the limit."""
    import numpy as np
    from matplotlib.figure import Figure

    known = cap[cap["legacyPeakBytes"].notna()].head(limit_rows) if cap is not None and len(cap) else None
    n = 0 if known is None else len(known)
    fig = Figure(figsize=(12, max(2.6, 0.55 * n + 1.6)), layout="constrained")
    ax = fig.add_subplot()
    if not n:
        ax.text(0.5, 0.5, "no projection with a known size", transform=ax.transAxes, ha="center")
        ax.set_axis_off()
        return fig
    y = np.arange(n)
    labels = [f"{r.projectorName} (logs)" if r.source == "logs"
              else f"{r.projectorName} {r.projectorVersion} (inventory)" for r in known.itertuples()]
    for off, col, color, label in ((-0.27, "legacyPeakBytes", "#c00000", "legacy (byte[] persist + restore)"),
                                   (0.0, "mixedPeakBytes", "#ed7d31",
                                    "today's grain (streaming persist, byte[] restore)"),
                                   (0.27, "streamingPeakBytes", "#2f75b5", "streaming persist + restore")):
        vals = known[col].astype(float).to_numpy() / GiB
        ax.barh(y + off, vals, height=0.25, color=color, label=label)
    ax.axvline(memory_limit / GiB, color="black", linewidth=1.5, label=f"limit {fmt_mem(memory_limit)}")
    ax.axvline(memory_limit / GiB * HEADROOM, color="black", linewidth=0.8, linestyle=":",
               label=f"{HEADROOM:.0%} of the limit")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("predicted peak memory (GiB)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title or "Predicted peak memory per projection vs the limit")
    return fig


# --- interactive (degrades to nothing headless) ---------------------------------------------------


def timeline_explorer(rep: IncidentReport, mode: str = "auto"):
    """A time-range slider and projector picker that redraw the timeline (ipywidgets). Headless
    (papermill, nbconvert) or without ipywidgets: prints one line and returns None."""
    from ..widgets.explorer import _parent_cmdline, has_frontend

    if mode == "auto":
        # a kernel started by a sekiops command (demo, report) has no frontend either
        headless = not has_frontend() or ("sekiops" in _parent_cmdline().lower()
                                          and os.environ.get("SEKIOPS_WIDGETS", "").strip() not in ("1", "true"))
        mode = "plain" if headless else "widgets"
    if mode != "widgets":
        print("(interactive timeline: open this notebook in Jupyter to zoom and filter; "
              "the full window is shown above)")
        return None
    import ipywidgets as W
    from IPython.display import Image, display

    from .charts import png

    tl = rep.timeline
    times = sorted(tl["time"].dt.floor("min").unique()) if len(tl) else []
    if len(times) < 2:
        print("(not enough data for the interactive timeline)")
        return None
    labels = [t.strftime("%H:%M") for t in times]
    rng = W.SelectionRangeSlider(options=list(zip(labels, times)), index=(0, len(times) - 1),
                                 description="window", layout=W.Layout(width="90%"))
    names = ["(all)"] + sorted(tl["projectorName"].dropna().unique())
    pick = W.Dropdown(options=names, description="projector")
    out = W.Output()

    def redraw(*_):
        sub = dataclasses.replace(rep)
        if pick.value != "(all)":
            t = rep.timeline
            sub.timeline = t[(t["source"] == "metrics") | (t["projectorName"] == pick.value)]
        with out:
            out.clear_output(wait=True)
            display(Image(png(timeline_chart(sub, time_from=rng.value[0], time_to=rng.value[1]))))

    rng.observe(redraw, names="value")
    pick.observe(redraw, names="value")
    redraw()
    box = W.VBox([W.HBox([pick]), rng, out])
    display(box)
    return box


# --- proof of the fix: legacy vs streaming persist memory over time -------------------------------


def measure_persist_memory(size, workdir: str, modes: Sequence[str] = ("legacy", "streaming"),
                           interval: float = 0.01, python: str | None = None, timeout: float | None = 600):
    """Persist one generated state of ``size`` with ``python -m sekiops persist --mode M`` per mode,
    each in a fresh process sampled every ``interval`` s (:func:`sekiops.metrics.sample_command`).

    Stores: a SQLite file and a blob directory in ``workdir`` (the payload is offloaded above
    Sekiban's threshold). Returns ``(frame, summaries)``: ``frame`` has ``t_s``, ``rss_bytes``,
    ``label`` (the mode); ``summaries`` maps mode -> the command's JSON summary plus ``peak_bytes``
    (the larger of the sampled RSS and the command's own in-process peak) and ``returncode``.
    """
    import pandas as pd

    from ..metrics import sample_command
    from .bench import LAST_SORTABLE_UNIQUE_ID, generate_state, parse_size

    size = parse_size(size)
    os.makedirs(workdir, exist_ok=True)
    state_path = os.path.join(workdir, f"state-{size}.json")
    generate_state(state_path, size)
    env = dict(os.environ)
    for name in ("SEKIOPS_STATE_URL", "SEKIOPS_BLOB_URL", "SEKIOPS_FAILPOINTS"):
        env.pop(name, None)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["SEKIOPS_SPOOL_DIR"] = os.path.join(os.path.abspath(workdir), "spool")
    frames, summaries = [], {}
    for mode in modes:
        out_path = os.path.join(workdir, f"persist-{mode}.json")
        argv = [python or sys.executable, "-m", "sekiops", "persist",
                "--state", "sqlite:///" + os.path.join(os.path.abspath(workdir), "state.db"),
                "--blob", os.path.join(os.path.abspath(workdir), "blobs"),
                "--projector", f"MemoryTimeline-{mode}", "--version", "1", "--events-processed", "1000",
                "--last-sortable-unique-id", LAST_SORTABLE_UNIQUE_ID, "--mode", mode, "--in", state_path]
        with open(out_path, "wb") as out, open(out_path + ".err", "wb") as err:
            code, frame, peak = sample_command(argv, interval=interval, label=mode, timeout=timeout, stdout=out,
                                               stderr=err, env=env, cwd=workdir)
        try:
            with open(out_path) as f:
                summary = json.load(f)
        except (OSError, ValueError):
            with open(out_path + ".err", errors="replace") as f:
                summary = {"error": f.read().strip()[-500:]}
        # the sampled RSS, not wait4's ru_maxrss: a child inherits its parent's high-water mark as the
        # floor of ru_maxrss (see sekiops.ops.bench._LAUNCHER), and this parent is a notebook kernel
        sampled = int(frame["rss_bytes"].max()) if len(frame) else 0
        own = summary.get("peak_rss_bytes") if isinstance(summary.get("peak_rss_bytes"), int) else 0
        summary.update(peak_bytes=max(sampled, own or 0), returncode=code, state_bytes=os.path.getsize(state_path))
        del peak
        summaries[mode] = summary
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), summaries


def memory_over_time_chart(frame, summaries: dict | None = None, title: str | None = None):
    """RSS over time of each persist run (one line per mode), with its peak marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = {"legacy": "#c00000", "streaming": "#2f75b5"}
    frame = frame[frame["rss_bytes"] >= MiB]  # the sample taken before the exec
    for label, g in frame.groupby("label", sort=False):
        peak = (summaries or {}).get(label, {}).get("peak_bytes") or g["rss_bytes"].max()
        ax.plot(g["t_s"], g["rss_bytes"] / MiB, color=colors.get(label, "gray"), linewidth=1.6,
                label=f"{label}: peak {fmt_mem(peak)}")
    if summaries:
        size = next((s.get("state_bytes") for s in summaries.values() if s.get("state_bytes")), None)
        if size:
            ax.set_title(title or f"Process memory during one persist of a {fmt_size(size)} state, legacy vs streaming")
    if not ax.get_title():
        ax.set_title(title or "Process memory during one persist, legacy vs streaming")
    ax.set_xlabel("seconds since the process started")
    ax.set_ylabel("RSS (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    return fig


#: Persist summary fields shown as the metric names Sekiban's design asked for (section 7).
PERSIST_METRIC_NAMES = [("projection_snapshot_tempfile_bytes", "tempfile_bytes"),
                        ("projection_snapshot_upload_bytes", "upload_bytes"),
                        ("projection_snapshot_offload_ratio", "offload_ratio"),
                        ("projection_persist_peak_managed_memory_bytes", "peak_bytes"),
                        ("projection_snapshot_build_ms", "build_ms"),
                        ("projection_snapshot_upload_ms", "upload_ms"),
                        ("projection_snapshot_persist_ms", "total_ms")]


def persist_metrics_frame(summaries: dict):
    """One row per persist run of :func:`measure_persist_memory`, one column per snapshot metric
    (``projection_snapshot_*`` names), plus where the payload and envelope went."""
    import pandas as pd

    rows = []
    for mode, s in summaries.items():
        row = {"mode": mode, "state_bytes": s.get("state_bytes"), "ok": s.get("returncode") == 0,
               "payload_location": s.get("payload_location"), "envelope_location": s.get("envelope_location"),
               "compressed_size_bytes": s.get("compressed_size_bytes")}
        for metric, field in PERSIST_METRIC_NAMES:
            row[metric] = s.get(field)
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _bench_rows(df):
    ok = df[df["ok"].astype(str).str.lower().isin(["true", "1"])]
    return ok[ok["mode"].isin(["legacy", "streaming"])], ok[ok["mode"] == "codec"]


def bench_peak_chart(df, title: str | None = None):
    """Peak memory (kernel high-water mark of the process) vs state size, legacy vs streaming, per op."""
    from matplotlib.figure import Figure

    pipe, _ = _bench_rows(df)
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colors = {"legacy": "#c00000", "streaming": "#2f75b5"}
    for ax, op in zip(axes, ("persist", "restore")):
        g = pipe[pipe["op"] == op]
        for mode in ("legacy", "streaming"):
            m = g[g["mode"] == mode].groupby("size_bytes", as_index=False).agg(
                peak=("peak_rss_bytes", "max"), base=("baseline_rss_bytes", "max"))
            if not len(m):
                continue
            ax.plot(m["size_bytes"] / 1e6, m["peak"] / MiB, marker="o", color=colors[mode], linewidth=1.8,
                    label=f"{mode}: peak RSS")
            if m["base"].notna().any():
                ax.plot(m["size_bytes"] / 1e6, m["base"] / MiB, linestyle=":", marker="_", markersize=14,
                        color=colors[mode], linewidth=1, label=f"{mode}: same command on a tiny state")
        if len(g):
            top = float(g["size_bytes"].max()) / 1e6
            ax.plot([0, top], [0, top * 1e6 / MiB], color="black", linewidth=0.8, linestyle="--",
                    label="= state size")
            ax.set_xlim(0, top * 1.08)
            ax.set_ylim(bottom=0)
        else:
            ax.text(0.5, 0.5, f"no {op} rows", transform=ax.transAxes, ha="center")
        ax.set_title(op)
        ax.set_xlabel("state size (MB of JSON)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("peak process memory (MiB)")
    fig.suptitle(title or "Peak memory vs state size: legacy (byte[]) vs streaming", fontsize=12)
    return fig


def throughput_upload_chart(df, title: str | None = None):
    """Left: throughput (MB of state JSON per second) per op and mode, with gzip alone for reference.
    Right: bytes each persist sent to blob storage (the offloaded payload) vs the state size."""
    import numpy as np
    from matplotlib.figure import Figure

    pipe, codec = _bench_rows(df)
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    ax, up = fig.subplots(1, 2)
    colors = {("persist", "legacy"): "#c00000", ("persist", "streaming"): "#2f75b5",
              ("restore", "legacy"): "#ed7d31", ("restore", "streaming"): "#548235"}
    for (op, mode), g in pipe.groupby(["op", "mode"], sort=True):
        m = g.groupby("size_bytes", as_index=False)["throughput_mb_s"].max()
        ax.plot(m["size_bytes"] / 1e6, m["throughput_mb_s"], marker="o", color=colors.get((op, mode), "gray"),
                label=f"{op} {mode}")
    for direction, style in (("compress", "--"), ("decompress", ":")):
        c = codec[codec["op"] == direction]
        if len(c):
            m = c.groupby("size_bytes", as_index=False)["throughput_mb_s"].max()
            ax.plot(m["size_bytes"] / 1e6, m["throughput_mb_s"], linestyle=style, marker="x", color="black",
                    linewidth=1, label=f"gzip {direction} alone")
    if len(pipe):
        ax.set_xlim(0, float(pipe["size_bytes"].max()) / 1e6 * 1.08)
        ax.set_ylim(bottom=0)
    ax.set_xlabel("state size (MB of JSON)")
    ax.set_ylabel("MB/s")
    ax.set_title("Throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    p = pipe[pipe["op"] == "persist"]
    if len(p):
        sizes = sorted(p["size_bytes"].unique())
        width = 0.38
        x = np.arange(len(sizes))
        for i, mode in enumerate(("legacy", "streaming")):
            vals = []
            for s in sizes:
                r = p[(p["mode"] == mode) & (p["size_bytes"] == s)]
                blob = r[r["payload_location"].astype(str) == "blob"]
                vals.append(float(blob["compressed_bytes"].max()) / 1e6 if len(blob) else 0.0)
            up.bar(x + (i - 0.5) * width, vals, width=width, color=colors[("persist", mode)], label=f"persist {mode}")
        up.set_xticks(x, [f"{s / 1e6:.3g} MB" for s in sizes])
        up.axhline(PAYLOAD_OFFLOAD_THRESHOLD / 1e6, color="black", linestyle=":", linewidth=1,
                   label="payload offload threshold (1,560,576)")
        up.set_ylabel("MB uploaded to blob storage")
        up.set_xlabel("state size")
        up.legend(fontsize=8)
    else:
        up.text(0.5, 0.5, "no persist rows", transform=up.transAxes, ha="center")
    up.set_title("Upload bytes per persist (gzip payload offloaded)")
    up.grid(alpha=0.3, axis="y")
    fig.suptitle(title or "Throughput and upload bytes", fontsize=12)
    return fig


def offload_ratio_chart(metrics_frame, title: str | None = None):
    """Bars: ``projection_snapshot_offload_ratio`` (uploaded / stored bytes) and upload MB per persist run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.add_subplot()
    if metrics_frame is None or not len(metrics_frame):
        ax.text(0.5, 0.5, "no persist runs", transform=ax.transAxes, ha="center")
        ax.set_axis_off()
        return fig
    labels = [f"{r.mode} ({fmt_size(r.state_bytes)} state)" for r in metrics_frame.itertuples()]
    ratios = metrics_frame["projection_snapshot_offload_ratio"].astype(float).fillna(0).to_numpy()
    bars = ax.barh(range(len(labels)), ratios, color=["#c00000" if "legacy" in l else "#2f75b5" for l in labels])
    for b, r, up in zip(bars, ratios, metrics_frame["projection_snapshot_upload_bytes"]):
        ax.text(min(r, 1.0) + 0.01, b.get_y() + b.get_height() / 2, f"{r:.1%} ({fmt_size(up)} uploaded)",
                va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.set_xlim(0, 1.3)
    ax.set_xlabel("offload ratio: bytes in blob storage / bytes stored")
    ax.set_title(title or "Offload ratio per persist")
    return fig


def overhead_chart(bench_df, title: str | None = None):
    """Memory an operation costs over the idle program (``overhead_bytes``) vs the state size, per
    op and mode: a benchmark frame, or :func:`sekiops.ops.capacity.default_bench` (the built-in one)."""
    import pandas as pd
    from matplotlib.figure import Figure

    frame = pd.DataFrame(bench_df)
    if "ok" in frame.columns:
        frame = frame[frame["ok"].astype(str).str.lower().isin(["true", "1"])]
    frame = frame[frame["mode"].isin(["legacy", "streaming"])]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.add_subplot()
    styles = {("persist", "legacy"): ("#c00000", "v", "-"), ("restore", "legacy"): ("#ed7d31", "^", "-"),
              ("persist", "streaming"): ("#2f75b5", "o", "--"), ("restore", "streaming"): ("#548235", "s", "--")}
    for (op, mode), g in frame.groupby(["op", "mode"], sort=True):
        m = g.groupby("size_bytes", as_index=False)["overhead_bytes"].max().sort_values("size_bytes")
        color, marker, line = styles.get((op, mode), ("gray", "o", "-"))
        ax.plot(m["size_bytes"] / 1e6, m["overhead_bytes"] / MiB, color=color, marker=marker, linestyle=line,
                linewidth=1.8, label=f"{op} {mode}")
    if len(frame):
        top = float(frame["size_bytes"].max()) / 1e6
        ax.plot([0, top], [0, top * 1e6 / MiB], color="black", linewidth=0.8, linestyle=":", label="= state size")
        ax.set_xlim(0, top * 1.08)
        ax.set_ylim(bottom=0)
    else:
        ax.text(0.5, 0.5, "no measurements", transform=ax.transAxes, ha="center")
    ax.set_xlabel("state size (MB of JSON)")
    ax.set_ylabel("memory over the idle program (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title(title or "Memory a persist / restore costs, legacy vs streaming")
    return fig
