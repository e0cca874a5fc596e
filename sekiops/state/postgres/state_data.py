"""Big StateData in and out of PostgreSQL without holding it whole (100+ MB envelopes exist).

* write: a value larger than one chunk is streamed with ``COPY ... FROM STDIN (FORMAT BINARY)`` into
  a per-transaction temporary table, in chunks (:func:`upload_by_copy`), then moved into the row by
  the single INSERT/UPDATE that also does the compare-and-swap, all in one transaction (readers never
  see a partial value, and the CHECK constraint holds at every statement). When the role may not
  create temporary tables, the store falls back to appending chunks to the row
  (``"StateData" = "StateData" || chunk``, quadratic server-side work, still one transaction).
* read: a value larger than one slice is read as ``substring("StateData" from X for N)`` slices
  (:class:`SliceReader`) on a dedicated connection, inside one REPEATABLE READ READ ONLY
  transaction (a concurrent replace is invisible, so no torn read).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ...errors import CorruptSnapshotError
from .connection import SilenceWatchdog

if TYPE_CHECKING:
    from .store import PostgresStateStore

#: Bytes per read slice and per append (fallback write); values up to this size go in one query.
CHUNK = 4 * 1024 * 1024
#: Bytes per COPY write: no per-piece statement, so small pieces cost nothing and save memory.
COPY_PIECE = 1024 * 1024
#: How a big value is written: binary COPY into a temporary table, or appended chunk by chunk.
WRITE_METHODS = ("copy", "append")
UPLOAD_TABLE = "sekiops_state_upload"

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)


def upload_by_copy(conn: psycopg.Connection, chunks: Iterable[bytes], length: int) -> bool:
    """Stream ``length`` bytes into a temporary table (dropped at commit/rollback) with binary COPY.

    Must be the transaction's first statement. ``chunks`` is consumed only once the table exists.
    Returns False (nothing consumed, transaction rolled back) when the role may not create
    temporary tables. The value is then ``(SELECT data FROM pg_temp.sekiops_state_upload)``.
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
            copy.write(COPY_SIGNATURE + struct.pack("!hi", 1, length))
            for chunk in chunks:
                copy.write(chunk)
            copy.write(COPY_TRAILER)
    return True


def uploaded_value() -> sql.Composable:
    """The expression that reads back what :func:`upload_by_copy` stored."""
    return sql.SQL("(SELECT data FROM pg_temp.{})").format(sql.Identifier(UPLOAD_TABLE))


class SliceReader(io.RawIOBase):
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
        silence = SilenceWatchdog(self._conn, self._store.timeouts.io)
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
