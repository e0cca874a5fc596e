"""PostgreSQL state store in Sekiban's exact schema (table ``dcb_multi_projection_states``).

URL: a libpq URL, ``postgresql://user:pw@host:5432/db?sslmode=require``; libpq's PG* environment
variables fill whatever the URL leaves out. sekiops adds one parameter of its own, ``schema=NAME``
(stripped before connecting): the schema holding the table, else the connection's default schema.

The table and its index are created only when missing, exactly as Sekiban's EF Core model makes
them; an existing table is never altered (its columns are discovered, nothing is migrated).

Compare-and-swap as Sekiban does it: create = INSERT with Revision 1 (a unique violation means
another writer won); replace = ``UPDATE ... WHERE key AND "Generation" = g AND "Revision" = r AND
"Lifecycle" = 0 SET ..., "Revision" = "Revision" + 1`` (no row updated means another writer won or
the row is tombstoned). The token is ``str(Revision)``.

Big StateData (100+ MB envelopes exist) never passes through memory whole:

* write: a value larger than one chunk is streamed with ``COPY ... FROM STDIN (FORMAT BINARY)`` into
  a per-transaction temporary table, in chunks, then moved into the row by the single INSERT/UPDATE
  that also does the compare-and-swap, all in one transaction (readers never see a partial value,
  and the CHECK constraint holds at every statement). When the role may not create temporary
  tables, the fallback appends chunks to the row (``"StateData" = "StateData" || chunk``, quadratic
  server-side work, still one transaction). Small values go as one ordinary parameter.
* read: a value larger than one slice is read as ``substring("StateData" from X for N)`` slices on a
  dedicated connection, inside one REPEATABLE READ READ ONLY transaction (a concurrent replace is
  invisible, so no torn read), after checking that the row's token is still the one the caller read.

The client holds about one chunk/slice at a time. PostgreSQL itself may not: a StateData value that
TOAST compressed (storage MAIN/EXTENDED, the default) is decompressed server-side to serve each
substring (up to the end of the slice for pglz, whole for lz4). That costs server CPU and memory,
not ours. We do not change the column's storage (EXTERNAL would make slices cheap): the schema is
Sekiban's.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import socket
import struct
import threading
import time
import weakref
from datetime import datetime, timezone
from typing import BinaryIO
from urllib.parse import quote, unquote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ..errors import (ConcurrencyConflictError, CorruptSnapshotError, SekiopsError, StoreError,
                      StoreMissingError, StoreUnavailableError, UsageError)
from ..format.constants import LIFECYCLE_ACTIVE, LIFECYCLE_TOMBSTONED, RECORD_THRESHOLD_POSTGRES
from ..format.record import SnapshotRow, check_service_id, utcnow
from ..timeouts import timeouts_for
from ..urls import redact
from .base import StateCapabilities, StateStore, check_expected

TABLE = "dcb_multi_projection_states"
PRIMARY_KEY = "PK_dcb_multi_projection_states"
INDEX = "IX_MultiProjectionStates_Service_ProjectorName"
INDEX_UPDATED = "IX_MultiProjectionStates_UpdatedAt"
CHECK = "CK_MultiProjectionStates_OffloadConsistency"
UPLOAD_TABLE = "sekiops_state_upload"

#: Bytes per read slice and per append (fallback write); values up to this size go in one query.
CHUNK = 4 * 1024 * 1024
#: Bytes per COPY write: no per-piece statement, so small pieces cost nothing and save memory.
COPY_PIECE = 1024 * 1024
#: The largest value a bytea can hold (1 GiB - 1, minus the 4-byte varlena header).
BYTEA_MAX = 0x3FFFFFFF - 4

#: (name, type, NULL allowed, default) in Sekiban's order; see the format reference, section 2.2.
COLUMNS: list[tuple[str, str, bool, str | None]] = [
    ("ServiceId", "character varying(64)", False, None),
    ("ProjectorName", "character varying(256)", False, None),
    ("ProjectorVersion", "character varying(128)", False, None),
    ("PayloadType", "character varying(512)", False, None),
    ("LastSortableUniqueId", "character varying(100)", False, None),
    ("EventsProcessed", "bigint", False, None),
    ("StateData", "bytea", True, None),
    ("IsOffloaded", "boolean", False, None),
    ("OffloadKey", "character varying(512)", True, None),
    ("OffloadProvider", "character varying(128)", True, None),
    ("OriginalSizeBytes", "bigint", False, None),
    ("CompressedSizeBytes", "bigint", False, None),
    ("SafeWindowThreshold", "character varying(100)", False, None),
    ("CreatedAt", "timestamp with time zone", False, None),
    ("UpdatedAt", "timestamp with time zone", False, None),
    ("BuildSource", "character varying(32)", False, None),
    ("BuildHost", "character varying(256)", True, None),
    ("Generation", "bigint", False, "0"),
    ("Lifecycle", "integer", False, "0"),
    ("Revision", "bigint", False, "0"),
]
KEY_COLUMNS = ["ServiceId", "ProjectorName", "ProjectorVersion"]
META_COLUMNS = ["ServiceId", "ProjectorName", "ProjectorVersion", "PayloadType", "LastSortableUniqueId",
                "EventsProcessed", "IsOffloaded", "OffloadKey", "OffloadProvider", "OriginalSizeBytes",
                "CompressedSizeBytes", "SafeWindowThreshold", "CreatedAt", "UpdatedAt", "BuildSource",
                "BuildHost"]
CONTROL_COLUMNS = ["Generation", "Lifecycle", "Revision"]
CHECK_SQL = ('("IsOffloaded" = false AND "StateData" IS NOT NULL) OR '
             '("IsOffloaded" = true AND "OffloadKey" IS NOT NULL)')

# Serialises table creation between sekiops processes (any constant: it only has to be shared).
_CREATE_LOCK_KEY = 0x5E410B5_0DCB

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)

# SQLSTATEs worth a retry: connection exceptions (08), transaction rollbacks (40: serialization
# failure, deadlock), operator intervention (57P: shutdown, crash recovery), too many connections,
# lock not available, statement timeout / cancel.
_TRANSIENT_PREFIXES = ("08", "40", "57P")
_TRANSIENT_STATES = {"53300", "55P03", "57014"}

WRITE_METHODS = ("copy", "append")


#: query parameters that are sekiops' own, not libpq's (stripped before connecting)
OWN_PARAMETERS = ("schema", "timeout")


def split_schema(url: str) -> tuple[str, str | None]:
    """Remove sekiops' own query parameters; return (libpq URL, schema or None).

    ``schema=NAME`` and ``timeout=DURATION`` (sekiops.timeouts) are sekiops'; other parameters
    (sslmode, options, connect_timeout, ...) are kept byte for byte for libpq.
    """
    return _split_own(url)[:2]


def _split_own(url: str) -> tuple[str, str | None, dict[str, str]]:
    base, sep, query = url.partition("?")
    if not sep:
        return url, None, {}
    fragment = ""
    if "#" in query:
        query, _, fragment = query.partition("#")
    kept, schema, own = [], None, {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if unquote(name) == "schema":
            schema = unquote(value)
        elif unquote(name) in OWN_PARAMETERS:
            own[unquote(name)] = unquote(value)
        elif part:
            kept.append(part)
    out = base + ("?" + "&".join(kept) if kept else "")
    if schema is not None and not schema:
        raise UsageError(f"empty schema= parameter in {redact(url)!r}")
    return out + ("#" + fragment if fragment else ""), schema, own


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def is_transient(exc: BaseException) -> bool:
    """Whether a psycopg error is worth a retry (lost connection, serialization failure, ...)."""
    state = getattr(exc, "sqlstate", None)
    if state:
        return state.startswith(_TRANSIENT_PREFIXES) or state in _TRANSIENT_STATES
    # No SQLSTATE: libpq-level failure (connection refused/reset/closed, timeout).
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


class _Silence:
    """Ends a call that stays silent past its deadline by shutting its connection's socket down.

    libpq waits on the socket without a deadline of its own, and a server that is stopped
    (SIGSTOP), partitioned or wedged enforces no statement_timeout: shutting the socket makes
    the blocked wait return with an error at once. ``poke()`` counts as progress (a COPY chunk
    sent, a slice received), so long transfers are bounded in silence, not in total.
    """

    def __init__(self, conn: psycopg.Connection, seconds: float):
        self._conn = conn
        self.seconds = seconds
        self.fired = False
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sekiops-pg-deadline", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(max(0.05, self._last + self.seconds - time.monotonic())):
            if time.monotonic() - self._last >= self.seconds:
                self.fired = True
                try:
                    sock = socket.socket(fileno=os.dup(self._conn.pgconn.socket))
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    finally:
                        sock.close()
                except (OSError, psycopg.Error):
                    pass
                return

    def stop(self) -> None:
        self._done.set()


class _Shared:
    """What a store and the stores scoped from it (``for_service``) share: one connection per
    thread (migration and audit workers run rows concurrently; a libpq connection serves one
    thread at a time), all closed together."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.registry_lock = threading.Lock()
        self.conns: list = []

    @property
    def lock(self) -> threading.RLock:
        lock = getattr(self.local, "lock", None)
        if lock is None:
            lock = self.local.lock = threading.RLock()
        return lock

    @property
    def conn(self) -> psycopg.Connection | None:
        return getattr(self.local, "conn", None)

    @conn.setter
    def conn(self, value: psycopg.Connection | None) -> None:
        self.local.conn = value
        if value is not None:
            with self.registry_lock:
                self.conns.append(value)

    def close_all(self, discard) -> None:
        with self.registry_lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            discard(conn)
        self.local = threading.local()


