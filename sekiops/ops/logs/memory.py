"""Container memory over time from Azure Monitor / Log Analytics exports (``sekiops metrics-import``).

Wide exports (a time column plus ``WorkingSetBytes`` / ``MemoryPercentage`` / ``RestartCount``
columns, any spelling) and long ones (``MetricName`` + ``Average``/``Maximum``..., as the
``AzureMetrics`` table or the metrics REST API give them), in any shape :mod:`.export` reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ...errors import SekiopsError
from .events import ParseResult
from .export import load_export
from .source import norm
from .times import parse_time

MEMORY_COLUMNS = ["time", "working_set_bytes", "memory_percent", "restarts"]
_VALUE_COLS = ["maximum", "max", "average", "avg", "mean", "value", "val", "total", "sum", "countervalue",
               "minimum", "min", "last"]
_METRIC_NAME_COLS = ["metricname", "metric", "name", "countername", "metricnames", "metricid"]
_REPLICA_COLS = ["replica", "replicaname", "replicanames", "podname", "instance", "roleinstance",
                 "cloudroleinstance", "revisionname", "revisionnames", "computer"]
_TIME_MEM_COLS = ["timegenerated", "timestamp", "time", "timeutc", "t", "datetime", "date", "timegenerateds",
                  "timestamps", "timegeneratedutc", "startofinterval"]
_UNIT = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "bytes": 1, "b": 1}


def _metric_kind(name: str) -> str | None:
    n = norm(name)
    if "restart" in n:
        return "restarts"
    if "workingset" in n or n in ("rss", "rssbytes", "memoryrss", "memoryrssbytes", "memorybytes", "memoryused",
                                  "memoryusedbytes", "memoryusage", "memoryusagebytes"):
        return "working_set_bytes"
    if "memory" in n and ("percent" in n or "utilization" in n or "utilisation" in n):
        return "memory_percent"
    if n in ("memorypercentage", "memorypercent", "mempercent"):
        return "memory_percent"
    return None


def _unit_scale(name: object) -> float:
    """Bytes per unit named in a column: ``Memory (MiB)``, ``WorkingSetMB``, ``memory_gb`` ..."""
    text = str(name)
    m = re.search(r"(?:^|[^a-z])(kib|mib|gib|kb|mb|gb)(?:[^a-z]|$)", text.lower())
    if m is None:
        m = re.search(r"(KiB|MiB|GiB|KB|kB|MB|GB)$", text.strip())
    return _UNIT[m.group(1).lower()] if m else 1.0


def _number(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    s = str(v).strip().replace("\u00a0", "")
    if not s or s.lower() in ("null", "(null)", "nan", "-"):
        return None
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = s.rstrip("%").strip()
    try:
        return float(s)
    except ValueError:
        return None


def _recognise_memory(cols: Iterable[str]) -> bool:
    cols = set(cols)
    has_time = bool(cols & set(_TIME_MEM_COLS)) or any(c.startswith("time") for c in cols)
    has_value = any(_metric_kind(c) for c in cols) or bool(cols & set(_VALUE_COLS)) \
        or bool(cols & set(_METRIC_NAME_COLS)) or "timeseries" in cols
    return (has_time and has_value) or "timeseries" in cols


def _rest_metric_rows(rows: list[dict]) -> list[dict] | None:
    """Azure Monitor REST ``metrics`` response: value[].name.value + timeseries[].data[]."""
    out = []
    found = False
    for item in rows:
        if not isinstance(item.get("timeseries"), list):
            continue
        found = True
        name = item.get("name")
        name = name.get("value") if isinstance(name, dict) else name
        for ts in item["timeseries"]:
            for point in (ts or {}).get("data") or []:
                rec = {"time": point.get("timeStamp") or point.get("timestamp"), "metric": name}
                for agg in ("maximum", "average", "total", "minimum", "count"):
                    if agg in point:
                        rec[agg] = point[agg]
                out.append(rec)
    return out if found else None


def parse_container_memory(source) -> ParseResult:
    """Container memory over time from an Azure Monitor / Log Analytics export.

    Wide exports (a time column plus ``WorkingSetBytes`` / ``MemoryPercentage`` / ``RestartCount``
    columns, any spelling) and long ones (``MetricName`` + ``Average``/``Maximum``..., as the
    ``AzureMetrics`` table or the metrics REST API give them) both work. When the only value is an
    unnamed ``Average``/``Maximum``/``Value`` column, values above 100 are taken as bytes and the
    rest as percent (said in ``notes``). Units in a column name (``(MB)``, ``GiB``) are applied:
    kB/MB/GB are decimal, KiB/MiB/GiB binary. For memory, ``Maximum`` is preferred over
    ``Average`` when a long export has both (the peak is what the OOM killer sees); for restarts
    ``Total``. Frame columns: ``time``, ``working_set_bytes``, ``memory_percent``, ``restarts``
    (and ``replica`` when the export has a replica/instance dimension).
    """
    import pandas as pd

    loaded = load_export(source, _recognise_memory, "container memory metrics (time + working set / percent)")
    rows, skipped, notes = loaded.rows, loaded.skipped, []
    rest = _rest_metric_rows(rows)
    if rest is not None:
        rows = rest
    keys: list[str] = []
    for r in rows[:500]:
        for k in r:
            if k not in keys:
                keys.append(k)
    index: dict[str, str] = {}
    for k in keys:
        index.setdefault(norm(k), k)
    time_key = next((index[c] for c in _TIME_MEM_COLS if c in index), None) or \
        next((k for k in keys if norm(k).startswith("time")), None)
    if time_key is None:
        raise SekiopsError("container memory export has no time column (TimeGenerated, timestamp, time ...)")
    metric_key = next((index[c] for c in _METRIC_NAME_COLS if c in index), None)
    replica_key = next((index[c] for c in _REPLICA_COLS if c in index), None)
    value_keys = [index[c] for c in _VALUE_COLS if c in index]
    wide = {k: _metric_kind(k) for k in keys if _metric_kind(k)}
    samples: dict[tuple, dict] = {}
    order: list[tuple] = []
    guessed = False

    def slot(t, rep) -> dict:
        key = (t, rep)
        if key not in samples:
            samples[key] = {"time": t, "working_set_bytes": None, "memory_percent": None, "restarts": None}
            if replica_key is not None:
                samples[key]["replica"] = rep
            order.append(key)
        return samples[key]

    for r in rows:
        t = parse_time(r.get(time_key))
        if t is None:
            skipped["row without a readable time"] += 1
            continue
        rep = r.get(replica_key) if replica_key else None
        got = False
        if metric_key is not None and value_keys and not wide:
            kind = _metric_kind(str(r.get(metric_key) or ""))
            if kind is None:
                skipped["other metric"] += 1
                continue
            prefer = ["total", "sum", "maximum", "max", "average", "avg"] if kind == "restarts" else value_keys
            for vk in [index[c] for c in prefer if c in index] + value_keys:
                v = _number(r.get(vk))
                if v is not None:
                    slot(t, rep)[kind] = v * (_unit_scale(r.get(metric_key)) if kind == "working_set_bytes" else 1)
                    got = True
                    break
        elif wide:
            for k, kind in wide.items():
                v = _number(r.get(k))
                if v is not None:
                    slot(t, rep)[kind] = v * (_unit_scale(k) if kind == "working_set_bytes" else 1)
                    got = True
        elif value_keys:
            v = _number(r.get(value_keys[0]))
            if v is not None:
                guessed = True
                kind = "working_set_bytes" if v > 100 else "memory_percent"
                slot(t, rep)[kind] = v * _unit_scale(value_keys[0])
                got = True
        if not got:
            skipped["row without a memory value"] += 1
    if guessed:
        notes.append(f"column {value_keys[0]!r} has no metric name: values > 100 taken as bytes, others as percent")
    cols = MEMORY_COLUMNS + (["replica"] if replica_key is not None else [])
    frame = pd.DataFrame.from_records([samples[k] for k in order], columns=cols)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    for c in ("working_set_bytes", "memory_percent", "restarts"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    frame.attrs.update({"skipped": sum(skipped.values()), "skippedReasons": dict(skipped), "notes": notes})
    return ParseResult(frame=frame, rows=len(loaded.rows), skipped=sum(skipped.values()),
                       skipped_reasons=dict(skipped), source_format=loaded.fmt, notes=notes)
