"""PostgreSQL-specific tests of PostgresStateStore (the shared behaviour is in tests/conformance)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from sekiops.errors import (
    ConcurrencyConflictError,
    SekiopsError,
    StoreError,
    StoreUnavailableError,
    TombstonedError,
    UsageError,
)
from sekiops.format.record import SnapshotRow
from sekiops.state import open_state_store
from sekiops.state.postgres import PostgresStateStore, split_schema

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024

# The table as the format reference (section 2.2) describes it:
# column -> (data_type, character_maximum_length, is_nullable, column_default)
SPEC_COLUMNS = {
    "ServiceId": ("character varying", 64, "NO", None),
    "ProjectorName": ("character varying", 256, "NO", None),
    "ProjectorVersion": ("character varying", 128, "NO", None),
    "PayloadType": ("character varying", 512, "NO", None),
    "LastSortableUniqueId": ("character varying", 100, "NO", None),
    "EventsProcessed": ("bigint", None, "NO", None),
    "StateData": ("bytea", None, "YES", None),
    "IsOffloaded": ("boolean", None, "NO", None),
    "OffloadKey": ("character varying", 512, "YES", None),
    "OffloadProvider": ("character varying", 128, "YES", None),
    "OriginalSizeBytes": ("bigint", None, "NO", None),
    "CompressedSizeBytes": ("bigint", None, "NO", None),
    "SafeWindowThreshold": ("character varying", 100, "NO", None),
    "CreatedAt": ("timestamp with time zone", None, "NO", None),
    "UpdatedAt": ("timestamp with time zone", None, "NO", None),
    "BuildSource": ("character varying", 32, "NO", None),
    "BuildHost": ("character varying", 256, "YES", None),
    "Generation": ("bigint", None, "NO", "0"),
    "Lifecycle": ("integer", None, "NO", "0"),
    "Revision": ("bigint", None, "NO", "0"),
}

INSERT_RAW = """INSERT INTO {t} ("ServiceId", "ProjectorName", "ProjectorVersion", "PayloadType",
    "LastSortableUniqueId", "EventsProcessed", "StateData", "IsOffloaded", "OffloadKey",
    "OriginalSizeBytes", "CompressedSizeBytes", "SafeWindowThreshold", "CreatedAt", "UpdatedAt",
    "BuildSource") VALUES ('s', 'P', %s, 'T', '', 0, %s, %s, %s, 0, 0, '', now(), now(), 'X')"""


@pytest.fixture
def pg(postgres_server):
    """A fresh schema on the session's server: (store URL with ?schema=, schema name, admin connection)."""
    schema = "t_" + uuid.uuid4().hex[:12]
    conn = psycopg.connect(postgres_server.url, autocommit=True)
    conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
    try:
        yield f"{postgres_server.url}?schema={schema}", schema, conn
    finally:
        conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))
        conn.close()


def svc() -> str:
    return "svc-" + uuid.uuid4().hex[:10]


def row(service, name="Proj", version="v1", events=10, **kw) -> SnapshotRow:
    return SnapshotRow(service_id=service, projector_name=name, projector_version=version,
                       last_sortable_unique_id="0" * 30, events_processed=events,
                       safe_window_threshold="0" * 30, build_source="TEST", **kw)


def put(store, r, data: bytes | None, expected=None):
    return store.write(r, io.BytesIO(data) if data is not None else None,
                       len(data) if data is not None else 0, expected)


def read_all(store, r) -> bytes:
    with store.open_state_stream(r) as f:
        return f.read()


def catalog(conn, schema: str):
    """Everything about the table that opening it must not change."""
    cols = conn.execute(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default, "
        "ordinal_position FROM information_schema.columns WHERE table_schema = %s AND table_name = "
        "'dcb_multi_projection_states' ORDER BY ordinal_position", (schema,)).fetchall()
    cons = conn.execute(
        "SELECT conname, contype, pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s ORDER BY conname",
        (schema,)).fetchall()
    idx = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY indexname",
                       (schema,)).fetchall()
    storage = conn.execute(
        "SELECT a.attname, a.attstorage FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
        "AND a.attnum > 0 ORDER BY a.attnum", (f'"{schema}".dcb_multi_projection_states',)).fetchall()
    return cols, cons, idx, storage


# --- schema ------------------------------------------------------------------------------------