class PostgresStateStore(StateStore):
    kind = "postgres"
    inline_limit = None
    record_offload_threshold = RECORD_THRESHOLD_POSTGRES
    capabilities = StateCapabilities(range_reads=True)

    def __init__(self, url: str, service_id: str = "default", schema: str | None = None,
                 create: bool = True, write_method: str = "copy", chunk_size: int = CHUNK,
                 connect_timeout: float | None = None, application_name: str = "sekiops",
                 timeout: float | None = None, server_timeouts: bool = True):
        self.service_id = service_id
        self.location = redact(url)
        conninfo, url_schema, own = _split_own(url)
        self.schema = schema if schema is not None else url_schema
        if write_method not in WRITE_METHODS:
            raise UsageError(f"unknown Postgres write_method {write_method!r}; known: {', '.join(WRITE_METHODS)}")
        self.write_method = write_method
        if chunk_size < 1:
            raise UsageError("chunk_size must be positive")
        self.chunk_size = int(chunk_size)
        self._secrets = self._secrets_of(url)
        self.location = self._scrub(self.location)
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise UsageError(f"{self.location}: not a usable libpq URL ({self._scrub(self._message(exc))})") from None
        self._secrets = self._secrets_of(url, params.get("password"))
        self.location = self._scrub(self.location)
        self._conninfo = conninfo
        if timeout is None and own.get("timeout"):
            timeout = own["timeout"]
        if connect_timeout is None and params.get("connect_timeout"):
            connect_timeout = params["connect_timeout"]
        self.timeouts = timeouts_for(connect=connect_timeout, io=timeout)
        self._connect_kwargs = self._session_options(params, application_name, server_timeouts)
        self._shared = _Shared()
        self._borrowed = False
        self._silence: _Silence | None = None
        self._streams: "weakref.WeakSet[_SliceReader]" = weakref.WeakSet()
        self._prepare(create)

    @classmethod
    def from_url(cls, url: str, service_id: str = "default", **options) -> "PostgresStateStore":
        return cls(url, service_id=service_id, **options)

    def _session_options(self, params: dict, application_name: str, server_timeouts: bool) -> dict:
        """libpq settings that bound every wait (sekiops.timeouts), unless the URL sets its own.

        Client side: connect_timeout; TCP keepalives and tcp_user_timeout (a peer that vanishes
        is noticed); and :class:`_Silence` around every call (a peer that stops answering).
        Server side, as a backstop for sessions we lose: statement_timeout (ten silences: a
        COPY of a big value is one long statement) and idle_in_transaction_session_timeout.
        """
        t = self.timeouts
        kw: dict = {}
        if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
            kw["connect_timeout"] = max(1, int(round(t.connect)))
        if "application_name" not in params and "PGAPPNAME" not in os.environ:
            kw["application_name"] = application_name
        defaults = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                    "keepalives_count": "3", "tcp_user_timeout": str(int(t.io * 1000))}
        kw.update({k: v for k, v in defaults.items() if k not in params})
        if server_timeouts and "options" not in params and "PGOPTIONS" not in os.environ:
            kw["options"] = (f"-c statement_timeout={int(t.io * 10_000)} "
                             f"-c idle_in_transaction_session_timeout={int(t.io * 10_000)}")
        return kw

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

    def for_service(self, service_id: str) -> "PostgresStateStore":
        scoped = copy.copy(self)
        scoped.service_id = check_service_id(service_id)
        scoped._borrowed = True
        scoped._streams = weakref.WeakSet()
        return scoped

    @contextlib.contextmanager
    def _deadline(self, conn: psycopg.Connection):
        """Bound the silence of the calls in the block (see :class:`_Silence`)."""
        silence = _Silence(conn, self.timeouts.io)
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

    @staticmethod
    def _secrets_of(url: str, password: str | None = None) -> list[str]:
        found = set()
        if password:
            found.add(password)
        rest = url.split("://", 1)[-1].split("/", 1)[0]
        if "@" in rest and ":" in rest.rsplit("@", 1)[0]:
            raw = rest.rsplit("@", 1)[0].split(":", 1)[1]
            if raw:
                found |= {raw, unquote(raw)}
        found |= {quote(p, safe="") for p in list(found)}
        # Very short strings would mangle every message; redact() still covers the URL forms.
        return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        text = redact(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @staticmethod
    def _message(exc: BaseException) -> str:
        diag = getattr(exc, "diag", None)
        primary = getattr(diag, "message_primary", None) if diag is not None else None
        if not primary:
            lines = str(exc).strip().splitlines()
            primary = lines[0] if lines else type(exc).__name__
        text = primary
        state = getattr(exc, "sqlstate", None)
        return f"{text} (SQLSTATE {state})" if state else text

    def _error(self, exc: BaseException, what: str, where: str | None = None) -> SekiopsError:
        at = f"{self.location}: {what}" + (f" {where}" if where else "")
        msg = self._scrub(f"{at}: {self._message(exc)}")
        if is_transient(exc):
            return StoreUnavailableError(msg)
        return StoreError(msg)

    # --- connections -------------------------------------------------------------------------

    def _connect(self, read_only: bool = False) -> psycopg.Connection:
        try:
            # prepare_threshold=None: no server-side prepared statements, so a transaction-mode
            # pooler (PgBouncer) in front of the server works.
            try:
                conn = psycopg.connect(self._conninfo, autocommit=False, prepare_threshold=None,
                                       **self._connect_kwargs)
            except psycopg.OperationalError as exc:
                if "options" not in self._connect_kwargs or "startup parameter" not in str(exc):
                    raise
                # A pooler that refuses the options startup parameter: go on without server limits.
                self._connect_kwargs.pop("options")
                conn = psycopg.connect(self._conninfo, autocommit=False, prepare_threshold=None,
                                       **self._connect_kwargs)
        except psycopg.ProgrammingError as exc:
            raise UsageError(f"{self.location}: cannot connect ({self._scrub(self._message(exc))})") from None
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"{self.location}: cannot connect ({self._scrub(self._message(exc))})") from None
        if read_only:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
        return conn

    def _connection(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                self._discard(conn)
            conn = self._conn = self._connect()
        return conn

    @staticmethod
    def _discard(conn: psycopg.Connection) -> None:
        try:
            conn.close()
        except Exception:
            pass

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

    def _locate(self, conn) -> tuple[str, dict[str, str]] | None:
        """(schema, {column: type}) of the table as this connection resolves it, or None."""
        parts = [self.schema, TABLE] if self.schema else [TABLE]
        name = sql.Identifier(*parts).as_string(conn)
        rec = conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')", (name,)).fetchone()
        if rec is None:
            return None
        cols = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum", (name,)).fetchall()
        return rec[0], dict(cols)

    def _create(self, conn) -> None:
        parts = [self.schema, TABLE] if self.schema else [TABLE]
        table = sql.Identifier(*parts)
        defs = []
        for name, type_, nullable, default in COLUMNS:
            d = sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_))
            if not nullable:
                d += sql.SQL(" NOT NULL")
            if default is not None:
                d += sql.SQL(" DEFAULT ") + sql.SQL(default)
            defs.append(d)
        defs.append(sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
            sql.Identifier(PRIMARY_KEY), sql.SQL(", ").join(map(sql.Identifier, KEY_COLUMNS))))
        defs.append(sql.SQL("CONSTRAINT {} CHECK ({})").format(sql.Identifier(CHECK), sql.SQL(CHECK_SQL)))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (\n    {}\n)").format(
            table, sql.SQL(",\n    ").join(defs)))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, {})").format(
            sql.Identifier(INDEX), table, sql.Identifier("ServiceId"), sql.Identifier("ProjectorName")))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(INDEX_UPDATED), table, sql.Identifier("UpdatedAt")))

    def _prepare(self, create: bool) -> None:
        def go(conn):
            found = self._locate(conn)
            if found is None and create:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK_KEY,))
                found = self._locate(conn)
                if found is None:
                    if self.schema and conn.execute(
                            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone() is None:
                        raise StoreError(f"{self.location}: schema {self.schema!r} does not exist")
                    self._create(conn)
                    found = self._locate(conn)
            return found

        found = self._run(go, "cannot open table", TABLE)
        if found is None:
            raise StoreMissingError(f"{self.location}: no table {TABLE}"
                                    + (f" in schema {self.schema!r}" if self.schema else "")
                                    + " (opened with create=False)",
                                    shape={"kind": self.kind, "location": self.location,
                                           "record_offload_threshold": self.record_offload_threshold,
                                           "inline_limit": self.inline_limit, "capabilities": self.capabilities})
        nsp, cols = found
        missing = [c for c in META_COLUMNS + ["StateData"] if c not in cols]
        if missing:
            raise StoreError(f"{self.location}: table {nsp}.{TABLE} lacks Sekiban columns {missing}")
        if cols["StateData"] != "bytea":
            raise StoreError(f"{self.location}: {nsp}.{TABLE}.StateData is {cols['StateData']}, not bytea")
        self.schema_name = nsp
        # Older tables may use "timestamp without time zone": those hold UTC wall-clock values, so
        # write naive UTC (an aware value would be shifted by the session's TimeZone).
        self._naive_ts = cols["UpdatedAt"].startswith("timestamp without")
        self._control = [c for c in CONTROL_COLUMNS if c in cols]
        self._t = sql.Identifier(nsp, TABLE)
        self._select = sql.SQL("SELECT {}, octet_length({}) FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, META_COLUMNS + self._control)),
            sql.Identifier("StateData"), self._t)
        self._returning = sql.SQL(" RETURNING {}, octet_length({})").format(
            sql.SQL(", ").join(map(sql.Identifier, META_COLUMNS + self._control)), sql.Identifier("StateData"))
        self._key_where = sql.SQL(' WHERE "ServiceId" = %s AND "ProjectorName" = %s AND "ProjectorVersion" = %s')

    # --- rows --------------------------------------------------------------------------------

    def _row(self, rec) -> SnapshotRow:
        n = len(META_COLUMNS)
        control = dict(zip(self._control, rec[n:n + len(self._control)]))
        revision = int(control.get("Revision", 0) or 0)
        updated_at = _utc(rec[13])
        return SnapshotRow(
            service_id=rec[0], projector_name=rec[1], projector_version=rec[2], payload_type=rec[3],
            last_sortable_unique_id=rec[4] or "", events_processed=int(rec[5]), is_offloaded=bool(rec[6]),
            offload_key=rec[7], offload_provider=rec[8], original_size_bytes=int(rec[9] or 0),
            compressed_size_bytes=int(rec[10] or 0), safe_window_threshold=rec[11] or "",
            created_at=_utc(rec[12]), updated_at=updated_at, build_source=rec[14] or "",
            build_host=rec[15], generation=int(control.get("Generation", 0) or 0),
            lifecycle=int(control.get("Lifecycle", 0) or 0), revision=revision,
            state_length=rec[-1], token=self._token(revision, updated_at))

    def _token(self, revision: int, updated_at: datetime | None) -> str:
        if "Revision" in self._control:
            return str(revision)
        # A pre-Revision Sekiban table: UpdatedAt is the only thing that moves on every write.
        return "u:" + (updated_at.isoformat() if updated_at else "")

    def _ts(self, value: datetime) -> datetime:
        value = _utc(value)
        return value.replace(tzinfo=None) if self._naive_ts else value

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
        updated = _utc(rec[1] if has_rev else rec[0])
        token = self._token(revision, updated)
        if row.token is not None and token != row.token:
            raise ConcurrencyConflictError(
                f"{self.location}: {row.where} changed since it was read (token {row.token} -> {token}); retry")
        is_null, length = rec[-3], rec[-2]
        if is_null:
            raise CorruptSnapshotError(f"{self.location}: {row.where} has no inline StateData")
        return int(length)

    def open_state_stream(self, row: SnapshotRow) -> BinaryIO:
        """The row's StateData: small values in one query, big ones in slices (see the module doc)."""
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
        silence = _Silence(conn, self.timeouts.io)
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
        raw = _SliceReader(self, conn, key, length, row.where)
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
        row.validate_for_write()
        if row.service_id != self.service_id:
            raise UsageError(f"row for service {row.service_id!r} written through a store scoped to {self.service_id!r}")
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
        q = self._key_where
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

    def _values(self, row: SnapshotRow, created: datetime, updated: datetime) -> dict:
        values = {
            "ServiceId": self.service_id, "ProjectorName": row.projector_name,
            "ProjectorVersion": row.projector_version, "PayloadType": row.payload_type,
            "LastSortableUniqueId": row.last_sortable_unique_id, "EventsProcessed": int(row.events_processed),
            "IsOffloaded": bool(row.is_offloaded), "OffloadKey": row.offload_key,
            "OffloadProvider": row.offload_provider, "OriginalSizeBytes": int(row.original_size_bytes),
            "CompressedSizeBytes": int(row.compressed_size_bytes),
            "SafeWindowThreshold": row.safe_window_threshold,
            "CreatedAt": self._ts(created), "UpdatedAt": self._ts(updated),
            "BuildSource": row.build_source, "BuildHost": row.build_host,
            "Generation": int(row.generation), "Lifecycle": int(row.lifecycle),
        }
        return {k: v for k, v in values.items() if k in META_COLUMNS or k in self._control}

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
        updated = (_utc(row.updated_at) or now) if "Revision" in self._control else now
        values = self._values(row, _utc(row.created_at) or now, updated)
        method = None if row.is_offloaded or state_length <= self.chunk_size else self.write_method
        if row.is_offloaded:
            state_sql, state_args = sql.SQL("NULL"), []
        elif method is None:
            data = b"".join(self._chunks(state, state_length, row.where)) if state_length else b""
            state_sql, state_args = sql.SQL("%s"), [data]
        elif method == "copy":
            if self._upload(conn, state, state_length, row.where):
                state_sql, state_args = sql.SQL("(SELECT data FROM pg_temp.{})").format(
                    sql.Identifier(UPLOAD_TABLE)), []
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
            sets = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values if c not in KEY_COLUMNS + ["CreatedAt"]]
            args = [v for c, v in values.items() if c not in KEY_COLUMNS + ["CreatedAt"]]
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

    def _upload(self, conn, state, state_length: int, where: str) -> bool:
        """Stream the value into a temporary table (dropped at commit/rollback) with binary COPY.

        Must be the transaction's first statement. Returns False (nothing consumed, transaction
        rolled back) when the role may not create temporary tables.
        """
        try:
            conn.execute(sql.SQL("CREATE TEMP TABLE {} (data bytea) ON COMMIT DROP").format(
                sql.Identifier(UPLOAD_TABLE)))
        except psycopg.errors.InsufficientPrivilege:
            conn.rollback()
            return False
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY pg_temp.{} (data) FROM STDIN (FORMAT BINARY)").format(
                    sql.Identifier(UPLOAD_TABLE))) as copy:
                # Binary COPY: signature, then one tuple of one field (int16 count, int32 length,
                # raw bytes), then the trailer. The bytes go in chunks; libpq does not buffer them all.
                copy.write(_COPY_SIGNATURE + struct.pack("!hi", 1, state_length))
                for chunk in self._chunks(state, state_length, where, min(self.chunk_size, COPY_PIECE)):
                    copy.write(chunk)
                copy.write(_COPY_TRAILER)
        return True

    def tombstone(self, expected: SnapshotRow) -> SnapshotRow:
        if expected.service_id != self.service_id:
            raise UsageError(f"row for service {expected.service_id!r} tombstoned through a store scoped "
                             f"to {self.service_id!r}")
        if "Lifecycle" not in self._control:
            raise StoreError(f"{self.location}: this Sekiban table has no Lifecycle column")
        sets = sql.SQL('"Lifecycle" = %s, "UpdatedAt" = %s')
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


