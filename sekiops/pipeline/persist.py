"""Persist a projector state as a Sekiban snapshot, streaming (bounded memory).

Streaming, as the design asks: ``write_body(stream)`` -> gzip (counted, hashed) into a private
temp file -> payload-level decision -> envelope JSON streamed into a second temp file (inline
payload Base64-encoded in chunks) -> record-level decision -> upload by stream or keep inline ->
row write with compare-and-swap -> temp files deleted. Blobs are always written before the row
that points at them; a row write that fails after the upload is retried with the same
content-addressed key. Nothing here knows which store it talks to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable
from typing import BinaryIO, cast

from .. import metrics
from ..blob.base import BlobStore
from ..errors import (
    BadInputError,
    ConcurrencyConflictError,
    GuardRefusedError,
    IntegrityError,
    ItemTooLargeError,
    StoreUnavailableError,
    TombstonedError,
    UsageError,
)
from ..format.constants import BUILD_SOURCE_MAX, BUILD_SOURCE_STREAM, PAYLOAD_OFFLOAD_THRESHOLD, PAYLOAD_TYPE
from ..format.envelope import EnvelopeMeta, offloaded_envelope_bytes, write_inline_envelope
from ..format.payload import PayloadEncoder, PayloadStats, gzip_backend
from ..format.pgzip import BlockGzipEncoder
from ..format.record import SnapshotRow, check_projector, utcnow
from ..state.base import StateStore
from ..streams import CountingWriter, ReadAhead, WriteBehind
from . import failpoints, outputs
from .jsoncheck import JsonChecker
from .memory import MemoryProbe
from .spool import Spool, now_ms, spool_write_error

log = logging.getLogger("sekiops.persist")

INT32_MAX = 2**31 - 1


@dataclasses.dataclass
class PersistOptions:
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
    #: ``json``: the input must be exactly one complete JSON document (checked while it streams);
    #: ``raw``: opaque payload bytes (custom serializers), not checked (``compress`` still applies;
    #: the CLI's --raw turns both off: stored exactly as given)
    input_format: str = "json"
    #: ``raw`` only: accept an empty payload (a JSON document is never empty)
    allow_empty: bool = False
    #: threads compressing the payload (one gzip member either way; the bytes, and so the blob key,
    #: do not depend on it; about threads + 2 MiB in flight); None = the CPUs this process may use, at most 8
    threads: int | None = None


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
    #: threads that compressed the payload (0: stored uncompressed)
    threads: int = 0
    #: the JSON check's validator (``native``, ``yajl``), None with input_format ``raw``
    json_check: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def persist(state: StateStore, blob: BlobStore | None, write_body: Callable[[BinaryIO], object], *,
            projector_name: str, projector_version: str, events_processed: int,
            last_sortable_unique_id: str, last_event_id: str | None = None,
            payload_type_name: str = "", is_safe_state: bool = True, is_catched_up: bool = True,
            safe_window_threshold: str | None = None, options: PersistOptions | None = None,
            spool: Spool | None = None, input_name: str = "the projector state") -> PersistResult:
    """Store one snapshot; ``write_body`` writes the projector state JSON to the stream it is given.

    The bytes must form exactly one complete JSON document (``options.input_format="raw"`` for
    opaque payloads): anything else raises BadInputError naming ``input_name`` and the byte
    offset, before anything is uploaded or written.
    """
    opts = options or PersistOptions()
    if opts.input_format not in ("json", "raw"):
        raise UsageError(f"unknown input format {opts.input_format!r}; use json or raw")
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
    job.input_name = input_name
    with MemoryProbe(heap=opts.measure_heap) as probe:
        start = now_ms()
        current = job.check_current()
        job.run_streaming(write_body, spool or Spool())
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
        if opts.threads is not None and (isinstance(opts.threads, bool) or not isinstance(opts.threads, int)
                                         or not 1 <= opts.threads <= 256):
            raise UsageError(f"threads must be a whole number from 1 to 256, not {opts.threads!r}")
        self.threads = opts.threads or default_threads()
        self.json_check: str | None = None
        self.where = f"{state.service_id}/{meta.projector_name}/{meta.projector_version}"
        self.build_ms = self.upload_ms = self.row_ms = self.total_ms = 0.0
        self.tempfile_bytes = self.upload_bytes = 0
        self.payload_key: str | None = None
        self.envelope_key: str | None = None
        self.envelope_len = 0
        self.inline_envelope: BinaryIO | None = None
        self.sha = ""
        self.attempts = 0
        self.input_name = "the projector state"
        #: uploads decided but not done yet: (rewind, name, sha256, size, key)
        self._pending: list = []
        self._spool_files: list = []

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
        cap = self.state.record_offload_cap
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
            # Compression runs on ``threads`` worker threads (1 MiB blocks, one gzip member), the
            # JSON check on its own thread, hashing and the temp-file write on another; this
            # thread only hands blocks around. Every one of them releases the GIL in C.
            sink = CountingWriter(payload.file, hash_it=True)
            checker = JsonChecker(self.input_name) if self.opts.input_format == "json" else None
            self.json_check = checker.backend if checker is not None else None
            try:
                with WriteBehind(sink.write) as behind, _Checking(checker) as check:
                    enc = (BlockGzipEncoder(behind, self.backend, threads=self.threads) if self.opts.compress
                           else PayloadEncoder(behind, self.backend, compress=False, hash_output=False))
                    try:
                        body = _Tee(check, enc) if checker is not None else enc
                        write_body(_FailAfterFirstWrite(body) if failpoints.active() else body)
                        sizes = enc.finish()
                    finally:
                        if self.opts.compress:
                            enc.close()
                payload.file.flush()
            except OSError as exc:
                raise spool_write_error(exc, self.where) from exc
            if sizes.original_size == 0 and checker is None and not self.opts.allow_empty:
                raise BadInputError(f"{self.input_name} is empty: an empty payload is refused unless allowed "
                                    "(--allow-empty); nothing was stored")
            payload_sha = sink.sha256
            assert payload_sha is not None  # a hashing CountingWriter
            stats = PayloadStats(sizes.original_size, sink.count, payload_sha)
            self.build_ms += now_ms() - t
            self._payload_stats(stats)
            self.tempfile_bytes += stats.compressed_size
            failpoints.hit("after_spool")
            if self.blob is not None and stats.compressed_size > self.opts.payload_threshold:
                # the key is known from the hash: the upload waits until every key is checked
                self.payload_key = self._defer_upload(payload.rewind, self.meta.projector_name,
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
            envelope_sha = counter.sha256
            assert envelope_sha is not None  # a hashing CountingWriter
            self._envelope_ready(envfile.rewind(), counter.count, envelope_sha)
        except BaseException:
            self.close_spool()
            raise

    def close_spool(self) -> None:
        for f in self._spool_files:
            f.close()
        self._spool_files = []

    # --- shared steps ------------------------------------------------------------------------

    def _payload_stats(self, stats) -> None:
        self.meta.original_size_bytes = stats.original_size
        self.meta.compressed_size_bytes = stats.compressed_size
        self.sha = stats.sha256

    def _defer_upload(self, rewind, name: str, sha256: str, size: int) -> str:
        """The key these bytes will have (checked now: length, name), uploaded by _run_uploads."""
        key = self.blob.key_for(name, sha256)
        self._pending.append((rewind, name, sha256, size, key))
        return key

    def _run_uploads(self) -> None:
        """Upload what was deferred, in order (payload before the envelope that names it): only
        now that every key is known to be acceptable, so a refused key leaves nothing behind."""
        for rewind, name, sha256, size, key in self._pending:
            written = self._upload(rewind(), name, sha256, size)
            if written != key:
                raise IntegrityError(f"{self.blob.location}: wrote {written!r}, expected {key!r}")
        self._pending = []

    def _upload(self, stream: BinaryIO, name: str, sha256: str, size: int) -> str:
        t = now_ms()
        if failpoints.active():
            # a test-only wrapper with the file methods the stores use (read, seek, tell, seekable)
            stream = cast(BinaryIO, failpoints.FailingReader(stream, "mid_upload", size))
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
                    f"{self.state.location}: "
                    f"{caps.record_offload_refusal or 'the store holds no record-level offloaded rows'}; "
                    f"the {length}-byte envelope of {self.where} would need it. Nothing was uploaded or written")
            name = f"{self.meta.projector_name}/{self.meta.projector_version}"

            def rewind(stream=stream):
                stream.seek(0)
                return stream

            self.envelope_key = self._defer_upload(rewind, name, sha256, length)
            self.inline_envelope = None
            self._run_uploads()
            return
        limit = self.state.inline_limit
        if limit is not None and length > limit:
            hint = "configure a blob store (--blob URL)" if self.blob is None else "lower the record threshold"
            raise ItemTooLargeError(
                f"{self.state.location}: envelope of {length} bytes for {self.where} exceeds the store's "
                f"inline limit of {limit} bytes; {hint}. Nothing was uploaded or written")
        self._run_uploads()
        self.inline_envelope = stream

    def write_row(self, current: SnapshotRow | None) -> SnapshotRow:
        try:
            failpoints.hit("row_write")
            stored = self._write_row(current)
            outputs.mark_completed(f"snapshot {self.where} written (revision {stored.revision})")
            failpoints.hit("after_row")
            return stored
        finally:
            self.close_spool()

    def _write_row(self, current: SnapshotRow | None) -> SnapshotRow:
        now = utcnow()
        offloaded = self.envelope_key is not None
        source = self.opts.build_source or BUILD_SOURCE_STREAM
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
            projector_version=stored.projector_version, mode="streaming",
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
            threads=self.threads if self.opts.compress else 0, json_check=self.json_check,
            backend=f"{self.state.kind}+{self.blob.provider if self.blob is not None else 'none'}")


#: default compression threads at most: 8 isal threads compress ~5 GB/s, more than a disk or a
#: network takes, and each thread holds about 1 MiB in flight (--threads can ask for more)
MAX_DEFAULT_THREADS = 8


def default_threads() -> int:
    """Compression threads by default: the CPUs this process may run on (its affinity mask), at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_DEFAULT_THREADS))


