"""Fault injection at the storage boundary, around the REAL stores.

Every case wraps a real store (SQLite file, PostgreSQL server, Cosmos DB protocol server,
Azurite, local directory) and makes it fail the way production does, then checks:

* transient faults (connection reset, timeout, lock/busy, 429, 503) are retried where sekiops
  retries -- the row write after the upload (pipeline), Cosmos DB 429/503 (store), the Azure SDK
  (blob pipeline) -- with bounded exponential backoff and jitter, and the operation then succeeds;
* permanent faults (403, permission denied, read-only, disk full, lost compare-and-swap 409/412)
  surface at once, without retries, as a SekiopsError naming the store and the row or key;
* after every case the row and blob states are consistent: restore gives exactly the old or
  the new state and no row points at a missing blob.

How each fault is made, from most to least real:

* real server behaviour: PostgreSQL backend terminated (``pg_terminate_backend``), row lock held
  past ``lock_timeout``, a role without UPDATE; SQLite ``BEGIN IMMEDIATE`` held by another
  connection (busy), ``PRAGMA query_only`` (read-only); a competing writer creating or
  replacing the row first (real 409/412 from Cosmos, real CAS loss on SQL); a blob deleted
  between write and read, or while being read (Azurite, ranged GETs);
* HTTP transport wrappers (:class:`FaultTransport`), because the emulators cannot produce them:
  Cosmos 429/503/403 and timeouts/resets, Azure 503/500/403 and timeouts/resets. The wrapper
  sits below the SDK's retry policy and forwards everything else to the real server;
* in-process fakes, only where no real server can show the fault: ENOSPC (no tiny tmpfs is
  available to the tests: a failing file object / a patched ``os.fdopen``), and EACCES on the
  local blob directory when running as root (root bypasses ``chmod``: a patched ``os.open``).

``FAULTS_INJECTED`` counts every injected fault (printed at the end of the module).
"""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import sqlite3
import sys
import time
import types
import uuid

import pytest

from sekiops.blob import open_blob_store
from sekiops.errors import (
    BlobNotFoundError,
    ConcurrencyConflictError,
    SekiopsError,
    SpoolError,
    StoreError,
    StoreUnavailableError,
)
from sekiops.pipeline import persist as persist_mod
from sekiops.pipeline.persist import PersistOptions, persist_stream
from sekiops.pipeline.restore import RestoreOptions, restore
from sekiops.pipeline.spool import Spool
from sekiops.state import open_state_store
from sekiops.state.base import iter_rows

pytestmark = pytest.mark.usefixtures("private_spool")  # every test spools in its own directory


SLUI = "063904064000000000000000000001"
PROJ = "FaultProj"
OLD = json.dumps({"state": "old", "items": list(range(2000))}).encode()
NEW = json.dumps({"state": "new", "items": [f"item-{i}" for i in range(30000)]}).encode()
#: payload-level offload for the NEW state (compressed ~ 70 kB), OLD stays inline
OFFLOAD = PersistOptions(payload_threshold=20_000, backoff_seconds=0.2)

FAULTS_INJECTED = 0


def injected(n: int = 1) -> None:
    global FAULTS_INJECTED
    FAULTS_INJECTED += n


@pytest.fixture(scope="module", autouse=True)
def _report_faults():
    yield
    sys.stderr.write(f"\n[faults] faults injected: {FAULTS_INJECTED}\n")


@pytest.fixture
def persist_sleeps(monkeypatch):
    """Record the pipeline's retry sleeps instead of sleeping."""
    sleeps: list[float] = []
    fake = types.SimpleNamespace(sleep=sleeps.append, time=time.time, monotonic=time.monotonic,
                                 perf_counter=time.perf_counter)
    monkeypatch.setattr(persist_mod, "time", fake)
    return sleeps


@pytest.fixture
def cosmos_sleeps(monkeypatch):
    import sekiops.retry as retry_mod  # the one retry rule every store uses

    sleeps: list[float] = []
    fake = types.SimpleNamespace(sleep=sleeps.append, time=time.time, monotonic=time.monotonic,
                                 perf_counter=time.perf_counter)
    monkeypatch.setattr(retry_mod, "time", fake)
    return sleeps


# --- helpers -------------------------------------------------------------------------------------


def service() -> str:
    return "flt-" + uuid.uuid4().hex[:10]


def do_persist(state, blob, data: bytes, events: int, options: PersistOptions = OFFLOAD):
    return persist_stream(state, blob, io.BytesIO(data), projector_name=PROJ, projector_version="1",
                          events_processed=events, last_sortable_unique_id=SLUI, options=options)


def restored(state, blob, projector: str = PROJ) -> bytes:
    buf = io.BytesIO()
    restore(state, blob, buf, projector_name=projector, options=RestoreOptions(verify=True))
    return buf.getvalue()


