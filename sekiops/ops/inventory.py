"""Inventory: one record per snapshot row of a deployment, metadata only.

Two entry points share one implementation:

* :func:`inventory_records` yields plain dicts (no pandas: the CLI's ``--format json|csv|table``).
* :func:`inventory` returns a pandas DataFrame with the same columns (notebooks, reports).

What is read, per row:

* always: the row's metadata from the store's listing (paged; StateData is never part of it);
* with a blob store: ``blob.stat`` of a record-level offload key (storedBytes = the blob length);
* with ``read_envelope_heads``: a bounded *head* of the envelope, at most :data:`HEAD_BUDGET`
  bytes per row (inline StateData through ``state.open_state_stream``, or the record-level blob
  through ``blob.open_read``; envelopes of offloaded payloads are small and read whole). The head
  gives the envelope level: v10/v9, payload inline or offloaded, the payload key and, when the
  envelope fits in the head, its metadata (version, payload sizes). Sekiban writes the metadata
  *after* the inline Base64 payload, so for a bigger inline envelope the metadata is taken from
  a bounded *tail* read (:data:`TAIL_BYTES`) when the source can seek (memory and local-file
  blobs, and every store that declares range reads in its capabilities); otherwise
  ``envelopeMetaKnown`` is False and the envelope-derived fields are empty;
* with ``check_blobs``: ``blob.exists`` of every referenced key (row OffloadKey, payload key).
  ``flag_missing_blob`` is also raised without it when the ``stat`` above finds a record-level
  blob missing; a missing *payload* blob is only noticed with ``check_blobs``.

No payload blob is ever opened; no inline payload is decoded beyond the head. A row whose head
cannot be decoded gets ``flag_undecodable`` and its error text in ``error``: the inventory itself
never fails on bad data. Flags that need the envelope (events mismatch, v9) are False when the
head was not read or its metadata was out of reach (``envelopeMetaKnown``).

What the stores transfer can exceed what is read: PostgreSQL sends a StateData value of up to
4 MiB in one query, Cosmos DB point-reads the whole document (<= 2 MB) and Azure downloads the
first 4 MiB range of a blob. Stores that declare range reads (``capabilities.range_reads``) are
asked for the bounded ranges only.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator

from ..errors import BlobNotFoundError, SekiopsError
from ..format import keys as keymod
from ..format.constants import (
    COSMOS_ITEM_LIMIT,
    GZIP_MAGIC,
    PAYLOAD_OFFLOAD_THRESHOLD,
    PAYLOAD_TYPE,
    RECORD_THRESHOLD_COSMOS,
    RECORD_THRESHOLD_DYNAMODB,
    RECORD_THRESHOLD_POSTGRES,
)
from ..format.envelope import read_envelope
from ..format.record import SnapshotRow
from ..state.base import StateStore, iter_rows
from .capacity import DEFAULT_APP_BASELINE, default_bench, fit_costs

#: Bytes read per row at most (head + tail).
HEAD_BUDGET = 64 * 1024
#: Of which: the tail read that finds the metadata written after a big inline payload.
TAIL_BYTES = 4 * 1024
#: The head proper (read from the start of the envelope).
HEAD_BYTES = HEAD_BUDGET - TAIL_BYTES

#: Cosmos DB item limit and the share of it at which a row is "near" it.
COSMOS_NEAR_RATIO = 0.8
#: Properties of a Cosmos document besides the Base64 stateData (camelCase names, ids, _etag...).
COSMOS_METADATA_BYTES = 1024
#: DynamoDB: Sekiban compares the raw envelope with 350,000 bytes, but stores Base64 in a 400 KB item.
DYNAMODB_ITEM_LIMIT = 400 * 1024

CONTRACT_COLUMNS = ["serviceId", "projectorName", "projectorVersion", "eventsProcessed", "isOffloaded",
                    "offloadKey", "lifecycle", "storedBytes", "originalSizeBytes", "compressedSizeBytes",
                    "updatedAt", "buildSource"]

FLAG_COLUMNS = ["flag_cosmos_near_limit", "flag_cosmos_over_limit", "flag_dynamodb_base64_hazard",
                "flag_item_limit", "flag_tombstoned", "flag_not_newest_version", "flag_events_mismatch",
                "flag_unknown_payload_type", "flag_v9_envelope", "flag_guid_key", "flag_missing_blob",
                "flag_undecodable", "flag_restore_memory", "flag_restore_disk"]

ROW_COLUMNS = ["offloadProvider", "payloadType", "lastSortableUniqueId", "createdAt", "buildHost",
               "generation", "revision"]

ENVELOPE_COLUMNS = ["storedLocation", "storedBytesSource", "headRead", "headBytesRead", "envelopeMetaKnown",
                    "envelopeFormat", "envelopeCasing", "envelopeVersion", "envelopeProjectorVersion",
                    "payloadOffloaded", "payloadLocation", "payloadKey", "payloadSource", "payloadOriginalBytes",
                    "payloadCompressedBytes", "blobKey", "keyStyle", "inlineItemBytes", "cosmosItemBytes",
                    "base64Inflation", "inlineBytes", "blobBytes", "totalBytes", "restoreMemoryEstimateBytes",
                    "restoreDiskBytes", "error"]

COLUMNS = CONTRACT_COLUMNS + ROW_COLUMNS + ENVELOPE_COLUMNS + FLAG_COLUMNS

#: The size lines the notebook draws: name -> bytes.
THRESHOLDS = {
    "payload offload (1,560,576)": PAYLOAD_OFFLOAD_THRESHOLD,
    "Cosmos record offload (1,000,000)": RECORD_THRESHOLD_COSMOS,
    "Postgres record offload (2,097,152)": RECORD_THRESHOLD_POSTGRES,
    "Cosmos 2 MB item": COSMOS_ITEM_LIMIT,
}
DYNAMODB_THRESHOLD = RECORD_THRESHOLD_DYNAMODB


def base64_length(n: int) -> int:
    return 4 * ((n + 2) // 3)


# --- bounded reads --------------------------------------------------------------------------------


class _Capped(io.RawIOBase):
    """Reads at most ``cap`` bytes from ``src`` (then EOF); keeps them when ``keep``."""

    def __init__(self, src, cap: int, keep: bool = True):
        self._src = src
        self._left = cap
        self.count = 0
        self.hit_cap = False
        self._keep = keep
        self.data = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._left <= 0:
            self.hit_cap = True
            return 0
        want = min(len(b), self._left)
        chunk = self._src.read(want)
        if not chunk:
            return 0
        n = len(chunk)
        b[:n] = chunk
        self._left -= n
        self.count += n
        if self._keep:
            self.data += chunk
        if self._left <= 0:
            self.hit_cap = True
        return n


@dataclasses.dataclass
class EnvelopeHead:
    """What a bounded read of one envelope told (see the module docstring)."""

    read: bool = False
    bytes_read: int = 0
    complete: bool = False
    meta_known: bool = False
    envelope_format: str | None = None
    casing: str | None = None
    payload_offloaded: bool | None = None
    payload_key: str | None = None
    payload_source: str | None = None
    payload_length: int | None = None
    version: int | None = None
    projector_version: str | None = None
    payload_original: int | None = None
    payload_compressed: int | None = None
    envelope_bytes: int | None = None
    missing_blob: bool = False
    undecodable: bool = False
    error: str | None = None


_BIG_STRING_KEY = re.compile(rb'"(payloadbase64|payloadjson)"\s*:\s*"', re.I)


def _stitch(head: bytes, tail: bytes, where: str):
    """The envelope's metadata from its head and tail, with the big payload string left out.

    The head ends inside ``inlineState.payloadBase64`` (or ``payloadJson``); the tail starts inside
    it too. Joining the head up to the string's opening quote with the tail from the string's
    closing quote gives a small envelope with an empty payload and the real metadata.
    """
    found = list(_BIG_STRING_KEY.finditer(head))
    if not found:
        return None
    m = found[-1]
    if b'"' in head[m.end():]:
        return None  # that string closed inside the head: the head ended elsewhere
    prefix = head[:m.end()]
    pos = tail.find(b'"')
    tries = 0
    while pos != -1 and tries < 4:
        k = pos - 1
        while k >= 0 and tail[k] == 0x5C:
            k -= 1
        if (pos - 1 - k) % 2 == 0:
            tries += 1
            try:
                return read_envelope(io.BytesIO(prefix + tail[pos:]), where)
            except SekiopsError:
                pass
        pos = tail.find(b'"', pos + 1)
    return None


def _open_head(state, blob, row: SnapshotRow, source: str, head_bytes: int):
    """(stream, ranged): the store's bounded range read when it offers one, else its stream."""
    if source == "state":
        if state.capabilities.range_reads:
            return io.BytesIO(state.read_state_range(row, 0, head_bytes)), True
        return state.open_state_stream(row), False
    if blob.capabilities.range_reads:
        return io.BytesIO(blob.read_range(row.offload_key, 0, head_bytes)), True
    return blob.open_read(row.offload_key), False


