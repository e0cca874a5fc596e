"""Orphan-blob audit: which blobs of a container no snapshot row of any service references.

Report only: nothing is deleted here (``gc-blobs`` consumes the report). Sekiban's rule is that
absence alone never authorises deletion, so the audit is conservative:

* referenced keys = every row's OffloadKey plus every envelope's ``offloadedState.offloadKey``,
  over every row (tombstoned included) of every service that may use the container: envelopes
  are decoded in full (inline StateData or record-level blob; the payload is streamed through,
  never kept; payload blobs are never opened);
* an orphan is a listed blob that is not referenced and whose last modification is older than
  the grace window (default 24 h): a persist uploads its blobs *before* writing the row;
* if any row cannot be read or decoded, or any service cannot be listed, or the set of services
  is not known to be complete, the audit certifies nothing: ``orphans`` is empty,
  ``certified`` is False and ``reason`` says why (``undecodable`` lists the rows).

Services: ``services=[...]`` (explicit), else the store's ``list_service_ids()`` when it has
one, else a read-only discovery for the built-in stores (distinct ServiceId on SQLite/Postgres,
pk prefixes on Cosmos), else only the store's own service (then nothing is certified). The
report's ``services`` / ``servicesSource`` say which were covered.
"""

from __future__ import annotations

import copy
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from ..errors import ConcurrencyConflictError, SekiopsError, UsageError
from ..state.base import StateStore, iter_rows

DEFAULT_GRACE = timedelta(hours=24)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|weeks?)\s*$", re.I)
_UNITS = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600,
          "d": 86400, "day": 86400, "days": 86400, "w": 604800, "wk": 604800, "week": 604800, "weeks": 604800}


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``90s``, ``2w`` or ``0`` as a timedelta."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, (int, float)):
        if text == 0:
            return timedelta(0)
        raise UsageError(f"grace {text!r} needs a unit: e.g. 30m, 24h, 7d")
    s = str(text).strip()
    if s in ("0", "0s", "0h", "0m", "0d"):
        return timedelta(0)
    m = _DURATION.match(s)
    if not m:
        raise UsageError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d or 0)")
    seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    return timedelta(seconds=seconds)


# --- services ------------------------------------------------------------------------------------


def discover_service_ids(state: StateStore) -> tuple[list[str] | None, str]:
    """(service ids, source) of every service in the store, or (None, "own-only") when unknown.

    ``source``: ``store`` (its ``list_service_ids()``) or ``own-only`` (a store without it).
    """
    lister = getattr(state, "list_service_ids", None)
    if not callable(lister):
        return None, "own-only"
    return sorted(set(lister()) | {state.service_id}), "store"


def scoped_store(state: StateStore, service_id: str) -> StateStore:
    """The same store scoped to another service id (its ``for_service`` when it has one).

    Fallback for the built-in stores, which read ``self.service_id`` on every call: a shallow
    copy sharing the connection. Do not close the copy (it would close the original's client).
    """
    if service_id == state.service_id:
        return state
    maker = getattr(state, "for_service", None)
    if callable(maker):
        return maker(service_id)
    from ..format.record import check_service_id

    check_service_id(service_id)
    clone = copy.copy(state)
    clone.service_id = service_id
    return clone


# --- references ----------------------------------------------------------------------------------


def row_references(state: StateStore, blob, row) -> list[str]:
    """Blob keys one row references: its OffloadKey and its envelope's payload key (full decode).

    Raises SekiopsError when the envelope cannot be read or decoded.
    """
    from ..format.envelope import read_envelope

    refs: list[str] = []
    where = f"{state.location} {row.where}"
    if row.is_offloaded:
        if not row.offload_key:
            raise UsageError(f"{where}: row is offloaded but has no OffloadKey")
        refs.append(row.offload_key)
        if blob is None:
            raise UsageError(f"{where}: envelope is in blob storage but no blob store was given")
        stream = blob.open_read(row.offload_key)
        where += f" envelope blob {row.offload_key!r}"
    else:
        stream = state.open_state_stream(row)
        where += " StateData"
    try:
        env = read_envelope(stream, where, payload_sink=None)
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001
            pass
    if env.is_offloaded and env.offload_key:
        refs.append(env.offload_key)
    return refs


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value is not None else None