def assert_consistent(state, blob, allowed: tuple[bytes, ...]) -> bytes:
    """Restore gives exactly one of ``allowed``; every row's and envelope's blob keys exist."""
    got = restored(state, blob)
    assert got in allowed, "restore gave neither the old nor the new state"
    for row in iter_rows(state):
        res = restore(state, blob, io.BytesIO(), projector_name=row.projector_name,
                      projector_version=row.projector_version,
                      options=RestoreOptions(verify=True, include_tombstoned=True))
        for key in (res.envelope_key, res.payload_key):
            if key:
                assert blob.exists(key), f"{row.where} points at missing blob {key}"
    return got


def check_backoff(sleeps: list[float], base: float) -> None:
    """The pipeline's rule: delay_i = base * 2**i * U(0.5, 1.5): exponential, jittered, bounded."""
    for i, d in enumerate(sleeps):
        lo, hi = base * 2**i * 0.5, base * 2**i * 1.5
        assert lo <= d <= hi, f"retry {i + 1} slept {d:.3f} s, outside [{lo:.3f}, {hi:.3f}]"


class FaultyState:
    """A StateStore proxy around a real store: ``around_write(n, call)`` wraps the n-th write.

    Everything else is the real store's (attributes and methods are forwarded).
    """

    def __init__(self, inner, around_write=None, around_stream=None):
        self.inner = inner
        self.around_write = around_write
        self.around_stream = around_stream
        self.writes = 0
        self.streams = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write(self, row, state, state_length, expected):
        self.writes += 1
        call = lambda: self.inner.write(row, state, state_length, expected)  # noqa: E731
        return self.around_write(self.writes, call) if self.around_write else call()

    def open_state_stream(self, row):
        self.streams += 1
        call = lambda: self.inner.open_state_stream(row)  # noqa: E731
        return self.around_stream(self.streams, call) if self.around_stream else call()

    def __repr__(self):
        return f"FaultyState({self.inner!r})"


def _transport_base():
    from azure.core.pipeline.transport import RequestsTransport

    return RequestsTransport


def make_fault_transport(**kwargs):
    """An azure-core transport that injects planned faults, forwarding the rest to the real server.

    ``plan`` is a list of ``(predicate(request) -> bool, action)``, consumed in order: the first
    entry whose predicate matches the request is removed and applied. Actions: an int (a fake
    HTTP response with that status, ``x-ms-retry-after-ms`` from ``retry_after_ms``), ``"reset"``
    (ServiceRequestError: connection reset before sending), ``"timeout"`` (ServiceResponseError:
    read timed out, request not processed), ``"lost-answer"`` (request sent and processed by the
    server, then the answer is lost as ServiceResponseError). ``sleep`` is recorded, not slept.
    """
    import requests
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError
    from azure.core.pipeline.transport import RequestsTransportResponse

    class FaultTransport(_transport_base()):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.plan: list = []
            self.requests: list[tuple[str, str]] = []
            self.faults = 0
            self.sleeps: list[float] = []
            self.retry_after_ms: str | None = None

        def sleep(self, duration):  # the SDK retry policy's backoff goes through here
            self.sleeps.append(duration)

        def send(self, request, **kw):
            self.requests.append((request.method, request.url))
            for i, (pred, action) in enumerate(self.plan):
                if pred(request):
                    del self.plan[i]
                    self.faults += 1
                    injected()
                    return self._apply(action, request, kw)
            return super().send(request, **kw)

        def _apply(self, action, request, kw):
            if isinstance(action, int):
                r = requests.Response()
                r.status_code = action
                r.headers["Content-Type"] = "application/json"
                r.headers["x-ms-request-id"] = str(uuid.uuid4())
                if self.retry_after_ms is not None:
                    r.headers["x-ms-retry-after-ms"] = self.retry_after_ms
                code = {429: "TooManyRequests", 503: "ServerBusy", 500: "InternalError",
                        403: "AuthorizationPermissionMismatch"}.get(action, "Injected")
                r.headers["x-ms-error-code"] = code
                r._content = json.dumps({"code": code, "message": f"injected {action}"}).encode()
                r.url = request.url
                r.reason = "Injected"
                return RequestsTransportResponse(request, r)
            if action == "reset":
                raise ServiceRequestError("injected: [Errno 104] Connection reset by peer",
                                          error=ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
            if action == "timeout":
                raise ServiceResponseError("injected: Read timed out", error=TimeoutError("timed out"))
            if action == "lost-answer":
                super().send(request, **kw)
                raise ServiceResponseError("injected: connection lost before the answer",
                                           error=ConnectionResetError(errno.ECONNRESET, "reset"))
            raise AssertionError(action)

    return FaultTransport(**kwargs)


def is_doc_write(request) -> bool:
    return request.method in ("POST", "PUT") and "/docs" in request.url


def is_doc_read(request) -> bool:
    return request.method == "GET" and "/docs/" in request.url


def is_put_block(request) -> bool:
    return request.method == "PUT" and "comp=block" in request.url and "blocklist" not in request.url


# --- PostgreSQL: real server faults --------------------------------------------------------------


@pytest.fixture
def pg(postgres_server):
    import psycopg

    admin = psycopg.connect(postgres_server.url, autocommit=True)
    yield types.SimpleNamespace(server=postgres_server, admin=admin)
    admin.close()


def terminate_backend(admin, store) -> None:
    """Kill the store's server process (a real connection reset: the server goes away)."""
    if store._conn is None or store._conn.closed or store._conn.broken:
        store.get(PROJ, "1")  # the store reconnects lazily: make it hold a connection to kill
    pid = store._conn.info.backend_pid
    assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]
    injected()