def _tail(stream, ranged: bool, length: int | None, head_len: int, source, row: SnapshotRow, state,
          blob) -> bytes | None:
    """Up to TAIL_BYTES from the end of the envelope, never overlapping the head; None if unreachable."""
    if length is None and source == "blob" and ranged:
        info = blob.stat(row.offload_key)
        length = info.size if info is not None else None
    if length is None and not ranged:
        try:
            if stream.seekable():
                length = stream.seek(0, io.SEEK_END)
        except (OSError, ValueError):
            length = None
    if length is None or length <= head_len:
        return None
    start = max(head_len, length - TAIL_BYTES)
    n = length - start
    if not ranged:
        try:
            if stream.seekable():
                stream.seek(start)
                return stream.read(n)
        except (OSError, ValueError):
            pass
    if source == "state":
        return state.read_state_range(row, start, n) if state.capabilities.range_reads else None
    return blob.read_range(row.offload_key, start, n) if blob.capabilities.range_reads else None


def read_envelope_head(state: StateStore, blob, row: SnapshotRow, budget: int = HEAD_BUDGET,
                       length: int | None = None) -> EnvelopeHead:
    """Read at most ``budget`` bytes of the row's envelope and describe it; never raises on bad data.

    ``length``: the envelope's byte length when known (inline: the row's; a blob's from ``stat``).
    """
    head = EnvelopeHead()
    where = f"{state.location} {row.where}"
    head_bytes = max(1, budget - TAIL_BYTES)
    if row.is_offloaded:
        if not row.offload_key:
            head.undecodable, head.error = True, "row is offloaded but has no OffloadKey"
            return head
        if blob is None:
            head.error = "envelope is in blob storage; no blob store given"
            return head
        source = "blob"
        where += f" envelope blob {row.offload_key!r}"
    else:
        source, length = "state", row.state_length
        where += " StateData"
    stream = None
    try:
        if source == "blob":
            assert row.offload_key  # an offloaded row without one returned above
            keymod.check_key_scope(row.offload_key, row.projector_name)
        stream, ranged = _open_head(state, blob, row, source, head_bytes)
        capped = _Capped(stream, head_bytes)
        head.read = True
        try:
            env = read_envelope(capped, where, payload_sink=None, max_bytes=head_bytes)
        except SekiopsError:
            if not capped.hit_cap:
                raise
            # A v9 (gzip) envelope longer than the head: the gzip stream "ends" at the cap.
            if bytes(capped.data[:2]) != GZIP_MAGIC:
                raise
            head.bytes_read = capped.count
            head.envelope_format, head.payload_offloaded, head.payload_source = "v9", False, None
            return head
        head.bytes_read = capped.count
        head.envelope_format = "v9" if env.gzipped else "v10"
        if env.partial:
            head.payload_offloaded = False
            head.payload_source = "base64"
            if not env.gzipped:
                tail = _tail(stream, ranged, length, capped.count, source, row, state, blob)
                if tail is not None:
                    head.bytes_read += len(tail)
                    full = _stitch(bytes(capped.data), tail, where)
                    if full is not None:
                        _fill_meta(head, full)
                        payload = _BIG_STRING_KEY.findall(bytes(capped.data))[-1].lower()
                        head.payload_source = "json" if payload == b"payloadjson" else "base64"
            return head
        head.complete = True
        head.envelope_bytes = capped.count if not env.gzipped else None
        _fill_meta(head, env)
        head.payload_offloaded = env.is_offloaded
        head.payload_key = env.offload_key
        head.payload_source = env.payload_source
        head.payload_length = env.payload_length
        if env.is_offloaded:
            head.payload_compressed = env.payload_length if env.payload_length is not None else (
                env.meta.compressed_size_bytes or None)
        else:
            head.payload_compressed = env.inline_length
    except BlobNotFoundError as exc:
        head.missing_blob, head.error = True, _short(exc)
    except Exception as exc:  # noqa: BLE001 - never crash an inventory on one row
        head.undecodable = True
        head.error = _short(exc) if isinstance(exc, SekiopsError) else f"{type(exc).__name__}: {_short(exc)}"
    finally:
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass
    return head


