"""What a plan will cost: bytes moved and freed, Cosmos DB request units, wall-clock time.

**Cosmos RU model.** Azure's capacity-planning table (docs "Request Units in Azure Cosmos DB",
section on estimating throughput) gives, for default indexing, point reads of 1 RU at 1 KB,
1.3 RU at 4 KB and 10 RU at 64 KB, and writes of about 5, 7 and 48 RU at the same sizes. Two
lines through those points::

    read_ru(doc)  = 1 + 0.14 * max(0, KiB(doc) - 1)
    write_ru(doc) = 5 + 0.68 * max(0, KiB(doc) - 1)
    query_ru(n)   = 2.5 + 0.05 * n          (a metadata listing returning n documents)

A document is ~1 KiB of properties plus the Base64 of its StateData (4/3 of the bytes). Per
row the runner does: before the write, a point read (``get``), the StateData read for the
backup, and the restore that takes the "before" digest (``get`` + StateData): 4 reads of the old
document; the compare-and-swap write of the new document (create for a copy); after it the
verifying restore and a token check: 3 reads of the new document (2 when it is offloaded and
small). gc-blobs: per delete, a metadata listing of every row of every service (the reference
re-check), no row writes. Containers that exclude ``/stateData`` from indexing (those sekiops
creates) pay less for big writes; throttled requests are retried, not charged. Treat the figure
as ±50 %: it is for sizing RU/s and the ``--rate``, not for billing.

**Time model.** Sum over items of per-operation latencies by store kind (below) plus bytes over
a throughput, plus the journal's fsynced ``begin`` per row; when ``--rate`` is lower, rows / rate.
Measured orders of magnitude, not promises.
"""

from __future__ import annotations

import dataclasses

from ...format.constants import PROVIDER_AZURE, PROVIDER_LOCAL, PROVIDER_MEMORY, PROVIDER_S3

KiB = 1024
DOC_OVERHEAD = 1 * KiB
#: seconds per state-store operation, by store kind
OP_LATENCY = {"memory": 0.0001, "sqlite": 0.003, "postgres": 0.004, "cosmos": 0.015}
#: seconds per blob operation and bytes per second, by blob provider kind
BLOB_LATENCY = {"memory": 0.0001, "local": 0.004, "azure": 0.03, "s3": 0.03}
BLOB_THROUGHPUT = {"memory": 1e9, "local": 300e6, "azure": 50e6, "s3": 50e6}
_BLOB_KINDS = {PROVIDER_MEMORY: "memory", PROVIDER_LOCAL: "local", PROVIDER_AZURE: "azure", PROVIDER_S3: "s3"}
READ_THROUGHPUT = 100e6
JOURNAL_SECONDS = 0.006


def doc_bytes(state_bytes: int) -> int:
    return DOC_OVERHEAD + 4 * ((max(0, state_bytes) + 2) // 3)


def read_ru(doc: int) -> float:
    return 1.0 + 0.14 * max(0.0, doc / KiB - 1.0)


def write_ru(doc: int) -> float:
    return 5.0 + 0.68 * max(0.0, doc / KiB - 1.0)


def query_ru(n: int) -> float:
    return 2.5 + 0.05 * n


@dataclasses.dataclass
class Estimate:
    rows: int = 0
    #: bytes read from stores (row StateData and blobs)
    bytes_read: int = 0
    #: bytes written to blob storage
    bytes_uploaded: int = 0
    #: StateData bytes written into rows
    bytes_written_rows: int = 0
    #: StateData bytes the row store holds before minus after (negative: it grows)
    bytes_freed_rows: int = 0
    #: blob bytes deleted (gc-blobs)
    blob_bytes_deleted: int = 0
    #: backup bytes saved next to the journal
    bytes_backed_up: int = 0
    cosmos_ru: float = 0.0
    #: True when a Cosmos DB store is involved (else the RU figure is what Cosmos would charge)
    cosmos_applies: bool = False
    seconds: float = 0.0
    notes: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cosmos_ru"] = round(self.cosmos_ru, 1)
        d["seconds"] = round(self.seconds, 1)
        return {_camel(k): v for k, v in d.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest).replace("Ru", "RU")


def blob_kind(blob) -> str:
    """The latency class of a blob store, from the provider name it declares."""
    if blob is None:
        return "memory"
    return _BLOB_KINDS.get(blob.provider, "azure")


def estimate(items, *, read_kind: str, write_kind: str, blob: str, per_delete_rows: int = 0,
             rate: float | None = None) -> Estimate:
    """Totals of a plan's items (:class:`~.plan.PlanItem`) under the models above."""
    est = Estimate(cosmos_applies="cosmos" in (read_kind, write_kind))
    seconds = 0.0
    for it in items:
        est.rows += 1
        est.bytes_read += it.read_bytes
        est.bytes_uploaded += it.upload_bytes
        est.bytes_written_rows += it.inline_after
        est.bytes_freed_rows += it.inline_before - it.inline_after
        est.blob_bytes_deleted += it.delete_bytes
        est.bytes_backed_up += it.backup_bytes
        if it.action == "delete-blob":
            est.cosmos_ru += 2 * query_ru(per_delete_rows)
            seconds += OP_LATENCY.get(read_kind, 0.01) * 2 * (1 + per_delete_rows / 500) + BLOB_LATENCY[blob] * 3
        else:
            old_doc, new_doc = doc_bytes(it.inline_before), doc_bytes(it.inline_after)
            reads_old = read_ru(old_doc) * (4 if it.inline_before or it.action != "copy" else 2)
            reads_new = read_ru(new_doc) * (3 if it.inline_after else 2)
            est.cosmos_ru += reads_old + write_ru(new_doc) + reads_new
            seconds += (OP_LATENCY.get(read_kind, 0.01) * 4 + OP_LATENCY.get(write_kind, 0.01) * 4
                        + (it.read_bytes * 3 + it.inline_after * 2) / READ_THROUGHPUT)
        if it.upload_bytes or it.action == "delete-blob":
            seconds += BLOB_LATENCY[blob] * 2 + (it.upload_bytes + it.delete_bytes) / BLOB_THROUGHPUT[blob]
        seconds += JOURNAL_SECONDS
    if rate:
        seconds = max(seconds, est.rows / rate)
    est.seconds = seconds
    if not est.cosmos_applies:
        est.notes.append("no Cosmos DB store involved: cosmosRU is what the same rows would cost there")
    return est