def audit_orphans(state: StateStore, blob, *, services: Iterable[str] | None = None,
                  states: Iterable[StateStore] | None = None,
                  state_for: Callable[[str], StateStore] | None = None,
                  grace: timedelta | str = DEFAULT_GRACE, now: datetime | None = None, prefix: str = "",
                  progress: Callable[[str, int], object] | None = None) -> dict:
    """Audit ``blob`` against the rows of every service; see the module docstring.

    ``states``: stores already scoped to each service (their service ids are the services covered
    unless ``services`` is given); ``state_for(service_id)``: opens a store for a service (the CLI
    reopens the URL); otherwise :func:`scoped_store`. ``prefix`` limits the blob listing.
    ``progress(phase, n)`` is called as rows and blobs are counted.

    Returns a dict: ``orphans`` [{key, bytes, lastModified}], ``certified``, ``reason``,
    ``referenced`` (distinct keys), ``undecodable`` [{serviceId, projectorName, projectorVersion,
    error}], ``services``, ``servicesSource``, ``rows``, ``tombstonedRows``, ``blobs``,
    ``blobBytes``, ``orphanBytes``, ``unreferencedWithinGrace`` (young unreferenced blobs),
    ``missingReferenced`` (referenced keys absent from the listing), ``graceSeconds``, ``asOf``,
    ``state``, ``blob``, ``warnings``, ``seconds``.
    """
    if blob is None:
        raise UsageError("the orphan audit needs a blob store (--blob URL or SEKIOPS_BLOB_URL)")
    t0 = time.perf_counter()
    grace_td = parse_duration(grace)
    if grace_td < timedelta(0):
        raise UsageError("grace must not be negative")
    now = now or datetime.now(timezone.utc)
    warnings: list[str] = []
    reasons: list[str] = []

    by_service: dict[str, StateStore] = {}
    for s in states or []:
        by_service.setdefault(s.service_id, s)
    if services is not None:
        from ..format.record import check_service_id

        service_ids = sorted({check_service_id(s) for s in services})
        source = "explicit"
    elif by_service:
        service_ids, source = sorted(by_service), "explicit"
    else:
        found, source = discover_service_ids(state)
        if found is None:
            service_ids = [state.service_id]
            reasons.append(f"{state.location} cannot list its service ids: only service {state.service_id!r} "
                           "was covered; pass services=[...] (--services) naming every service that may use "
                           "this blob container")
        else:
            service_ids = found

    refs: dict[str, str] = {}
    undecodable: list[dict] = []
    rows = tombstoned = 0
    for sid in service_ids:
        store = by_service.get(sid)
        try:
            if store is None:
                store = state_for(sid) if state_for is not None else scoped_store(state, sid)
                by_service[sid] = store
            for row in iter_rows(store):
                rows += 1
                tombstoned += int(row.is_tombstoned)
                for ref in _references_with_retry(store, blob, row, undecodable):
                    refs.setdefault(ref, row.where)
                if progress is not None:
                    progress("rows", rows)
        except SekiopsError as exc:
            undecodable.append({"serviceId": sid, "projectorName": None, "projectorVersion": None,
                                "error": f"cannot list the rows of service {sid!r}: {_short(exc)}"})
    if undecodable:
        reasons.append(f"{len(undecodable)} row(s) could not be decoded: their references are unknown, so no "
                       "blob can be certified as an orphan")

    listed = 0
    total_bytes = 0
    unreferenced: list[dict] = []
    young: list[dict] = []
    seen: set[str] = set()
    cutoff = now - grace_td
    for info in blob.list(prefix):
        listed += 1
        total_bytes += info.size
        seen.add(info.key)
        if progress is not None and listed % 1000 == 0:
            progress("blobs", listed)
        if info.key in refs:
            continue
        entry = {"key": info.key, "bytes": info.size, "lastModified": _iso(info.last_modified)}
        if info.last_modified is None:
            young.append(entry)
            warnings.append(f"blob {info.key!r} has no last-modified time: treated as within the grace window")
        elif info.last_modified > cutoff:
            young.append(entry)
        else:
            unreferenced.append(entry)
    missing = sorted(k for k in refs if k not in seen and k.startswith(prefix))

    certified = not reasons
    orphans = unreferenced if certified else []
    report = {
        "orphans": orphans,
        "certified": certified,
        "reason": "; ".join(reasons) if reasons else None,
        "referenced": len(refs),
        "undecodable": undecodable,
        "services": service_ids,
        "servicesSource": source,
        "rows": rows,
        "tombstonedRows": tombstoned,
        "blobs": listed,
        "blobBytes": total_bytes,
        "orphanCount": len(orphans),
        "orphanBytes": sum(o["bytes"] for o in orphans),
        "uncertifiedUnreferencedCount": 0 if certified else len(unreferenced),
        "unreferencedWithinGrace": young,
        "missingReferenced": [{"key": k, "referencedBy": refs[k]} for k in missing],
        "graceSeconds": grace_td.total_seconds(),
        "asOf": now.isoformat(),
        "prefix": prefix or None,
        "state": state.location,
        "blob": blob.location,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return report


#: The name gc-blobs looks for first.
audit = audit_orphans


def _references_with_retry(store, blob, row, undecodable: list) -> list[str]:
    for _ in range(3):
        try:
            return row_references(store, blob, row)
        except ConcurrencyConflictError:
            fresh = store.get(row.projector_name, row.projector_version)
            if fresh is None:
                return []
            row = fresh
        except SekiopsError as exc:
            undecodable.append({"serviceId": row.service_id, "projectorName": row.projector_name,
                                "projectorVersion": row.projector_version, "error": _short(exc)})
            return [row.offload_key] if row.is_offloaded and row.offload_key else []
        except Exception as exc:  # noqa: BLE001 - a bad row must not end the audit; it blocks certification
            undecodable.append({"serviceId": row.service_id, "projectorName": row.projector_name,
                                "projectorVersion": row.projector_version,
                                "error": f"{type(exc).__name__}: {_short(exc)}"})
            return [row.offload_key] if row.is_offloaded and row.offload_key else []
    undecodable.append({"serviceId": row.service_id, "projectorName": row.projector_name,
                        "projectorVersion": row.projector_version, "error": "row kept changing while read"})
    return [row.offload_key] if row.is_offloaded and row.offload_key else []


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


def summary_lines(report: dict) -> list[str]:
    """A few human lines for a report (CLI table format, notebooks)."""
    lines = [
        f"state {report['state']}  blob {report['blob']}",
        f"services covered ({report['servicesSource']}): {', '.join(report['services'])}",
        f"rows {report['rows']} (tombstoned {report['tombstonedRows']}), referenced keys {report['referenced']}, "
        f"blobs listed {report['blobs']} ({report['blobBytes']} bytes)",
        f"grace {report['graceSeconds']:.0f} s as of {report['asOf']}",
    ]
    if report["certified"]:
        lines.append(f"certified: {report['orphanCount']} orphan(s), {report['orphanBytes']} bytes")
    else:
        lines.append(f"NOT certified: {report['reason']}")
    for u in report["undecodable"]:
        lines.append(f"  undecodable: {u['serviceId']}/{u['projectorName']}/{u['projectorVersion']}: {u['error']}")
    for m in report["missingReferenced"]:
        lines.append(f"  referenced but missing: {m['key']} (by {m['referencedBy']})")
    if report["unreferencedWithinGrace"]:
        lines.append(f"  {len(report['unreferencedWithinGrace'])} unreferenced blob(s) within the grace window "
                     "(not orphans)")
    return lines


def orphans_frame(report: dict):
    """The certified orphans of a report as a DataFrame (key, bytes, lastModified)."""
    import pandas as pd

    return pd.DataFrame(report.get("orphans") or [], columns=["key", "bytes", "lastModified"])