def _fill_meta(head: EnvelopeHead, env) -> None:
    meta = env.meta
    head.meta_known = True
    head.casing = env.casing
    head.version = meta.version
    head.projector_version = meta.projector_version or None
    head.payload_original = meta.original_size_bytes or None
    head.payload_compressed = meta.compressed_size_bytes or None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


# --- records ------------------------------------------------------------------------------------


def row_record(row: SnapshotRow) -> dict:
    """The contract's fields (and a few more) for one row, from its metadata alone."""
    return {
        "serviceId": row.service_id,
        "projectorName": row.projector_name,
        "projectorVersion": row.projector_version,
        "eventsProcessed": row.events_processed,
        "isOffloaded": row.is_offloaded,
        "offloadKey": row.offload_key,
        "lifecycle": "tombstoned" if row.is_tombstoned else "active",
        "storedBytes": row.stored_bytes,
        "originalSizeBytes": row.original_size_bytes,
        "compressedSizeBytes": row.compressed_size_bytes,
        "updatedAt": row.updated_at.isoformat() if row.updated_at else None,
        "buildSource": row.build_source,
        "offloadProvider": row.offload_provider,
        "payloadType": row.payload_type,
        "lastSortableUniqueId": row.last_sortable_unique_id,
        "createdAt": row.created_at.isoformat() if row.created_at else None,
        "buildHost": row.build_host,
        "generation": row.generation,
        "revision": row.revision,
    }


