"""The analysis: read the evidence, build the timeline and the capacity table, then findings and settings."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any

from ...blob import open_blob_store
from ...errors import SekiopsError, UsageError
from ...state import open_state_store
from ...urls import redact
from ..bench import load_results
from ..capacity import (
    DEFAULT_APP_BASELINE,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_SEKIBAN_VERSION,
    capacity_table,
    sekiban_version_text,
)
from ..inventory import inventory
from .base import FALLBACK_KINDS, _iso, fmt_mem
from .findings import findings
from .inputs import _projector_list, filter_events, load_events, load_memory, parse_limit, parse_when, projector_key
from .memory import infer_memory_limit, memory_series
from .recommend import recommendations
from .timeline import _event_sizes, build_timeline


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
    #: the Sekiban release the findings and the capacity model assume (``dcb-v10.23``)
    sekiban_version: str = "dcb-v" + DEFAULT_SEKIBAN_VERSION
    #: evidence the report was not given: a subset of ``logs``, ``metrics``, ``inventory``
    lacks: list = dataclasses.field(default_factory=list)

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
                "sekibanVersion": self.sekiban_version, "lacks": list(self.lacks),
                "findings": [f["text"] for f in self.findings]}

    def save(self, path: str) -> str:
        """Write the analysis for :func:`load_analysis` as JSON (frames in pandas' ``table`` orient, which
        keeps their types): the report renderer's private hand-off to notebook 04. Data, never code."""
        import pandas as pd

        out: dict = {"format": "sekiops-incident-analysis/1", "fields": {}, "frames": {}}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, pd.DataFrame):
                out["frames"][f.name] = {"table": value.to_json(orient="table", date_format="iso", date_unit="ns"),
                                         "attrs": value.attrs}
            elif isinstance(value, pd.Timestamp):
                out["fields"][f.name] = {"timestamp": value.isoformat()}
            else:
                out["fields"][f.name] = value
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(out, fh, default=_json_default)
        return path