def test_ddl_matches_spec(pg):
    url, schema, admin = pg
    store = open_state_store(url, service_id="default")
    try:
        assert store.kind == "postgres" and store.inline_limit is None
        assert store.record_offload_threshold == 2_097_152
        cols, cons, idx, _ = catalog(admin, schema)
        got = {c[0]: (c[1], c[2], c[3], c[4]) for c in cols}
        assert got == SPEC_COLUMNS
        assert [c[0] for c in cols] == list(SPEC_COLUMNS)  # Sekiban's column order too
        pk = admin.execute(
            "SELECT kcu.column_name FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name "
            "AND kcu.table_schema = tc.table_schema WHERE tc.table_schema = %s "
            "AND tc.table_name = 'dcb_multi_projection_states' AND tc.constraint_type = 'PRIMARY KEY' "
            "ORDER BY kcu.ordinal_position", (schema,)).fetchall()
        assert [r[0] for r in pk] == ["ServiceId", "ProjectorName", "ProjectorVersion"]
        checks = [c for c in cons if c[1] == "c"]
        assert len(checks) == 1
        assert "IsOffloaded" in checks[0][2] and "StateData" in checks[0][2] and "OffloadKey" in checks[0][2]
        assert any('("ServiceId", "ProjectorName")' in d for _, d in idx)

        t = f'"{schema}".dcb_multi_projection_states'
        with pytest.raises(psycopg.errors.CheckViolation):
            admin.execute(INSERT_RAW.format(t=t), ("bad-inline", None, False, None))
        with pytest.raises(psycopg.errors.CheckViolation):
            admin.execute(INSERT_RAW.format(t=t), ("bad-offload", None, True, None))
        admin.execute(INSERT_RAW.format(t=t), ("empty-inline", b"", False, None))
        admin.execute(INSERT_RAW.format(t=t), ("offloaded", None, True, "P/v/x.bin"))
        r = admin.execute(f'SELECT "Generation", "Lifecycle", "Revision", "StateData" FROM {t} '
                          """WHERE "ProjectorVersion" = 'empty-inline'""").fetchone()
        assert r == (0, 0, 0, b"")
    finally:
        store.close()


def test_store_writes_satisfy_the_check_and_revision_rules(pg):
    url, schema, admin = pg
    s = svc()
    store = open_state_store(url, service_id=s)
    try:
        first = put(store, row(s), b"")
        assert first.revision == 1 and first.token == "1" and first.state_length == 0
        second = put(store, row(s, events=11), b"abc", expected=first)
        assert second.revision == 2 and second.token == "2"
        off = put(store, row(s, events=12, is_offloaded=True, offload_key="Proj/v1/k.bin",
                             offload_provider="AzureBlobStorage"), None, expected=second)
        assert off.revision == 3 and off.is_offloaded and off.state_length is None
        rec = admin.execute(
            f'SELECT "StateData", "IsOffloaded", "Revision" FROM "{schema}".dcb_multi_projection_states '
            '''WHERE "ServiceId" = %s''', (s,)).fetchone()
        assert rec == (None, True, 3)
        tomb = store.tombstone(off)
        assert tomb.revision == 4 and tomb.is_tombstoned
        with pytest.raises(TombstonedError):
            put(store, row(s), b"x")
        with pytest.raises(TombstonedError):
            put(store, row(s), b"x", expected=tomb)
        with pytest.raises(TombstonedError):
            store.tombstone(tomb)
    finally:
        store.close()


def test_opening_an_existing_table_does_not_alter_it(pg):
    url, schema, admin = pg
    t = f'"{schema}".dcb_multi_projection_states'
    # A table made by someone else: extra column, no index, storage EXTERNAL, no CHECK.
    admin.execute(f"""CREATE TABLE {t} (
        "ServiceId" varchar(64) NOT NULL, "ProjectorName" varchar(256) NOT NULL,
        "ProjectorVersion" varchar(128) NOT NULL, "PayloadType" varchar(512) NOT NULL,
        "LastSortableUniqueId" varchar(100) NOT NULL, "EventsProcessed" bigint NOT NULL,
        "StateData" bytea NULL, "IsOffloaded" boolean NOT NULL, "OffloadKey" varchar(512) NULL,
        "OffloadProvider" varchar(128) NULL, "OriginalSizeBytes" bigint NOT NULL,
        "CompressedSizeBytes" bigint NOT NULL, "SafeWindowThreshold" varchar(100) NOT NULL,
        "CreatedAt" timestamptz NOT NULL, "UpdatedAt" timestamptz NOT NULL,
        "BuildSource" varchar(32) NOT NULL, "BuildHost" varchar(256) NULL,
        "Generation" bigint NOT NULL DEFAULT 0, "Lifecycle" integer NOT NULL DEFAULT 0,
        "Revision" bigint NOT NULL DEFAULT 0, "Extra" text NULL,
        PRIMARY KEY ("ServiceId", "ProjectorName", "ProjectorVersion"))""")
    admin.execute(f'ALTER TABLE {t} ALTER "StateData" SET STORAGE EXTERNAL')
    before = catalog(admin, schema)
    s = svc()
    store = open_state_store(url, service_id=s)
    try:
        stored = put(store, row(s), b"payload")
        assert read_all(store, store.get("Proj", "v1")) == b"payload"
        put(store, row(s, events=20), b"more", expected=stored)
    finally:
        store.close()
    assert catalog(admin, schema) == before


