"""Restore a snapshot to its projector state bytes, streaming, for all four storage combinations.

row inline | offloaded (record level)  x  envelope inline | offloaded (payload level).
The inline payload is Base64-decoded chunk by chunk into a private temp file while the envelope
is parsed; the payload (inline or blob) is then gunzipped into the output. Output goes to a
partial file renamed into place only when every check has passed, so a failed restore leaves
no output. Sekiban's own restore holds the whole payload and object graph; this never does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import secrets
import shutil
import stat

from .. import metrics
from ..blob.base import BlobStore
from ..errors import (
    BlobNotFoundError,
    ConcurrencyConflictError,
    CorruptSnapshotError,
    IntegrityError,
    NotFoundError,
    OutputError,
    TombstonedError,
    UsageError,
    VersionMismatchError,
)
from ..format import keys
from ..format.envelope import Envelope, read_envelope
from ..format.payload import GzipBackend, decode_payload_to, gzip_backend, open_payload
from ..format.record import SnapshotRow
from ..state.base import StateStore
from ..streams import CHUNK, BinaryFile, HashingReader, ReadAhead, WriteBehind
from . import failpoints, outputs
from .memory import MemoryProbe
from .spool import Spool, now_ms

#: Read size of the restore loop: 256 KiB of gzip per decompress call (the codec floor's best here).
DECODE_READ = 256 * 1024

log = logging.getLogger("sekiops.restore")

DEFAULT_MAX_OUTPUT = 64 * 1024**3


@dataclasses.dataclass
class RestoreOptions:
    verify: bool = False
    include_tombstoned: bool = False
    #: cap on decompressed bytes when the envelope declares no original size (gzip-bomb guard)
    max_output_bytes: int = DEFAULT_MAX_OUTPUT
    measure_heap: bool = False


@dataclasses.dataclass
class RestoreResult:
    service_id: str
    projector_name: str
    projector_version: str
    events_processed: int
    envelope_version: int
    envelope_location: str
    envelope_key: str | None
    envelope_bytes: int
    envelope_format: str
    envelope_casing: str
    payload_location: str
    payload_key: str | None
    payload_source: str
    compressed_size_bytes: int
    original_size_bytes: int
    payload_gzip: bool
    verified: list
    warnings: list
    read_ms: float
    decode_ms: float
    total_ms: float
    tempfile_bytes: int
    download_bytes: int
    peak_rss_bytes: int
    start_rss_bytes: int
    peak_heap_bytes: int | None
    output: str | None
    backend: str = ""
    mode: str = "streaming"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def find_row(state: StateStore, projector_name: str, projector_version: str | None,
             include_tombstoned: bool = False) -> SnapshotRow:
    """The row to restore: the asked version, else the newest active one by EventsProcessed."""
    if projector_version:
        row = state.get(projector_name, projector_version)
        if row is None:
            raise NotFoundError(f"{state.location}: no snapshot for "
                                f"{state.service_id}/{projector_name}/{projector_version}")
    else:
        row = state.latest_active(projector_name)
        if row is None:
            raise NotFoundError(f"{state.location}: no active snapshot for {state.service_id}/{projector_name}")
    if row.is_tombstoned and not include_tombstoned:
        raise TombstonedError(f"{state.location}: {row.where} is tombstoned (Sekiban never restores it); "
                              "pass --include-tombstoned to read it anyway")
    return row


def restore(state: StateStore, blob: BlobStore | None, out: str | BinaryFile, *, projector_name: str,
            projector_version: str | None = None, options: RestoreOptions | None = None,
            spool: Spool | None = None) -> RestoreResult:
    """Write the snapshot's projector state (payload bytes, gunzipped when gzip) to ``out``.

    ``out`` is a path (written atomically) or a binary stream (filled only after every check
    passed, from a private temp file).
    """
    opts = options or RestoreOptions()
    spool = spool or Spool()
    if isinstance(out, str):
        outputs.check_output_path(out, state=state, blob=blob, spool_dir=spool.directory, what="restore output")
    backend = gzip_backend()  # resolved (imported) before the clock starts, as persist does
    with MemoryProbe(heap=opts.measure_heap) as probe:
        start = now_ms()
        for attempt in range(3):
            row = find_row(state, projector_name, projector_version, opts.include_tombstoned)
            job = _Restore(state, blob, row, opts, spool, backend)
            try:
                job.run(out)
                break
            except ConcurrencyConflictError:
                if attempt == 2:
                    raise
                log.info("%s changed while reading; reading the new row", row.where)
        job.total_ms = now_ms() - start
    result = job.result(probe, out)
    metrics.record_restore(result)
    return result


@contextlib.contextmanager
def open_payload_stream(state: StateStore, blob: BlobStore | None, row: SnapshotRow,
                        options: RestoreOptions | None = None, spool: Spool | None = None):
    """Open a snapshot's projector state as a readable stream (for walkers such as anatomy).

    Yields ``(stream, info)``: the decoded payload JSON bytes, and a dict describing where the
    envelope and payload came from. Checks run as in :func:`restore`, except the ones that
    need the whole payload (hashes, lengths), which are up to the caller.
    """
    opts = options or RestoreOptions()
    job = _Restore(state, blob, row, opts, spool or Spool())
    payload_file = job.spool.create(row.projector_name + "-payload")
    src = None
    try:
        src, where = job.open_source(payload_file)
        stream, job.gzip = open_payload(src, where, limit=job.output_limit())
        env = job.envelope
        yield stream, {"envelope_location": "blob" if row.is_offloaded else "inline",
                       "envelope_key": row.offload_key, "envelope_bytes": job.envelope_bytes,
                       "envelope_format": "v9" if env.gzipped else "v10",
                       "payload_location": "blob" if env.is_offloaded else "inline",
                       "payload_key": env.offload_key, "payload_source": env.payload_source,
                       "payload_gzip": job.gzip, "declared_original_size": env.meta.original_size_bytes,
                       "declared_compressed_size": env.meta.compressed_size_bytes,
                       "envelope_version": env.meta.version, "warnings": job.warnings}
    finally:
        if src is not None:
            src.close()
        payload_file.close()


def _os_reason(exc: OSError) -> str:
    reasons: dict[int | None, str] = {
        errno.ENOSPC: "disk full", errno.EDQUOT: "quota exceeded", errno.EACCES: "permission denied",
        errno.EPERM: "permission denied", errno.EROFS: "read-only file system"}
    return reasons.get(exc.errno, exc.strerror or str(exc))


def _is_special(path: str) -> bool:
    """An existing path that is not a regular file (a device or FIFO): write into it, never replace it."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


