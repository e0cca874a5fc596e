"""The PostgreSQL state store: Sekiban's rows, with compare-and-swap as Sekiban does it.

Compare-and-swap: create = INSERT with Revision 1 (a unique violation means another writer won);
replace = ``UPDATE ... WHERE key AND "Generation" = g AND "Revision" = r AND "Lifecycle" = 0 SET
..., "Revision" = "Revision" + 1`` (no row updated means another writer won or the row is
tombstoned). The token is ``str(Revision)`` (UpdatedAt on a table without Revision).

Every call runs in one transaction on the calling thread's connection, under a silence deadline;
read-only work is retried once on a fresh connection when a reused one turns out to be dead.
Values up to ``chunk_size`` go as one parameter; bigger ones stream through :mod:`.state_data`.
The URL (:mod:`.url`), the table (:mod:`.schema`) and connections (:mod:`.connection`) live in
their own modules.
"""

from __future__ import annotations

import contextlib
import copy
import io
import threading
import weakref
from datetime import datetime
from typing import BinaryIO

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ...errors import (
    ConcurrencyConflictError,
    CorruptSnapshotError,
    SekiopsError,
    StoreError,
    StoreMissingError,
    StoreUnavailableError,
    UsageError,
)
from ...format.constants import LIFECYCLE_ACTIVE, LIFECYCLE_TOMBSTONED, RECORD_THRESHOLD_POSTGRES
from ...format.record import SnapshotRow, check_service_id, utcnow
from ...timeouts import timeouts_for
from ...urls import redact
from ..base import StateCapabilities, StateStore, check_expected
from .connection import SilenceWatchdog, ThreadConnections, describe, discard, is_transient, open_connection
from .schema import (
    BYTEA_MAX,
    CONTROL_COLUMNS,
    KEY_COLUMNS,
    KEY_WHERE,
    TABLE,
    as_utc,
    check_columns,
    column_values,
    db_timestamp,
    find_or_create_table,
    meta_columns_sql,
    row_from_record,
    token_of,
)
from .state_data import CHUNK, COPY_PIECE, WRITE_METHODS, SliceReader, upload_by_copy, uploaded_value
from .url import check_authority, secrets_of, session_options, split_own_parameters