@dataclasses.dataclass(frozen=True)
class RestoreLimits:
    """What a grain that restores these snapshots has: for flag_restore_memory / flag_restore_disk.

    ``sekiban_version``: from 10.23 Sekiban restores an offloaded payload streaming (little memory,
    but a temp file the size of the payload blob); an inline Base64 payload, and every payload
    before 10.23, is buffered whole. Memory is an *estimate*: the buffered restore modelled in
    Python from Sekiban's source (not measured on .NET) is about 3.2x the state, plus the app's own
    baseline (sekiops.ops.capacity).
    """

    container_memory: int | None = 4 * 1024**3
    container_disk: int | None = None
    sekiban_version: str = "10.23"

    @property
    def streams_offloaded(self) -> bool:
        parts = [int(p) for p in self.sekiban_version.split(".")[:2] if p.isdigit()]
        return tuple(parts + [0] * (2 - len(parts))) >= (10, 23)


def _restore_needs(rec: dict, limits: RestoreLimits) -> tuple[int | None, int | None]:
    """(memory estimate, disk) a Sekiban grain needs to restore this row; None when unknown."""
    original = rec.get("payloadOriginalBytes")
    stored = rec.get("payloadCompressedBytes")
    offloaded = rec.get("payloadOffloaded")
    if offloaded and limits.streams_offloaded:
        a, b = fit_costs(default_bench())[("restore", "streaming")]
        return int(DEFAULT_APP_BASELINE + a + b * (original or 0)), stored
    if original is None:
        return None, 0
    a, b = _buffered_restore_fit()
    return int(DEFAULT_APP_BASELINE + a + b * original), 0


