"""The aligned timeline: one row per Sekiban event and per memory sample, in time order."""

from __future__ import annotations

from .base import FAILURE_KINDS, FALLBACK_KINDS, TIMELINE_COLUMNS, _f, category, fmt_size


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
    elif kind in FALLBACK_KINDS:
        for name in ("Registry", "Format", "Reason"):
            v = rec.get(name)
            if isinstance(v, str) and v:
                parts.append(f"{name}={v[:80]}")
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


