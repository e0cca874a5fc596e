"""Inventory (issue 6): one row per snapshot row, metadata plus bounded envelope heads, risk flags.

Also holds the deployment builders the anatomy, audit and notebook tests share
(``build_deployment``, ``build_many``, ``backend_stores``).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from sekiops import PersistOptions, persist_stream
from sekiops.blob import open_blob_store
from sekiops.format.constants import PAYLOAD_TYPE
from sekiops.format.envelope import EnvelopeMeta, inline_envelope_bytes, offloaded_envelope_bytes
from sekiops.format.record import SnapshotRow
from sekiops.ops import inventory as inv
from sekiops.state import open_state_store

LSUID = "063904064000000000000000000001"
OLD = datetime(2020, 1, 1, tzinfo=UTC)


# --- data and deployments (shared with test_anatomy, test_audit, test_notebooks) ------------------


def state_json(items: int, seed: int = 1, text: int = 40) -> bytes:
    """Projector-state JSON that gzip compresses only ~2x (random hex), so sizes are predictable."""
    rng = random.Random(seed)
    doc = {"$type": "Test.Projector", "customers": [
        {"id": f"c{i:06d}", "name": f"name {i}", "blob": rng.randbytes(text).hex(), "score": rng.random(),
         "ok": i % 3 == 0, "tags": ["a", "b"][: i % 3], "note": None, "orders": [{"n": j, "sku": f"s{j}"}
                                                                                  for j in range(i % 4)]}
        for i in range(items)], "summary": {"count": items, "by": "test"}}
    return json.dumps(doc, separators=(",", ":")).encode()


def persist_json(state, blob, name, version, data: bytes, events: int = 10, **options):
    return persist_stream(state, blob, io.BytesIO(data), projector_name=name, projector_version=version,
                          events_processed=events, last_sortable_unique_id=LSUID,
                          options=PersistOptions(**options))


def write_raw_row(state, name: str, version: str, envelope: bytes | None, *, events: int = 10,
                  offload_key: str | None = None, provider: str | None = None, payload_type: str = PAYLOAD_TYPE,
                  build_source: str = "GRAIN"):
    """A row written directly (bypassing persist): inline StateData bytes, or offloaded to a key."""
    size = len(envelope) if envelope is not None else 0
    row = SnapshotRow(service_id=state.service_id, projector_name=name, projector_version=version,
                      payload_type=payload_type, last_sortable_unique_id=LSUID, events_processed=events,
                      is_offloaded=offload_key is not None, offload_key=offload_key, offload_provider=provider,
                      original_size_bytes=size, compressed_size_bytes=size, safe_window_threshold=LSUID,
                      build_source=build_source, build_host="test")
    if offload_key is not None:
        return state.write(row, None, 0, None)
    return state.write(row, io.BytesIO(envelope), len(envelope), None)


def meta(name: str, version: str, events: int, original: int, compressed: int) -> EnvelopeMeta:
    return EnvelopeMeta(projector_name=name, projector_version=version, last_sortable_unique_id=LSUID,
                        version=events, original_size_bytes=original, compressed_size_bytes=compressed,
                        payload_type_name="Test.Projector")


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


def fast_sqlite(state):
    """Tests only: no fsync per commit on a throwaway SQLite file (building 1,000 rows takes a
    fraction of a second instead of one fsync per row)."""
    if getattr(state, "kind", None) == "sqlite":
        state._conn().execute("PRAGMA synchronous=OFF")
    return state


def build_deployment(state, blob, *, guid_row: bool = True) -> dict:
    """Rows covering every storage combination and every flag an active deployment can raise.

    Returns {name: info}. No row is broken (the audit of this deployment certifies); the blob
    store also gets one old unreferenced blob (``orphan``).
    """
    info: dict = {}
    small = state_json(5, seed=1)
    info["Small"] = persist_json(state, blob, "Small", "1", small)
    big = state_json(900, seed=2)  # ~190 KB JSON -> ~100 KB gzip -> ~135 KB inline envelope
    info["Big"] = persist_json(state, blob, "Big", "1", big, events=42)
    info["RecOff"] = persist_json(state, blob, "RecOff", "1", state_json(120, seed=3), record_threshold=5000)
    info["RecOffBig"] = persist_json(state, blob, "RecOffBig", "1", big, record_threshold=5000)
    info["PayOff"] = persist_json(state, blob, "PayOff", "1", state_json(200, seed=4), payload_threshold=2000)
    info["Both"] = persist_json(state, blob, "Both", "1", state_json(200, seed=5), payload_threshold=2000,
                                record_threshold=100)
    info["Multi/1"] = persist_json(state, blob, "Multi", "1", small, events=10)
    info["Multi/2"] = persist_json(state, blob, "Multi", "2", small, events=20)
    # v9: the same envelope JSON, gzipped (recognised by 1f 8b)
    payload = gz(small)
    env = inline_envelope_bytes(meta("Legacy9", "1", 7, len(small), len(payload)), payload)
    info["Legacy9"] = write_raw_row(state, "Legacy9", "1", gz(env), events=7)
    # tombstoned
    old = persist_json(state, blob, "Old", "1", state_json(30, seed=6), payload_threshold=2000)
    info["Old"] = old
    state.tombstone(state.get("Old", "1"))
    # EventsProcessed != envelope version
    env = inline_envelope_bytes(meta("Mismatch", "1", 5, len(small), len(payload)), payload)
    info["Mismatch"] = write_raw_row(state, "Mismatch", "1", env, events=99)
    # a PayloadType Sekiban's builder refuses
    env = inline_envelope_bytes(meta("Custom", "1", 3, len(small), len(payload)), payload)
    info["Custom"] = write_raw_row(state, "Custom", "1", env, events=3, payload_type="My.Custom.Envelope")
    if guid_row and hasattr(blob, "put_raw"):
        key = f"Guid/1/{uuid.uuid4().hex}.bin"
        env = inline_envelope_bytes(meta("Guid", "1", 4, len(small), len(payload)), payload)
        blob.put_raw(key, env)
        info["Guid"] = write_raw_row(state, "Guid", "1", None, events=4, offload_key=key, provider=blob.provider)
        info["guid_key"] = key
    info["orphan"] = put_orphan(blob, b"no row points at me " * 10)
    return info


def put_orphan(blob, data: bytes, age: timedelta = timedelta(days=30)) -> str:
    """An unreferenced blob, made old when the store allows (local dir: mtime; memory: put_raw)."""
    written = blob.write(io.BytesIO(data), "Ghost")
    root = getattr(blob, "root", None)
    if root:
        when = (datetime.now(UTC) - age).timestamp()
        os.utime(os.path.join(root, *written.key.split("/")), (when, when))
    elif hasattr(blob, "put_raw"):
        blob.put_raw(written.key, data, datetime.now(UTC) - age)
    return written.key


def build_many(state, blob, n: int, *, seed: int = 7) -> None:
    """``n`` rows of mixed sizes and placements. Most are small inline rows written directly (a
    gzip payload in a Sekiban envelope, built here: fast); every 50th group of three goes through
    persist as a ~75 KB inline envelope, a record-level offload and a payload-level offload."""
    rng = random.Random(seed)
    payloads = []
    for s in range(8):
        raw = state_json(rng.randint(2, 12), seed=s)
        payloads.append((len(raw), gz(raw)))
    medium = state_json(500, seed=99)  # ~75 KB inline envelope (> the 60 KiB head)
    for i in range(n):
        name = f"Proj{i // 5:03d}"
        version = str(i % 5 + 1)
        events = 100 + i % 5
        kind = i % 50
        if kind == 1:
            persist_json(state, blob, name, version, medium, events=events)
        elif kind == 2:
            persist_json(state, blob, name, version, medium, events=events, record_threshold=5000)
        elif kind == 3:
            persist_json(state, blob, name, version, medium, events=events, payload_threshold=2000)
        else:
            original, payload = payloads[i % len(payloads)]
            env = inline_envelope_bytes(meta(name, version, events, original, len(payload)), payload)
            write_raw_row(state, name, version, env, events=events, build_source="GRAIN_STREAM")


_MANY: dict = {}
MANY_ROWS = 1000


def many_rows_deployment(tmp_path_factory):
    """(directory, info): ``build_deployment`` plus ``build_many`` = 1,000 rows, built once per session
    (SQLite ``dep.db`` + blob directory ``dep-blobs``). Read it, or copy it before writing."""
    if "dep" not in _MANY:
        base = tmp_path_factory.mktemp("many-rows")
        state_url, blob_url = embedded_urls(base, "dep")
        state, blob = fast_sqlite(open_state_store(state_url)), open_blob_store(blob_url)
        t = time.perf_counter()
        info = build_deployment(state, blob)
        build_many(state, blob, MANY_ROWS - 13)
        info["build_seconds"] = time.perf_counter() - t
        state.close()
        _MANY["dep"] = (base, info)
    return _MANY["dep"]


def embedded_urls(tmp_path, name: str = "dep") -> tuple[str, str]:
    """SQLite (record-level offload allowed: a sekiops extension) + local blob directory."""
    return f"sqlite:///{tmp_path}/{name}.db?record_threshold=1000000", f"{tmp_path}/{name}-blobs"


@contextlib.contextmanager
def backend_stores(request, kind: str, tmp_path, service_id: str = "default"):
    """(state_url, blob_url, opener(service) -> state, blob) for embedded | postgres | cosmos."""
    opened = []
    if kind == "embedded":
        state_url, blob_url = embedded_urls(tmp_path)
        cleanup = None
    elif kind == "postgres":
        import psycopg

        server = request.getfixturevalue("postgres_server")
        request.getfixturevalue("azure_storage_env")
        schema = "inv_" + uuid.uuid4().hex[:10]
        admin = psycopg.connect(server.url, autocommit=True)
        admin.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
        state_url = f"{server.url}?schema={schema}"
        blob_url = f"azblob://inv{uuid.uuid4().hex[:12]}"

        def cleanup():
            admin.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))
            admin.close()
    elif kind == "cosmos":
        server = request.getfixturevalue("cosmos_env")
        request.getfixturevalue("azure_storage_env")
        host = server.endpoint.split("://", 1)[1]
        state_url = f"cosmos+https://{host}/inv{uuid.uuid4().hex[:10]}/multiProjectionStates?verify=false"
        blob_url = f"azblob://inv{uuid.uuid4().hex[:12]}"
        cleanup = None
    else:
        raise AssertionError(kind)

    def open_state(service: str = service_id, create: bool = True):
        s = fast_sqlite(open_state_store(state_url, service_id=service, create=create))
        opened.append(s)
        return s

    blob = open_blob_store(blob_url)
    try:
        yield state_url, blob_url, open_state, blob
    finally:
        for s in opened:
            s.close()
        blob.close()
        if cleanup is not None:
            cleanup()


def run_cli(argv, capsys) -> tuple[int, str, str]:
    from sekiops.cli.main import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


BACKENDS = ["embedded", "postgres", "cosmos"]


# --- counting proxies ---------------------------------------------------------------------------------


class CountingStream(io.RawIOBase):
    def __init__(self, inner):
        self.inner = inner
        self.count = 0

    def readable(self):
        return True

    def readinto(self, b):
        data = self.inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        return n

    def seekable(self):
        return self.inner.seekable()

    def seek(self, offset, whence=0):
        return self.inner.seek(offset, whence)

    def tell(self):
        return self.inner.tell()

    def close(self):
        self.inner.close()
        super().close()


class CountingState:
    """A real state store behind a proxy recording every stream and range read it hands out
    (capabilities are the real store's)."""

    def __init__(self, inner):
        self._inner = inner
        self.streams: list = []
        self.ranges: list = []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def open_state_stream(self, row):
        s = CountingStream(self._inner.open_state_stream(row))
        self.streams.append((row.where, s))
        return s

    def read_state_range(self, row, offset, length):
        data = self._inner.read_state_range(row, offset, length)
        self.ranges.append((row.where, offset, len(data)))
        return data


class CountingBlob:
    def __init__(self, inner):
        self._inner = inner
        self.streams: list = []
        self.ranges: list = []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def open_read(self, key):
        s = CountingStream(self._inner.open_read(key))
        self.streams.append((key, s))
        return s

    def read_range(self, key, offset, length):
        data = self._inner.read_range(key, offset, length)
        self.ranges.append((key, offset, len(data)))
        return data


# --- tests ----------------------------------------------------------------------------------------------


@pytest.fixture
def embedded(tmp_path):
    state_url, blob_url = embedded_urls(tmp_path)
    state = fast_sqlite(open_state_store(state_url))
    blob = open_blob_store(blob_url)
    yield state, blob, state_url, blob_url
    state.close()


def _by(df):
    return {f"{r.projectorName}/{r.projectorVersion}": r for r in df.itertuples()}


def test_inventory_frame_covers_every_combination(embedded):
    state, blob, *_ = embedded
    info = build_deployment(state, blob)
    df = inv.inventory(state, blob, check_blobs=True)
    assert list(df.columns[:len(inv.CONTRACT_COLUMNS)]) == inv.CONTRACT_COLUMNS
    for c in inv.FLAG_COLUMNS + ["payloadOffloaded", "payloadKey", "payloadOriginalBytes", "payloadCompressedBytes",
                                 "base64Inflation", "envelopeFormat", "keyStyle", "error"]:
        assert c in df.columns
    rows = _by(df)
    assert len(df) == 13
    assert not df["flag_undecodable"].any(), df[df["flag_undecodable"]][["projectorName", "error"]]
    assert not df["flag_missing_blob"].any()

    small = rows["Small/1"]
    assert (small.storedLocation, small.isOffloaded, small.payloadOffloaded, small.envelopeFormat) == \
        ("inline", False, False, "v10")
    assert small.payloadOriginalBytes == info["Small"].original_size_bytes
    assert small.payloadCompressedBytes == info["Small"].compressed_size_bytes
    assert small.storedBytes == info["Small"].envelope_bytes

    big = rows["Big/1"]  # inline envelope longer than the head: metadata from the bounded tail
    assert big.storedBytes == info["Big"].envelope_bytes > inv.HEAD_BUDGET
    assert big.envelopeMetaKnown and big.envelopeVersion == 42
    assert big.payloadCompressedBytes == info["Big"].compressed_size_bytes
    assert big.payloadOriginalBytes == info["Big"].original_size_bytes
    assert big.headBytesRead <= inv.HEAD_BUDGET

    for name in ("RecOff/1", "RecOffBig/1"):
        r = rows[name]
        res = info[name.split("/")[0]]
        assert r.isOffloaded and r.storedLocation == "blob" and r.offloadKey == res.envelope_key
        assert r.storedBytes == res.envelope_bytes and r.storedBytesSource == "blob"
        assert r.payloadOffloaded is False or r.payloadOffloaded == False  # noqa: E712 (pandas boolean)
        assert r.envelopeMetaKnown and r.payloadOriginalBytes == res.original_size_bytes
        assert r.keyStyle == "content" and r.blobBytes == res.envelope_bytes and r.inlineBytes == 0
    assert rows["RecOffBig/1"].headBytesRead <= inv.HEAD_BUDGET

    pay = rows["PayOff/1"]
    assert not pay.isOffloaded and pay.payloadOffloaded and pay.payloadKey == info["PayOff"].payload_key
    assert pay.payloadCompressedBytes == info["PayOff"].compressed_size_bytes
    assert pay.blobBytes == info["PayOff"].compressed_size_bytes and pay.inlineBytes == pay.storedBytes

    both = rows["Both/1"]
    assert both.isOffloaded and both.payloadOffloaded
    assert both.offloadKey == info["Both"].envelope_key and both.payloadKey == info["Both"].payload_key

    assert rows["Multi/1"].flag_not_newest_version and not rows["Multi/2"].flag_not_newest_version
    assert rows["Legacy9/1"].flag_v9_envelope and rows["Legacy9/1"].envelopeFormat == "v9"
    assert rows["Legacy9/1"].envelopeVersion == 7
    assert rows["Old/1"].flag_tombstoned and rows["Old/1"].lifecycle == "tombstoned"
    assert rows["Mismatch/1"].flag_events_mismatch and rows["Mismatch/1"].envelopeVersion == 5
    assert rows["Custom/1"].flag_unknown_payload_type
    assert rows["Guid/1"].flag_guid_key and rows["Guid/1"].keyStyle == "guid"
    flagged = {k for k, r in rows.items() if any(getattr(r, f) for f in inv.FLAG_COLUMNS)}
    assert flagged == {"Multi/1", "Legacy9/1", "Old/1", "Mismatch/1", "Custom/1", "Guid/1"}
    risky = inv.flagged_rows(df)
    assert {f"{r.projectorName}/{r.projectorVersion}" for r in risky.itertuples()} == flagged - {"Old/1"}
    assert inv.overview(df, limit=3)["projectorName"].tolist()[0] in ("Big", "RecOffBig")
    numbers = inv.summary_numbers(df)
    assert numbers["rows"] == 13 and numbers["tombstonedRows"] == 1 and numbers["recordOffloadedRows"] == 4
    # SQLite keeps bytes as they are: no Base64 inflation of the stored item; the Cosmos estimate has it
    assert small.base64Inflation == 1.0 and small.cosmosItemBytes > small.storedBytes * 4 / 3

    summary = inv.offload_summary(df)
    total = summary[summary["projectorName"] == "(all)"].iloc[0]
    assert total["rows"] == 13
    assert total["recordOffloadedRows"] == 4 and total["payloadOffloadedRows"] == 3
    assert total["inlineBytes"] + total["blobBytes"] == total["totalBytes"]
    both_s = summary[summary["projectorName"] == "Both"].iloc[0]
    assert both_s["offloadedByteRatio"] == 1.0 and both_s["offloadedRowRatio"] == 1.0
    assert summary[summary["projectorName"] == "Small"].iloc[0]["offloadedByteRatio"] == 0.0


def test_heads_off_reads_metadata_only(embedded):
    state, blob, *_ = embedded
    build_deployment(state, blob)
    cs, cb = CountingState(state), CountingBlob(blob)
    df = inv.inventory(cs, cb, read_envelope_heads=False)
    assert len(df) == 13 and cs.streams == [] and cb.streams == []
    assert not df["headRead"].any() and df["envelopeFormat"].isna().all()
    # storedBytes of offloaded rows still come from blob.stat
    assert (df[df["isOffloaded"]]["storedBytesSource"] == "blob").all()


def test_undecodable_and_missing_blobs_never_crash(embedded):
    state, blob, *_ = embedded
    persist_json(state, blob, "Fine", "1", state_json(3))
    write_raw_row(state, "Garbage", "1", b"this is not an envelope")
    write_raw_row(state, "Truncated", "1", b'{"isOffloaded":false,"inlineState":{"payloadBase64":"AAA')
    write_raw_row(state, "Lost", "1", None, offload_key="Lost/1/" + "0" * 64 + ".bin", provider=blob.provider)
    env = offloaded_envelope_bytes(meta("LostPayload", "1", 1, 10, 10), "LostPayload/" + "1" * 64 + ".bin",
                                   blob.provider, 10)
    write_raw_row(state, "LostPayload", "1", env, events=1)
    df = inv.inventory(state, blob, check_blobs=True)
    rows = _by(df)
    assert not rows["Fine/1"].flag_undecodable and pd.isna(rows["Fine/1"].error)
    for name in ("Garbage/1", "Truncated/1"):
        assert rows[name].flag_undecodable and rows[name].error
    assert rows["Lost/1"].flag_missing_blob and "missing" in rows["Lost/1"].error
    assert rows["LostPayload/1"].flag_missing_blob and not rows["LostPayload/1"].flag_undecodable
    # without check_blobs a missing payload blob goes unnoticed (no payload is ever opened)
    df2 = inv.inventory(state, blob, check_blobs=False)
    assert not _by(df2)["LostPayload/1"].flag_missing_blob
    # no blob store: offloaded envelopes are not read, and that is said
    df3 = inv.inventory(state, None)
    assert "no blob store" in _by(df3)["Lost/1"].error and not _by(df3)["Lost/1"].flag_undecodable


def test_size_flags(tmp_path):
    state = open_state_store(f"memory://inv{uuid.uuid4().hex}")
    cases = {"Tiny": 1000, "Dynamo": 330_000, "Near": 1_300_000, "Over": 1_600_000}
    for name, size in cases.items():
        payload = bytes(size * 3 // 4 - 400)  # Base64 "AAAA": no "+" escapes, so the size is exact
        env = inline_envelope_bytes(meta(name, "1", 1, len(payload), len(payload)), payload)
        write_raw_row(state, name, "1", env, events=1)
    rows = _by(inv.inventory(state, None))
    assert not any(getattr(rows["Tiny/1"], f) for f in inv.FLAG_COLUMNS)
    assert rows["Dynamo/1"].flag_dynamodb_base64_hazard and not rows["Dynamo/1"].flag_cosmos_near_limit
    assert rows["Near/1"].flag_cosmos_near_limit and not rows["Near/1"].flag_cosmos_over_limit
    assert rows["Over/1"].flag_cosmos_near_limit and rows["Over/1"].flag_cosmos_over_limit
    # memory stores can seek: metadata of big inline envelopes comes from the tail
    assert all(r.envelopeMetaKnown for r in rows.values())


def test_1000_rows_fetch_no_payload(tmp_path_factory):
    base, info = many_rows_deployment(tmp_path_factory)
    state_url, blob_url = embedded_urls(base, "dep")
    state, blob = open_state_store(state_url, create=False), open_blob_store(blob_url)
    assert state.capabilities.range_reads and blob.capabilities.range_reads  # SQLite and local files declare them
    cs, cb = CountingState(state), CountingBlob(blob)
    t = time.perf_counter()
    df = inv.inventory(cs, cb, check_blobs=True)
    heads_s = time.perf_counter() - t
    payload_keys = set(df["payloadKey"].dropna())
    assert len(df) == MANY_ROWS and not df["flag_undecodable"].any() and not df["flag_missing_blob"].any()
    # bounded range reads only: no open-ended stream, a head (and maybe a tail) per row
    assert cs.streams == [] and cb.streams == []
    heads = [r for r in cs.ranges if r[1] == 0]
    assert len(heads) == int((~df["isOffloaded"]).sum())
    assert len({k for k, _, _ in cb.ranges}) == int(df["isOffloaded"].sum()) > 20
    per_row: dict = {}
    for where, offset, n in cs.ranges + cb.ranges:
        assert n <= (inv.HEAD_BYTES if offset == 0 else inv.TAIL_BYTES)
        per_row[where] = per_row.get(where, 0) + n
    assert max(per_row.values()) <= inv.HEAD_BUDGET
    assert not payload_keys & {k for k, _, _ in cb.ranges}  # never a payload blob
    assert len(payload_keys) > 20  # payload-offloaded rows: their keys were seen, never opened
    assert df[df["lifecycle"] == "active"]["envelopeMetaKnown"].all()

    cs2, cb2 = CountingState(state), CountingBlob(blob)
    df2 = inv.inventory(cs2, cb2, read_envelope_heads=False)
    assert len(df2) == MANY_ROWS and cs2.streams == cs2.ranges == [] and cb2.streams == cb2.ranges == []
    assert heads_s > 0
    state.close()


def test_streams_are_used_when_a_store_declares_no_range_reads(embedded):
    """A store without range reads (Cosmos DB, or a third party's) is read through a stream cut
    off at the head budget."""
    from sekiops.state import StateCapabilities

    state, blob, *_ = embedded
    build_deployment(state, blob)

    class NoRanges(CountingState):
        capabilities = StateCapabilities(range_reads=False)

    ns = NoRanges(state)
    df = inv.inventory(ns, blob)
    rows = _by(df)
    assert ns.ranges == [] and ns.streams
    assert all(st.count <= inv.HEAD_BUDGET for _, st in ns.streams)  # head, and a tail when it can seek
    assert rows["Small/1"].envelopeMetaKnown and not df["flag_undecodable"].any()


def test_range_reads_are_used_when_stores_declare_them(embedded):
    state, blob, *_ = embedded
    info = build_deployment(state, blob)
    rs, rb = CountingState(state), CountingBlob(blob)
    df = inv.inventory(rs, rb)
    rows = _by(df)
    assert rs.streams == [] and rb.streams == []  # no open-ended stream was opened
    assert all(n <= inv.HEAD_BYTES for _, _, n in rs.ranges + rb.ranges)
    per_row: dict = {}
    for where, _, n in rs.ranges:
        per_row[where] = per_row.get(where, 0) + n
    assert max(per_row.values()) <= inv.HEAD_BUDGET
    assert rows["Big/1"].envelopeMetaKnown and rows["Big/1"].payloadCompressedBytes == info["Big"].compressed_size_bytes
    assert rows["RecOffBig/1"].envelopeMetaKnown and rows["RecOffBig/1"].envelopeVersion == 10
    assert rows["Legacy9/1"].flag_v9_envelope and not df["flag_undecodable"].any()
    tails = [r for r in rb.ranges if r[1] > 0]
    assert tails and all(r[0] == info["RecOffBig"].envelope_key for r in tails)


def test_cli_inventory_embedded(embedded, capsys):
    state, blob, state_url, blob_url = embedded
    build_deployment(state, blob)
    code, out, err = run_cli(["inventory", "--state", state_url, "--blob", blob_url, "--format", "json"], capsys)
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 13
    for r in records:
        for c in inv.CONTRACT_COLUMNS:
            assert c in r
    by = {f"{r['projectorName']}/{r['projectorVersion']}": r for r in records}
    assert by["Old/1"]["lifecycle"] == "tombstoned" and by["Old/1"]["flag_tombstoned"]
    assert by["RecOff/1"]["isOffloaded"] and by["RecOff/1"]["storedBytesSource"] == "blob"
    assert by["Multi/1"]["flag_not_newest_version"]
    # envelope heads are read by default: the payload's location, sizes and blob are known
    assert by["PayOff/1"]["payloadOffloaded"] is True and by["PayOff/1"]["payloadLocation"] == "blob"
    assert by["PayOff/1"]["blobKey"] == by["PayOff/1"]["payloadKey"] and by["Legacy9/1"]["flag_v9_envelope"]
    code, out, _ = run_cli(["inventory", "--state", state_url, "--blob", blob_url, "--format", "json",
                            "--metadata-only"], capsys)
    by = {f"{r['projectorName']}/{r['projectorVersion']}": r for r in json.loads(out)}
    assert by["PayOff/1"]["payloadOffloaded"] is None and by["PayOff/1"]["headBytesRead"] == 0
    code, out, _ = run_cli(["inventory", "--state", state_url, "--blob", blob_url, "--format", "json",
                            "--check-blobs"], capsys)
    by = {f"{r['projectorName']}/{r['projectorVersion']}": r for r in json.loads(out)}
    assert not any(r["flag_missing_blob"] for r in by.values())
    code, out, _ = run_cli(["inventory", "--state", state_url, "--format", "csv"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith(",".join(inv.CONTRACT_COLUMNS)) and len(lines) == 14
    code, out, _ = run_cli(["inventory", "--state", state_url, "--blob", blob_url], capsys)
    assert code == 0 and "Legacy9" in out and "v9_envelope" in out and "tombstoned" in out
    code, _, err = run_cli(["inventory", "--state", f"sqlite:///{state.path}.missing"], capsys)
    assert code == 2 and err.startswith("error: ")


@pytest.mark.parametrize("kind", ["postgres", "cosmos"])
def test_cli_inventory_server_backends(kind, request, tmp_path, capsys):
    with backend_stores(request, kind, tmp_path) as (state_url, blob_url, open_state, blob):
        state = open_state()
        info = build_deployment(state, blob)
        code, out, err = run_cli(["inventory", "--state", state_url, "--blob", blob_url, "--format", "json",
                                  "--heads", "--check-blobs"], capsys)
        assert code == 0, err
        by = {f"{r['projectorName']}/{r['projectorVersion']}": r for r in json.loads(out)}
        assert len(by) == 12  # no GUID row: Azure blobs are written content-addressed only
        for r in by.values():
            for c in inv.CONTRACT_COLUMNS:
                assert c in r
            assert not r["flag_undecodable"] and not r["flag_missing_blob"], r
        assert by["Both/1"]["isOffloaded"] and by["Both/1"]["payloadOffloaded"]
        assert by["Both/1"]["storedBytes"] == info["Both"].envelope_bytes
        assert by["PayOff/1"]["payloadKey"] == info["PayOff"].payload_key
        assert by["Big/1"]["payloadCompressedBytes"] in (None, info["Big"].compressed_size_bytes)
        assert by["Legacy9/1"]["flag_v9_envelope"] and by["Old/1"]["lifecycle"] == "tombstoned"
        assert by["Mismatch/1"]["flag_events_mismatch"]
        if kind == "cosmos":
            assert abs(by["Small/1"]["base64Inflation"] - 4 / 3) < 0.01
        code, out, _ = run_cli(["inventory", "--state", state_url, "--format", "table"], capsys)
        assert code == 0 and "RecOffBig" in out


def test_plain_inventory_shows_where_the_bytes_really_are(embedded, capsys):
    """A payload-offloaded projection is a small envelope in the row and a big blob: the plain
    table says so (payload in a blob, its stored and original size in binary units, the key)."""
    state, blob, state_url, blob_url = embedded
    info = build_deployment(state, blob)
    big = info["PayOff"]
    code, out, err = run_cli(["inventory", "--state", state_url, "--blob", blob_url], capsys)
    assert code == 0, err
    header, *lines = out.splitlines()
    for title in ("envelope", "envelope size", "payload", "payload stored", "payload original", "blob"):
        assert title in header
    line = next(ln for ln in lines if ln.split()[1] == "PayOff")
    assert big.payload_key in line and " blob " in line
    from sekiops.units import format_bytes

    assert format_bytes(big.compressed_size_bytes) in line and format_bytes(big.original_size_bytes) in line
    assert "MB " not in out and "bytes" not in header  # one unit convention: binary, named
    code, out, _ = run_cli(["inventory", "--state", state_url, "--blob", blob_url, "--metadata-only"], capsys)
    assert code == 0 and "payload stored" not in out.splitlines()[0]


def test_restore_flags_follow_the_sekiban_version_and_the_container(embedded, capsys):
    state, blob, state_url, blob_url = embedded
    info = build_deployment(state, blob)
    base = ["inventory", "--state", state_url, "--blob", blob_url, "--format", "json"]

    def flags(*extra):
        code, out, err = run_cli(base + list(extra), capsys)
        assert code == 0, err
        return {f"{r['projectorName']}/{r['projectorVersion']}": r for r in json.loads(out)}

    small = str(info["PayOff"].compressed_size_bytes - 1)
    by = flags("--container-disk", small)  # 10.23: the offloaded payload needs a temp file its size
    assert by["PayOff/1"]["flag_restore_disk"]
    assert by["PayOff/1"]["restoreDiskBytes"] == info["PayOff"].compressed_size_bytes
    assert not by["PayOff/1"]["flag_restore_memory"] and not by["Small/1"]["flag_restore_disk"]
    by = flags("--container-disk", small, "--sekiban-version", "10.22")  # buffered: memory, not disk
    assert not by["PayOff/1"]["flag_restore_disk"] and by["PayOff/1"]["restoreDiskBytes"] == 0
    need = by["PayOff/1"]["restoreMemoryEstimateBytes"]
    assert need > info["PayOff"].original_size_bytes
    by = flags("--sekiban-version", "10.22", "--container-memory", str(need - 1))
    assert by["PayOff/1"]["flag_restore_memory"]
