"""Sample incident evidence for the demo: what an SRE exports from Azure after a snapshot OOM.

Two files, in the shapes :mod:`sekiops.ops.logs` reads and the exact Sekiban wording (format
reference section 7, rendered with :func:`~sekiops.ops.logs.render_template`):

- ``appinsights_traces.csv``: an Application Insights portal "Export to CSV" of ``traces``
  (``timestamp [UTC]`` in the portal's ``M/D/YYYY, h:mm:ss.fff AM`` form, the rendered
  ``message``, ``customDimensions`` as JSON with string values, ``EventId``/``EventName``/
  ``{OriginalFormat}`` as Microsoft.Extensions.Logging puts them there), with unrelated rows mixed in;
- ``container_memory.csv``: an Azure Monitor metrics export of the container app (a two-line
  preamble, then a time column, the working set, the memory percentage and the restart count per
  minute; Maximum for memory, Total for restarts).

The story (times relative to ``start``, default 2026-03-10 02:00 UTC; memory as a share of the
limit, so any ``memory_limit`` gives the same picture):

==========  ==========================================================================================
0-30 min    steady: byte[] persists of ``CustomerDirectory`` every 10 min (EnvelopeSize ~236-241 MB)
            and of ``OrderSummary``; the working set sits near 40 % of the limit
30-48 min   a bulk import: catch-up batches of 5,000 events (RequestedMaxCount=5000) and a burst of
            byte[] persists every 3 min with EnvelopeSize growing 262 MB -> 421 MB; memory climbs with
            every persist and reaches 98.6 % of the limit 40 s after the last one
49-56 min   3 OOM kills (restarts): each restart restores the 421 MB envelope (1.42 GB of state)
            through the byte[] path, memory climbs back to the limit; StateRestoreFailed
            (OutOfMemoryException) twice and a BlobReadFailed in between
60 min      the fix (a new revision): streaming persist + streaming restore, CatchUpBatchSize 500
61-120 min  restore succeeds; StreamingPersist every 5 min (TempFileBytes ~424-440 MB,
            PeakMemory ~0.4 GB); the working set stays under 50 % of the limit, no restart
==========  ==========================================================================================

::

    from sekiops.ops.demo_evidence import write_demo_evidence
    params = write_demo_evidence("evidence/")   # -> notebook 04 / ``sekiops report incident`` inputs
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import math
import os
import random

from .logs import EVENTS, TEMPLATE_PERSIST_LEGACY, TEMPLATE_PERSIST_STREAMING, TEMPLATE_RESTORE, render_template

GiB = 2**30
DEFAULT_START = _dt.datetime(2026, 3, 10, 2, 0, tzinfo=_dt.UTC)
DEFAULT_LIMIT = 4 * GiB
DURATION_MIN = 120
CATEGORY = "Sekiban.Dcb.Orleans.Grains.MultiProjectionGrain"

# the messages Sekiban's grain logs under these ids (sekiops.ops.logs.TEMPLATES)
TEMPLATE_RESTORE_SUCCESS = "State restored: {ProjectorName}, Position: {Position}, Events: {Events}"
TEMPLATE_RESTORE_FAILED = "External store query failed: {ProjectorName}, Error: {Error}"
TEMPLATE_BLOB_READ_FAILED = ("State stream open failed: {ProjectorName}, IsOffloaded: {IsOffloaded}, "
                             "OffloadKey: {OffloadKey}")
TEMPLATE_CATCH_UP_SUMMARY = ("[{ProjectorName}] Catch-up batch summary. BatchNumber={BatchNumber}, "
                             "StartPosition={StartPosition}, RequestedMaxCount={RequestedMaxCount}, "
                             "FetchedCount={FetchedCount}, ReadElapsedMs={ReadElapsedMs}, "
                             "PersistTriggered={PersistTriggered}, PersistReason={PersistReason}")

#: EnvelopeSize of the big projection's byte[] persists: (minute, bytes)
LEGACY_PERSISTS = [(5, 236_114_880), (15, 238_530_112), (25, 241_002_496),
                   (32, 262_144_000), (35, 291_504_128), (38, 323_010_560), (41, 352_321_536),
                   (44, 388_497_408), (47, 421_003_264)]
OOM_ENVELOPE = 421_003_264
OOM_STATE = 1_420_886_016   # the state JSON behind that envelope (what a restore materialises)
OOM_PAYLOAD = 315_752_448   # its gzip payload
RESTARTS = [49, 52, 56]     # minutes with an OOM kill
FIX_MINUTE = 60             # the new revision (streaming persist + restore)


def _sortable_id(t: _dt.datetime, n: int) -> str:
    """A SortableUniqueId-like 30-digit id (ticks + counter) for positions in the messages."""
    ticks = int((t - _dt.datetime(1, 1, 1, tzinfo=_dt.UTC)).total_seconds() * 10_000_000)
    return f"{ticks:019d}{n:011d}"[:30]


def _portal_time(t: _dt.datetime) -> str:
    """Application Insights portal CSV time: ``3/10/2026, 2:05:20.412 AM``."""
    hour = t.hour % 12 or 12
    return (f"{t.month}/{t.day}/{t.year}, {hour}:{t.minute:02d}:{t.second:02d}."
            f"{t.microsecond // 1000:03d} {'AM' if t.hour < 12 else 'PM'}")


class _Log:
    def __init__(self, start: _dt.datetime, rng: random.Random):
        self.start, self.rng = start, rng
        self.rows: list[tuple[_dt.datetime, dict]] = []

    def at(self, minute: float, second: float = 0.0) -> _dt.datetime:
        jitter = self.rng.randint(0, 999) / 1000.0
        return self.start + _dt.timedelta(minutes=minute, seconds=second + jitter)

    def sekiban(self, t: _dt.datetime, event_id: int, template: str, values: dict, instance: str,
                severity: int = 1) -> None:
        dims = {"CategoryName": CATEGORY, "AspNetCoreEnvironment": "Production", "EventId": str(event_id),
                "EventName": EVENTS[event_id][0]}
        for k, v in values.items():  # Application Insights stores every dimension as a string
            dims[k] = render_template("{x}", {"x": v})
        dims["{OriginalFormat}"] = template
        self.rows.append((t, {"message": render_template(template, values), "severityLevel": severity,
                              "customDimensions": json.dumps(dims), "cloud_RoleInstance": instance}))

    def other(self, t: _dt.datetime, message: str, instance: str, dims: dict | None = None,
              severity: int = 1) -> None:
        self.rows.append((t, {"message": message, "severityLevel": severity,
                              "customDimensions": json.dumps(dims) if dims else "", "cloud_RoleInstance": instance}))


def _memory_share(minute: int, rng: random.Random) -> float:
    """Working set as a share of the memory limit, per minute (see the module docstring)."""
    fixed = {48: 0.986, 49: 0.22, 50: 0.71, 51: 0.985, 52: 0.21, 53: 0.52, 54: 0.83, 55: 0.991,
             56: 0.20, 57: 0.24, 58: 0.25, 59: 0.25, 60: 0.18, 61: 0.31, 62: 0.49, 63: 0.45}
    if minute in fixed:
        return fixed[minute]
    noise = rng.uniform(-0.008, 0.008)
    after = {m + 1 for m, _ in LEGACY_PERSISTS}
    if minute < 30:
        v = 0.39 + 0.01 * math.sin(minute / 3.0) + noise
        if minute in after:
            v += 0.14
        if minute in (9, 19, 29):  # OrderSummary persists
            v += 0.03
        return v
    if minute < 48:
        v = 0.40 + (minute - 30) * (0.80 - 0.40) / 18 + noise
        if minute in after:
            v += 0.10 + 0.01 * (minute - 33) / 3
        return v
    v = 0.44 + 0.015 * math.sin(minute / 5.0) + noise  # after the fix
    if minute % 5 == 1:  # the minute after a StreamingPersist
        v += 0.03
    return v


def write_demo_evidence(directory: str, *, projector: str = "CustomerDirectory", start: _dt.datetime | None = None,
                        memory_limit: int = DEFAULT_LIMIT, service_id: str = "default", seed: int = 7) -> dict:
    """Write the sample exports into ``directory``; return notebook 04's evidence parameters.

    Returns ``{"logs_file", "metrics_file", "time_from", "time_to", "memory_limit", "service_id"}``
    (times as ISO 8601 UTC, the limit as ``"4GiB"``-style text): exactly the parameter names of
    ``notebooks/04_post_incident_report.ipynb`` and the options of ``sekiops report incident``.
    """
    start = start or DEFAULT_START
    if start.tzinfo is None:
        start = start.replace(tzinfo=_dt.UTC)
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(seed)
    logs_path = os.path.join(directory, "appinsights_traces.csv")
    metrics_path = os.path.join(directory, "container_memory.csv")
    _write_logs(logs_path, projector, start, rng)
    _write_memory(metrics_path, start, memory_limit, random.Random(seed + 1))
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return {"logs_file": os.path.abspath(logs_path), "metrics_file": os.path.abspath(metrics_path),
            "time_from": start.strftime(iso),
            "time_to": (start + _dt.timedelta(minutes=DURATION_MIN)).strftime(iso),
            "memory_limit": _limit_text(memory_limit), "service_id": service_id}


def _limit_text(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", 2**20)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _write_logs(path: str, projector: str, start: _dt.datetime, rng: random.Random) -> None:
    log = _Log(start, rng)
    old, new = "kenbai-api--rev12-7d9f8-abcde", "kenbai-api--rev13-55c4b-klmno"
    small = "OrderSummary"
    events = 1_180_000
    offload_key = f"{projector}/v3/" + hashlib.sha256(f"{projector}-{OOM_ENVELOPE}".encode()).hexdigest() + ".bin"

    # steady state and the burst: byte[] persists of the big projection
    for minute, envelope in LEGACY_PERSISTS:
        events += 6_000 if minute < 30 else 25_000
        t = log.at(minute, 20)
        safe_at = t - _dt.timedelta(seconds=20)
        log.sekiban(t, 1017, TEMPLATE_PERSIST_LEGACY,
                    {"ProjectorName": projector, "EventsProcessed": events, "SafeVersion": events - 12,
                     "UnsafeVersion": events, "EnvelopeSize": envelope,
                     "SafeThreshold": safe_at.strftime("%m/%d/%Y %H:%M:%S")}, old)
    for minute, envelope, ev in ((9, 48_211_000, 52_000), (19, 48_402_112, 52_300), (29, 48_655_360, 52_610),
                                 (39, 48_990_208, 52_900)):
        t = log.at(minute, 5)
        log.sekiban(t, 1017, TEMPLATE_PERSIST_LEGACY,
                    {"ProjectorName": small, "EventsProcessed": ev, "SafeVersion": ev - 10, "UnsafeVersion": ev,
                     "EnvelopeSize": envelope, "SafeThreshold": t.strftime("%m/%d/%Y %H:%M:%S")}, old)
    # the bulk import: catch-up batches of 5,000 events
    for n, minute in enumerate(range(30, 48, 2), start=1):
        t = log.at(minute, 50)
        log.sekiban(t, 1025, TEMPLATE_CATCH_UP_SUMMARY,
                    {"ProjectorName": projector, "BatchNumber": n, "StartPosition": _sortable_id(t, n),
                     "RequestedMaxCount": 5000, "FetchedCount": 5000, "ReadElapsedMs": 900 + 40 * n,
                     "PersistTriggered": n % 2 == 1, "PersistReason": "batch_size" if n % 2 == 1 else "none"},
                    old)
    # OOM kills and failing restores (the byte[] restore materialises the whole state)
    restore_values = {"ProjectorName": projector, "RecordEvents": events, "StateDataLen": OOM_ENVELOPE,
                      "OriginalSize": OOM_STATE, "CompressedSize": OOM_PAYLOAD, "PostSafeVersion": events - 12,
                      "PostUnsafeVersion": events}
    log.other(log.at(49, 8), "Application started. Press Ctrl+C to shut down.", old,
              {"CategoryName": "Microsoft.Hosting.Lifetime"})
    log.sekiban(log.at(49, 40), 1018, TEMPLATE_RESTORE, restore_values, old)
    log.sekiban(log.at(51, 10), 1003, TEMPLATE_RESTORE_FAILED,
                {"ProjectorName": projector, "Error": "Exception of type 'System.OutOfMemoryException' was thrown."},
                old, severity=3)
    log.other(log.at(52, 8), "Application started. Press Ctrl+C to shut down.", old,
              {"CategoryName": "Microsoft.Hosting.Lifetime"})
    log.sekiban(log.at(52, 30), 1008, TEMPLATE_BLOB_READ_FAILED,
                {"ProjectorName": projector, "IsOffloaded": True, "OffloadKey": offload_key}, old, severity=3)
    log.sekiban(log.at(53, 5), 1018, TEMPLATE_RESTORE, restore_values, old)
    log.sekiban(log.at(55, 25), 1003, TEMPLATE_RESTORE_FAILED,
                {"ProjectorName": projector, "Error": "Exception of type 'System.OutOfMemoryException' was thrown."},
                old, severity=3)
    log.other(log.at(56, 8), "Application started. Press Ctrl+C to shut down.", old,
              {"CategoryName": "Microsoft.Hosting.Lifetime"})
    # the fix: streaming persist + restore, smaller catch-up batches
    log.other(log.at(FIX_MINUTE, 2), "Application started. Press Ctrl+C to shut down.", new,
              {"CategoryName": "Microsoft.Hosting.Lifetime"})
    log.sekiban(log.at(61, 10), 1018, TEMPLATE_RESTORE, restore_values, new)
    log.sekiban(log.at(62, 30), 1002, TEMPLATE_RESTORE_SUCCESS,
                {"ProjectorName": projector, "Position": _sortable_id(start, events), "Events": events}, new)
    for n, minute in enumerate((62, 63, 64), start=1):
        t = log.at(minute, 40)
        log.sekiban(t, 1025, TEMPLATE_CATCH_UP_SUMMARY,
                    {"ProjectorName": projector, "BatchNumber": n, "StartPosition": _sortable_id(t, n),
                     "RequestedMaxCount": 500, "FetchedCount": 500, "ReadElapsedMs": 95 + n,
                     "PersistTriggered": False, "PersistReason": "none"}, new)
    temp = 424_312_832
    for minute in range(65, DURATION_MIN, 5):
        events += 4_000
        temp += 1_572_864
        log.sekiban(log.at(minute, 20), 1017, TEMPLATE_PERSIST_STREAMING,
                    {"ProjectorName": projector, "BuildMs": 9_050 + rng.randint(0, 600),
                     "UploadMs": 3_000 + rng.randint(0, 350), "TempFileBytes": temp,
                     "PeakMemory": 381_000_000 + rng.randint(0, 30_000_000), "Events": events}, new)
    for minute, ev in ((68, 53_300), (88, 53_700), (108, 54_100)):
        log.sekiban(log.at(minute, 5), 1017, TEMPLATE_PERSIST_STREAMING,
                    {"ProjectorName": small, "BuildMs": 810 + rng.randint(0, 60), "UploadMs": 230 + rng.randint(0, 30),
                     "TempFileBytes": 48_000_000 + ev * 20, "PeakMemory": 91_000_000 + rng.randint(0, 4_000_000),
                     "Events": ev}, new)
    # what else a traces export holds: health checks, a catch-up start (not charted)
    for minute in range(0, DURATION_MIN, 7):
        inst = old if minute < FIX_MINUTE else new
        log.other(log.at(minute, 33), "Request finished HTTP/1.1 GET http://kenbai-api/health - 200 - text/plain 1.2ms",
                  inst, {"CategoryName": "Microsoft.AspNetCore.Hosting.Diagnostics"})
    log.other(log.at(30, 1), f"Catch-up started: {projector}", old,
              {"CategoryName": CATEGORY, "EventId": "1004", "EventName": "CatchUpStarted", "ProjectorName": projector})

    log.rows.sort(key=lambda r: r[0])
    with open(path, "w", newline="", encoding="utf-8-sig") as f:  # the portal writes a BOM
        w = csv.writer(f)
        w.writerow(["timestamp [UTC]", "message", "severityLevel", "itemType", "customDimensions",
                    "cloud_RoleName", "cloud_RoleInstance"])
        for t, row in log.rows:
            w.writerow([_portal_time(t), row["message"], row["severityLevel"], "trace", row["customDimensions"],
                        "kenbai-api", row["cloud_RoleInstance"]])


def _write_memory(path: str, start: _dt.datetime, limit: int, rng: random.Random) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write("Resource: kenbai-api (Container App), memory limit %.1f GiB per replica\n" % (limit / GiB))
        f.write("Aggregation: Maximum (memory), Total (restarts); interval 1 minute\n")
        f.write("\n")
        f.write("TimeGenerated [UTC],WorkingSetBytes,MemoryPercentage,RestartCount\n")
        for minute in range(DURATION_MIN + 1):
            t = start + _dt.timedelta(minutes=minute)
            share = _memory_share(minute, rng)
            restarts = 1 if minute in RESTARTS else 0
            f.write(f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{int(share * limit)},{share * 100:.1f},{restarts}\n")