def test_legacy_table_without_control_columns_or_time_zones(pg):
    """No Generation/Lifecycle/Revision (UpdatedAt is the token), timestamps without time zone."""
    url, schema, admin = pg
    admin.execute(f"""CREATE TABLE "{schema}".dcb_multi_projection_states (
        "ServiceId" varchar(64) NOT NULL, "ProjectorName" varchar(256) NOT NULL,
        "ProjectorVersion" varchar(128) NOT NULL, "PayloadType" varchar(512) NOT NULL,
        "LastSortableUniqueId" varchar(100) NOT NULL, "EventsProcessed" bigint NOT NULL,
        "StateData" bytea NULL, "IsOffloaded" boolean NOT NULL, "OffloadKey" varchar(512) NULL,
        "OffloadProvider" varchar(128) NULL, "OriginalSizeBytes" bigint NOT NULL,
        "CompressedSizeBytes" bigint NOT NULL, "SafeWindowThreshold" varchar(100) NOT NULL,
        "CreatedAt" timestamp NOT NULL, "UpdatedAt" timestamp NOT NULL,
        "BuildSource" varchar(32) NOT NULL, "BuildHost" varchar(256) NULL,
        PRIMARY KEY ("ServiceId", "ProjectorName", "ProjectorVersion"))""")
    before = catalog(admin, schema)
    s = svc()
    store = open_state_store(url + "&options=-c%20TimeZone%3DAsia/Tokyo", service_id=s)
    try:
        first = put(store, row(s), b"a")
        assert first.token.startswith("u:")
        raw = admin.execute(f'SELECT "UpdatedAt" FROM "{schema}".dcb_multi_projection_states').fetchone()[0]
        assert raw.tzinfo is None and raw == first.updated_at.replace(tzinfo=None)  # UTC wall clock
        assert abs((first.updated_at - datetime.now(UTC)).total_seconds()) < 120
        second = put(store, row(s, events=11), b"b", expected=first)
        assert second.token != first.token
        with pytest.raises(ConcurrencyConflictError):
            put(store, row(s, events=12), b"c", expected=first)
        with pytest.raises(ConcurrencyConflictError):
            put(store, row(s, events=12), b"c")
        assert read_all(store, store.get("Proj", "v1")) == b"b"
        with pytest.raises(StoreError):
            store.tombstone(second)
    finally:
        store.close()
    assert catalog(admin, schema) == before


def test_create_false_on_missing_table(pg):
    url, _, _ = pg
    with pytest.raises(StoreError, match="no table"):
        PostgresStateStore.from_url(url, service_id="default", create=False)


def test_missing_schema_is_a_clear_error(postgres_server):
    with pytest.raises(StoreError, match="does not exist"):
        open_state_store(postgres_server.url + "?schema=no_such_schema_here", service_id="default")


# --- URLs, secrets, errors ----------------------------------------------------------------------

def test_split_schema_keeps_other_parameters():
    assert split_schema("postgresql://u@h/db") == ("postgresql://u@h/db", None)
    assert split_schema("postgresql://u@h/db?schema=a%20b") == ("postgresql://u@h/db", "a b")
    assert split_schema("postgres://h/db?sslmode=require&schema=x&options=-c%20a%3Db") == (
        "postgres://h/db?sslmode=require&options=-c%20a%3Db", "x")
    with pytest.raises(UsageError):
        split_schema("postgresql://h/db?schema=")


