"""Migration plans: what would change, row by row, before anything does.

A :class:`Plan` lists :class:`PlanItem` s (one per row, or per blob for gc-blobs) with the bytes
each moves, plus what was left out and why, and the :mod:`.estimate` totals. Planners read
metadata (``reencode`` also reads each envelope, as only its bytes tell v9 or ``payloadJson``
apart) and never write. A plan is a snapshot: the runner re-checks every item against the row
as it is when its turn comes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import timedelta

from ...errors import GuardRefusedError, SekiopsError, UsageError
from ...format.envelope import EnvelopeMeta, inline_envelope_length, offloaded_envelope_bytes, read_envelope
from ...format.keys import content_hash
from ...format.record import SnapshotRow, parse_timestamp, utcnow
from ...spill import SpilledList
from ...state.base import iter_rows
from ...streams import HashingReader
from ...units import format_bytes, format_duration
from ..audit import row_references
from ..inventory import read_envelope_head
from .endpoints import Endpoints
from .estimate import Estimate, blob_kind, estimate
from .gcscan import reference_watch, run_audit, service_ids

#: the plan/run actions, by kind
ACTIONS = {
    "offload": ("offload-record", "offload-payload"),
    "reencode": ("reencode-v9", "reencode-payload-json"),
    "copy": ("copy",),
    "gc-blobs": ("delete-blob",),
    "rekey": ("rekey",),
}
DEFAULT_GRACE_HOURS = 24.0


@dataclasses.dataclass
class PlanItem:
    #: ``ProjectorName/ProjectorVersion`` (the blob key for gc-blobs)
    item: str
    action: str
    projector_name: str | None = None
    projector_version: str | None = None
    #: compare-and-swap token when planned (informational: the runner re-reads)
    token: str | None = None
    events_processed: int | None = None
    #: envelope bytes as stored now (row StateData, or the record-level blob)
    stored_bytes: int = 0
    #: StateData bytes in the row store, now and after (estimates for rewrites)
    inline_before: int = 0
    inline_after: int = 0
    upload_bytes: int = 0
    read_bytes: int = 0
    delete_bytes: int = 0
    backup_bytes: int = 0
    #: where the envelope goes: ``inline`` or ``blob`` (``-`` for gc-blobs)
    placement: str = "-"
    note: str = ""
    #: gc-blobs: the blob version the audit certified (the delete is conditional on it)
    version: str | None = None
    #: where the payload lives after the change: ``inline``, ``blob`` (``-``: not known or n/a)
    payload_location: str = "-"
    #: the target store's own limits this item runs into (each a sentence)
    flags: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return {_camel(k): v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> PlanItem:
        names = {_camel(f.name): f.name for f in dataclasses.fields(cls)}
        return cls(**{names[k]: v for k, v in data.items() if k in names})


class PlanItems(Sequence):
    """Plan items kept as records, in memory up to a budget and then on disk (sekiops.spill):
    a gc of a million orphans must not hold a million objects."""

    def __init__(self):
        self.records = SpilledList()

    def append(self, item: PlanItem) -> None:
        self.records.append(item.to_dict())

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        for rec in self.records:
            yield PlanItem.from_dict(rec)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [PlanItem.from_dict(r) for r in self.records[index]]
        return PlanItem.from_dict(self.records[index])

    def __eq__(self, other) -> bool:
        if isinstance(other, (list, tuple, PlanItems)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented


@dataclasses.dataclass
class Plan:
    kind: str
    where: dict
    params: dict
    items: list[PlanItem]
    #: rows (or blobs) looked at and left alone: [{"item", "reason"}]
    skipped: list[dict]
    estimate: Estimate
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: a guard refused the whole migration (nothing may run); the reason
    refused: str | None = None
    created_at: str = dataclasses.field(default_factory=lambda: utcnow().isoformat())
    #: bytes read while planning
    planning_bytes_read: int = 0
    #: gc-blobs: what the re-check before each delete starts from (not serialised)
    context: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def target_service_id(self) -> str:
        return (self.where.get("target") or self.where)["serviceId"]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "where": self.where, "params": self.params, "createdAt": self.created_at,
                "refused": self.refused, "warnings": self.warnings, "estimate": self.estimate.to_dict(),
                "planningBytesRead": self.planning_bytes_read,
                "items": (self.items.records if isinstance(self.items, PlanItems)
                          else [i.to_dict() for i in self.items]), "skipped": self.skipped}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_frame(self):
        """The items as a pandas DataFrame (one row per item)."""
        import pandas as pd

        cols = ["item", "action", "placement", "storedBytes", "inlineBefore", "inlineAfter", "uploadBytes",
                "deleteBytes", "note"]
        return pd.DataFrame([i.to_dict() for i in self.items], columns=cols)

    def summary_lines(self) -> list[str]:
        e = self.estimate
        lines = [f"migration: {self.kind}   target service: {self.target_service_id}",
                 f"where: {json.dumps(self.where, default=str)}",
                 f"parameters: {json.dumps(self.params, default=str)}"]
        if self.refused:
            lines.append(f"REFUSED: {self.refused}")
        what = "blobs to delete" if self.kind == "gc-blobs" else "rows to change"
        flagged = sum(1 for i in self.items if i.flags)
        lines += [f"{what}: {e.rows:,}   left alone: {len(self.skipped):,}"
                  + (f"   running into the target's limits: {flagged:,}" if flagged else ""),
                  f"read: {format_bytes(e.bytes_read)}   uploaded to blobs: {format_bytes(e.bytes_uploaded)}   "
                  f"written into rows: {format_bytes(e.bytes_written_rows)}",
                  f"freed in the row store: {format_bytes(e.bytes_freed_rows)}"
                  + (f"   blob bytes deleted: {format_bytes(e.blob_bytes_deleted)}" if e.blob_bytes_deleted else ""),
                  f"backups kept with the journal: {format_bytes(e.bytes_backed_up)}"]
        if e.cosmos_applies:
            lines.append(f"estimated Cosmos DB request units: {e.cosmos_ru:,.0f}")
        lines.append(f"estimated time: {format_duration(e.seconds)}")
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


# --- planners ------------------------------------------------------------------------------------


def make_plan(kind: str, ep: Endpoints, *, projector: str | None = None, threshold: int | None = None,
              payload_level: bool = False, grace_hours: float = DEFAULT_GRACE_HOURS,
              services: list[str] | None = None, rate: float | None = None, prefix: str = "") -> Plan:
    """Plan a migration of ``kind`` over the endpoints' rows (optionally one projector only)."""
    if kind == "offload":
        return plan_offload(ep, threshold=threshold, payload_level=payload_level, projector=projector, rate=rate)
    if kind == "reencode":
        return plan_reencode(ep, projector=projector, rate=rate)
    if kind == "copy":
        return plan_copy(ep, projector=projector, rate=rate)
    if kind == "gc-blobs":
        return plan_gc(ep, grace_hours=grace_hours, services=services, rate=rate, prefix=prefix)
    if kind == "rekey":
        return plan_rekey(ep, projector=projector, rate=rate)
    raise UsageError(f"unknown migration {kind!r}")