def test_postgres_connection_reset_on_row_write_is_retried(pg, tmp_path, persist_sleeps):
    """The server terminates our backend before the row write: the pipeline retries (with
    backoff) on a fresh connection; the blob uploaded before is reused, not re-uploaded."""
    inner = open_state_store(pg.server.url, service_id=service())
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(inner, blob, OLD, 1)

    def around(n, call):
        if n == 1:
            terminate_backend(pg.admin, inner)
        return call()

    state = FaultyState(inner, around_write=around)
    res = do_persist(state, blob, NEW, 2)
    assert res.row_attempts == 2 and state.writes == 2
    assert len(persist_sleeps) == 1
    check_backoff(persist_sleeps, OFFLOAD.backoff_seconds)
    assert res.upload_bytes == res.compressed_size_bytes  # uploaded once
    assert assert_consistent(inner, blob, (NEW,)) == NEW
    inner.close()


def test_postgres_lock_timeout_is_retried(pg, tmp_path, persist_sleeps):
    """Another session holds the row lock past our lock_timeout (SQLSTATE 55P03, a real server
    timeout): transient, retried; the second attempt gets the row."""
    url = pg.server.url + "?options=-c%20lock_timeout%3D200"
    inner = open_state_store(url, service_id=service())
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(inner, blob, OLD, 1)
    import psycopg

    def around(n, call):
        if n != 1:
            return call()
        locker = psycopg.connect(pg.server.url)
        try:
            locker.execute('SELECT 1 FROM dcb_multi_projection_states WHERE "ServiceId" = %s FOR UPDATE',
                           (inner.service_id,)).fetchall()
            injected()
            return call()
        finally:
            locker.rollback()
            locker.close()

    state = FaultyState(inner, around_write=around)
    res = do_persist(state, blob, NEW, 2)
    assert res.row_attempts == 2
    check_backoff(persist_sleeps, OFFLOAD.backoff_seconds)
    assert assert_consistent(inner, blob, (NEW,)) == NEW
    inner.close()


def test_postgres_outage_gives_up_after_bounded_retries(pg, tmp_path, persist_sleeps):
    """Every row write loses its connection: the pipeline stops after row_attempts, with
    exponentially growing jittered sleeps, and says which blobs stay; the old row is intact."""
    inner = open_state_store(pg.server.url, service_id=service())
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(inner, blob, OLD, 1)

    def around(n, call):
        terminate_backend(pg.admin, inner)
        return call()

    state = FaultyState(inner, around_write=around)
    with pytest.raises(StoreUnavailableError) as ei:
        do_persist(state, blob, NEW, 2)
    msg = str(ei.value)
    assert state.writes == OFFLOAD.row_attempts == 3
    assert len(persist_sleeps) == 2
    check_backoff(persist_sleeps, OFFLOAD.backoff_seconds)
    assert inner.location in msg and f"{inner.service_id}/{PROJ}/1" in msg and "failed 3 times" in msg
    assert pg.server.password not in msg or not pg.server.password
    assert assert_consistent(inner, blob, (OLD,)) == OLD
    inner.close()


def test_postgres_permission_denied_is_permanent(pg, tmp_path, persist_sleeps):
    """A role that may SELECT but not UPDATE (SQLSTATE 42501): StoreError at once, no retry."""
    import psycopg

    owner = open_state_store(pg.server.url, service_id=service())  # creates the table if needed
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(owner, blob, OLD, 1)
    try:
        pg.admin.execute("CREATE ROLE sekiops_faults_ro LOGIN PASSWORD 'ro-Secret-4711'")
    except psycopg.errors.DuplicateObject:
        pass
    pg.admin.execute("GRANT SELECT ON dcb_multi_projection_states TO sekiops_faults_ro")
    host = pg.server.url.rsplit("@", 1)[1]
    ro = open_state_store(f"postgresql://sekiops_faults_ro:ro-Secret-4711@{host}", service_id=owner.service_id)
    injected()
    with pytest.raises(StoreError) as ei:
        do_persist(ro, blob, NEW, 2)
    assert not isinstance(ei.value, StoreUnavailableError)
    msg = str(ei.value)
    assert persist_sleeps == [], "a permanent failure must not be retried"
    assert "permission denied" in msg and ro.location in msg and f"{owner.service_id}/{PROJ}/1" in msg
    assert "ro-Secret-4711" not in msg
    assert assert_consistent(owner, blob, (OLD,)) == OLD
    ro.close()
    owner.close()