_FIT: dict = {}


def _buffered_restore_fit() -> tuple[float, float]:
    if not _FIT:
        _FIT["restore"] = fit_costs(default_bench())[("restore", "legacy")]
    return _FIT["restore"]


def _record(state, blob, row: SnapshotRow, heads: bool, check_blobs: bool, budget: int,
            limits: RestoreLimits | None = None) -> dict:
    rec = row_record(row)
    kind = state.kind
    errors: list[str] = []
    missing = False
    # storedBytes: inline length, or the blob's real length when we can ask.
    if row.is_offloaded:
        rec["storedLocation"] = "blob"
        rec["storedBytesSource"] = "declared"
        if blob is not None and row.offload_key:
            try:
                info = blob.stat(row.offload_key)
            except Exception as exc:  # noqa: BLE001
                info = None
                errors.append(f"stat {row.offload_key!r}: {_short(exc)}")
            else:
                if info is None:
                    missing = True
                    errors.append(f"envelope blob {row.offload_key!r} is missing from {blob.location}")
                else:
                    rec["storedBytes"] = info.size
                    rec["storedBytesSource"] = "blob"
    else:
        rec["storedLocation"] = "inline"
        rec["storedBytesSource"] = "row"
    stored = rec["storedBytes"]

    known_length = stored if rec["storedBytesSource"] in ("row", "blob") else None
    head = read_envelope_head(state, blob, row, budget, known_length) \
        if heads and not (row.is_offloaded and missing) else EnvelopeHead()
    if head.error:
        errors.append(head.error)
    missing = missing or head.missing_blob
    rec["headRead"] = head.read
    rec["headBytesRead"] = head.bytes_read
    rec["envelopeMetaKnown"] = head.meta_known
    rec["envelopeFormat"] = head.envelope_format
    rec["envelopeCasing"] = head.casing
    rec["envelopeVersion"] = head.version
    rec["envelopeProjectorVersion"] = head.projector_version
    rec["payloadOffloaded"] = head.payload_offloaded
    rec["payloadLocation"] = (None if head.payload_offloaded is None
                              else "blob" if head.payload_offloaded else "inline")
    rec["payloadKey"] = head.payload_key
    rec["payloadSource"] = head.payload_source
    rec["payloadOriginalBytes"] = head.payload_original
    rec["payloadCompressedBytes"] = head.payload_compressed

    referenced = [k for k in (row.offload_key if row.is_offloaded else None, head.payload_key) if k]
    styles = [keymod.key_style(k) for k in referenced]
    rec["keyStyle"] = styles[0] if styles else None
    if "guid" in styles[1:]:
        rec["keyStyle"] = "guid"

    if check_blobs and blob is not None:
        for key in referenced:
            if key == row.offload_key and rec["storedBytesSource"] == "blob":
                continue  # stat just found it
            if key == row.offload_key and missing:
                continue
            try:
                if not blob.exists(key):
                    missing = True
                    errors.append(f"blob {key!r} is missing from {blob.location}")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"exists {key!r}: {_short(exc)}")

    # Sizes as the stores hold them.
    if not row.is_offloaded and stored is not None:
        item = base64_length(stored) if kind == "cosmos" else stored
        rec["inlineItemBytes"] = item
        rec["cosmosItemBytes"] = base64_length(stored) + COSMOS_METADATA_BYTES
        rec["base64Inflation"] = round(item / stored, 4) if stored else None
    else:
        rec["inlineItemBytes"] = 0 if row.is_offloaded else None
        rec["cosmosItemBytes"] = None
        rec["base64Inflation"] = None
    inline_bytes = 0 if row.is_offloaded else (stored or 0)
    blob_bytes = (stored or 0) if row.is_offloaded else 0
    if head.payload_offloaded:
        blob_bytes += head.payload_compressed or head.payload_length or 0
    rec["inlineBytes"] = inline_bytes
    rec["blobBytes"] = blob_bytes
    rec["totalBytes"] = inline_bytes + blob_bytes
    # where the bulk of the snapshot lives: the payload blob, else the envelope blob
    rec["blobKey"] = head.payload_key if head.payload_offloaded else (row.offload_key if row.is_offloaded else None)
    limits = limits or RestoreLimits()
    memory, disk = _restore_needs(rec, limits) if heads and not row.is_tombstoned else (None, None)
    rec["restoreMemoryEstimateBytes"] = memory
    rec["restoreDiskBytes"] = disk
    rec["error"] = "; ".join(errors) if errors else None

    cosmos_item = rec["cosmosItemBytes"]
    rec["flag_cosmos_near_limit"] = bool(cosmos_item is not None
                                         and cosmos_item >= COSMOS_NEAR_RATIO * COSMOS_ITEM_LIMIT)
    rec["flag_cosmos_over_limit"] = bool(cosmos_item is not None and cosmos_item > COSMOS_ITEM_LIMIT)
    rec["flag_dynamodb_base64_hazard"] = bool(stored is not None and stored <= RECORD_THRESHOLD_DYNAMODB
                                              and base64_length(stored) > DYNAMODB_ITEM_LIMIT)
    item_limit = state.capabilities.item_limit
    rec["flag_item_limit"] = bool(item_limit is not None and not row.is_offloaded and stored is not None
                                  and base64_length(stored) + COSMOS_METADATA_BYTES > item_limit)
    rec["flag_restore_memory"] = bool(memory is not None and limits.container_memory is not None
                                      and memory > limits.container_memory)
    rec["flag_restore_disk"] = bool(disk and limits.container_disk is not None and disk > limits.container_disk)
    rec["flag_tombstoned"] = row.is_tombstoned
    rec["flag_not_newest_version"] = False  # set per projector below
    rec["flag_events_mismatch"] = bool(head.meta_known and head.version != row.events_processed)
    rec["flag_unknown_payload_type"] = row.payload_type != PAYLOAD_TYPE
    rec["flag_v9_envelope"] = head.envelope_format == "v9"
    rec["flag_guid_key"] = "guid" in styles
    rec["flag_missing_blob"] = bool(missing)
    rec["flag_undecodable"] = bool(head.undecodable)
    return rec


