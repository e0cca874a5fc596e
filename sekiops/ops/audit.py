"""Orphan-blob audit: which blobs of a container no snapshot row of any service references.

Report only: nothing is deleted here (``gc-blobs`` consumes the report). Sekiban's rule is that
absence alone never authorises deletion, so the audit follows its ``OffloadKeyEnumerator``
(dcb-v10.23) and is conservative:

* referenced keys = every row's OffloadKey (when offloaded) plus every envelope's
  ``offloadedState.offloadKey`` (when ``isOffloaded``), over every row — every version,
  tombstones included — of every service sharing the container (keys carry no ServiceId).
  Envelopes are walked forward-only (:mod:`sekiops.format.references`): an inline state of any
  size is never materialised; payload blobs are never opened;
* a row that cannot be read, or whose envelope Sekiban would call undecodable (not exactly one
  JSON object, ``isOffloaded`` missing, not a boolean or given twice in any casing, invalid
  UTF-8, an offloaded envelope without an object ``offloadedState`` and a non-empty string
  ``offloadKey``...), makes the audit certify nothing: ``orphans`` is empty, ``certified`` is
  False and ``reason`` says why (``undecodable`` lists the rows);
* an orphan is a listed blob that is not referenced and whose last write is older than the
  grace window (default 24 h): a persist uploads its blobs *before* writing the row;
* references are re-checked after the listing: every row written since the first scan (a new
  token) is read again, and what it references is no orphan. Between this audit and a delete,
  gc-blobs re-checks again and deletes only the exact version certified here (``version``).

Scale: the blob listing is streamed page by page; referenced keys and orphans stay in memory
up to a budget and then move to private temp files (:mod:`sekiops.spill`), so memory does not
grow with the number of blobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta

from ..errors import ConcurrencyConflictError, CorruptSnapshotError, GuardRefusedError, SekiopsError, UsageError
from ..format.record import check_service_id
from ..format.references import read_envelope_reference
from ..pipeline import failpoints
from ..spill import KeySet, SpilledList
from ..state.base import StateStore, iter_rows
from ..units import format_bytes, format_count, format_duration, parse_duration

DEFAULT_GRACE = timedelta(hours=24)

__all__ = ["audit_orphans", "audit", "discover_service_ids", "scoped_store", "row_references", "RowWatch",
           "summary_lines", "orphans_frame", "parse_duration", "DEFAULT_GRACE"]


# --- services ------------------------------------------------------------------------------------


def discover_service_ids(state: StateStore) -> tuple[list[str] | None, str]:
    """(service ids, source) of every service in the store's table or container.

    ``source`` is ``store``; (None, ``partial``) when the store declares that its listing may
    miss services (then only an explicit list lets an audit certify).
    """
    if not state.capabilities.lists_all_services:
        return None, "partial"
    return sorted(set(state.list_service_ids()) | {state.service_id}), "store"


def scoped_store(state: StateStore, service_id: str) -> StateStore:
    """The same store scoped to another service id (it shares the connection; do not close it)."""
    return state if service_id == state.service_id else state.for_service(check_service_id(service_id))


# --- references ----------------------------------------------------------------------------------


def row_references(state: StateStore, blob, row) -> list[str]:
    """Blob keys one row references, as Sekiban's OffloadKeyEnumerator reads them.

    The row's OffloadKey when it is offloaded, then the envelope's payload key when the envelope
    is offloaded. Raises SekiopsError when the row is undecodable (see the module docstring).
    """
    refs: list[str] = []
    where = f"{state.location} {row.where}"
    if row.is_offloaded:
        if not row.offload_key:
            raise CorruptSnapshotError(f"{where}: row is offloaded but has no OffloadKey")
        refs.append(row.offload_key)
        if blob is None:
            raise UsageError(f"{where}: envelope is in blob storage but no blob store was given")
        stream = blob.open_read(row.offload_key)
        where += f" envelope blob {row.offload_key!r}"
    else:
        stream = state.open_state_stream(row)
        where += " StateData"
    try:
        ref = read_envelope_reference(stream, where)
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - closing a read stream must not hide the real outcome
            pass
    if ref.is_offloaded and ref.key:
        refs.append(ref.key)
    return refs


class RowWatch:
    """Row tokens of every service at one moment, and the references of rows written since.

    ``snapshot()`` records every row's compare-and-swap token; ``refresh()`` lists the rows
    again (metadata only) and reads the references of every row that is new or whose token
    moved. A changed row that cannot be decoded raises (its references are unknown).
    """

    def __init__(self, stores: dict[str, StateStore], blob):
        self.stores = stores
        self.blob = blob
        self.tokens: dict[tuple[str, str, str], str | None] = {}
        self.refs: dict[str, str] = {}
        self._lock = threading.Lock()
        self._last_start = float("-inf")

    def remember(self, row) -> None:
        self.tokens[(row.service_id, row.projector_name, row.projector_version)] = row.token

    def snapshot(self) -> None:
        self.tokens.clear()
        for store in self.stores.values():
            for row in iter_rows(store):
                self.remember(row)

    def refresh(self) -> list[str]:
        """Read the references of rows written since the last look; return the new keys.

        Thread-safe, and coalescing: concurrent callers (gc workers) wait for one listing; a
        caller is served by any listing that *started* after it asked, so what it sees is never
        older than its own call.
        """
        asked = time.monotonic()
        with self._lock:
            if self._last_start >= asked:
                return []
            start = time.monotonic()
            found = self._refresh()
            self._last_start = start
            return found

    def _refresh(self) -> list[str]:
        found: list[str] = []
        for store in self.stores.values():
            for row in iter_rows(store):
                key = (row.service_id, row.projector_name, row.projector_version)
                if key in self.tokens and self.tokens[key] == row.token:
                    continue
                for ref in _changed_row_references(store, self.blob, row):
                    ref = self.blob.canonical_key(ref)  # as the listing names it
                    if ref not in self.refs:
                        self.refs[ref] = row.where
                        found.append(ref)
                self.tokens[key] = row.token
        return found

    def referenced_by(self, key: str) -> str | None:
        """The row referencing ``key`` (a listed name, or any key: compared as the store keeps it)."""
        return self.refs.get(self.blob.canonical_key(key))


def _changed_row_references(store, blob, row) -> list[str]:
    refs: list[str] = []
    for _ in range(3):
        if row.is_offloaded and row.offload_key:
            refs.append(row.offload_key)  # kept even if the envelope then fails to decode
        try:
            return refs + row_references(store, blob, row)
        except ConcurrencyConflictError:
            row = store.get(row.projector_name, row.projector_version)
            if row is None:
                return refs
        except SekiopsError as exc:
            raise GuardRefusedError(f"{row.where} was written during the audit and cannot be decoded ({exc}); "
                                    "its references are unknown, so nothing is certified") from None
    raise GuardRefusedError(f"{row.where} keeps changing; nothing is certified")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def audit_orphans(state: StateStore, blob, *, services: Iterable[str] | None = None,
                  states: Iterable[StateStore] | None = None,
                  state_for: Callable[[str], StateStore] | None = None,
                  grace: timedelta | str = DEFAULT_GRACE, now: datetime | None = None, prefix: str = "",
                  progress: Callable[[str, int], object] | None = None,
                  after_listing: Callable[[], object] | None = None, concurrency: int = 4) -> dict:
    """Audit ``blob`` against the rows of every service; see the module docstring.

    ``states``: stores already scoped to each service (their service ids are the services covered
    unless ``services`` is given); ``state_for(service_id)``: opens a store for a service;
    otherwise ``state.for_service``. ``prefix`` limits the blob listing. ``progress(phase, n)``
    is called as rows and blobs are counted. ``after_listing`` runs between the listing and the
    final reference re-check (tests interleave writes there).

    Returns a dict: ``orphans`` [{key, bytes, lastModified, version}] (a sequence that may live on
    disk: iterate it), ``certified``, ``reason``, ``referenced`` (distinct keys), ``undecodable``
    [{serviceId, projectorName, projectorVersion, error}], ``services``, ``servicesSource``,
    ``rows``, ``tombstonedRows``, ``blobs``, ``blobBytes``, ``orphanBytes``,
    ``unreferencedWithinGrace`` (young unreferenced blobs), ``referencedSinceListing`` (blobs a row
    written during the audit references: no orphans), ``missingReferenced`` (referenced keys
    absent from the listing), ``graceSeconds``, ``asOf``, ``state``, ``blob``, ``warnings``,
    ``seconds``.
    """
    if blob is None:
        raise UsageError("the orphan audit needs a blob store (--blob URL or SEKIOPS_BLOB_URL)")
    t0 = time.perf_counter()
    grace_td = parse_duration(grace, what="grace")
    now = now or datetime.now(UTC)
    warnings: list[str] = []
    reasons: list[str] = []

    by_service: dict[str, StateStore] = {}
    for s in states or []:
        by_service.setdefault(s.service_id, s)
    if services is not None:
        service_ids = sorted({check_service_id(s) for s in services})
        source = "explicit"
    elif by_service:
        service_ids, source = sorted(by_service), "explicit"
    else:
        found, source = discover_service_ids(state)
        if found is None:
            service_ids = [state.service_id]
            reasons.append(f"{state.location} cannot list every service sharing its table: only service "
                           f"{state.service_id!r} was covered; pass services=[...] (--services) naming every "
                           "service that may use this blob container")
        else:
            service_ids = found

    refs = KeySet()
    undecodable: list[dict] = []
    rows = tombstoned = 0
    watch_stores: dict[str, StateStore] = {}
    watch = RowWatch(watch_stores, blob)
    for sid in service_ids:
        store = by_service.get(sid)
        try:
            if store is None:
                store = state_for(sid) if state_for is not None else scoped_store(state, sid)
                by_service[sid] = store
            watch_stores[sid] = store

            def read(row, store=store):
                return row, _references_with_retry(store, blob, row, undecodable)

            for row, found in _bounded_map(read, iter_rows(store), concurrency):
                rows += 1
                tombstoned += int(row.is_tombstoned)
                watch.remember(row)
                for ref in found:
                    refs.add(blob.canonical_key(ref), row.where)
                if progress is not None:
                    progress("rows", rows)
        except SekiopsError as exc:
            undecodable.append({"serviceId": sid, "projectorName": None, "projectorVersion": None,
                                "error": f"cannot list the rows of service {sid!r}: {_short(exc)}"})
    if state.capabilities.eventually_consistent_listing:
        warnings.append(f"{state.location} lists rows with eventual consistency: rows written in the last "
                        "moments may be missing; gc-blobs re-checks references right before each delete")

    listed = total_bytes = 0
    candidates = SpilledList()
    young = SpilledList()
    cutoff = now - grace_td
    try:
        for info in blob.list(prefix):
            listed += 1
            total_bytes += info.size
            if progress is not None and listed % 1000 == 0:
                progress("blobs", listed)
            if refs.mark_seen(info.key):
                continue
            entry = {"key": info.key, "bytes": info.size, "lastModified": _iso(info.last_modified),
                     "version": info.version}
            if info.last_modified is None:
                young.append(entry)
                warnings.append(f"blob {info.key!r} has no last-modified time: treated as within the grace window")
            elif info.last_modified > cutoff:
                young.append(entry)
            else:
                candidates.append(entry)
        failpoints.hit("audit_after_listing")
        if after_listing is not None:
            after_listing()
        late: dict[str, str] = {}
        try:
            for key in watch.refresh():
                late[key] = watch.referenced_by(key) or ""
                refs.add(key, late[key])
        except SekiopsError as exc:
            reasons.append(str(exc))
        if undecodable:
            reasons.append(f"{len(undecodable)} row(s) could not be decoded: their references are unknown, so no "
                           "blob can be certified as an orphan")
        certified = not reasons
        orphans = SpilledList()
        unreferenced = 0
        referenced_since: list[dict] = []
        for entry in candidates:
            if entry["key"] in late:
                referenced_since.append({**entry, "referencedBy": late[entry["key"]]})
                continue
            unreferenced += 1
            if certified:
                orphans.append(entry)
        missing = [{"key": k, "referencedBy": r} for k, r in refs.unseen()
                   if k.startswith(prefix) and k not in late]
        referenced = len(refs)
    finally:
        candidates.close()
        refs.close()
    return {
        "orphans": orphans,
        "certified": certified,
        "reason": "; ".join(reasons) if reasons else None,
        "referenced": referenced,
        "undecodable": undecodable,
        "services": service_ids,
        "servicesSource": source,
        "rows": rows,
        "tombstonedRows": tombstoned,
        "blobs": listed,
        "blobBytes": total_bytes,
        "orphanCount": len(orphans),
        "orphanBytes": sum(o["bytes"] for o in orphans),
        "uncertifiedUnreferencedCount": 0 if certified else unreferenced,
        "unreferencedWithinGrace": young,
        "referencedSinceListing": referenced_since,
        "missingReferenced": missing,
        "graceSeconds": grace_td.total_seconds(),
        "asOf": now.isoformat(),
        "prefix": prefix or None,
        "state": state.location,
        "blob": blob.location,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - t0, 3),
    }


#: The name gc-blobs looks for first.
audit = audit_orphans


def _bounded_map(fn, items, limit: int):
    """``fn`` over ``items`` with at most ``limit`` calls in flight; results as they complete."""
    if limit <= 1:
        for item in items:
            yield fn(item)
        return

    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="sekiops-audit") as pool:
        inflight: set = set()
        for item in items:
            if len(inflight) >= limit:
                done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
            inflight.add(pool.submit(fn, item))
        for f in inflight:
            yield f.result()


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
        f"rows {format_count(report['rows'])} (tombstoned {format_count(report['tombstonedRows'])}), "
        f"referenced keys {format_count(report['referenced'])}, blobs listed {format_count(report['blobs'])} "
        f"({format_bytes(report['blobBytes'])})",
        f"grace {format_duration(report['graceSeconds'])} as of {report['asOf']}",
    ]
    if report["certified"]:
        lines.append(f"certified: {format_count(report['orphanCount'])} orphan(s), "
                     f"{format_bytes(report['orphanBytes'])}")
    else:
        lines.append(f"NOT certified: {report['reason']}")
    for u in report["undecodable"]:
        lines.append(f"  undecodable: {u['serviceId']}/{u['projectorName']}/{u['projectorVersion']}: {u['error']}")
    for m in report["missingReferenced"]:
        lines.append(f"  referenced but missing: {m['key']} (by {m['referencedBy']})")
    for r in report.get("referencedSinceListing") or []:
        lines.append(f"  referenced by a row written during the audit (no orphan): {r['key']} (by {r['referencedBy']})")
    if report["unreferencedWithinGrace"]:
        lines.append(f"  {len(report['unreferencedWithinGrace'])} unreferenced blob(s) within the grace window "
                     "(not orphans)")
    return lines


def orphans_frame(report: dict):
    """The certified orphans of a report as a DataFrame (key, bytes, lastModified)."""
    import pandas as pd

    return pd.DataFrame(list(report.get("orphans") or []), columns=["key", "bytes", "lastModified"])