def test_postgres_read_retried_on_fresh_connection(pg, tmp_path):
    """The backend dies between reading the row and streaming its StateData: the store retries
    the read once on a fresh connection; restore succeeds."""
    inner = open_state_store(pg.server.url, service_id=service())
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(inner, blob, OLD, 1)

    def around(n, call):
        if n == 1:
            terminate_backend(pg.admin, inner)
        return call()

    state = FaultyState(inner, around_stream=around)
    assert restored(state, blob) == OLD
    assert state.streams == 1
    inner.close()


# --- SQLite: real busy / read-only --------------------------------------------------------------


def test_sqlite_busy_is_retried(tmp_path, persist_sleeps):
    """Another connection holds the write lock past the busy timeout: StoreUnavailableError,
    retried by the pipeline once the lock is gone."""
    path = tmp_path / "s.db"
    inner = open_state_store(f"sqlite:///{path}", timeout=0.1)
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(inner, blob, OLD, 1)

    def around(n, call):
        if n != 1:
            return call()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        injected()
        try:
            return call()
        finally:
            other.execute("ROLLBACK")
            other.close()

    state = FaultyState(inner, around_write=around)
    res = do_persist(state, blob, NEW, 2)
    assert res.row_attempts == 2
    check_backoff(persist_sleeps, OFFLOAD.backoff_seconds)
    assert assert_consistent(inner, blob, (NEW,)) == NEW


def test_sqlite_read_only_is_permanent(tmp_path, persist_sleeps):
    """SQLite refuses the write (``PRAGMA query_only``: "attempt to write a readonly database"):
    StoreError at once, naming the file; the old row stays."""
    inner = open_state_store(f"sqlite:///{tmp_path}/s.db")
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(inner, blob, OLD, 1)
    inner._conn().execute("PRAGMA query_only = 1")
    injected()
    with pytest.raises(StoreError) as ei:
        do_persist(inner, blob, NEW, 2)
    assert not isinstance(ei.value, StoreUnavailableError)
    assert persist_sleeps == []
    assert inner.location in str(ei.value) and "readonly" in str(ei.value)
    inner._conn().execute("PRAGMA query_only = 0")
    assert assert_consistent(inner, blob, (OLD,)) == OLD


# --- lost compare-and-swap: real 409 / 412 ---------------------------------------------------------


def _state_opener(kind, request, tmp_path):
    sid = service()
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/s.db"
    elif kind == "postgres":
        url = request.getfixturevalue("postgres_server").url
    else:
        server = request.getfixturevalue("cosmos_env")
        host = server.endpoint.split("://", 1)[1].rstrip("/")
        url = f"cosmos+https://{host}/faultsdb/multiProjectionStates?verify=false"
    opened = []
    request.addfinalizer(lambda: [s.close() for s in opened])

    def open_(**kw):
        s = open_state_store(url, service_id=sid, **kw)
        opened.append(s)
        return s
    return open_


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "cosmos"])
@pytest.mark.parametrize("race", ["create", "replace"])
def test_lost_compare_and_swap_is_not_retried(kind, race, request, tmp_path, persist_sleeps):
    """Another writer creates (Cosmos 409 / unique violation) or replaces (Cosmos 412 / revision
    moved) the row between our read and our write: ConcurrencyConflictError at once, nothing of
    ours written; the other writer's snapshot is intact and our uploaded blob is referenced by
    no row."""
    open_ = _state_opener(kind, request, tmp_path)
    inner, rival = open_(), open_()
    blob = open_blob_store(str(tmp_path / "blobs"))
    rival_data = json.dumps({"state": "rival"}).encode()
    if race == "replace":
        do_persist(inner, blob, OLD, 1)

    def around(n, call):
        do_persist(rival, blob, rival_data, 5)  # the competing write, through the real server
        injected()
        return call()

    state = FaultyState(inner, around_write=around)
    with pytest.raises(ConcurrencyConflictError) as ei:
        do_persist(state, blob, NEW, 2)
    assert state.writes == 1 and persist_sleeps == []
    assert inner.location in str(ei.value) and f"{inner.service_id}/{PROJ}/1" in str(ei.value)
    assert assert_consistent(inner, blob, (rival_data,)) == rival_data
    row = inner.get(PROJ, "1")
    assert row.events_processed == 5


