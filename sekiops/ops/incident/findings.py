"""Findings: what happened, in sentences a reader without the code can follow, one function each.

Every finding function takes a :class:`Context` (the report plus what several findings share) and
returns a list of finding dicts (``severity``, ``id``, ``title``, ``text``, ``time`` and its
evidence); :func:`findings` runs them all and sorts the result, most severe first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..capacity import MODEL_NOTE, streams_offloaded_restore
from .base import (
    FALLBACK_KINDS,
    HEADROOM,
    KIND_LABELS,
    MAX_CAPACITY_FINDINGS,
    SEVERITY_ORDER,
    _f,
    _iso,
    fmt_clock,
    fmt_delta,
    fmt_mem,
    fmt_size,
    fmt_time,
)
from .memory import memory_breach


def _finding(severity: str, key: str, title: str, text: str, time=None, **evidence) -> dict:
    return {"severity": severity, "id": key, "title": title, "text": text,
            "time": None if time is None else _iso(time), **evidence}


@dataclasses.dataclass
class Context:
    rep: Any
    events: Any          # the timeline's log rows
    restarts: Any        # memory samples that counted restarts
    n_restarts: int
    lookback: Any        # pandas Timedelta
    first_streaming: Any  # time of the first streaming persist, or None

    @property
    def mem(self):
        return self.rep.memory

    @property
    def limit(self) -> int:
        return self.rep.memory_limit

    @property
    def follow(self) -> str:
        return self.rep.follow


def context(rep, lookback: str = "15min") -> Context:
    import pandas as pd

    tl, mem = rep.timeline, rep.memory
    events = tl[tl["source"] == "logs"] if len(tl) else tl
    restarts = mem[mem["restarts"] > 0] if len(mem) else mem
    first_streaming = None
    if len(events):
        s = events[events["kind"] == "persist_streaming"]
        if len(s):
            first_streaming = s["time"].min()
    return Context(rep, events, restarts, int(restarts["restarts"].sum()) if len(restarts) else 0,
                   pd.Timedelta(lookback), first_streaming)


def findings(rep, lookback: str = "15min") -> list[dict]:
    """What happened, in sentences, each with ``severity`` (critical, warning, info, ok), ``id``,
    ``title``, ``text`` and ``time``; most severe first."""
    ctx = context(rep, lookback)
    out: list[dict] = []
    for finder in FINDERS:
        out.extend(finder(ctx))
    if not out:
        out.append(_finding("info", "nothing", "Nothing found",
                            "No snapshot events or memory samples in the window: check the time window, the "
                            "service and the projector filter.", None))
    out.sort(key=lambda f: SEVERITY_ORDER.get(f["severity"], 9))
    return out


# --- the findings ---------------------------------------------------------------------------------------


def memory_peak(ctx: Context) -> list[dict]:
    """The first time memory reached the limit, and what came just before it."""
    mem, limit, restarts = ctx.mem, ctx.limit, ctx.restarts
    breach = memory_breach(mem, ctx.first_streaming)
    if breach is None:
        return []
    start, peak = breach
    pct = float(peak["memory_percent"]) / 100.0
    trigger = _trigger(ctx.events, start["time"], ctx.lookback)
    after = restarts[restarts["time"] >= start["time"]] if len(restarts) else restarts
    if ctx.first_streaming is not None and len(after):
        after = after[after["time"] < ctx.first_streaming]
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
        t2 = _trigger(ctx.events, top["time"], ctx.lookback)
        text += (f" The highest sample was {float(top['memory_percent']) / 100:.0%} at {fmt_clock(top['time'])}"
                 + (f", after {_kind_phrase(t2)} of {t2['projectorName']}" if t2 is not None else "") + ".")
    severity = "critical" if pct >= 0.9 or n_after else "warning" if pct >= 0.8 else "info"
    return [_finding(severity, "memory_peak", "Memory reached the limit" if pct >= 0.9 else "Memory peak",
                     text, peak["time"], percent=round(pct * 100, 1),
                     workingSetBytes=float(peak["working_set_bytes"]), restartsAfter=n_after,
                     trigger=None if trigger is None else {
                         "kind": trigger["kind"], "projectorName": trigger["projectorName"],
                         "time": _iso(trigger["time"]), "envelopeBytes": _f(trigger["envelope_bytes"])})]


def restarts(ctx: Context) -> list[dict]:
    """Each restart with the memory just before it and the last snapshot event."""
    import pandas as pd

    mem, rs, n = ctx.mem, ctx.restarts, ctx.n_restarts
    if not len(rs):
        return []
    parts, oom = [], 0
    for _, r in rs.iterrows():
        prev = mem[(mem["time"] < r["time"]) & (mem["time"] >= r["time"] - pd.Timedelta("5min"))]
        high = float(prev["memory_percent"].max()) / 100.0 if len(prev) else float("nan")
        if high == high and high >= 0.9:
            oom += int(r["restarts"])
        trig = _trigger(ctx.events, r["time"], ctx.lookback)
        what = f"after {_kind_phrase(trig)} of {trig['projectorName']}" if trig is not None else ""
        tail = f", {what}" if what else ""
        parts.append(f"{fmt_clock(r['time'])} (memory {high:.0%} of the limit just before{tail})"
                     if high == high else f"{fmt_clock(r['time'])}")
    text = f"The container restarted {_times(n)}: " + "; ".join(parts) + "."
    if oom:
        text += (" It followed memory at 90 % of the limit or more: an out-of-memory kill." if n == 1
                 else f" {'All' if oom == n else oom} of them followed memory at 90 % of the limit or "
                 "more: out-of-memory kills.")
    return [_finding("critical" if oom else "warning", "restarts", "Restarts", text, rs["time"].iloc[0],
                     restarts=n, oomKills=oom)]


def legacy_persists(ctx: Context) -> list[dict]:
    """Growth of byte[] persists, per projector."""
    import pandas as pd

    events = ctx.events
    legacy = events[events["kind"] == "persist_legacy"] if len(events) else events
    out = []
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
            text += (f" Within {fmt_delta(pd.Timedelta(ctx.follow))} after them memory peaked at up to "
                     f"{peaks.max() / 100:.0%} of the limit.")
        big = g["envelope_bytes"].max()
        sev = "warning" if growth > 0.25 or (len(peaks) and peaks.max() >= 90) else "info"
        out.append(_finding(sev, f"legacy_persists:{name}", f"byte[] persists of {name}", text, first["time"],
                            projectorName=name, persists=len(g), maxEnvelopeBytes=float(big)))
    return out


def failures(ctx: Context) -> list[dict]:
    """Snapshot failure events (StateRestoreFailed, BlobReadFailed ...)."""
    events, rs = ctx.events, ctx.restarts
    fails = events[events["category"] == "failure"] if len(events) else events
    if not len(fails):
        return []
    groups = []
    for (kind, name), g in fails.groupby(["kind", "projectorName"], dropna=False, sort=False):
        first_detail = next((d for d in g["detail"] if d), "")
        groups.append(f"{len(g)} × {KIND_LABELS.get(kind, kind)} ({name}"
                      + (f"; {first_detail}" if first_detail else "") + ")")
    text = f"{len(fails)} snapshot failure event{'s' if len(fails) != 1 else ''}: " + "; ".join(groups) + "."
    if len(rs):
        after_restart = fails[fails["time"] >= rs["time"].min()]
        if len(after_restart):
            text += (f" {len(after_restart)} of them came after the first restart: the restarted container "
                     "could not load the snapshot.")
    oom_errors = fails["detail"].str.contains("OutOfMemory", case=False, na=False).sum()
    if oom_errors:
        text += f" {oom_errors} name{'s' if oom_errors == 1 else ''} an OutOfMemoryException."
    return [_finding("critical" if oom_errors or len(rs) else "warning", "failures", "Snapshot failures", text,
                     fails["time"].iloc[0], failures=len(fails))]


def restores(ctx: Context) -> list[dict]:
    """Restores that ran memory up, explained for the Sekiban version assumed."""
    import pandas as pd

    events = ctx.events
    rest = events[events["kind"] == "restore"] if len(events) else events
    if not len(rest):
        return []
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
        version = ctx.rep.sekiban_version
        if streams_offloaded_restore(version):
            why = (f"on Sekiban {version} (assumed) an inline Base64 payload is still decoded whole in memory; only "
                   "an offloaded payload restores streaming (format reference, section 7)")
            big = rest["envelope_bytes"].max()
            if _f(big) is not None and big > 4096:
                why += (f"; these envelopes (up to {fmt_size(big)}) carry their payload inline, so the grain "
                        "buffered it")
        else:
            why = (f"on Sekiban {version} (assumed) the grain's restore materialises the whole payload and the "
                   "object graph at once (format reference, section 7)")
        text += (f" {len(hot)} of them were followed by memory at 90 % of the limit or more within "
                 f"{fmt_delta(pd.Timedelta(ctx.follow))}: {why}.")
    return [_finding("critical" if len(hot) else "info", "restores", "Restores", text, rest["time"].iloc[0],
                     restores=len(rest), hotRestores=len(hot), sekibanVersion=ctx.rep.sekiban_version)]


def buffered_fallbacks(ctx: Context) -> list[dict]:
    """Sekiban 10.23+ restores that fell back to the buffered path (registry lacks streaming)."""
    events = ctx.events
    fb = events[events["kind"].isin(FALLBACK_KINDS)] if len(events) else events
    if not len(fb):
        return []
    names = ", ".join(sorted(fb["projectorName"].dropna().astype(str).unique())) or "?"
    detail = next((d for d in fb["detail"] if d), "")
    text = (f"{len(fb)} restore{'s' if len(fb) != 1 else ''} of {names} fell back to the buffered path "
            f"(Snapshot restore buffered fallback{'; ' + detail if detail else ''}): the projector's registry lacks "
            "the streaming capability, so its restore holds the whole payload in memory even on dcb-v10.23+. "
            "The capacity table predicts these projectors with the buffered restore.")
    return [_finding("warning", "buffered_fallback", "Buffered restore fallback", text, fb["time"].iloc[0],
                     fallbacks=len(fb))]


def streaming(ctx: Context) -> list[dict]:
    """Streaming persists: the fix, and memory after it."""
    events, mem, limit, first = ctx.events, ctx.mem, ctx.limit, ctx.first_streaming
    if first is None:
        return []
    s = events[events["kind"] == "persist_streaming"]
    after_mem = mem[mem["time"] >= first] if len(mem) else mem
    after_restarts = int(after_mem["restarts"].sum()) if len(after_mem) else 0
    pm = s["peak_memory_bytes"].dropna()
    tf = s["envelope_bytes"].dropna()
    names = ", ".join(sorted(s["projectorName"].dropna().unique()))
    plural = "s" if len(s) != 1 else ""
    text = f"{len(s)} StreamingPersist event{plural} ({names}) from {fmt_clock(first)}"
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
        before = mem[mem["time"] < first]
        if len(before):
            text += f" Before it: {float(before['memory_percent'].max()) / 100:.0%}."
        sev = "ok" if mx < HEADROOM and not after_restarts else "warning"
    else:
        sev = "info"
    text += " (PeakMemory is a managed-heap sample Sekiban logs after the upload, not a true peak.)"
    return [_finding(sev, "streaming", "After the switch to streaming persist", text, first,
                     streamingPersists=len(s))]


def capacity(ctx: Context) -> list[dict]:
    """Projections whose estimated legacy peak exceeds the limit (modelled, not measured)."""
    import pandas as pd

    cap, limit = ctx.rep.capacity, ctx.limit
    if cap is None or not len(cap):
        return []
    version = ctx.rep.sekiban_version
    out = []
    over = cap[cap["legacyOOM"].fillna(False).astype(bool)]
    shown = pd.concat([over[over["source"] == "logs"], over[over["source"] != "logs"].head(MAX_CAPACITY_FINDINGS)])
    for _, r in shown.iterrows():
        origin = "from the logs" if r["source"] == "logs" else f"inventory {r['projectorVersion']}"
        path = str(r.get("grainRestorePath") or "")
        disk = _f(r.get("restoreTempDiskBytes"))
        grain = f"Sekiban's grain on {version} (streaming persist, {path.split(' (')[0]} restore"
        grain += f", needs {fmt_size(disk)} free disk for its temp file)" if disk else ")"
        text = (f"{r['projectorName']} ({origin}, state ≈ {fmt_size(r['payloadOriginalBytes'])}): estimated peak "
                f"with byte[] persist and restore {fmt_mem(r['legacyPeakBytes'])} > the {fmt_mem(limit)} limit; "
                f"{grain} {fmt_mem(r['mixedPeakBytes'])}{' (still over)' if bool(r['mixedOOM']) else ''}; fully "
                f"streaming {fmt_mem(r['streamingPeakBytes'])}{' (still over)' if bool(r['streamingOOM']) else ''}. "
                f"Estimates: the byte[] costs are {MODEL_NOTE}.")
        out.append(_finding("critical" if r["source"] == "logs" else "warning",
                            f"capacity:{r['source']}:{r['projectorName']}:{r['projectorVersion']}",
                            f"Capacity: {r['projectorName']}", text, None,
                            projectorName=r["projectorName"], source=r["source"],
                            legacyPeakBytes=_f(r["legacyPeakBytes"]), streamingPeakBytes=_f(r["streamingPeakBytes"]),
                            sekibanVersion=version, modelled=True))
    if len(over) > len(shown):
        rest = over.drop(shown.index)
        out.append(_finding("warning", "capacity:more", "Capacity: more projections",
                            f"{len(rest)} more inventory row(s) exceed the {fmt_mem(limit)} limit under byte[] "
                            f"persist and restore (largest estimated peak {fmt_mem(rest['legacyPeakBytes'].max())}; "
                            f"{MODEL_NOTE}): see the capacity table.", None, rows=len(rest)))
    if over.empty:
        known = cap["legacyPeakBytes"].notna().sum()
        out.append(_finding("ok", "capacity", "Capacity",
                            f"No projection's estimated byte[] peak exceeds the {fmt_mem(limit)} limit "
                            f"({known} projection(s) with a known size; {MODEL_NOTE}).", None))
    return out


#: every finding, in the order they are computed (the result is sorted by severity)
FINDERS = [memory_peak, restarts, legacy_persists, failures, restores, buffered_fallbacks, streaming, capacity]


# --- helpers --------------------------------------------------------------------------------------------


def _trigger(events, when, lookback):
    """The last persist or restore before ``when`` within ``lookback`` (a timeline row), or None."""
    if events is None or not len(events):
        return None
    c = events[(events["category"].isin(["persist", "restore"])) & (events["kind"] != "state_restore_success")
               & (~events["kind"].isin(FALLBACK_KINDS))
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
    return f" with {label}={int(env):,} B ({fmt_size(env)})"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")