class _SliceReader(io.RawIOBase):
    """StateData in ``substring`` slices, on a dedicated connection inside one REPEATABLE READ
    READ ONLY transaction; closing the stream ends the transaction and closes the connection."""

    def __init__(self, store: PostgresStateStore, conn: psycopg.Connection, key: tuple[str, str, str],
                 length: int, where: str):
        self._store = store
        self._conn = conn
        self._key = key
        self._length = length
        self._where = where
        self._offset = 0  # bytes fetched so far
        self._buf = memoryview(b"")
        self._query = sql.SQL('SELECT substring({} from %s for %s) FROM {}').format(
            sql.Identifier("StateData"), store._t) + store._key_where

    def readable(self) -> bool:
        return True

    def _fetch(self, n: int) -> bytes:
        n = min(n, self._length - self._offset)
        if n <= 0:
            return b""
        silence = _Silence(self._conn, self._store.timeouts.io)
        try:
            rec = self._conn.execute(self._query, (self._offset + 1, n, *self._key), binary=True).fetchone()
        except psycopg.Error as exc:
            if silence.fired:
                raise self._store._timed_out("cannot read StateData of", self._where) from None
            raise self._store._error(exc, "cannot read StateData of", self._where) from None
        finally:
            silence.stop()
        data = rec[0] if rec else None
        if data is None or len(data) != n:
            # Cannot happen inside one snapshot; say so rather than return a short value.
            raise CorruptSnapshotError(f"{self._store.location}: {self._where}: StateData slice at "
                                       f"{self._offset} came back short")
        self._offset += n
        return data

    def readinto(self, b) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        if not self._buf:
            want = len(b)
            if want >= self._store.chunk_size:
                data = self._fetch(min(want, self._store.chunk_size))
                b[:len(data)] = data
                return len(data)
            self._buf = memoryview(self._fetch(self._store.chunk_size))
            if not self._buf:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def readall(self) -> bytes:
        parts = [bytes(self._buf)]
        self._buf = memoryview(b"")
        while True:
            data = self._fetch(self._store.chunk_size)
            if not data:
                return b"".join(parts)
            parts.append(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._conn.rollback()
            except Exception:
                pass
            finally:
                self._store._discard(self._conn)
                self._buf = memoryview(b"")
        super().close()