# --- Cosmos DB: 429 / 503 / 403 / timeouts through the transport ---------------------------------


@pytest.fixture
def cosmos(cosmos_env, tmp_path):
    host = cosmos_env.endpoint.split("://", 1)[1].rstrip("/")
    url = f"cosmos+https://{host}/faultsdb/multiProjectionStates?verify=false"
    transport = make_fault_transport(connection_verify=False)
    sid = service()
    store = open_state_store(url, service_id=sid, transport=transport)
    clean = open_state_store(url, service_id=sid)
    blob = open_blob_store(str(tmp_path / "blobs"))
    yield types.SimpleNamespace(store=store, clean=clean, transport=transport, blob=blob)
    store.close()
    clean.close()


def test_cosmos_429_waits_the_servers_retry_after(cosmos, cosmos_sleeps):
    """(Fake 429: cosmosdb-server never throttles.) The store waits x-ms-retry-after-ms (+ up to
    20 % jitter) and retries; the write then goes through."""
    do_persist(cosmos.clean, cosmos.blob, OLD, 1)
    t = cosmos.transport
    t.retry_after_ms = "250"
    t.plan = [(is_doc_write, 429), (is_doc_write, 429)]
    res = do_persist(cosmos.store, cosmos.blob, NEW, 2)
    assert t.faults == 2 and res.row_attempts == 1
    assert len(cosmos_sleeps) == 2 and all(0.25 <= s <= 0.25 * 1.2 for s in cosmos_sleeps)
    assert assert_consistent(cosmos.clean, cosmos.blob, (NEW,)) == NEW


def test_cosmos_503_exponential_backoff_with_jitter(cosmos, cosmos_sleeps):
    """(Fake 503.) Without a server hint: 0.1 s, 0.2 s, 0.4 s ... x U(1, 1.2)."""
    t = cosmos.transport
    t.plan = [(is_doc_read, 503)] * 3
    assert cosmos.store.get(PROJ, "1") is None
    assert t.faults == 3 and len(cosmos_sleeps) == 3
    for i, s in enumerate(cosmos_sleeps):
        assert 0.1 * 2**i <= s <= 0.1 * 2**i * 1.2


def test_cosmos_throttling_gives_up_bounded(cosmos, cosmos_sleeps):
    """(Fake 429s, forever.) At most retry_attempts tries and retry_max_wait seconds of waiting,
    then StoreUnavailableError naming the store; the old row stays."""
    do_persist(cosmos.clean, cosmos.blob, OLD, 1)
    t = cosmos.transport
    t.retry_after_ms = "1000"
    t.plan = [(is_doc_write, 429)] * 100
    with pytest.raises(StoreUnavailableError) as ei:
        do_persist(cosmos.store, cosmos.blob, NEW, 2, PersistOptions(payload_threshold=20_000, row_attempts=1))
    attempts = cosmos.store.retry_attempts
    assert t.faults == attempts and len(cosmos_sleeps) == attempts - 1
    assert sum(cosmos_sleeps) <= cosmos.store.retry_max_wait
    assert cosmos.store.location in str(ei.value) and "gave up" in str(ei.value)
    assert assert_consistent(cosmos.clean, cosmos.blob, (OLD,)) == OLD


def test_cosmos_403_is_permanent(cosmos, cosmos_sleeps, persist_sleeps):
    """(Fake 403.) StoreError at once: no store retry, no pipeline retry."""
    do_persist(cosmos.clean, cosmos.blob, OLD, 1)
    cosmos.transport.plan = [(is_doc_write, 403)]
    with pytest.raises(StoreError) as ei:
        do_persist(cosmos.store, cosmos.blob, NEW, 2)
    assert not isinstance(ei.value, StoreUnavailableError)
    assert cosmos_sleeps == [] and persist_sleeps == []
    assert "access denied" in str(ei.value) and cosmos.store.location in str(ei.value)
    assert assert_consistent(cosmos.clean, cosmos.blob, (OLD,)) == OLD


def test_cosmos_connection_reset_and_read_timeout_are_retried(cosmos, cosmos_sleeps):
    """A reset before sending (the SDK's one connect retry) and a read timeout (sekiops' read
    retry) both end in a successful read."""
    do_persist(cosmos.clean, cosmos.blob, OLD, 1)
    t = cosmos.transport
    t.plan = [(is_doc_read, "reset"), (is_doc_read, "timeout")]
    assert restored(cosmos.store, cosmos.blob) == OLD
    assert t.faults == 2