def _same_write(stored: SnapshotRow, written: SnapshotRow) -> bool:
    return (stored.updated_at == written.updated_at and stored.events_processed == written.events_processed
            and stored.original_size_bytes == written.original_size_bytes
            and stored.offload_key == written.offload_key and stored.build_host == written.build_host
            and stored.last_sortable_unique_id == written.last_sortable_unique_id)


class _Checking:
    """The JSON checker fed from a write-behind thread; on leaving, the check is finished
    (truncated or empty input raises there), or abandoned if the body failed."""

    def __init__(self, checker: JsonChecker | None):
        self._checker = checker
        self._behind = WriteBehind(checker.feed) if checker is not None else None

    def __enter__(self) -> WriteBehind | None:
        return self._behind

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._behind is None:
            return
        assert self._checker is not None  # the write-behind feeds it
        try:
            self._behind.__exit__(exc_type, exc, tb)
            if exc_type is None:
                self._checker.finish()
        finally:
            self._checker.close()


class _Tee:
    """The body stream: every chunk to the JSON check and to the compressor."""

    def __init__(self, check, enc):
        self._check, self._enc = check, enc

    def write(self, data) -> int:
        self._check.write(data)
        return self._enc.write(data)

    def writable(self) -> bool:
        return True


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
    return hashlib.sha256(data).hexdigest()


def persist_stream(state: StateStore, blob: BlobStore | None, source: BinaryIO, **kwargs) -> PersistResult:
    """Persist the projector state JSON read from ``source`` (a file or stdin), chunk by chunk."""
    kwargs.setdefault("input_name", getattr(source, "name", None) or "the input stream")

    def write_body(out: BinaryIO) -> None:
        with ReadAhead(source.read) as chunks:  # reading overlaps compression
            for chunk in chunks:
                out.write(chunk)

    return persist(state, blob, write_body, **kwargs)

