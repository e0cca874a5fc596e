"""Connections to PostgreSQL: opening them, one per thread, a deadline on silence, what a failure means.

libpq waits on its socket without a deadline of its own, so every call runs under a
:class:`SilenceWatchdog`; a store and the stores scoped from it share one connection per thread
(:class:`ThreadConnections`); :func:`is_transient` says which psycopg errors are worth a retry.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import psycopg

from ...errors import StoreUnavailableError, UsageError

# SQLSTATEs worth a retry: connection exceptions (08), transaction rollbacks (40: serialization
# failure, deadlock), operator intervention (57P: shutdown, crash recovery), too many connections,
# lock not available, statement timeout / cancel.
TRANSIENT_PREFIXES = ("08", "40", "57P")
TRANSIENT_STATES = {"53300", "55P03", "57014"}


def is_transient(exc: BaseException) -> bool:
    """Whether a psycopg error is worth a retry (lost connection, serialization failure, ...)."""
    state = getattr(exc, "sqlstate", None)
    if state:
        return state.startswith(TRANSIENT_PREFIXES) or state in TRANSIENT_STATES
    # No SQLSTATE: libpq-level failure (connection refused/reset/closed, timeout).
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def describe(exc: BaseException) -> str:
    """The server's primary message (else the error's first line), with its SQLSTATE."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if not primary:
        lines = str(exc).strip().splitlines()
        primary = lines[0] if lines else type(exc).__name__
    text = primary
    state = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {state})" if state else text


def open_connection(conninfo: str, connect_kwargs: dict, location: str, scrub: Callable[[str], str],
                    read_only: bool = False) -> psycopg.Connection:
    """A new connection (autocommit off, no server-side prepared statements).

    A pooler that refuses the ``options`` startup parameter: ``options`` is dropped from
    ``connect_kwargs`` (the caller's dict, so for good) and the connection made without server
    limits. ``read_only``: REPEATABLE READ READ ONLY, for a consistent multi-query read.
    """
    try:
        # prepare_threshold=None: no server-side prepared statements, so a transaction-mode
        # pooler (PgBouncer) in front of the server works.
        try:
            conn = psycopg.connect(conninfo, autocommit=False, prepare_threshold=None, **connect_kwargs)
        except psycopg.OperationalError as exc:
            if "options" not in connect_kwargs or "startup parameter" not in str(exc):
                raise
            # A pooler that refuses the options startup parameter: go on without server limits.
            connect_kwargs.pop("options")
            conn = psycopg.connect(conninfo, autocommit=False, prepare_threshold=None, **connect_kwargs)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"{location}: cannot connect ({scrub(describe(exc))})") from None
    except psycopg.Error as exc:
        raise StoreUnavailableError(f"{location}: cannot connect ({scrub(describe(exc))})") from None
    if read_only:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
    return conn


def discard(conn: psycopg.Connection) -> None:
    """Close ``conn``, whatever state it is in."""
    try:
        conn.close()
    except Exception:
        pass


class SilenceWatchdog:
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


class ThreadConnections:
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

    def close_all(self, discard: Callable[[psycopg.Connection], None]) -> None:
        with self.registry_lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            discard(conn)
        self.local = threading.local()