def test_cosmos_persistent_reset_surfaces(cosmos):
    """Connection resets on every try: StoreUnavailableError naming the store, quickly."""
    t = cosmos.transport
    t.plan = [(is_doc_read, "reset")] * 10
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError) as ei:
        cosmos.store.get(PROJ, "1")
    assert time.monotonic() - start < 10
    assert cosmos.store.location in str(ei.value)


def test_cosmos_write_whose_answer_is_lost(cosmos, persist_sleeps):
    """The replace reaches the server and is applied, but the answer is lost (ServiceResponseError).

    The store says "may or may not have been applied: re-read before retrying"; the pipeline
    retries the row write with the *old* etag, which the server now refuses with 412. The row
    holds our snapshot, so the persist must not report a lost race ("nothing overwritten"):
    either it succeeds, or it says the outcome is unknown.
    """
    do_persist(cosmos.clean, cosmos.blob, OLD, 1)
    cosmos.transport.plan = [(is_doc_write, "lost-answer")]
    try:
        do_persist(cosmos.store, cosmos.blob, NEW, 2)
        outcome = "success"
    except ConcurrencyConflictError as exc:
        outcome = f"ConcurrencyConflictError: {exc}"
    except StoreUnavailableError as exc:
        outcome = "unknown" if "may or may not" in str(exc) else f"StoreUnavailableError: {exc}"
    # the state is consistent whatever was reported
    assert assert_consistent(cosmos.clean, cosmos.blob, (OLD, NEW)) == NEW
    assert outcome in ("success", "unknown"), (
        "BUG: the pipeline retried a write whose outcome was unknown and reported a lost race, "
        f"although the row holds its own snapshot: {outcome}")


# --- Azure Blob: 503 / 500 / 403 / resets / timeouts through the transport ------------------------


@pytest.fixture
def azure(azure_storage_env, monkeypatch):
    from azure.storage.blob import BlobServiceClient
    from azure.storage.blob._shared.base_client import TransportWrapper

    from sekiops.blob.azure import AzureBlobStore, _client_kwargs

    transport = make_fault_transport()
    kw = _client_kwargs(None)  # the library's real retry policy and timeouts
    kw.update(max_single_get_size=64 * 1024, max_chunk_get_size=64 * 1024)
    service = BlobServiceClient.from_connection_string(azure_storage_env.connection_string,
                                                       transport=transport, **kw)
    container = "f" + uuid.uuid4().hex[:12]
    store = AzureBlobStore(service, container, block_size=64 * 1024, concurrency=1)
    # Blob clients wrap the service's transport in TransportWrapper, whose sleep() is the base
    # class's time.sleep: route it to our transport so backoffs are recorded, not slept.
    monkeypatch.setattr(TransportWrapper, "sleep", lambda self, d: self._transport.sleep(d), raising=False)
    clean = open_blob_store(f"azblob://{container}")
    yield types.SimpleNamespace(store=store, clean=clean, transport=transport, policy=kw["retry_policy"])
    store.close()
    clean.close()


def test_azure_retry_policy_is_bounded_with_jitter():
    from sekiops.blob.azure import _client_kwargs

    policy = _client_kwargs(None)["retry_policy"]
    assert 1 <= policy.total_retries <= 10
    assert policy.random_jitter_range > 0
    assert policy.increment_base > 1  # exponential
    # worst-case total backoff stays bounded (well under a minute)
    worst = sum(policy.initial_backoff + policy.increment_base ** c + policy.random_jitter_range
                for c in range(1, policy.total_retries + 1))
    assert worst < 60


@pytest.mark.parametrize("fault", [503, 500, "reset", "timeout"])
def test_azure_transient_upload_fault_is_retried(azure, tmp_path, fault):
    """A Put Block fails once (503 ServerBusy is Azure Storage's throttle, 500, a reset, a read
    timeout): the SDK retries it with jittered exponential backoff; the persist succeeds."""
    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    do_persist(state, azure.clean, OLD, 1)
    t = azure.transport
    t.plan = [(is_put_block, fault)]
    res = do_persist(state, azure.store, NEW, 2)
    assert t.faults == 1 and res.payload_location == "blob"
    assert len(t.sleeps) == 1
    p = azure.policy
    first = p.initial_backoff + p.increment_base
    assert first - p.random_jitter_range <= t.sleeps[0] <= first + p.random_jitter_range
    assert assert_consistent(state, azure.clean, (NEW,)) == NEW