def _mark_newest(group: list[dict]) -> list[dict]:
    """flag_not_newest_version: another active version of the projector has more EventsProcessed."""
    active = [r for r in group if r["lifecycle"] == "active"]
    for r in group:
        r["flag_not_newest_version"] = any(o is not r and o["eventsProcessed"] > r["eventsProcessed"] for o in active)
    return group


def inventory_records(state: StateStore, blob=None, *, read_envelope_heads: bool = True,
                      check_blobs: bool = False, page_size: int = 500, head_budget: int = HEAD_BUDGET,
                      progress: Callable[[int], object] | None = None,
                      limits: RestoreLimits | None = None) -> Iterator[dict]:
    """One dict per snapshot row (status documents skipped, tombstones included), in store order,
    streamed (memory does not grow with the number of rows).

    Keys: :data:`COLUMNS` (the contract's JSON fields first). A bounded head of every envelope is
    read by default (where the payload lives, its sizes and key: about a millisecond a row);
    ``read_envelope_heads=False`` reads row metadata only. ``check_blobs`` asks ``exists`` per
    referenced key. ``limits``: the grain's memory and disk for the restore flags.
    ``progress(rows_done)`` is called after every row.
    """
    group: list[dict] = []
    done = 0
    for row in iter_rows(state, page_size=page_size):
        rec = _record(state, blob, row, read_envelope_heads, check_blobs, head_budget, limits)
        if group and group[0]["projectorName"] != rec["projectorName"]:
            yield from _mark_newest(group)
            group = []
        group.append(rec)
        done += 1
        if progress is not None:
            progress(done)
    if group:
        yield from _mark_newest(group)


