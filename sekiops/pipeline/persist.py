"""Persist a projector state as a Sekiban snapshot, streaming (bounded memory) or legacy (in memory).

Streaming, as the design asks: ``write_body(stream)`` -> gzip (counted, hashed) into a private
temp file -> payload-level decision -> envelope JSON streamed into a second temp file (inline
payload Base64-encoded in chunks) -> record-level decision -> upload by stream or keep inline ->
row write with compare-and-swap -> temp files deleted. Blobs are always written before the row
that points at them; a row write that fails after the upload is retried with the same
content-addressed key. Nothing here knows which store it talks to.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import re
import socket
import time
import uuid
from typing import BinaryIO, Callable

from .. import metrics
from ..blob.base import BlobStore
from ..errors import (ConcurrencyConflictError, GuardRefusedError, ItemTooLargeError,
                      StoreUnavailableError, TombstonedError, UsageError)
from ..format.constants import (BUILD_SOURCE_LEGACY, BUILD_SOURCE_MAX, BUILD_SOURCE_STREAM, PAYLOAD_OFFLOAD_THRESHOLD,
                                PAYLOAD_TYPE)
from ..format.envelope import (EnvelopeMeta, inline_envelope_bytes, offloaded_envelope_bytes,
                               write_inline_envelope)
from ..format.payload import PayloadEncoder, PayloadStats, gzip_backend
from ..format.record import SnapshotRow, check_projector, utcnow
from ..state.base import StateStore
from ..streams import CountingWriter, ReadAhead, WriteBehind
from . import failpoints
from .memory import MemoryProbe
from .spool import Spool, now_ms, spool_write_error

log = logging.getLogger("sekiops.persist")

MODES = ("streaming", "legacy")
INT32_MAX = 2**31 - 1


@dataclasses.dataclass
class PersistOptions:
    mode: str = "streaming"
    #: compressed payload bytes above which the payload goes to a blob (never at equality)
    payload_threshold: int = PAYLOAD_OFFLOAD_THRESHOLD
    #: envelope bytes above which the envelope goes to a blob; None = the state store's default
    record_threshold: int | None = None
    build_source: str | None = None
    build_host: str | None = None
    #: allow writing fewer EventsProcessed than the stored row has (Sekiban's grain would stop persisting)
    allow_regress: bool = False
    #: attempts for the row write after the blobs are uploaded (transient store failures only)
    row_attempts: int = 3
    backoff_seconds: float = 0.2
    gzip: str | None = None
    compress: bool = True
    measure_heap: bool = False


@dataclasses.dataclass
class PersistResult:
    service_id: str
    projector_name: str
    projector_version: str
    mode: str
    events_processed: int
    envelope_location: str  # "inline" or "blob"
    envelope_key: str | None
    envelope_bytes: int
    payload_location: str  # "inline" or "blob"
    payload_key: str | None
    original_size_bytes: int
    compressed_size_bytes: int
    payload_sha256: str
    revision: int
    build_ms: float
    upload_ms: float
    row_ms: float
    total_ms: float
    tempfile_bytes: int
    upload_bytes: int
    offload_ratio: float
    peak_rss_bytes: int
    start_rss_bytes: int
    peak_heap_bytes: int | None
    row_attempts: int
    gzip_backend: str
    backend: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def persist(state: StateStore, blob: BlobStore | None, write_body: Callable[[BinaryIO], object], *,
            projector_name: str, projector_version: str, events_processed: int,
            last_sortable_unique_id: str, last_event_id: str | None = None,
            payload_type_name: str = "", is_safe_state: bool = True, is_catched_up: bool = True,
            safe_window_threshold: str | None = None, options: PersistOptions | None = None,
            spool: Spool | None = None) -> PersistResult:
    """Store one snapshot; ``write_body`` writes the projector state JSON to the stream it is given."""
    opts = options or PersistOptions()
    if opts.mode not in MODES:
        raise UsageError(f"unknown persist mode {opts.mode!r}; use one of {', '.join(MODES)}")
    check_projector(projector_name, projector_version)
    if not 0 <= events_processed <= INT32_MAX:
        raise UsageError(f"EventsProcessed {events_processed} is out of range: the envelope's version is a "
                         f".NET int (0..{INT32_MAX})")
    if not re.fullmatch(r"[0-9]{30}", last_sortable_unique_id or ""):
        raise UsageError(f"LastSortableUniqueId {last_sortable_unique_id[:40]!r} is not a 30-digit SortableUniqueId")
    if opts.build_source is not None and len(opts.build_source) > BUILD_SOURCE_MAX:
        raise UsageError(f"BuildSource {opts.build_source[:40]!r} is longer than {BUILD_SOURCE_MAX} characters")
    meta = EnvelopeMeta(projector_name=projector_name, projector_version=projector_version,
                        last_sortable_unique_id=last_sortable_unique_id,
                        last_event_id=last_event_id or str(uuid.UUID(int=0)), version=events_processed,
                        is_catched_up=is_catched_up, is_safe_state=is_safe_state,
                        payload_type_name=payload_type_name)
    job = _Job(state, blob, opts, meta, safe_window_threshold or last_sortable_unique_id)
    with MemoryProbe(heap=opts.measure_heap) as probe:
        start = now_ms()
        current = job.check_current()
        if opts.mode == "streaming":
            job.run_streaming(write_body, spool or Spool())
        else:
            job.run_legacy(write_body)
        stored = job.write_row(current)
        job.total_ms = now_ms() - start
    result = job.result(stored, probe)
    metrics.record_persist(result)
    return result


class _Job:
    """The state of one persist; each step fills in what the result reports."""

    def __init__(self, state, blob, opts: PersistOptions, meta: EnvelopeMeta, safe_window: str):
        self.state, self.blob, self.opts, self.meta = state, blob, opts, meta
        self.safe_window = safe_window
        self.backend = gzip_backend(opts.gzip)
        self.where = f"{state.service_id}/{meta.projector_name}/{meta.projector_version}"
        self.build_ms = self.upload_ms = self.row_ms = self.total_ms = 0.0
        self.tempfile_bytes = self.upload_bytes = 0
        self.payload_key: str | None = None
        self.envelope_key: str | None = None
        self.envelope_len = 0
        self.inline_envelope: BinaryIO | None = None
        self.sha = ""
        self.attempts = 0

    # --- guards ------------------------------------------------------------------------------

    def check_current(self) -> SnapshotRow | None:
        current = self.state.get(self.meta.projector_name, self.meta.projector_version)
        if current is None:
            return None
        if current.is_tombstoned:
            raise TombstonedError(f"{self.state.location}: {self.where} is tombstoned; refusing to overwrite it")
        if current.events_processed > self.meta.version and not self.opts.allow_regress:
            raise GuardRefusedError(
                f"{self.state.location}: {self.where} already holds EventsProcessed "
                f"{current.events_processed} > {self.meta.version}; a running grain would stop persisting. "
                "Pass --allow-regress to write it anyway")
        return current

    def record_threshold(self) -> int | None:
        threshold = self.opts.record_threshold
        if threshold is None:
            threshold = self.state.record_offload_threshold
        cap = getattr(self.state, "record_offload_cap", None)
        if cap is not None and threshold is not None:
            threshold = min(threshold, cap)  # as Sekiban's DynamoDB store: min(caller's, 350,000)
        return threshold

    # --- streaming ---------------------------------------------------------------------------

    def run_streaming(self, write_body, spool: Spool) -> None:
        self._spool_files = []
        try:
            payload = spool.create(self.meta.projector_name)
            self._spool_files.append(payload)
            t = now_ms()
            # Compression runs here; hashing and the temp-file write run on a second thread.
            sink = CountingWriter(payload.file, hash_it=True)
            try:
                with WriteBehind(sink.write) as behind:
                    enc = PayloadEncoder(behind, self.backend, compress=self.opts.compress, hash_output=False)
                    write_body(_FailAfterFirstWrite(enc) if failpoints.active() else enc)
                    sizes = enc.finish()
                payload.file.flush()
            except OSError as exc:
                raise spool_write_error(exc, self.where) from exc
            stats = PayloadStats(sizes.original_size, sink.count, sink.sha256)
            self.build_ms += now_ms() - t
            self._payload_stats(stats)
            self.tempfile_bytes += stats.compressed_size
            failpoints.hit("after_spool")
            if self.blob is not None and stats.compressed_size > self.opts.payload_threshold:
                self.payload_key = self._upload(payload.rewind(), self.meta.projector_name,
                                                stats.sha256, stats.compressed_size)
                env = offloaded_envelope_bytes(self.meta, self.payload_key, self.blob.provider,
                                               stats.compressed_size)
                self._envelope_ready(io.BytesIO(env), len(env), _sha(env))
                return
            envfile = spool.create(self.meta.projector_name + "-envelope")
            self._spool_files.append(envfile)
            t = now_ms()
            counter = CountingWriter(envfile.file, hash_it=True)
            try:
                write_inline_envelope(counter, self.meta, payload.rewind(), stats.compressed_size)
                envfile.file.flush()
            except OSError as exc:
                raise spool_write_error(exc, self.where) from exc
            self.build_ms += now_ms() - t
            self.tempfile_bytes += counter.count
            self._envelope_ready(envfile.rewind(), counter.count, counter.sha256)
        except BaseException:
            self.close_spool()
            raise

    def close_spool(self) -> None:
        for f in getattr(self, "_spool_files", []):
            f.close()
        self._spool_files = []

    # --- legacy ------------------------------------------------------------------------------

    def run_legacy(self, write_body) -> None:
        """Sekiban's byte[] path, buffer by buffer (see byte_array_path): whole state, payload and strings in memory."""
        from . import byte_array_path as dotnet

        t = now_ms()
        payload, size = dotnet.serialize_and_compress(write_body, self.backend, self.opts.compress)
        self.meta.original_size_bytes = size
        self.meta.compressed_size_bytes = len(payload)
        self.sha = _sha(payload)
        base64 = dotnet.base64_string(payload)                   # FromBytes: PayloadBase64
        dotnet.envelope_string(self.meta, payload, base64).free()  # the size check's JSON string
        self.build_ms += now_ms() - t
        if self.blob is not None and len(payload) > self.opts.payload_threshold:
            base64.free()
            self.payload_key = self._upload(io.BytesIO(payload), self.meta.projector_name, self.sha, len(payload))
            env = offloaded_envelope_bytes(self.meta, self.payload_key, self.blob.provider, len(payload))
        else:
            t = now_ms()
            json_string = dotnet.envelope_string(self.meta, payload, base64)  # BuildSnapshotForPersistenceAsync
            base64.free()
            env = inline_envelope_bytes(self.meta, payload)                  # Encoding.UTF8.GetBytes(json)
            json_string.free()
            self.build_ms += now_ms() - t
        del payload
        self._envelope_ready(io.BytesIO(env), len(env), _sha(env))

    # --- shared steps ------------------------------------------------------------------------

    def _payload_stats(self, stats) -> None:
        self.meta.original_size_bytes = stats.original_size
        self.meta.compressed_size_bytes = stats.compressed_size
        self.sha = stats.sha256

    def _upload(self, stream: BinaryIO, name: str, sha256: str, size: int) -> str:
        t = now_ms()
        if failpoints.active():
            stream = failpoints.FailingReader(stream, "mid_upload", size)
        written = self.blob.write(stream, name, sha256=sha256, size=size)
        self.upload_ms += now_ms() - t
        self.upload_bytes += written.size
        failpoints.hit("after_upload")
        return written.key

    def _envelope_ready(self, stream: BinaryIO, length: int, sha256: str) -> None:
        self.envelope_len = length
        threshold = self.record_threshold()
        if self.blob is not None and threshold is not None and length > threshold:
            caps = self.state.capabilities
            if not caps.record_offload:
                raise GuardRefusedError(
                    f"{self.state.location}: {caps.record_offload_refusal or 'the store holds no record-level offloaded rows'}; "
                    f"the {length}-byte envelope of {self.where} would need it. Nothing was uploaded or written")
            name = f"{self.meta.projector_name}/{self.meta.projector_version}"
            self.envelope_key = self._upload(stream, name, sha256, length)
            self.inline_envelope = None
            return
        limit = self.state.inline_limit
        if limit is not None and length > limit:
            hint = "configure a blob store (--blob URL)" if self.blob is None else "lower the record threshold"
            raise ItemTooLargeError(
                f"{self.state.location}: envelope of {length} bytes for {self.where} exceeds the store's "
                f"inline limit of {limit} bytes; {hint}. Nothing was written to the row")
        self.inline_envelope = stream

    def write_row(self, current: SnapshotRow | None) -> SnapshotRow:
        try:
            failpoints.hit("row_write")
            stored = self._write_row(current)
            failpoints.hit("after_row")
            return stored
        finally:
            self.close_spool()

    def _write_row(self, current: SnapshotRow | None) -> SnapshotRow:
        now = utcnow()
        offloaded = self.envelope_key is not None
        source = self.opts.build_source or (BUILD_SOURCE_STREAM if self.opts.mode == "streaming" else BUILD_SOURCE_LEGACY)
        row = SnapshotRow(
            service_id=self.state.service_id, projector_name=self.meta.projector_name,
            projector_version=self.meta.projector_version, payload_type=PAYLOAD_TYPE,
            last_sortable_unique_id=self.meta.last_sortable_unique_id,
            events_processed=self.meta.version, is_offloaded=offloaded, offload_key=self.envelope_key,
            offload_provider=self.blob.provider if offloaded else None,
            original_size_bytes=self.envelope_len, compressed_size_bytes=self.envelope_len,
            safe_window_threshold=self.safe_window, created_at=now, updated_at=now,
            build_source=source, build_host=self.opts.build_host or socket.gethostname()[:256],
            generation=current.generation if current else 0)
        t = now_ms()
        delay = self.opts.backoff_seconds
        while True:
            self.attempts += 1
            stream = None if offloaded else self.inline_envelope
            if stream is not None:
                stream.seek(0)
            try:
                stored = self.state.write(row, stream, 0 if offloaded else self.envelope_len, current)
                self.row_ms = now_ms() - t
                return stored
            except StoreUnavailableError as exc:
                if self.attempts >= self.opts.row_attempts:
                    raise StoreUnavailableError(
                        f"{exc} — row write for {self.where} failed {self.attempts} times; the uploaded "
                        f"blobs ({self.payload_key or '-'}, {self.envelope_key or '-'}) stay and a retry "
                        "reuses them") from exc
                log.warning("row write for %s failed (%s); retrying", self.where, exc)
                time.sleep(delay * (0.5 + random.random()))
                delay *= 2
                settled = self._settle_unknown_outcome(row, current)
                if settled is not None:
                    self.row_ms = now_ms() - t
                    return settled

    def _settle_unknown_outcome(self, row: SnapshotRow, current: SnapshotRow | None) -> SnapshotRow | None:
        """After a failed write whose outcome is unknown, look before retrying.

        The write may have landed with its answer lost: then the stored row is ours (same
        UpdatedAt to the microsecond, same sizes and keys) and retrying would only lose its own
        compare-and-swap. If another writer moved the row, that is a conflict; else retry.
        """
        try:
            now = self.state.get(row.projector_name, row.projector_version)
        except StoreUnavailableError:
            return None
        before = current.token if current else None
        after = now.token if now else None
        if after == before:
            return None
        if now is not None and _same_write(now, row):
            log.info("row write for %s landed although its answer was lost", self.where)
            return now
        raise ConcurrencyConflictError(
            f"{self.state.location}: {self.where} was changed by another writer while this write's outcome "
            f"was unknown; nothing overwritten (uploaded blobs stay: {self.payload_key or '-'}, "
            f"{self.envelope_key or '-'})")
    def result(self, stored: SnapshotRow, probe: MemoryProbe) -> PersistResult:
        inline_bytes = 0 if self.envelope_key else self.envelope_len
        total = inline_bytes + self.upload_bytes
        return PersistResult(
            service_id=stored.service_id, projector_name=stored.projector_name,
            projector_version=stored.projector_version, mode=self.opts.mode,
            events_processed=stored.events_processed,
            envelope_location="blob" if self.envelope_key else "inline", envelope_key=self.envelope_key,
            envelope_bytes=self.envelope_len,
            payload_location="blob" if self.payload_key else "inline", payload_key=self.payload_key,
            original_size_bytes=self.meta.original_size_bytes,
            compressed_size_bytes=self.meta.compressed_size_bytes, payload_sha256=self.sha,
            revision=stored.revision, build_ms=round(self.build_ms, 1), upload_ms=round(self.upload_ms, 1),
            row_ms=round(self.row_ms, 1), total_ms=round(self.total_ms, 1),
            tempfile_bytes=self.tempfile_bytes, upload_bytes=self.upload_bytes,
            offload_ratio=round(self.upload_bytes / total, 6) if total else 0.0,
            peak_rss_bytes=probe.peak_rss, start_rss_bytes=probe.start_rss, peak_heap_bytes=probe.peak_heap,
            row_attempts=self.attempts, gzip_backend=self.backend.name,
            backend=f"{self.state.kind}+{self.blob.provider if self.blob is not None else 'none'}")


def _same_write(stored: SnapshotRow, written: SnapshotRow) -> bool:
    return (stored.updated_at == written.updated_at and stored.events_processed == written.events_processed
            and stored.original_size_bytes == written.original_size_bytes
            and stored.offload_key == written.offload_key and stored.build_host == written.build_host
            and stored.last_sortable_unique_id == written.last_sortable_unique_id)


class _FailAfterFirstWrite:
    """Body stream wrapper for the ``body`` fail point: fires after the first write."""

    def __init__(self, target):
        self._target = target

    def write(self, data) -> int:
        n = self._target.write(data)
        failpoints.hit("body")
        return n

    def writable(self) -> bool:
        return True


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def persist_stream(state: StateStore, blob: BlobStore | None, source: BinaryIO, **kwargs) -> PersistResult:
    """Persist the projector state JSON read from ``source`` (a file or stdin), chunk by chunk."""

    def write_body(out: BinaryIO) -> None:
        with ReadAhead(source.read) as chunks:  # reading overlaps compression
            for chunk in chunks:
                out.write(chunk)

    return persist(state, blob, write_body, **kwargs)