class _Restore:
    def __init__(self, state, blob, row: SnapshotRow, opts: RestoreOptions, spool: Spool,
                 backend: GzipBackend | None = None):
        self.state, self.blob, self.row, self.opts, self.spool = state, blob, row, opts, spool
        self.backend = backend
        self.where = f"{state.location} {row.where}"
        self.verified: list[str] = []
        self.warnings: list[str] = []
        self.read_ms = self.decode_ms = self.total_ms = 0.0
        self.tempfile_bytes = self.download_bytes = 0
        self.env: Envelope | None = None
        self.envelope_bytes = 0
        self.compressed = 0
        self.output_bytes = 0
        self.gzip = False

    @property
    def envelope(self) -> Envelope:
        """The envelope :meth:`open_source` read: every later step runs after it."""
        assert self.env is not None, "open_source() reads the envelope first"
        return self.env

    # --- sources -----------------------------------------------------------------------------

    def _need_blob(self, what: str) -> BlobStore:
        if self.blob is None:
            raise UsageError(f"{self.where}: {what} is in blob storage; pass --blob URL (or set SEKIOPS_BLOB_URL)")
        return self.blob

    def _open_blob(self, key: str, what: str) -> BinaryFile:
        keys.check_key_scope(key, self.row.projector_name)
        blob = self._need_blob(what)
        try:
            return blob.open_read(key)
        except BlobNotFoundError as exc:
            raise BlobNotFoundError(f"{self.where}: {what} blob {key!r} is missing from {blob.location}") from exc

    def _open_envelope(self) -> tuple[BinaryFile, str]:
        row = self.row
        if row.is_offloaded:
            if not row.offload_key:
                raise CorruptSnapshotError(f"{self.where}: row is offloaded but has no OffloadKey")
            return self._open_blob(row.offload_key, "envelope"), f"{self.where} envelope blob {row.offload_key!r}"
        return self.state.open_state_stream(row), f"{self.where} StateData"

    # --- run ---------------------------------------------------------------------------------

    def run(self, out: str | BinaryFile) -> None:
        payload_file = self.spool.create(self.row.projector_name + "-payload")
        try:
            src, where = self.open_source(payload_file)
            t = now_ms()
            try:
                self._decode_to(out, src, where)
            finally:
                src.close()
            self.decode_ms = now_ms() - t
        finally:
            payload_file.close()

    def open_source(self, payload_file) -> tuple[HashingReader, str]:
        """Read and check the envelope; return the stored payload bytes as a hashing stream.

        An inline payload is Base64-decoded into ``payload_file`` on the way; an offloaded one
        is opened from the blob store.
        """
        t = now_ms()
        raw, where = self._open_envelope()
        reader = HashingReader(raw)
        try:
            # the spool file itself is the sink: seekable, so a payloadJson seen before a
            # non-empty payloadBase64 can be dropped (Base64 wins, as in Sekiban)
            env = read_envelope(reader, where, payload_sink=payload_file.file,
                                max_envelope=self.opts.max_output_bytes)
            reader.drain()
        finally:
            reader.close()
        self.env = env
        self.envelope_bytes = reader.count
        self.tempfile_bytes += payload_file.size
        self._check_envelope(env, reader)
        self.read_ms = now_ms() - t
        if env.is_offloaded:
            key = env.offload_key
            assert key, "read_envelope refuses an offloaded envelope without offloadKey"
            return HashingReader(self._open_blob(key, "payload")), f"{self.where} payload blob {key!r}"
        return HashingReader(payload_file.rewind()), f"{self.where} inline payload"

    def output_limit(self) -> int:
        declared = self.envelope.meta.original_size_bytes
        return declared if declared > 0 else self.opts.max_output_bytes

    def _check_envelope(self, env: Envelope, reader: HashingReader) -> None:
        row, meta = self.row, env.meta
        if row.is_offloaded:
            self.download_bytes += reader.count
            assert row.offload_key, "_open_envelope refuses an offloaded row without OffloadKey"
            expected = keys.content_hash(row.offload_key)
            if expected is not None and self.opts.verify:
                if expected != reader.sha256:
                    raise IntegrityError(f"{self.where}: envelope blob {row.offload_key!r} hashes to "
                                         f"{reader.sha256}, not the sha256 its key promises")
                self.verified.append("envelope-sha256")
        elif row.state_length is not None and row.state_length != reader.count:
            raise IntegrityError(f"{self.where}: read {reader.count} StateData bytes, row declares {row.state_length}")
        if meta.projector_name and meta.projector_name != row.projector_name:
            raise VersionMismatchError(f"{self.where}: envelope is for projector {meta.projector_name!r}, "
                                       f"row is for {row.projector_name!r}")
        if meta.projector_version and meta.projector_version != row.projector_version:
            raise VersionMismatchError(
                f"{self.where}: envelope projectorVersion {meta.projector_version!r} differs from the row's "
                f"{row.projector_version!r}; Sekiban would refuse to restore it")
        if not meta.projector_version:
            self.warnings.append("envelope has no projectorVersion")
        if meta.version != row.events_processed:
            self.warnings.append(f"row EventsProcessed {row.events_processed} != envelope version {meta.version}")

    def _decode_to(self, out, src: HashingReader, where: str) -> None:
        limit = self.output_limit()
        if isinstance(out, str) and _is_special(out):
            with open(out, "wb") as stream:  # /dev/null, a FIFO: never renamed over
                self._decode_to(stream, src, where)
        elif isinstance(out, str):
            self._decode_to_path(out, src, where, limit)
        else:
            tmp = self.spool.create(self.row.projector_name + "-output")
            try:
                self._decode_into(tmp.file, src, where, limit)
                shutil.copyfileobj(tmp.rewind(), out, CHUNK)
                out.flush()
            finally:
                tmp.close()

    def _decode_to_path(self, path: str, src, where: str, limit: int) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise OutputError(f"output directory {directory!r} does not exist")
        outputs.sweep_partials(directory)
        partial = outputs.partial_name(path, secrets.token_hex(6))
        try:
            self._write_partial(partial, path, src, where, limit)
        except OSError as exc:
            raise OutputError(f"writing restore output {path!r}: {_os_reason(exc)}; nothing was written") from exc

    def _write_partial(self, partial: str, path: str, src, where: str, limit: int) -> None:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while we live: a sweep never takes a live partial
        try:
            with os.fdopen(fd, "wb", buffering=CHUNK) as f:
                self._decode_into(f, src, where, limit)
                # no fsync: the output is a derived copy and the stored snapshot is untouched
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(partial, 0o666 & ~umask)
            failpoints.hit("restore_before_rename")
            os.replace(partial, path)
            outputs.mark_completed(f"restore output {path!r} written")
            failpoints.hit("restore_after_rename")
        except BaseException:
            try:
                os.unlink(partial)
            except FileNotFoundError:
                pass
            raise

    def _decode_into(self, f: BinaryFile, src: HashingReader, where: str, limit: int) -> None:
        # Three threads: one reads (and hashes) ahead -- a download overlaps the gunzip --, the
        # caller gunzips, one writes the output.
        with ReadAhead(src.read_chunk, DECODE_READ) as chunks, WriteBehind(f.write) as out:
            pending = iter(chunks)
            self.output_bytes, self.gzip = decode_payload_to(lambda n: next(pending, b""), out.write, where,
                                                             limit=limit, backend=self.backend)
        self.compressed = src.count
        self._check_payload(src)

    def _check_payload(self, src: HashingReader) -> None:
        env, verify = self.envelope, self.opts.verify
        meta = env.meta
        if env.is_offloaded:
            assert env.offload_key, "read_envelope refuses an offloaded envelope without offloadKey"
            self.download_bytes += src.count
            if env.payload_length is not None and env.payload_length != src.count:
                raise IntegrityError(f"{self.where}: payload blob {env.offload_key!r} has {src.count} bytes, "
                                     f"envelope declares payloadLength {env.payload_length}")
            expected = keys.content_hash(env.offload_key)
            if verify and expected is not None:
                if expected != src.sha256:
                    raise IntegrityError(f"{self.where}: payload blob {env.offload_key!r} hashes to {src.sha256}, "
                                         "not the sha256 its key promises")
                self.verified.append("payload-sha256")
        if verify:
            if meta.compressed_size_bytes and meta.compressed_size_bytes != src.count:
                raise IntegrityError(f"{self.where}: payload has {src.count} stored bytes, envelope declares "
                                     f"compressedSizeBytes {meta.compressed_size_bytes}")
            if meta.original_size_bytes and meta.original_size_bytes != self.output_bytes:
                raise IntegrityError(f"{self.where}: payload decodes to {self.output_bytes} bytes, envelope "
                                     f"declares originalSizeBytes {meta.original_size_bytes}")
            self.verified.append("declared-lengths")

    def result(self, probe: MemoryProbe, out) -> RestoreResult:
        env, row = self.envelope, self.row
        return RestoreResult(
            service_id=row.service_id, projector_name=row.projector_name, projector_version=row.projector_version,
            events_processed=row.events_processed, envelope_version=env.meta.version,
            envelope_location="blob" if row.is_offloaded else "inline", envelope_key=row.offload_key,
            envelope_bytes=self.envelope_bytes, envelope_format="v9" if env.gzipped else "v10",
            envelope_casing=env.casing, payload_location="blob" if env.is_offloaded else "inline",
            payload_key=env.offload_key, payload_source=env.payload_source,
            compressed_size_bytes=self.compressed, original_size_bytes=self.output_bytes,
            payload_gzip=self.gzip, verified=self.verified, warnings=self.warnings,
            read_ms=round(self.read_ms, 1), decode_ms=round(self.decode_ms, 1), total_ms=round(self.total_ms, 1),
            tempfile_bytes=self.tempfile_bytes, download_bytes=self.download_bytes,
            peak_rss_bytes=probe.peak_rss, start_rss_bytes=probe.start_rss, peak_heap_bytes=probe.peak_heap,
            output=out if isinstance(out, str) else None,
            backend=f"{self.state.kind}+{self.blob.provider if self.blob is not None else 'none'}")