def test_azure_persistent_503_gives_up_bounded(azure, tmp_path, persist_sleeps):
    """503 on every try: retry_total retries with growing backoff, then StoreUnavailableError
    naming the store and key; no row written (the pipeline does not retry uploads)."""
    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    do_persist(state, azure.clean, OLD, 1)
    t = azure.transport
    t.plan = [(is_put_block, 503)] * 50
    with pytest.raises(StoreUnavailableError) as ei:
        do_persist(state, azure.store, NEW, 2)
    total = azure.policy.total_retries
    assert t.faults == total + 1 and len(t.sleeps) == total
    assert t.sleeps == sorted(t.sleeps) or all(  # growing, up to the jitter
        b >= a - 2 * azure.policy.random_jitter_range for a, b in itertools.pairwise(t.sleeps))
    msg = str(ei.value)
    assert azure.store.location in msg and f"{PROJ}/" in msg and "HTTP 503" in msg
    assert assert_consistent(state, azure.clean, (OLD,)) == OLD


def test_azure_403_is_permanent(azure, tmp_path):
    """403 on upload: StoreError at once (no SDK retry), naming the key; the old row stays."""
    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    do_persist(state, azure.clean, OLD, 1)
    t = azure.transport
    t.plan = [(is_put_block, 403)]
    with pytest.raises(StoreError) as ei:
        do_persist(state, azure.store, NEW, 2)
    assert not isinstance(ei.value, StoreUnavailableError)
    assert t.faults == 1 and t.sleeps == []
    assert "permission denied" in str(ei.value) and f"{PROJ}/" in str(ei.value)
    assert assert_consistent(state, azure.clean, (OLD,)) == OLD


def test_azure_blob_vanishes_between_write_and_read(azure, tmp_path):
    """Real: the payload blob is deleted after the row was written. Restore fails with
    BlobNotFoundError naming the key and the store, and writes no output file."""
    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    res = do_persist(state, azure.clean, NEW, 2)
    assert azure.clean.delete(res.payload_key)
    injected()
    out = tmp_path / "out.json"
    with pytest.raises(BlobNotFoundError) as ei:
        restore(state, azure.clean, str(out), projector_name=PROJ)
    assert res.payload_key in str(ei.value) and azure.clean.location in str(ei.value)
    assert not out.exists() and not list(tmp_path.glob(".out.json.*"))


def test_azure_blob_vanishes_while_being_read(azure, tmp_path):
    """Real: the payload blob is deleted after the first 64 kB ranged GET. The next range is a
    404: BlobNotFoundError ("disappeared ... while being read"), no output file."""
    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    big = json.dumps({"r": [uuid.uuid4().hex for _ in range(20000)]}).encode()  # ~ 400 kB gzip
    res = do_persist(state, azure.clean, big, 2)
    real_open = azure.store.open_read

    def open_then_delete(key):
        stream = real_open(key)  # first range fetched
        azure.clean.delete(key)
        injected()
        return stream

    azure.store.open_read = open_then_delete
    out = tmp_path / "out.json"
    with pytest.raises(SekiopsError) as ei:
        restore(state, azure.store, str(out), projector_name=PROJ)
    assert isinstance(ei.value, (BlobNotFoundError, StoreUnavailableError)), repr(ei.value)
    assert res.payload_key in str(ei.value)
    assert not out.exists() and not list(tmp_path.glob(".out.json.*"))


def test_local_blob_vanishes_between_write_and_read(tmp_path):
    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    blob = open_blob_store(str(tmp_path / "blobs"))
    res = do_persist(state, blob, NEW, 2)
    os.unlink(tmp_path / "blobs" / res.payload_key)
    injected()
    out = tmp_path / "out.json"
    with pytest.raises(BlobNotFoundError) as ei:
        restore(state, blob, str(out), projector_name=PROJ)
    assert res.payload_key in str(ei.value) and blob.location in str(ei.value)
    assert not out.exists()


# --- disk full (ENOSPC) and permission denied: in-process fakes ---------------------------------