class PostgresStateStore(StateStore):
    """Sekiban MultiProjection rows in PostgreSQL; see the package and module docstrings."""

    kind = "postgres"
    inline_limit = None
    record_offload_threshold = RECORD_THRESHOLD_POSTGRES
    capabilities = StateCapabilities(range_reads=True)

    def __init__(self, url: str, service_id: str = "default", schema: str | None = None,
                 create: bool = True, write_method: str = "copy", chunk_size: int = CHUNK,
                 connect_timeout: float | str | None = None, application_name: str = "sekiops",
                 timeout: float | str | None = None, server_timeouts: bool = True):
        self.service_id = service_id
        self.location = redact(url)
        conninfo, url_schema, own = split_own_parameters(url)
        self.schema = schema if schema is not None else url_schema
        if write_method not in WRITE_METHODS:
            raise UsageError(f"unknown Postgres write_method {write_method!r}; known: {', '.join(WRITE_METHODS)}")
        self.write_method = write_method
        if chunk_size < 1:
            raise UsageError("chunk_size must be positive")
        self.chunk_size = int(chunk_size)
        self._secrets = secrets_of(url)
        self.location = self._scrub(self.location)
        check_authority(url)
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise UsageError(f"{self.location}: not a usable libpq URL ({self._scrub(describe(exc))})") from None
        password = params.get("password")
        self._secrets = secrets_of(url, None if password is None else str(password))
        self.location = self._scrub(self.location)
        self._conninfo = conninfo
        if timeout is None and own.get("timeout"):
            timeout = own["timeout"]
        if connect_timeout is None and params.get("connect_timeout"):
            connect_timeout = str(params["connect_timeout"])
        self.timeouts = timeouts_for(connect=connect_timeout, io=timeout)
        self._connect_kwargs = session_options(params, self.timeouts, application_name, server_timeouts)
        self._shared = ThreadConnections()
        self._borrowed = False
        self._silence: SilenceWatchdog | None = None
        self._streams: weakref.WeakSet[SliceReader] = weakref.WeakSet()
        self._prepare(create)

    @classmethod
    def from_url(cls, url: str, service_id: str = "default", **options) -> PostgresStateStore:
        return cls(url, service_id=service_id, **options)

    # shared with stores scoped from this one (for_service)
    @property
    def _lock(self) -> threading.RLock:
        return self._shared.lock

    @property
    def _conn(self) -> psycopg.Connection | None:
        return self._shared.conn

    @_conn.setter
    def _conn(self, value: psycopg.Connection | None) -> None:
        self._shared.conn = value

    def for_service(self, service_id: str) -> PostgresStateStore:
        scoped = copy.copy(self)
        scoped.service_id = check_service_id(service_id)
        scoped._borrowed = True
        scoped._streams = weakref.WeakSet()
        return scoped

    @contextlib.contextmanager
    def _deadline(self, conn: psycopg.Connection):
        """Bound the silence of the calls in the block (see :class:`.connection.SilenceWatchdog`)."""
        silence = SilenceWatchdog(conn, self.timeouts.io)
        outer, self._silence = self._silence, silence
        try:
            yield silence
        finally:
            silence.stop()
            self._silence = outer

    def _poke(self) -> None:
        if self._silence is not None:
            self._silence.poke()

    def _timed_out(self, what: str, where: str | None) -> StoreUnavailableError:
        at = f"{what} {where}" if where else what
        return StoreUnavailableError(
            f"{self.location}: no answer from the server for {self.timeouts.io:g} s while it was asked to "
            f"{at.removeprefix('cannot ')}; the connection was closed (deadline: ?timeout= or $SEKIOPS_TIMEOUT)")

    # --- secrets and errors ------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        text = redact(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, exc: BaseException, what: str, where: str | None = None) -> SekiopsError:
        at = f"{self.location}: {what}" + (f" {where}" if where else "")
        msg = self._scrub(f"{at}: {describe(exc)}")
        if is_transient(exc):
            return StoreUnavailableError(msg)
        return StoreError(msg)

    # --- connections -------------------------------------------------------------------------

    def _connect(self, read_only: bool = False) -> psycopg.Connection:
        return open_connection(self._conninfo, self._connect_kwargs, self.location, self._scrub, read_only)

    def _connection(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                self._discard(conn)
            conn = self._conn = self._connect()
        return conn

    _discard = staticmethod(discard)

    def _rollback(self, conn: psycopg.Connection) -> None:
        try:
            if not conn.closed:
                conn.rollback()
        except Exception:
            self._discard(conn)
            if self._conn is conn:
                self._conn = None

    def _run(self, fn, what: str, where: str | None = None, retry: bool = False):
        """Run ``fn(conn)`` in one transaction on the store's connection, under the lock.

        Commits on success, rolls back on any exception; psycopg errors become SekiopsErrors.
        Read-only work (``retry``) is retried once on a fresh connection when a reused
        connection turns out to be dead (server restart, idle timeout, failover).
        """
        with self._lock:
            for attempt in (0, 1):
                reused = self._conn is not None and not self._conn.closed and not self._conn.broken
                conn = self._connection()
                try:
                    with self._deadline(conn) as silence:
                        result = fn(conn)
                        conn.commit()
                    return result
                except psycopg.Error as exc:
                    if silence.fired:
                        self._discard(conn)
                        if self._conn is conn:
                            self._conn = None
                        raise self._timed_out(what, where) from None
                    self._rollback(conn)
                    dead = conn.closed or conn.broken
                    if dead and self._conn is conn:
                        self._discard(conn)
                        self._conn = None
                    if retry and reused and dead and attempt == 0:
                        continue
                    raise self._error(exc, what, where) from None
                except BaseException:
                    self._rollback(conn)
                    raise

    # --- table -------------------------------------------------------------------------------

    def _prepare(self, create: bool) -> None:
        found = self._run(lambda conn: find_or_create_table(conn, self.schema, create, self.location),
                          "cannot open table", TABLE)
        if found is None:
            raise StoreMissingError(f"{self.location}: no table {TABLE}"
                                    + (f" in schema {self.schema!r}" if self.schema else "")
                                    + " (opened with create=False)",
                                    shape={"kind": self.kind, "location": self.location,
                                           "record_offload_threshold": self.record_offload_threshold,
                                           "inline_limit": self.inline_limit, "capabilities": self.capabilities})
        nsp, cols = found
        check_columns(nsp, cols, self.location)
        self.schema_name = nsp
        # Older tables may use "timestamp without time zone": those hold UTC wall-clock values, so
        # write naive UTC (an aware value would be shifted by the session's TimeZone).
        self._naive_ts = cols["UpdatedAt"].startswith("timestamp without")
        self._control = [c for c in CONTROL_COLUMNS if c in cols]
        self._t = sql.Identifier(nsp, TABLE)
        self._select = sql.SQL("SELECT {} FROM {}").format(meta_columns_sql(self._control), self._t)
        self._returning = sql.SQL(" RETURNING {}").format(meta_columns_sql(self._control))
        self._key_where = KEY_WHERE

    # --- rows --------------------------------------------------------------------------------

    def _row(self, rec) -> SnapshotRow:
        return row_from_record(rec, self._control)

    def _token(self, revision: int, updated_at: datetime | None) -> str:
        return token_of(revision, updated_at, self._control)

    def _ts(self, value: datetime) -> datetime:
        return db_timestamp(value, self._naive_ts)

    def _key(self, name: str, version: str) -> tuple[str, str, str]:
        return (self.service_id, name, version)

    def _get(self, conn, name: str, version: str) -> SnapshotRow | None:
        rec = conn.execute(self._select + self._key_where, self._key(name, version)).fetchone()
        return self._row(rec) if rec else None

    # --- reads -------------------------------------------------------------------------------

    def get(self, projector_name: str, projector_version: str) -> SnapshotRow | None:
        return self._run(lambda c: self._get(c, projector_name, projector_version), "cannot read",
                         f"{self.service_id}/{projector_name}/{projector_version}", retry=True)

    def list_service_ids(self) -> list[str]:
        """Every ServiceId in the table (for audits that must cover all services)."""
        return sorted(self._run(lambda c: [r[0] for r in c.execute(
            sql.SQL('SELECT DISTINCT "ServiceId" FROM {}').format(self._t)).fetchall()],
            "cannot list services of"))

    def latest_active(self, projector_name: str) -> SnapshotRow | None:
        q = self._select + sql.SQL(' WHERE "ServiceId" = %s AND "ProjectorName" = %s')
        if "Lifecycle" in self._control:
            q += sql.SQL(' AND "Lifecycle" = 0')
        q += sql.SQL(' ORDER BY "EventsProcessed" DESC, "UpdatedAt" DESC LIMIT 1')

        def go(conn):
            rec = conn.execute(q, (self.service_id, projector_name)).fetchone()
            return self._row(rec) if rec else None
        return self._run(go, "cannot read", f"{self.service_id}/{projector_name}", retry=True)

    def list_page(self, after: tuple[str, str] | None = None, limit: int = 500,
                  projector_name: str | None = None) -> list[SnapshotRow]:
        # COLLATE "C": byte order, the same order as every other store (and Python's sort),
        # whatever the database's collation.
        q = self._select + sql.SQL(' WHERE "ServiceId" = %s')
        args: list = [self.service_id]
        if projector_name is not None:
            q += sql.SQL(' AND "ProjectorName" = %s')
            args.append(projector_name)
        if after is not None:
            q += sql.SQL(' AND ("ProjectorName" COLLATE "C" > %s OR ("ProjectorName" = %s'
                         ' AND "ProjectorVersion" COLLATE "C" > %s))')
            args += [after[0], after[0], after[1]]
        q += sql.SQL(' ORDER BY "ProjectorName" COLLATE "C", "ProjectorVersion" COLLATE "C" LIMIT %s')
        args.append(int(limit))
        return self._run(lambda c: [self._row(r) for r in c.execute(q, args).fetchall()],
                         "cannot list", self.service_id, retry=True)

    def _token_select(self) -> sql.Composable:
        cols = [sql.Identifier(c) for c in ("Revision",) if c in self._control]
        cols.append(sql.Identifier("UpdatedAt"))
        return sql.SQL(", ").join(cols)

    def _check_stream_row(self, rec, row: SnapshotRow) -> int:
        """Check a (token columns..., StateData IS NULL, length, data) record; return the length."""
        if rec is None:
            raise ConcurrencyConflictError(f"{self.location}: {row.where} disappeared since it was read")
        has_rev = "Revision" in self._control
        revision = int(rec[0] or 0) if has_rev else 0
        updated = as_utc(rec[1] if has_rev else rec[0])
        token = self._token(revision, updated)
        if row.token is not None and token != row.token:
            raise ConcurrencyConflictError(
                f"{self.location}: {row.where} changed since it was read (token {row.token} -> {token}); retry")
        is_null, length = rec[-3], rec[-2]
        if is_null:
            raise CorruptSnapshotError(f"{self.location}: {row.where} has no inline StateData")
        return int(length)

    def open_state_stream(self, row: SnapshotRow) -> BinaryIO:
        """The row's StateData: small values in one query, big ones in slices (see :mod:`.state_data`)."""
        if row.service_id != self.service_id:
            raise UsageError(f"row for service {row.service_id!r} read through a store scoped to {self.service_id!r}")
        key = self._key(row.projector_name, row.projector_version)
        head = sql.SQL("SELECT {}, {} IS NULL, octet_length({}), CASE WHEN octet_length({}) <= %s THEN {} END "
                       "FROM {}").format(self._token_select(), *[sql.Identifier("StateData")] * 4, self._t)

        def small(conn):
            rec = conn.execute(head + self._key_where, (self.chunk_size, *key), binary=True).fetchone()
            length = self._check_stream_row(rec, row)
            return length, rec[-1]

        length, data = self._run(small, "cannot read StateData of", row.where, retry=True)
        if data is not None:
            return io.BytesIO(bytes(data))
        # Big: a dedicated connection and one REPEATABLE READ snapshot for every slice.
        conn = self._connect(read_only=True)
        silence = SilenceWatchdog(conn, self.timeouts.io)
        try:
            rec = conn.execute(head + self._key_where, (0, *key), binary=True).fetchone()
            length = self._check_stream_row(rec, row)
        except psycopg.Error as exc:
            self._discard(conn)
            if silence.fired:
                raise self._timed_out("cannot read StateData of", row.where) from None
            raise self._error(exc, "cannot read StateData of", row.where) from None
        except BaseException:
            self._discard(conn)
            raise
        finally:
            silence.stop()
        raw = SliceReader(self, conn, key, length, row.where)
        self._streams.add(raw)
        return io.BufferedReader(raw, buffer_size=min(self.chunk_size, COPY_PIECE))

    def read_state_range(self, row: SnapshotRow, offset: int, length: int) -> bytes:
        """``substring()`` of StateData, checked against the row's token in the same query."""
        key = self._key(row.projector_name, row.projector_version)
        q = sql.SQL("SELECT {}, {} IS NULL, octet_length({}), substring({} from %s for %s) FROM {}").format(
            self._token_select(), *[sql.Identifier("StateData")] * 3, self._t) + self._key_where

        def go(conn):
            rec = conn.execute(q, (offset + 1, length, *key), binary=True).fetchone()
            self._check_stream_row(rec, row)
            return bytes(rec[-1] or b"")

        return self._run(go, "cannot read StateData of", row.where, retry=True)

    # --- writes ------------------------------------------------------------------------------

    def write(self, row: SnapshotRow, state: BinaryIO | None, state_length: int,
              expected: SnapshotRow | None) -> SnapshotRow:
        self.check_row_for_write(row)
        if expected is not None and (expected.projector_name, expected.projector_version) != (
                row.projector_name, row.projector_version):
            raise UsageError(f"{row.where}: expected row is {expected.where}, not the row being written")
        if not row.is_offloaded:
            if state_length < 0:
                raise UsageError(f"{row.where}: negative StateData length")
            if state_length > BYTEA_MAX:
                raise StoreError(f"{self.location}: {row.where}: {state_length} bytes of StateData exceed "
                                 f"PostgreSQL's bytea limit ({BYTEA_MAX}); offload it to a blob")
            if state is None and state_length:
                raise UsageError(f"{row.where}: {state_length} bytes of StateData announced but no stream given")
        big = not row.is_offloaded and state_length > self.chunk_size
        if big:
            self._precheck(row, expected)
        stored = self._run(lambda c: self._write_txn(c, row, state, state_length, expected),
                           "cannot write", row.where)
        if stored is None:
            self._conflict(row, expected)
        return stored

    def _precheck(self, row: SnapshotRow, expected: SnapshotRow | None) -> None:
        """Before streaming a big value: fail now if the CAS is already lost (the write re-checks)."""
        check_expected(self.get(row.projector_name, row.projector_version), expected, self.location, row.where)

    def _expected_token(self, expected: SnapshotRow) -> str:
        return expected.token if expected.token is not None else self._token(expected.revision, expected.updated_at)

    def _conflict(self, row: SnapshotRow, expected: SnapshotRow | None):
        """The CAS failed (nothing written): say why, from the row as it is now."""
        current = self.get(row.projector_name, row.projector_version)
        check_expected(current, expected, self.location, row.where)
        if expected is None:
            raise ConcurrencyConflictError(f"{self.location}: {row.where} was created by another writer")
        raise ConcurrencyConflictError(
            f"{self.location}: {row.where} moved since it was read (generation {expected.generation}, "
            f"token {self._expected_token(expected)}); nothing overwritten")

    def _cas_where(self, expected: SnapshotRow) -> tuple[sql.Composable, list]:
        q: sql.Composable = self._key_where
        args: list = list(self._key(expected.projector_name, expected.projector_version))
        if "Generation" in self._control:
            q += sql.SQL(' AND "Generation" = %s')
            args.append(int(expected.generation))
        token = self._expected_token(expected)
        if "Revision" in self._control:
            if not token.isdigit():
                raise UsageError(f"{expected.where}: token {token!r} is not a Postgres revision")
            q += sql.SQL(' AND "Revision" = %s')
            args.append(int(token))
        else:
            if expected.updated_at is None:
                raise UsageError(f"{expected.where}: expected row has no UpdatedAt to compare")
            q += sql.SQL(' AND "UpdatedAt" = %s')
            args.append(self._ts(expected.updated_at))
        if "Lifecycle" in self._control:
            q += sql.SQL(' AND "Lifecycle" = %s')
            args.append(LIFECYCLE_ACTIVE)
        return q, args

    def _chunks(self, state: BinaryIO, length: int, where: str, size: int | None = None):
        left = length
        size = size or self.chunk_size
        while left:
            self._poke()
            chunk = state.read(min(size, left))
            if not chunk:
                raise CorruptSnapshotError(
                    f"{self.location}: StateData stream for {where} ended {left} bytes early")
            left -= len(chunk)
            yield chunk

    def _write_txn(self, conn, row: SnapshotRow, state, state_length: int,
                   expected: SnapshotRow | None) -> SnapshotRow | None:
        """One transaction; returns the stored row, or None when the compare-and-swap lost."""
        now = utcnow()
        # Without a Revision column UpdatedAt is the token, so it must move on every write.
        updated = (as_utc(row.updated_at) or now) if "Revision" in self._control else now
        values = column_values(row, self.service_id, as_utc(row.created_at) or now, updated, self._control,
                               self._naive_ts)
        method = None if row.is_offloaded or state_length <= self.chunk_size else self.write_method
        state_sql: sql.Composable
        state_args: list
        if row.is_offloaded:
            state_sql, state_args = sql.SQL("NULL"), []
        elif method is None:
            data = b"".join(self._chunks(state, state_length, row.where)) if state_length else b""
            state_sql, state_args = sql.SQL("%s"), [data]
        elif method == "copy":
            piece = min(self.chunk_size, COPY_PIECE)
            if upload_by_copy(conn, self._chunks(state, state_length, row.where, piece), state_length):
                state_sql, state_args = uploaded_value(), []
            else:  # no TEMP privilege: fall back for this store
                self.write_method = method = "append"
        if method == "append":
            state_sql, state_args = sql.SQL("'\\x'::bytea"), []

        if expected is None:
            cols = list(values) + ["StateData"] + (["Revision"] if "Revision" in self._control else [])
            exprs = [sql.SQL("%s")] * len(values) + [state_sql] + (
                [sql.SQL("1")] if "Revision" in self._control else [])
            q = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                self._t, sql.SQL(", ").join(map(sql.Identifier, cols)), sql.SQL(", ").join(exprs))
            try:
                rec = conn.execute(q + self._returning, list(values.values()) + state_args).fetchone()
            except psycopg.errors.UniqueViolation:
                conn.rollback()  # nothing of ours is worth keeping: the row exists, we lost
                return None
        else:
            fixed = KEY_COLUMNS + ["CreatedAt"]
            sets: list[sql.Composable] = [sql.SQL("{} = %s").format(sql.Identifier(c))
                                          for c in values if c not in fixed]
            args = [v for c, v in values.items() if c not in fixed]
            sets.append(sql.SQL('"StateData" = ') + state_sql)
            if "Revision" in self._control:
                sets.append(sql.SQL('"Revision" = "Revision" + 1'))
            where, where_args = self._cas_where(expected)
            q = sql.SQL("UPDATE {} SET {}").format(self._t, sql.SQL(", ").join(sets)) + where
            rec = conn.execute(q + self._returning, args + state_args + where_args).fetchone()
            if rec is None:
                return None

        if method == "append":
            # The row is ours (locked) until commit; append the value chunk by chunk. Every append
            # rewrites the value so far (server side): quadratic, so only the fallback.
            append = sql.SQL('UPDATE {} SET "StateData" = "StateData" || %s').format(self._t) + self._key_where
            key = self._key(row.projector_name, row.projector_version)
            for chunk in self._chunks(state, state_length, row.where):
                conn.execute(append, (chunk, *key))
            rec = conn.execute(self._select + self._key_where, key).fetchone()
        stored = self._row(rec)
        if not row.is_offloaded and stored.state_length != state_length:
            raise CorruptSnapshotError(f"{self.location}: {row.where}: stored {stored.state_length} bytes of "
                                       f"StateData, expected {state_length}; rolled back")
        return stored

    def tombstone(self, expected: SnapshotRow) -> SnapshotRow:
        if expected.service_id != self.service_id:
            raise UsageError(f"row for service {expected.service_id!r} tombstoned through a store scoped "
                             f"to {self.service_id!r}")
        if "Lifecycle" not in self._control:
            raise StoreError(f"{self.location}: this Sekiban table has no Lifecycle column")
        sets: sql.Composable = sql.SQL('"Lifecycle" = %s, "UpdatedAt" = %s')
        if "Revision" in self._control:
            sets += sql.SQL(', "Revision" = "Revision" + 1')
        where, where_args = self._cas_where(expected)
        q = sql.SQL("UPDATE {} SET ").format(self._t) + sets + where + self._returning

        def go(conn):
            rec = conn.execute(q, [LIFECYCLE_TOMBSTONED, self._ts(utcnow())] + where_args).fetchone()
            return self._row(rec) if rec else None

        stored = self._run(go, "cannot tombstone", expected.where)
        if stored is None:
            self._conflict(expected, expected)
        return stored

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        for stream in list(self._streams):
            try:
                stream.close()
            except Exception:
                pass
        if self._borrowed:  # the connections belong to the store this one was scoped from
            return
        self._shared.close_all(self._discard)

    def __repr__(self) -> str:
        return f"PostgresStateStore({self.location!r}, service_id={self.service_id!r})"


__all__ = ["PostgresStateStore"]
