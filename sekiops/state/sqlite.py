"""SQLite state store in Sekiban's exact schema (table ``dcb_multi_projection_states``).

Creates the table and index only when missing; an existing Sekiban file is opened as it is
(columns are discovered, nothing is migrated). StateData is written and read through SQLite's
incremental blob I/O, so a 100 MB envelope never sits in memory.

Sekiban's SQLite store never offloads at record level. sekiops can (``?record_threshold=N``) as
an extension; the default is the strict Sekiban-compatible mode, which refuses offloaded rows.
"""

from __future__ import annotations

import io
import os
import sqlite3
import threading
from typing import BinaryIO, cast
from urllib.parse import unquote

from ..errors import (
    ConcurrencyConflictError,
    CorruptSnapshotError,
    GuardRefusedError,
    StoreError,
    StoreMissingError,
    StoreUnavailableError,
    UsageError,
)
from ..format.constants import LIFECYCLE_TOMBSTONED
from ..format.record import SnapshotRow, check_service_id, format_dotnet_timestamp, parse_timestamp, utcnow
from ..urls import query_flags
from .base import StateCapabilities, StateStore, check_expected

TABLE = "dcb_multi_projection_states"
INDEX = "IX_MultiProjectionStates_Service_ProjectorName"
CHUNK = 1024 * 1024

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ServiceId TEXT NOT NULL,
    ProjectorName TEXT NOT NULL,
    ProjectorVersion TEXT NOT NULL,
    PayloadType TEXT NOT NULL,
    LastSortableUniqueId TEXT NOT NULL,
    EventsProcessed INTEGER NOT NULL,
    StateData BLOB NULL,
    IsOffloaded INTEGER NOT NULL,
    OffloadKey TEXT NULL,
    OffloadProvider TEXT NULL,
    OriginalSizeBytes INTEGER NOT NULL,
    CompressedSizeBytes INTEGER NOT NULL,
    SafeWindowThreshold TEXT NOT NULL,
    CreatedAt TEXT NOT NULL,
    UpdatedAt TEXT NOT NULL,
    BuildSource TEXT NOT NULL,
    BuildHost TEXT NULL,
    Generation INTEGER NOT NULL DEFAULT 0,
    Lifecycle INTEGER NOT NULL DEFAULT 0,
    Revision INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ServiceId, ProjectorName, ProjectorVersion)
);
CREATE INDEX IF NOT EXISTS {INDEX} ON {TABLE} (ServiceId, ProjectorName);
"""

META_COLUMNS = ["ServiceId", "ProjectorName", "ProjectorVersion", "PayloadType", "LastSortableUniqueId",
                "EventsProcessed", "IsOffloaded", "OffloadKey", "OffloadProvider", "OriginalSizeBytes",
                "CompressedSizeBytes", "SafeWindowThreshold", "CreatedAt", "UpdatedAt", "BuildSource",
                "BuildHost"]
CONTROL_COLUMNS = ["Generation", "Lifecycle", "Revision"]


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db`` (SQLAlchemy's rule)."""
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if not rest.startswith("/"):
        raise UsageError(f"SQLite URL needs three slashes before the path: {url!r}")
    path = unquote(rest[1:])
    if not path:
        raise UsageError(f"SQLite URL has no path: {url!r}")
    return path


STRICT_REFUSAL = ("Sekiban's SQLite store never offloads at record level (this file is open in strict "
                  "Sekiban mode; add ?record_threshold=N to the URL to allow sekiops' record-offload extension)")


