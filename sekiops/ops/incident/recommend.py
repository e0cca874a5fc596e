"""Recommended settings, each with the evidence it rests on and the Sekiban version it assumes."""

from __future__ import annotations

import math

from ..capacity import MODEL_NOTE, streams_offloaded_restore
from .base import (
    CATCH_UP_BATCH_RANGE,
    COSMOS_RECORD_THRESHOLD,
    FALLBACK_KINDS,
    HEADROOM,
    PAYLOAD_OFFLOAD_THRESHOLD,
    TEMP_FILES_GUARD,
    GiB,
    _f,
    fmt_mem,
    fmt_size,
)
from .memory import memory_breach


def recommendations(rep) -> list[dict]:
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

    version = rep.sekiban_version
    streams = streams_offloaded_restore(version)
    if streams:
        why = (f"Sekiban {version} (assumed) restores an offloaded payload streaming in the grain, but still decodes "
               "an inline Base64 payload whole in memory; so large projections should be offloaded, and the grain "
               "needs free disk the size of the payload for its temp file "
               "({TMP}/sekiban-stream-restore-{guid}.payload)")
        value = "offload large payloads so Sekiban's grain restores them streaming; keep disk free for the temp file"
    else:
        why = (f"Sekiban {version} (assumed) restores by materialising the whole payload and the object graph at once "
               "(format reference, section 7); from dcb-v10.23 an offloaded payload restores streaming")
        value = "upgrade Sekiban to dcb-v10.23 or later (offloaded payloads restore streaming), or restore with sekiops"
    if known is not None and over is not None and len(over):  # (over is None exactly when known is)
        mixed = over[over["mixedOOM"].astype(bool)]
        if len(mixed):
            why += (f"; with streaming persist, {', '.join(sorted(set(mixed['projectorName'])))} still "
                    f"exceeds the limit on the grain's restore (estimated {fmt_mem(mixed['mixedPeakBytes'].max())})")
        if streams and "restoreTempDiskBytes" in over.columns:
            disk = _f(pd.to_numeric(known["restoreTempDiskBytes"], errors="coerce").astype("float64").max())
            if disk:
                why += f"; the largest offloaded payload needs {fmt_size(disk)} of temp-file disk"
    rest = events[events["kind"] == "restore"] if len(events) else events
    if len(rest) and (rest["peak_after_percent"] >= 90).any():
        why += "; restores in the window were followed by memory at the limit"
    fb = events[events["kind"].isin(FALLBACK_KINDS)] if len(events) else events
    if len(fb):
        why += (f"; {', '.join(sorted(fb['projectorName'].dropna().astype(str).unique()))} fell back to the buffered "
                "restore (registry lacks the streaming capability): register the streaming capability")
    out.append({"setting": "Snapshot restore", "value": value, "why": why + "."})

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
           "Cosmos DB item limit (2 MiB, 2,097,152 B)")
    if big_names:
        why += f"; force offload for the large projections ({', '.join(big_names)})"
    out.append({"setting": "Payload offload threshold (OffloadThresholdBytes)",
                "value": f"≤ {PAYLOAD_OFFLOAD_THRESHOLD:,} bytes (default); force offload for large projections",
                "why": why + "."})
    out.append({"setting": "Record-level offload threshold (Cosmos DB)",
                "value": f"≤ {COSMOS_RECORD_THRESHOLD:,} bytes",
                "why": "an envelope above it goes to blob storage instead of the Cosmos item (at most 2 MiB); "
                       "the Base64 in StateData costs memory and RU."})

    # memory limit headroom from the capacity model
    if known is not None and len(known):
        top_mixed = float(known["mixedPeakBytes"].max())
        top_stream = float(known["streamingPeakBytes"].max())
        need_mixed = _round_up(top_mixed / HEADROOM, GiB / 2)
        need_stream = _round_up(top_stream / HEADROOM, GiB / 2)
        value = (f"≥ {fmt_mem(need_stream)} with streaming persist + restore "
                 f"(estimated peak {fmt_mem(top_stream)}); ≥ {fmt_mem(need_mixed)} with Sekiban's grain on {version} "
                 f"(estimated {fmt_mem(top_mixed)})")
        why = (f"keep the estimated peak at or under {HEADROOM:.0%} of the limit; the current limit is "
               f"{fmt_mem(limit)} (estimates: app baseline {fmt_mem(rep.app_baseline)} assumed, byte[] costs "
               f"{MODEL_NOTE}; see the capacity table)")
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
        value = f"≥ {fmt_size(_round_up(2 * biggest, GiB / 4))} free under the temp directory"
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


def _round_up(x: float, step: float) -> float:
    return math.ceil(x / step) * step