def test_password_never_appears(pg, postgres_server):
    url, schema, admin = pg
    password = postgres_server.password
    assert password and password in url
    s = svc()
    store = open_state_store(url, service_id=s)
    texts = [repr(store), store.location, str(store)]
    try:
        first = put(store, row(s), b"a")
        # A database refusal (value too long for BuildHost) names the location and the row.
        with pytest.raises(StoreError) as e1:
            put(store, row(s, build_host="h" * 300), b"b", expected=first)
        assert s + "/Proj/v1" in str(e1.value) and "***@" in str(e1.value)
        with pytest.raises(ConcurrencyConflictError) as e2:
            put(store, row(s), b"c")
        texts += [str(e1.value), str(e2.value)]
    finally:
        store.close()
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    bad_port = url.replace(host_port, "127.0.0.1:1")
    with pytest.raises(StoreUnavailableError) as e3:
        open_state_store(bad_port, service_id=s)
    with pytest.raises(UsageError) as e4:  # libpq echoes a bad URI verbatim; we must not
        open_state_store(url.replace("@127.0.0.1", "@[::1"), service_id=s)
    with pytest.raises(SekiopsError) as e5:
        open_state_store(url.replace(password, password[::-1]), service_id=s)
    with pytest.raises(UsageError) as e6:
        open_state_store(url + "&bogus=" + password, service_id=s)
    texts += [str(e.value) for e in (e3, e4, e5, e6)]
    assert isinstance(e5.value, StoreUnavailableError)
    for text in texts:
        assert password not in text and password[::-1] not in text, text
        assert "***" in text, text


def test_timestamps_are_aware_utc_whatever_the_session_time_zone(pg):
    url, _, _ = pg
    s = svc()
    store = open_state_store(url + "&options=-c%20TimeZone%3DAsia/Tokyo", service_id=s)
    try:
        stored = put(store, row(s), b"a")
        got = store.get("Proj", "v1")
        for value in (stored.created_at, stored.updated_at, got.created_at, got.updated_at):
            assert value.tzinfo is not None and value.utcoffset().total_seconds() == 0
        assert got.updated_at == stored.updated_at
        assert got.updated_at.tzinfo == UTC
    finally:
        store.close()


def test_listing_uses_byte_order(pg):
    url, _, _ = pg
    s = svc()
    store = open_state_store(url, service_id=s)
    try:
        names = ["b", "B", "a", "A", "_x", "Z9"]
        for n in names:
            put(store, row(s, name=n), b"x")
        assert [r.projector_name for r in store.list_page(limit=100)] == sorted(names)
        assert [r.projector_name for r in store.list_page(after=("B", "v1"))] == sorted(names)[2:]
    finally:
        store.close()


# --- big values: memory, atomicity, torn reads ---------------------------------------------------

class PatternStream(io.RawIOBase):
    """``size`` deterministic pseudo-random (incompressible) bytes, made chunk by chunk."""

    def __init__(self, size: int, seed: int = 1, fail_after: int | None = None, on_chunk=None):
        self.left = size
        self.rng = random.Random(seed)
        self.sha = hashlib.sha256()
        self.served = 0
        self.fail_after = fail_after
        self.on_chunk = on_chunk

    def readable(self):
        return True

    def readinto(self, b):
        if self.fail_after is not None and self.served >= self.fail_after:
            raise OSError("spool disk went away")
        n = min(len(b), self.left)
        if n == 0:
            return 0
        data = self.rng.randbytes(n)
        b[:n] = data
        self.sha.update(data)
        self.left -= n
        self.served += n
        if self.on_chunk is not None:
            self.on_chunk(self.served)
        return n


def sha_of(store, r) -> str:
    h = hashlib.sha256()
    with store.open_state_stream(r) as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


MEMORY_SCRIPT = textwrap.dedent("""
    import hashlib, io, json, random, sys, time
    from sekiops.format.record import SnapshotRow
    from sekiops.state import open_state_store

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    class Gen(io.RawIOBase):
        def __init__(self, n):
            self.left, self.rng, self.sha = n, random.Random(7), hashlib.sha256()
        def readable(self):
            return True
        def readinto(self, b):
            n = min(len(b), self.left)
            if n:
                data = self.rng.randbytes(n)
                b[:n] = data
                self.sha.update(data)
                self.left -= n
            return n

    url, service, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = open_state_store(url, service_id=service)
    row = SnapshotRow(service_id=service, projector_name="Big", projector_version="v1", build_source="TEST")
    store.get("Big", "v1")
    base = hwm()
    gen = Gen(size)
    t0 = time.perf_counter()
    stored = store.write(row, gen, size, None)
    t1 = time.perf_counter()
    h, n = hashlib.sha256(), 0
    with store.open_state_stream(store.get("Big", "v1")) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    t2 = time.perf_counter()
    listed = store.list_page()
    store.close()
    print(json.dumps({"base": base, "peak": hwm(), "write_s": t1 - t0, "read_s": t2 - t1,
                      "ok": n == size and h.hexdigest() == gen.sha.hexdigest(),
                      "stored_length": stored.state_length, "listed_length": listed[0].state_length}))
""")