def inventory(state: StateStore, blob=None, *, read_envelope_heads: bool = True, check_blobs: bool = False,
              page_size: int = 500, head_budget: int = HEAD_BUDGET,
              progress: Callable[[int], object] | None = None, limits: RestoreLimits | None = None):
    """The inventory as a pandas DataFrame: one row per snapshot row, columns :data:`COLUMNS`.

    ``frame.attrs`` holds ``seconds`` (wall time), ``headBytesRead`` (sum), ``stateLocation``,
    ``blobLocation`` and ``serviceId``.
    """
    t = time.perf_counter()
    records = list(inventory_records(state, blob, read_envelope_heads=read_envelope_heads,
                                     check_blobs=check_blobs, page_size=page_size, head_budget=head_budget,
                                     progress=progress, limits=limits))
    df = to_frame(records)
    df.attrs.update({"seconds": round(time.perf_counter() - t, 3),
                     "headBytesRead": int(df["headBytesRead"].sum()) if len(df) else 0,
                     "stateLocation": state.location, "blobLocation": blob.location if blob is not None else None,
                     "serviceId": state.service_id, "envelopeHeads": read_envelope_heads,
                     "checkBlobs": check_blobs})
    return df


_INT_COLUMNS = ["eventsProcessed", "storedBytes", "originalSizeBytes", "compressedSizeBytes", "generation",
                "revision", "headBytesRead", "envelopeVersion", "payloadOriginalBytes", "payloadCompressedBytes",
                "inlineItemBytes", "cosmosItemBytes", "inlineBytes", "blobBytes", "totalBytes",
                "restoreMemoryEstimateBytes", "restoreDiskBytes"]


def to_frame(records: Iterable[dict]):
    """A DataFrame from inventory records (or from ``sekiops inventory --format json`` output)."""
    import pandas as pd

    df = pd.DataFrame.from_records(list(records))
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    for c in _INT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    df["base64Inflation"] = pd.to_numeric(df["base64Inflation"], errors="coerce").astype("Float64")
    for c in FLAG_COLUMNS + ["isOffloaded", "headRead", "envelopeMetaKnown"]:
        df[c] = df[c].fillna(False).astype(bool)
    df["payloadOffloaded"] = df["payloadOffloaded"].astype("boolean")
    for c in ("updatedAt", "createdAt"):
        df[c] = pd.to_datetime(df[c], utc=True, errors="coerce", format="ISO8601")
    return df


def offload_summary(df):
    """Offload ratios by service and projector: rows and bytes in blobs vs the total.

    Columns: serviceId, projectorName, rows, activeRows, recordOffloadedRows, payloadOffloadedRows,
    offloadedRows (either level), inlineBytes, blobBytes, totalBytes, offloadedRowRatio,
    offloadedByteRatio. ``blobBytes`` counts envelope blobs and payload blobs (payload sizes are
    known when envelope heads were read). A last row ``(all)`` totals the frame.
    """
    import pandas as pd

    cols = ["serviceId", "projectorName", "rows", "activeRows", "recordOffloadedRows", "payloadOffloadedRows",
            "offloadedRows", "inlineBytes", "blobBytes", "totalBytes", "offloadedRowRatio", "offloadedByteRatio"]
    if df is None or len(df) == 0:
        return pd.DataFrame(columns=cols)
    d = pd.DataFrame({
        "serviceId": df["serviceId"], "projectorName": df["projectorName"],
        "active": (df["lifecycle"] == "active").astype(int),
        "rec": df["isOffloaded"].astype(bool).astype(int),
        "pay": df["payloadOffloaded"].fillna(False).astype(bool).astype(int),
        "inlineBytes": pd.to_numeric(df["inlineBytes"], errors="coerce").fillna(0).astype("int64"),
        "blobBytes": pd.to_numeric(df["blobBytes"], errors="coerce").fillna(0).astype("int64"),
    })
    d["any"] = ((d["rec"] + d["pay"]) > 0).astype(int)
    g = d.groupby(["serviceId", "projectorName"], sort=True).agg(
        rows=("active", "size"), activeRows=("active", "sum"), recordOffloadedRows=("rec", "sum"),
        payloadOffloadedRows=("pay", "sum"), offloadedRows=("any", "sum"), inlineBytes=("inlineBytes", "sum"),
        blobBytes=("blobBytes", "sum")).reset_index()
    total = pd.DataFrame([{"serviceId": "(all)", "projectorName": "(all)", "rows": int(g["rows"].sum()),
                           "activeRows": int(g["activeRows"].sum()),
                           "recordOffloadedRows": int(g["recordOffloadedRows"].sum()),
                           "payloadOffloadedRows": int(g["payloadOffloadedRows"].sum()),
                           "offloadedRows": int(g["offloadedRows"].sum()), "inlineBytes": int(g["inlineBytes"].sum()),
                           "blobBytes": int(g["blobBytes"].sum())}])
    g = pd.concat([g, total], ignore_index=True)
    g["totalBytes"] = g["inlineBytes"] + g["blobBytes"]
    g["offloadedRowRatio"] = (g["offloadedRows"] / g["rows"]).round(4)
    g["offloadedByteRatio"] = (g["blobBytes"] / g["totalBytes"].where(g["totalBytes"] > 0)).round(4)
    return g[cols]