def _json_default(v):
    import numpy as np

    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def load_analysis(path: str) -> IncidentReport:
    """An analysis written by :meth:`IncidentReport.save`."""
    import pandas as pd

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SekiopsError(f"analysis file {path!r} cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != "sekiops-incident-analysis/1":
        raise SekiopsError(f"analysis file {path!r} does not hold an incident analysis")
    kw: dict = {}
    for name, value in data["fields"].items():
        kw[name] = pd.Timestamp(value["timestamp"]) if isinstance(value, dict) and set(value) == {"timestamp"} \
            else value
    for name, frame in data["frames"].items():
        df = pd.read_json(io.StringIO(frame["table"]), orient="table")
        df.attrs.update(frame.get("attrs") or {})
        kw[name] = df
    return IncidentReport(**kw)


def analyse(logs=None, metrics=None, time_from=None, time_to=None, *, service_id: str | None = None,
            projectors=None, memory_limit=None, inventory_df=None, state_url: str | None = None,
            blob_url: str | None = None, bench_df=None, app_baseline=None, restarts_cumulative: bool | None = None,
            lookback: str = "15min", follow: str = "5min", sekiban_version=None) -> IncidentReport:
    """Read the evidence, filter it, build the timeline, the capacity table, findings and settings.

    ``logs`` / ``metrics``: paths (or DataFrames / ParseResults), each optional: the report works
    from logs alone, metrics alone or an inventory alone (``state_url`` or ``inventory_df``) and
    says which evidence it lacks (``rep.lacks``). ``time_from`` / ``time_to``: the window (None:
    the span of the data). ``state_url`` (+ ``blob_url``): read the inventory for the capacity
    table (a failure becomes a note, the log-derived capacity remains). ``bench_df``: a benchmark
    frame or a path to one (``sekiops bench --out``) for the capacity model. ``sekiban_version``:
    the Sekiban release the findings and the capacity model assume (default: the current one,
    dcb-v10.23, whose grain restores offloaded payloads streaming).
    """
    import pandas as pd

    version = sekiban_version_text(sekiban_version)
    given_inventory = inventory_df is not None or bool(state_url)
    def absent(x) -> bool:
        return x is None or (isinstance(x, str) and not x.strip())

    if absent(logs) and absent(metrics) and not given_inventory:
        raise UsageError("no evidence: give a logs export, a metrics export or a snapshot store (inventory)")
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
        limit_source = "inferred from working set / memory percentage" if limit else "default (4 GiB: not given)"
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
    lacks = [what for what, info in (("logs", events_info), ("metrics", memory_info)) if not info.get("given")]
    for what, info in (("logs", events_info), ("metrics", memory_info)):
        if not info.get("given"):
            continue
        if info.get("skipped"):
            reasons = ", ".join(f"{k} ({v})" for k, v in sorted(info["skippedReasons"].items(), key=lambda kv: -kv[1]))
            notes.append(f"{what}: {info['skipped']} line(s) not used: {reasons}")
        notes.extend(f"{what}: {n}" for n in info.get("notes", []))
    if "logs" in lacks:
        notes.append("no logs export given: Sekiban's snapshot events (persists, restores, failures) are not shown")
    elif not len(events):
        notes.append("no Sekiban snapshot events in the window" + (f" for {', '.join(names)}" if names else ""))
    if "metrics" in lacks:
        notes.append("no metrics export given: the container's memory and restarts are not shown")
    elif not len(memory):
        notes.append("no container memory samples in the window")
    if isinstance(app_baseline, (int, float)):
        baseline = int(app_baseline)
    else:  # None, "" (and "auto", which used to fail on int(None)): the default
        baseline = parse_limit(app_baseline) or DEFAULT_APP_BASELINE
    bench = _bench(bench_df, notes)
    inv = inventory_df
    inv_source = None
    if inv is None and state_url:
        inv, inv_source = _read_inventory(state_url, blob_url, service_id, notes)
    elif inv is not None:
        inv_source = "given"
    if inv is None:
        lacks.append("inventory")
    buffered = sorted(set(events.loc[events["kind"].isin(FALLBACK_KINDS), "projectorName"].dropna().astype(str))) \
        if len(events) else []
    capacity = incident_capacity(events, inv, limit, bench, baseline, service_id, names, notes,
                                 sekiban_version=version, buffered_projectors=buffered)
    rep = IncidentReport(timeline=timeline, events=events, memory=memory, capacity=capacity, findings=[],
                         recommendations=[], memory_limit=int(limit), limit_source=limit_source, time_from=t0,
                         time_to=t1, service_id=service_id, projectors=names,
                         sources={"logs": _source_name(logs) if "logs" not in lacks else None,
                                  "metrics": _source_name(metrics) if "metrics" not in lacks else None,
                                  "logsFormat": events_info.get("sourceFormat"),
                                  "metricsFormat": memory_info.get("sourceFormat"),
                                  "logsEventsTotal": len(events_all), "memorySamplesTotal": len(memory_all),
                                  "inventory": inv_source,
                                  "bench": "given" if bench is not None else "built-in measured default"},
                         notes=notes, app_baseline=int(baseline), follow=follow, sekiban_version=version,
                         lacks=lacks)

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
                      service_id: str | None = None, projectors=None, notes: list | None = None,
                      sekiban_version=None, buffered_projectors=()):
    """:func:`~sekiops.ops.capacity.capacity_table` of the projections in the logs and (when given)
    of the inventory, with a ``source`` column (``logs`` / ``inventory``); largest legacy peak first."""
    import pandas as pd

    frames = []
    logs_inv = log_inventory(events, service_id)
    if len(logs_inv):
        cap = capacity_table(logs_inv, bench_df, memory_limit=memory_limit, app_baseline=app_baseline,
                             sekiban_version=sekiban_version, buffered_projectors=buffered_projectors)
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
            cap = capacity_table(inv, bench_df, memory_limit=memory_limit, app_baseline=app_baseline,
                                 sekiban_version=sekiban_version, buffered_projectors=buffered_projectors)
            cap.insert(0, "source", "inventory")
            frames.append(cap)
        elif notes is not None:
            notes.append("the inventory has no rows for this service / these projectors")
    if not frames:
        empty = capacity_table(pd.DataFrame(columns=["projectorName"]), bench_df, memory_limit=memory_limit,
                               app_baseline=app_baseline, sekiban_version=sekiban_version)
        empty.insert(0, "source", pd.Series(dtype=object))
        return empty
    attrs = frames[0].attrs
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values("legacyPeakBytes", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    out.attrs.update(attrs)
    return out