def _finish(kind, ep: Endpoints, params, items, skipped, rate, **extra) -> Plan:
    est = estimate(items, read_kind=ep.state.kind, write_kind=ep.target_state.kind,
                   blob=blob_kind(ep.target_blob), rate=rate,
                   per_delete_rows=extra.pop("per_delete_rows", 0))
    return Plan(kind, ep.where(), params, items, skipped, est, **extra)


def _item(row: SnapshotRow, action: str, **kw) -> PlanItem:
    kw.setdefault("stored_bytes", row.stored_bytes or 0)
    return PlanItem(item=f"{row.projector_name}/{row.projector_version}", action=action,
                    projector_name=row.projector_name, projector_version=row.projector_version,
                    token=row.token, events_processed=row.events_processed, **kw)


def _skip(row: SnapshotRow, reason: str) -> dict:
    return {"item": f"{row.projector_name}/{row.projector_version}", "reason": reason}


def record_offload_refusal(state) -> str | None:
    """Why a state store refuses record-level offloaded rows (its declared capability), or None."""
    caps = state.capabilities
    if caps.record_offload:
        return None
    return (f"{state.location}: {caps.record_offload_refusal or 'this store holds no record-level offloaded rows'}"
            "; use --payload-level to offload the payload instead")


def plan_offload(ep: Endpoints, *, threshold: int | None, payload_level: bool, projector: str | None,
                 rate: float | None = None) -> Plan:
    state = ep.state
    if threshold is None:
        threshold = state.record_offload_threshold
        if threshold is None:
            raise UsageError(f"{state.location} has no record-level offload threshold (Sekiban's SQLite store "
                             "never offloads); pass --threshold BYTES")
    if threshold < 0:
        raise UsageError("--threshold must not be negative")
    action = "offload-payload" if payload_level else "offload-record"
    params = {"threshold": threshold, "payloadLevel": payload_level, "projector": projector}
    refused = None if payload_level else record_offload_refusal(state)
    small_env = len(offloaded_envelope_bytes(EnvelopeMeta(), "x" * 90, ep.required_blob().provider, 0)) + 200
    items, skipped = [], []
    for row in iter_rows(state, projector_name=projector):
        if row.is_tombstoned:
            skipped.append(_skip(row, "tombstoned"))
            continue
        if row.is_offloaded:
            continue  # already in a blob
        size = row.state_length or 0
        if size <= threshold:
            continue
        if payload_level:
            items.append(_item(row, action, inline_before=size, inline_after=small_env,
                               upload_bytes=size * 3 // 4, read_bytes=size, backup_bytes=size,
                               placement="inline", note="payload to a blob, small envelope stays inline"))
        else:
            items.append(_item(row, action, inline_before=size, inline_after=0, upload_bytes=size,
                               read_bytes=size, backup_bytes=size, placement="blob"))
    return _finish("offload", ep, params, items, skipped, rate, refused=refused)