def flag_counts(df):
    """How many rows raise each risk flag (a Series indexed by flag name, zeros included)."""
    import pandas as pd

    if df is None or len(df) == 0:
        return pd.Series(0, index=FLAG_COLUMNS, dtype="int64")
    return df[FLAG_COLUMNS].astype(bool).sum().astype("int64")


def summary_numbers(df) -> dict:
    """Headline numbers of an inventory frame (plain ints, for notebooks and reports)."""
    if df is None or len(df) == 0:
        return {"rows": 0}
    stored = df["storedBytes"].fillna(0)
    return {
        "rows": int(len(df)),
        "services": int(df["serviceId"].nunique()),
        "projectors": int(df["projectorName"].nunique()),
        "activeRows": int((df["lifecycle"] == "active").sum()),
        "tombstonedRows": int((df["lifecycle"] == "tombstoned").sum()),
        "recordOffloadedRows": int(df["isOffloaded"].sum()),
        "payloadOffloadedRows": int(df["payloadOffloaded"].fillna(False).astype(bool).sum()),
        "storedBytes": int(stored.sum()),
        "inlineBytes": int(df["inlineBytes"].fillna(0).sum()),
        "blobBytes": int(df["blobBytes"].fillna(0).sum()),
        "largestStoredBytes": int(stored.max()),
        "rowsWithFlags": int(df[[c for c in FLAG_COLUMNS if c != "flag_tombstoned"]].any(axis=1).sum()),
        "undecodableRows": int(df["flag_undecodable"].sum()),
        "headBytesRead": int(df["headBytesRead"].fillna(0).sum()),
    }


OVERVIEW_COLUMNS = ["serviceId", "projectorName", "projectorVersion", "lifecycle", "eventsProcessed", "storedLocation",
                    "storedBytes", "envelopeFormat", "payloadOffloaded", "payloadCompressedBytes",
                    "payloadOriginalBytes", "keyStyle"]


def overview(df, limit: int = 30):
    """The biggest rows (envelope bytes as stored), with the columns that say where things live."""
    if df is None or len(df) == 0:
        import pandas as pd

        return pd.DataFrame(columns=OVERVIEW_COLUMNS)
    return df[OVERVIEW_COLUMNS].sort_values("storedBytes", ascending=False, na_position="last").head(limit)


def flagged_rows(df, include_tombstoned: bool = False):
    """Rows raising at least one risk flag (tombstones alone are not a risk unless asked), with the
    columns that explain the flags."""
    import pandas as pd

    cols = ["serviceId", "projectorName", "projectorVersion", "storedBytes", "cosmosItemBytes", "envelopeVersion",
            "eventsProcessed", "payloadType", "error"] + FLAG_COLUMNS
    if df is None or len(df) == 0:
        return pd.DataFrame(columns=cols)
    flags = [c for c in FLAG_COLUMNS if include_tombstoned or c != "flag_tombstoned"]
    return df[df[flags].astype(bool).any(axis=1)][cols]