class SqliteStateStore(StateStore):
    kind = "sqlite"
    inline_limit = None

    def __init__(self, path: str, service_id: str = "default", record_threshold: int | None = None,
                 strict: bool | None = None, create: bool = True, timeout: float = 30.0):
        self.path = os.path.abspath(path)
        self.service_id = service_id
        self.location = f"sqlite:///{path}"
        self.strict = (record_threshold is None) if strict is None else strict
        if self.strict and record_threshold is not None:
            raise UsageError("SQLite strict mode (Sekiban-compatible) never offloads at record level; "
                             "drop strict or record_threshold")
        self.record_offload_threshold = record_threshold
        self.capabilities = StateCapabilities(range_reads=True, record_offload=not self.strict,
                                              record_offload_refusal=STRICT_REFUSAL if self.strict else None)
        self._timeout = timeout
        self._local = threading.local()
        if not create and not os.path.exists(self.path):
            raise StoreMissingError(f"{self.location}: no such SQLite file", shape=self._shape())
        if create:
            d = os.path.dirname(self.path)
            if d and not os.path.isdir(d):
                raise StoreError(f"{self.location}: directory {d!r} does not exist")
        conn = self._conn()
        try:
            if not self._table_exists(conn):
                if not create:
                    conn.close()
                    self._local.conn = None
                    raise StoreMissingError(f"{self.location}: no table {TABLE} (not a Sekiban SQLite store?)",
                                            shape=self._shape())
                conn.executescript(DDL)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.location}: not a usable SQLite database ({exc})") from None
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")}
        missing = [c for c in META_COLUMNS + ["StateData"] if c not in cols]
        if missing:
            raise StoreError(f"{self.location}: table {TABLE} lacks Sekiban columns {missing}")
        self._control = [c for c in CONTROL_COLUMNS if c in cols]

    def _shape(self) -> dict:
        return {"kind": self.kind, "location": self.location, "record_offload_threshold": self.record_offload_threshold,
                "inline_limit": self.inline_limit, "capabilities": self.capabilities}

    @classmethod
    def from_url(cls, url: str, service_id: str = "default", **options) -> SqliteStateStore:
        flags = query_flags(url)
        if "record_threshold" in flags and "record_threshold" not in options:
            options["record_threshold"] = int(flags["record_threshold"])
        if "strict" in flags and "strict" not in options:
            options["strict"] = flags["strict"].lower() in ("1", "true", "yes")
        return cls(sqlite_path(url), service_id=service_id, **options)

    # --- connections -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None,
                                       check_same_thread=True)
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"{self.location}: cannot open ({exc})") from None
            self._local.conn = conn
        return conn

    @staticmethod
    def _table_exists(conn) -> bool:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone()
        return found is not None

    def _select(self) -> str:
        cols = META_COLUMNS + self._control
        return f"SELECT {', '.join(cols)}, length(StateData) FROM {TABLE}"

    def _row(self, rec) -> SnapshotRow:
        n = len(META_COLUMNS)
        control = dict(zip(self._control, rec[n:n + len(self._control)], strict=True))
        revision = int(control.get("Revision", 0) or 0)
        updated = rec[13]
        try:
            created_at, updated_at = parse_timestamp(rec[12]), parse_timestamp(updated)
        except ValueError as exc:
            raise CorruptSnapshotError(f"{self.location}: bad timestamp in {rec[1]}/{rec[2]}: {exc}") from None
        token = str(revision) if "Revision" in control else f"u:{updated}"
        return SnapshotRow(
            service_id=rec[0], projector_name=rec[1], projector_version=rec[2], payload_type=rec[3],
            last_sortable_unique_id=rec[4], events_processed=int(rec[5]), is_offloaded=bool(rec[6]),
            offload_key=rec[7], offload_provider=rec[8], original_size_bytes=int(rec[9] or 0),
            compressed_size_bytes=int(rec[10] or 0), safe_window_threshold=rec[11] or "",
            created_at=created_at, updated_at=updated_at, build_source=rec[14] or "",
            build_host=rec[15], generation=int(control.get("Generation", 0) or 0),
            lifecycle=int(control.get("Lifecycle", 0) or 0), revision=revision,
            state_length=rec[-1], token=token)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreUnavailableError(f"{self.location}: database is busy ({exc})") from None
            raise StoreError(f"{self.location}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.location}: {exc}") from None

    # --- reads -------------------------------------------------------------------------------

    def get(self, projector_name: str, projector_version: str) -> SnapshotRow | None:
        def q():
            rec = self._conn().execute(
                self._select() + " WHERE ServiceId=? AND ProjectorName=? AND ProjectorVersion=?",
                (self.service_id, projector_name, projector_version)).fetchone()
            return self._row(rec) if rec else None
        return self._guard(q)

    def latest_active(self, projector_name: str) -> SnapshotRow | None:
        life = " AND Lifecycle=0" if "Lifecycle" in self._control else ""
        def q():
            rec = self._conn().execute(
                self._select() + f" WHERE ServiceId=? AND ProjectorName=?{life}"
                " ORDER BY EventsProcessed DESC, UpdatedAt DESC LIMIT 1",
                (self.service_id, projector_name)).fetchone()
            return self._row(rec) if rec else None
        return self._guard(q)

    def list_page(self, after=None, limit: int = 500, projector_name: str | None = None):
        sql = self._select() + " WHERE ServiceId=?"
        args: list = [self.service_id]
        if projector_name is not None:
            sql += " AND ProjectorName=?"
            args.append(projector_name)
        if after is not None:
            sql += " AND (ProjectorName > ? OR (ProjectorName = ? AND ProjectorVersion > ?))"
            args += [after[0], after[0], after[1]]
        sql += " ORDER BY ProjectorName, ProjectorVersion LIMIT ?"
        args.append(int(limit))
        return self._guard(lambda: [self._row(r) for r in self._conn().execute(sql, args)])

    def list_service_ids(self) -> list[str]:
        """Every ServiceId in the table (for audits that must cover all services)."""
        return self._guard(lambda: sorted(r[0] for r in self._conn().execute(
            f"SELECT DISTINCT ServiceId FROM {TABLE}")))

    def open_state_stream(self, row: SnapshotRow) -> BinaryIO:
        """Incremental blob reads inside one read transaction (a writer waits; no torn read)."""
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            conn.execute("BEGIN")
            rec = conn.execute(
                f"SELECT rowid, length(StateData) IS NULL, length(StateData), UpdatedAt"
                f"{', Revision' if 'Revision' in self._control else ''} FROM {TABLE}"
                " WHERE ServiceId=? AND ProjectorName=? AND ProjectorVersion=?",
                (self.service_id, row.projector_name, row.projector_version)).fetchone()
            if rec is None:
                raise ConcurrencyConflictError(f"{self.location}: {row.where} disappeared while reading")
            token = str(rec[4]) if len(rec) > 4 else f"u:{rec[3]}"
            if row.token is not None and token != row.token:
                raise ConcurrencyConflictError(f"{self.location}: {row.where} changed while reading; retry")
            if rec[1]:
                raise CorruptSnapshotError(f"{self.location}: {row.where} has no inline StateData")
            if rec[2] == 0:
                conn.close()
                return io.BytesIO(b"")
            blob = conn.blobopen(TABLE, "StateData", rec[0], readonly=True)
        except BaseException:
            conn.close()
            raise
        # a file object (io.RawIOBase); typing.BinaryIO is nominal and no RawIOBase is one
        return cast(BinaryIO, _BlobReader(conn, blob))

    def read_state_range(self, row: SnapshotRow, offset: int, length: int) -> bytes:
        """A slice of StateData through incremental blob I/O, inside one read transaction."""
        with self.open_state_stream(row) as f:
            if offset:
                f.seek(offset)
            return f.read(length)

    def local_paths(self) -> list[str]:
        return [self.path] + [self.path + suffix for suffix in ("-wal", "-journal", "-shm")]

    def for_service(self, service_id: str) -> SqliteStateStore:
        return SqliteStateStore(self.path, service_id=check_service_id(service_id),
                                record_threshold=self.record_offload_threshold, strict=self.strict,
                                create=False, timeout=self._timeout)

    # --- writes ------------------------------------------------------------------------------

    def write(self, row: SnapshotRow, state: BinaryIO | None, state_length: int,
              expected: SnapshotRow | None) -> SnapshotRow:
        self.check_row_for_write(row)
        if row.is_offloaded and self.strict:
            raise GuardRefusedError(
                f"{self.location}: Sekiban's SQLite store never offloads at record level; refusing to "
                f"write an offloaded row for {row.where} in strict mode (use ?record_threshold=N)")
        return self._guard(self._write, row, state, state_length, expected)

    def _write(self, row, state, state_length, expected):
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self.get(row.projector_name, row.projector_version)
            check_expected(current, expected, self.location, row.where)
            now = utcnow()
            created = (current.created_at if current else row.created_at) or now
            updated = row.updated_at or now
            revision = (current.revision + 1) if current else 1
            values = {
                "ServiceId": self.service_id, "ProjectorName": row.projector_name,
                "ProjectorVersion": row.projector_version, "PayloadType": row.payload_type,
                "LastSortableUniqueId": row.last_sortable_unique_id, "EventsProcessed": row.events_processed,
                "IsOffloaded": int(row.is_offloaded), "OffloadKey": row.offload_key,
                "OffloadProvider": row.offload_provider, "OriginalSizeBytes": row.original_size_bytes,
                "CompressedSizeBytes": row.compressed_size_bytes,
                "SafeWindowThreshold": row.safe_window_threshold,
                "CreatedAt": format_dotnet_timestamp(created), "UpdatedAt": format_dotnet_timestamp(updated),
                "BuildSource": row.build_source, "BuildHost": row.build_host,
                "Generation": row.generation, "Lifecycle": row.lifecycle, "Revision": revision,
            }
            values = {k: v for k, v in values.items() if k in META_COLUMNS or k in self._control}
            cols = list(values)
            state_sql = "NULL" if row.is_offloaded else "zeroblob(?)"
            args = list(values.values()) + ([] if row.is_offloaded else [state_length])
            if current is None:
                cur = conn.execute(
                    f"INSERT INTO {TABLE} ({', '.join(cols)}, StateData) VALUES "
                    f"({', '.join('?' * len(cols))}, {state_sql})", args)
                rowid = cur.lastrowid
                assert rowid is not None  # set by the INSERT
            else:
                conn.execute(
                    f"UPDATE {TABLE} SET {', '.join(c + '=?' for c in cols)}, StateData={state_sql}"
                    " WHERE ServiceId=? AND ProjectorName=? AND ProjectorVersion=?",
                    args + [self.service_id, row.projector_name, row.projector_version])
                rowid = conn.execute(
                    f"SELECT rowid FROM {TABLE} WHERE ServiceId=? AND ProjectorName=? AND ProjectorVersion=?",
                    (self.service_id, row.projector_name, row.projector_version)).fetchone()[0]
            if not row.is_offloaded and state_length:
                with conn.blobopen(TABLE, "StateData", rowid) as blob:
                    left = state_length
                    while left:
                        chunk = state.read(min(CHUNK, left))
                        if not chunk:
                            raise CorruptSnapshotError(
                                f"{self.location}: StateData stream for {row.where} ended {left} bytes early")
                        blob.write(chunk)
                        left -= len(chunk)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return self.get(row.projector_name, row.projector_version)

    def tombstone(self, expected: SnapshotRow) -> SnapshotRow:
        if "Lifecycle" not in self._control:
            raise StoreError(f"{self.location}: this Sekiban schema has no Lifecycle column")
        def t():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = self.get(expected.projector_name, expected.projector_version)
                check_expected(current, expected, self.location, expected.where)
                sets = "Lifecycle=?, UpdatedAt=?" + (", Revision=Revision+1" if "Revision" in self._control else "")
                conn.execute(f"UPDATE {TABLE} SET {sets} WHERE ServiceId=? AND ProjectorName=? AND ProjectorVersion=?",
                             (LIFECYCLE_TOMBSTONED, format_dotnet_timestamp(utcnow()), self.service_id,
                              expected.projector_name, expected.projector_version))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return self.get(expected.projector_name, expected.projector_version)
        return self._guard(t)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __repr__(self) -> str:
        return f"SqliteStateStore({self.location!r}, service_id={self.service_id!r})"


class _BlobReader(io.RawIOBase):
    """Reads one StateData blob; closing ends the read transaction."""

    def __init__(self, conn: sqlite3.Connection, blob):
        self._conn = conn
        self._blob = blob

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._blob.seek(offset, whence)
        return self._blob.tell()

    def tell(self) -> int:
        return self._blob.tell()

    def readinto(self, b) -> int:
        data = self._blob.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._blob.close()
            finally:
                self._conn.close()
        super().close()