def needs_reencode(env) -> str | None:
    """The reencode action an envelope needs (v9 gzip or legacy payloadJson), or None."""
    if env.gzipped:
        return "reencode-v9"
    if env.payload_source == "json":
        return "reencode-payload-json"
    return None


def open_envelope(state, blob, row: SnapshotRow):
    """The row's stored envelope bytes as a stream (inline StateData or record-level blob)."""
    if row.is_offloaded:
        if blob is None:
            raise UsageError(f"{row.where}: the envelope is in blob storage; pass --blob URL")
        return blob.open_read(row.offload_key)
    return state.open_state_stream(row)


def plan_reencode(ep: Endpoints, *, projector: str | None, rate: float | None = None) -> Plan:
    state, blob = ep.state, ep.blob
    threshold = state.record_offload_threshold
    items, skipped, read = [], [], 0
    for row in iter_rows(state, projector_name=projector):
        if row.is_tombstoned:
            skipped.append(_skip(row, "tombstoned"))
            continue
        try:
            with HashingReader(open_envelope(state, blob, row)) as src:
                env = read_envelope(src, f"{state.location} {row.where}")
                src.drain()
                read += src.count
                stored = src.count
        except SekiopsError as exc:
            skipped.append(_skip(row, f"unreadable: {exc}"))
            continue
        action = needs_reencode(env)
        if action is None:
            continue
        if env.is_offloaded:
            assert env.offload_key, "read_envelope refuses an offloaded envelope without offloadKey"
            new_len = len(offloaded_envelope_bytes(env.meta, env.offload_key, env.storage_provider or "",
                                                   env.payload_length or 0))
        else:
            # '+' is written as \u002B: expect one in 64 Base64 characters (4/3 of the bytes)
            new_len = inline_envelope_length(env.meta, env.inline_length, plus_count=env.inline_length // 48)
        to_blob = blob is not None and threshold is not None and new_len > threshold
        inline_before = 0 if row.is_offloaded else stored
        items.append(_item(row, action, inline_before=inline_before, inline_after=0 if to_blob else new_len,
                           upload_bytes=new_len if to_blob else 0, read_bytes=stored, backup_bytes=stored,
                           placement="blob" if to_blob else "inline",
                           note=f"{'v9 gzip' if env.gzipped else 'v10'} envelope, payload "
                                f"{'offloaded' if env.is_offloaded else env.payload_source}"))
    plan = _finish("reencode", ep, {"projector": projector}, items, skipped, rate)
    plan.planning_bytes_read = read
    return plan


def keys_to_move(blob, row: SnapshotRow, refs: list[str]) -> list[str]:
    """The keys of ``row`` not where ``blob`` would write them now (another prefix, or old GUID keys).

    ``refs`` are the row's references (row-level key first when offloaded, then the payload key).
    """
    moves = []
    for i, key in enumerate(refs):
        name = (f"{row.projector_name}/{row.projector_version}" if row.is_offloaded and i == 0
                else row.projector_name)
        sha = content_hash(key)
        if sha is None or blob.key_for(name, sha) != key:
            moves.append(key)
    return moves


def plan_rekey(ep: Endpoints, *, projector: str | None, rate: float | None = None) -> Plan:
    """Rows whose blobs are not under the blob store's prefix (``?prefix=``): copied there (same
    bytes, Sekiban's key), the envelope rewritten to name the payload's new key, the row moved by
    compare-and-swap. The old blobs stay: gc-blobs removes them once no row references them."""
    state, blob = ep.state, ep.blob
    if blob is None:
        raise UsageError("rekey needs the blob store, with the new prefix in its URL (?prefix=...)")
    items, skipped = [], []
    for row in iter_rows(state, projector_name=projector):
        if row.is_tombstoned:
            skipped.append(_skip(row, "tombstoned: never rewritten (its blobs stay under their keys)"))
            continue
        try:
            refs = row_references(state, blob, row)
        except SekiopsError as exc:
            skipped.append(_skip(row, f"unreadable: {exc}"))
            continue
        moves = keys_to_move(blob, row, refs)
        if not moves:
            continue
        size = row.stored_bytes or 0
        items.append(_item(row, "rekey", inline_before=0 if row.is_offloaded else size,
                           inline_after=0 if row.is_offloaded else size, read_bytes=size, backup_bytes=size,
                           upload_bytes=size if row.is_offloaded else 0,
                           placement="blob" if row.is_offloaded else "inline",
                           note=f"moves {', '.join(moves)} under prefix {blob.prefix!r}"))
    return _finish("rekey", ep, {"projector": projector, "prefix": blob.prefix}, items, skipped, rate)


def plan_copy(ep: Endpoints, *, projector: str | None, rate: float | None = None) -> Plan:
    """Every active source row not in the target, and where its bytes will live there.

    A bounded head of each source envelope (sekiops.ops.inventory) tells whether the payload is
    in a blob and how big it is; the target's own thresholds and limits decide where the
    envelope goes. ``uploadBytes`` counts every blob byte the copy writes (payload blobs and
    envelopes that go to blobs); ``flags`` name the target limits a row runs into.
    """
    src, dst, dst_blob = ep.state, ep.target_state, ep.target_blob
    existing = {(r.projector_name, r.projector_version) for r in iter_rows(dst, projector_name=projector)}
    threshold = dst.record_offload_threshold
    items, skipped, read = [], [], 0
    for row in iter_rows(src, projector_name=projector):
        if row.is_tombstoned:
            skipped.append(_skip(row, "tombstoned in the source"))
            continue
        if (row.projector_name, row.projector_version) in existing:
            skipped.append(_skip(row, "exists in the target (never overwritten)"))
            continue
        head = read_envelope_head(src, ep.blob, row)
        read += head.bytes_read
        envelope = head.envelope_bytes or row.stored_bytes or 0
        payload_blob = (head.payload_length or head.payload_compressed or 0) if head.payload_offloaded else 0
        flags = []
        if head.undecodable or head.missing_blob:
            skipped.append(_skip(row, f"unreadable in the source: {head.error}"))
            continue
        to_blob = threshold is not None and envelope > threshold and dst.capabilities.record_offload
        if to_blob and dst_blob is None:
            flags.append(f"envelope of {envelope:,} bytes is above {dst.kind}'s record threshold ({threshold:,}) "
                         "and there is no target blob store (--to-blob)")
            to_blob = False
        if not to_blob and dst.inline_limit is not None and envelope > dst.inline_limit:
            flags.append(f"envelope of {envelope:,} bytes exceeds {dst.kind}'s inline limit ({dst.inline_limit:,}): "
                         "the copy of this row will be refused")
        if head.payload_offloaded and dst_blob is None:
            flags.append("payload is in a blob and there is no target blob store (--to-blob): skipped at run time")
        upload = payload_blob + (envelope if to_blob else 0)
        items.append(_item(row, "copy", inline_before=0, inline_after=0 if to_blob else envelope,
                           upload_bytes=upload if dst_blob is not None else 0, read_bytes=envelope + payload_blob,
                           stored_bytes=envelope, placement="blob" if to_blob else "inline",
                           payload_location=("blob" if head.payload_offloaded else
                                             "inline" if head.payload_offloaded is False else "-"),
                           flags=flags,
                           note=(f"payload blob of {payload_blob:,} bytes copied" if payload_blob
                                 else "payload inline")))
    params = {"projector": projector}
    warnings = []
    if dst_blob is None:
        warnings.append("no target blob store: rows whose envelope or payload is in a blob cannot be copied")
    plan = _finish("copy", ep, params, items, skipped, rate, warnings=warnings)
    plan.planning_bytes_read = read
    return plan


# --- gc-blobs ------------------------------------------------------------------------------------


def plan_gc(ep: Endpoints, *, grace_hours: float, services: list[str] | None, rate: float | None = None,
            prefix: str = "") -> Plan:
    """Certified orphans of the orphan audit, to delete; nothing when the audit cannot certify.

    Refused on a blob store that cannot delete conditionally (it could delete a blob written
    again after the audit), with the store's own explanation.
    """
    if grace_hours < 0:
        raise UsageError("--grace must not be negative")
    caps = ep.blob.capabilities if ep.blob is not None else None
    sids = service_ids(ep, services)
    watch = reference_watch(ep, sids)  # before the audit: rows that change after it are re-read before each delete
    report = run_audit(ep, sids, grace_hours, prefix)
    cutoff = utcnow() - timedelta(hours=grace_hours)
    params = {"graceHours": grace_hours, "services": sids, **({"prefix": prefix} if prefix else {})}
    items, skipped, refused = PlanItems(), [], None
    if caps is not None and not caps.conditional_delete:
        refused = (f"{ep.required_blob().location} cannot delete only the version the audit certified"
                   + (f": {caps.conditional_delete_note}" if caps.conditional_delete_note else ""))
    elif not report["certified"]:
        refused = f"the orphan audit certified nothing: {report.get('reason') or 'no reason given'}"
    else:
        for orphan in report["orphans"]:
            when = parse_timestamp(orphan.get("lastModified"))
            if when is None or when >= cutoff:
                skipped.append({"item": orphan["key"], "reason": "inside the grace window"})
                continue
            size = int(orphan["bytes"])
            items.append(PlanItem(item=orphan["key"], action="delete-blob", stored_bytes=size, delete_bytes=size,
                                  backup_bytes=size, read_bytes=size, note=f"last modified {when.isoformat()}",
                                  version=orphan.get("version")))
    plan = _finish("gc-blobs", ep, params, items, skipped, rate, refused=refused,
                   per_delete_rows=len(watch.tokens))
    plan.warnings += report.get("warnings") or []
    plan.context.update(watch=watch, cutoff=cutoff, audit=report)
    return plan


def check_runnable(plan: Plan) -> None:
    if plan.refused:
        raise GuardRefusedError(f"migration {plan.kind} refused: {plan.refused}")