class _FullFile:
    """A file object that accepts ``room`` bytes, then fails with ENOSPC (a fake: no tiny tmpfs
    is available to the tests)."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            injected()
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def os_proxy(**overrides):
    """A stand-in for the ``os`` module of ONE sekiops module (patching ``os`` itself would hit
    every module, the spool included)."""
    ns = types.SimpleNamespace(**overrides)

    class _Os(types.ModuleType):
        def __getattr__(self, name):
            return getattr(ns, name) if hasattr(ns, name) else getattr(os, name)
    return _Os("os")


class _FullSpool(Spool):
    def __init__(self, *a, room: int, **kw):
        super().__init__(*a, **kw)
        self.room = room

    def create(self, name):
        sf = super().create(name)
        sf.file = _FullFile(sf.file, self.room)
        return sf


def test_disk_full_in_spool_during_persist(tmp_path):
    """(Fake ENOSPC.) The temp file fills up while the body is written: SpoolError "disk full"
    naming the row; nothing uploaded, no row written, no temp file left."""
    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(state, blob, OLD, 1)
    keys_before = {b.key for b in blob.list()}
    spool = _FullSpool(str(tmp_path / "spool2"), room=10_000)
    with pytest.raises(SpoolError) as ei:
        persist_stream(state, blob, io.BytesIO(NEW), projector_name=PROJ, projector_version="1",
                       events_processed=2, last_sortable_unique_id=SLUI, options=OFFLOAD, spool=spool)
    assert "disk full" in str(ei.value) and f"{state.service_id}/{PROJ}/1" in str(ei.value)
    assert {b.key for b in blob.list()} == keys_before
    assert os.listdir(tmp_path / "spool2") == []
    assert assert_consistent(state, blob, (OLD,)) == OLD


def test_disk_full_in_local_blob_store(tmp_path, monkeypatch, persist_sleeps):
    """(Fake ENOSPC through a patched os.fdopen in the local store.) StoreError "disk full" with
    the key, at once; no blob under the final key, no partial file left; old row intact."""
    import sekiops.blob.local as local

    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(state, blob, OLD, 1)
    keys_before = {b.key for b in blob.list()}
    monkeypatch.setattr(local, "os", os_proxy(fdopen=lambda fd, *a, **k: _FullFile(os.fdopen(fd, *a, **k), 4096)))
    with pytest.raises(StoreError) as ei:
        do_persist(state, blob, NEW, 2)
    monkeypatch.setattr(local, "os", os)
    assert "disk full" in str(ei.value) and f"{PROJ}" in str(ei.value) and blob.location in str(ei.value)
    assert persist_sleeps == []
    assert {b.key for b in blob.list()} == keys_before
    assert os.listdir(tmp_path / "blobs" / ".sekiops-incoming") == []
    assert assert_consistent(state, blob, (OLD,)) == OLD


def test_disk_full_writing_restore_output(tmp_path, monkeypatch):
    """(Fake ENOSPC on the output file.) BUG: the library lets a bare OSError escape; the
    contract says every expected failure is a SekiopsError naming what and where. No partial
    output may be left either way."""
    import sekiops.pipeline.restore as restore_mod

    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    blob = open_blob_store(str(tmp_path / "blobs"))
    do_persist(state, blob, NEW, 2)
    monkeypatch.setattr(restore_mod, "os", os_proxy(fdopen=lambda fd, *a, **k: _FullFile(os.fdopen(fd, *a, **k), 4096)))
    out = tmp_path / "out.json"
    try:
        with pytest.raises(SekiopsError) as ei:
            restore(state, blob, str(out), projector_name=PROJ)
        assert "out.json" in str(ei.value)
    finally:
        assert not out.exists() and not list(tmp_path.glob(".out.json.*"))


def test_permission_denied_on_local_blob_dir(tmp_path, monkeypatch, persist_sleeps):
    """A read-only blob directory: StoreError "permission denied" with the key, at once.

    As root, chmod does not stop writes (root bypasses file permissions), so the test then
    injects EACCES through a patched ``os.open`` in the local store instead (a fake).
    """
    import sekiops.blob.local as local

    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    root = tmp_path / "blobs"
    blob = open_blob_store(str(root))
    do_persist(state, blob, OLD, 1)
    keys_before = {b.key for b in blob.list()}
    mp = pytest.MonkeyPatch()
    if os.geteuid() == 0:
        real = os.open

        def deny(path, flags, *a, **k):
            if str(path).startswith(str(root)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                injected()
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return real(path, flags, *a, **k)
        mp.setattr(local, "os", os_proxy(open=deny))
    else:
        for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
            d.chmod(0o555)
        injected()
    try:
        with pytest.raises(StoreError) as ei:
            do_persist(state, blob, NEW, 2)
    finally:
        mp.undo()
        for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
            d.chmod(0o755)
    assert not isinstance(ei.value, StoreUnavailableError)
    assert "permission denied" in str(ei.value) and blob.location in str(ei.value)
    assert persist_sleeps == []
    assert {b.key for b in blob.list()} == keys_before
    assert assert_consistent(state, blob, (OLD,)) == OLD


def test_strict_sqlite_refuses_before_uploading(tmp_path):
    """BUG: SQLite in strict Sekiban mode never stores offloaded rows, yet persist with a record
    threshold uploads the envelope blob first and only then is refused by the row write
    (GuardRefusedError), leaving an unreferenced blob. The guard should run before the upload."""
    from sekiops.errors import GuardRefusedError

    state = open_state_store(f"sqlite:///{tmp_path}/s.db")  # strict: no ?record_threshold
    blob = open_blob_store(str(tmp_path / "blobs"))
    with pytest.raises(GuardRefusedError):
        do_persist(state, blob, NEW, 1, PersistOptions(payload_threshold=10**12, record_threshold=100))
    assert [b.key for b in blob.list()] == [], "the refused persist left an unreferenced blob behind"