def test_64mib_inline_round_trip_in_bounded_memory(pg):
    url, _, _ = pg
    size = 64 * MiB
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, url, svc(), str(size)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    import json
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["stored_length"] == size and out["listed_length"] == size
    growth = out["peak"] - out["base"]
    print(f"64 MiB: write {out['write_s']:.2f}s, read {out['read_s']:.2f}s, peak RSS growth {growth / MiB:.1f} MiB")
    assert growth < 28 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB for a 64 MiB state"


@pytest.mark.parametrize("method", ["copy", "append"])
def test_failed_write_leaves_previous_row_intact_and_invisible_meanwhile(pg, method):
    url, _, _ = pg
    s = svc()
    store = PostgresStateStore.from_url(url, service_id=s, write_method=method, chunk_size=MiB)
    observer = open_state_store(url, service_id=s)
    try:
        old = PatternStream(3 * MiB + 5, seed=1)
        first = store.write(row(s), old, 3 * MiB + 5, None)
        seen = []

        def look(served):  # mid-write, another connection still sees the whole previous row
            if served == 2 * MiB:
                cur = observer.get("Proj", "v1")
                seen.append((cur.revision, cur.state_length, sha_of(observer, cur)))

        new = PatternStream(8 * MiB, seed=2, fail_after=4 * MiB, on_chunk=look)
        with pytest.raises(OSError):
            store.write(row(s, events=99), new, 8 * MiB, first)
        assert seen == [(1, 3 * MiB + 5, old.sha.hexdigest())]
        got = store.get("Proj", "v1")
        assert (got.revision, got.events_processed, got.state_length) == (1, 10, 3 * MiB + 5)
        assert sha_of(store, got) == old.sha.hexdigest()
        # The store's connection is fine afterwards, and a complete write works.
        ok = PatternStream(5 * MiB, seed=3)
        second = store.write(row(s, events=11), ok, 5 * MiB, got)
        assert second.revision == 2 and sha_of(observer, second) == ok.sha.hexdigest()
    finally:
        store.close()
        observer.close()


def test_server_killing_the_writer_mid_write_keeps_previous_row(pg):
    url, _, admin = pg
    s = svc()
    app = "sekiops-kill-" + uuid.uuid4().hex[:8]
    store = PostgresStateStore.from_url(url + f"&application_name={app}", service_id=s, chunk_size=MiB)
    try:
        first = put(store, row(s), b"previous")
        killed = []

        def kill(served):
            if served == 2 * MiB and not killed:
                killed.append(admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    (app,)).fetchall())

        with pytest.raises(StoreUnavailableError) as e:
            store.write(row(s, events=99), PatternStream(16 * MiB, on_chunk=kill), 16 * MiB, first)
        assert killed and killed[0] == [(True,)]
        assert "***@" in str(e.value) and s + "/Proj/v1" in str(e.value)
        got = store.get("Proj", "v1")  # reconnects
        assert (got.revision, got.events_processed) == (1, 10)
        assert read_all(store, got) == b"previous"
    finally:
        store.close()


def test_sliced_read_is_one_snapshot(pg):
    url, _, admin = pg
    s = svc()
    store = PostgresStateStore.from_url(url, service_id=s, chunk_size=MiB)
    writer = open_state_store(url, service_id=s)
    try:
        old = PatternStream(5 * MiB + 3, seed=4)
        first = store.write(row(s), old, 5 * MiB + 3, None)
        h = hashlib.sha256()
        with store.open_state_stream(first) as f:
            h.update(f.read(MiB + 17))
            new = PatternStream(6 * MiB, seed=5)
            second = writer.write(row(s, events=11), new, 6 * MiB, first)  # not blocked by the reader
            h.update(f.read())
        assert h.hexdigest() == old.sha.hexdigest()
        # A stale row is refused before any byte is served, on both the small and the sliced path.
        with pytest.raises(ConcurrencyConflictError):
            store.open_state_stream(first)
        small = put(writer, row(s, version="v2"), b"tiny")
        put(writer, row(s, version="v2", events=11), b"tiny2", expected=small)
        with pytest.raises(ConcurrencyConflictError):
            store.open_state_stream(small)
        assert sha_of(store, second) == new.sha.hexdigest()
    finally:
        store.close()
        writer.close()


def test_close_ends_stream_connections(pg, postgres_server):
    url, _, admin = pg
    s = svc()
    app = "sekiops-close-" + uuid.uuid4().hex[:8]
    store = PostgresStateStore.from_url(url + f"&application_name={app}", service_id=s, chunk_size=MiB)

    def count(expected):  # a backend leaves pg_stat_activity shortly after its client hangs up
        deadline = time.monotonic() + 10
        while True:
            n = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                              (app,)).fetchone()[0]
            if n == expected or time.monotonic() > deadline:
                return n
            time.sleep(0.05)

    stored = store.write(row(s), PatternStream(3 * MiB), 3 * MiB, None)
    f = store.open_state_stream(stored)
    f.read(10)
    g = store.open_state_stream(stored)
    assert count(3) == 3
    f.close()
    assert count(2) == 2
    store.close()
    assert count(0) == 0
    with pytest.raises(ValueError):
        g.read()
    g.close()


def test_concurrent_big_writers_one_winner(pg):
    url, _, _ = pg
    s = svc()
    store = PostgresStateStore.from_url(url, service_id=s, chunk_size=MiB)
    base = put(store, row(s, events=0), b"base")
    results, streams = {}, {}

    def attempt(i):
        w = PostgresStateStore.from_url(url, service_id=s, chunk_size=MiB)
        streams[i] = PatternStream(3 * MiB, seed=100 + i)
        try:
            w.write(row(s, events=i + 1), streams[i], 3 * MiB, base)
            results[i] = "won"
        except ConcurrencyConflictError:
            results[i] = "lost"
        finally:
            w.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "won"]
    assert len(winners) == 1, results
    got = store.get("Proj", "v1")
    assert got.revision == 2 and got.events_processed == winners[0] + 1
    assert sha_of(store, got) == streams[winners[0]].sha.hexdigest()
    store.close()


def test_write_falls_back_to_appending_without_temp_privilege(postgres_server):
    admin = psycopg.connect(postgres_server.url, autocommit=True)
    suffix = uuid.uuid4().hex[:10]
    db, role, password = f"d_{suffix}", f"r_{suffix}", uuid.uuid4().hex
    ident = psycopg.sql.Identifier
    admin.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident(role),
                                                                             psycopg.sql.Literal(password)))
    admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(ident(db)))
    store = None
    try:
        admin.execute(psycopg.sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(ident(db)))
        admin.execute(psycopg.sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident(db), ident(role)))
        base = postgres_server.url.rsplit("/", 1)[0]
        with psycopg.connect(f"{base}/{db}", autocommit=True) as c:
            c.execute(psycopg.sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(ident(role)))
        host = base.split("@", 1)[1]
        s = svc()
        store = PostgresStateStore.from_url(f"postgresql://{role}:{password}@{host}/{db}", service_id=s,
                                            chunk_size=MiB)
        data = PatternStream(3 * MiB + 1, seed=9)
        stored = store.write(row(s), data, 3 * MiB + 1, None)
        assert store.write_method == "append"
        assert stored.state_length == 3 * MiB + 1 and sha_of(store, stored) == data.sha.hexdigest()
    finally:
        if store is not None:
            store.close()
        admin.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(db)))
        admin.execute(psycopg.sql.SQL("DROP ROLE {}").format(ident(role)))
        admin.close()


def test_reads_survive_a_dropped_idle_connection(pg):
    url, _, admin = pg
    s = svc()
    app = "sekiops-idle-" + uuid.uuid4().hex[:8]
    store = PostgresStateStore.from_url(url + f"&application_name={app}", service_id=s)
    try:
        put(store, row(s), b"data")
        assert admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                             (app,)).fetchall() == [(True,)]
        time.sleep(0.2)
        got = store.get("Proj", "v1")  # the dead connection is noticed and replaced once
        assert got.events_processed == 10 and read_all(store, got) == b"data"
    finally:
        store.close()
