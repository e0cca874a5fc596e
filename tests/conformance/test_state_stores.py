"""Conformance suite every state store passes (memory, SQLite, PostgreSQL, Cosmos DB)."""

from __future__ import annotations

import io
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from sekiops.errors import ConcurrencyConflictError, SekiopsError, TombstonedError
from sekiops.format.record import SnapshotRow

from .stores import SERVER_MARK, STATE_KINDS, state_opener


@pytest.fixture(params=[pytest.param(k, marks=getattr(pytest.mark, SERVER_MARK.get(k, k)))
                        for k in STATE_KINDS])
def opener(request, tmp_path):
    return state_opener(request.param, request, tmp_path)


def svc() -> str:
    return "svc-" + uuid.uuid4().hex[:10]


def row(service, name="Proj", version="v1", events=10, **kw) -> SnapshotRow:
    return SnapshotRow(service_id=service, projector_name=name, projector_version=version,
                       last_sortable_unique_id="0" * 30, events_processed=events,
                       original_size_bytes=kw.pop("size", 0), compressed_size_bytes=kw.pop("csize", 0),
                       safe_window_threshold="0" * 30, build_source="TEST", **kw)


def put(store, r, data: bytes | None, expected=None):
    return store.write(r, io.BytesIO(data) if data is not None else None,
                       len(data) if data is not None else 0, expected)


def read_all(store, r) -> bytes:
    with store.open_state_stream(r) as f:
        return f.read()


def test_round_trip_inline(opener):
    s = svc()
    store = opener(s)
    data = bytes(range(256)) * 40
    stored = put(store, row(s), data)
    assert stored.revision >= 1 and stored.token
    got = store.get("Proj", "v1")
    assert got.events_processed == 10 and not got.is_offloaded and got.state_length == len(data)
    assert read_all(store, got) == data


def test_empty_inline_payload_is_empty_not_null(opener):
    s = svc()
    store = opener(s)
    put(store, row(s), b"")
    got = store.get("Proj", "v1")
    assert got.state_length == 0
    assert read_all(store, got) == b""


def test_offloaded_row_has_no_state(opener):
    s = svc()
    store = opener(s, **({"record_threshold": 10} if store_kind(opener) == "sqlite" else {}))
    r = row(s, is_offloaded=True, offload_key="Proj/v1/" + "a" * 64 + ".bin", offload_provider="AzureBlobStorage")
    put(store, r, None)
    got = store.get("Proj", "v1")
    assert got.is_offloaded and got.offload_key == r.offload_key and got.offload_provider == "AzureBlobStorage"
    assert got.state_length in (None, 0)


def store_kind(opener) -> str:
    return opener.kind


def test_large_inline_state_streams(opener):
    s = svc()
    store = opener(s)
    if store.inline_limit is not None:
        size = store.inline_limit // 2 - 1000
    else:
        size = 5 * 1024 * 1024 + 7
    data = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    put(store, row(s), data)
    got = store.get("Proj", "v1")
    assert got.state_length == size
    with store.open_state_stream(got) as f:
        first = f.read(1000)
        rest = f.read()
    assert first + rest == data


def test_create_conflict(opener):
    s = svc()
    store = opener(s)
    put(store, row(s), b"a")
    with pytest.raises(ConcurrencyConflictError):
        put(store, row(s, events=11), b"b")
    assert read_all(store, store.get("Proj", "v1")) == b"a"


def test_replace_with_stale_token_conflicts(opener):
    s = svc()
    store = opener(s)
    first = put(store, row(s), b"a")
    second = put(store, row(s, events=11), b"b", expected=first)
    assert second.token != first.token
    with pytest.raises(ConcurrencyConflictError):
        put(store, row(s, events=12), b"c", expected=first)
    got = store.get("Proj", "v1")
    assert got.events_processed == 11 and read_all(store, got) == b"b"


def test_tombstone_is_never_erased(opener):
    s = svc()
    store = opener(s)
    first = put(store, row(s), b"a")
    tomb = store.tombstone(first)
    assert tomb.is_tombstoned
    assert store.latest_active("Proj") is None
    assert store.get("Proj", "v1").is_tombstoned
    with pytest.raises((TombstonedError, ConcurrencyConflictError)):
        put(store, row(s, events=99), b"z", expected=tomb)
    with pytest.raises((TombstonedError, ConcurrencyConflictError)):
        put(store, row(s, events=99), b"z")
    got = store.get("Proj", "v1")
    assert got.is_tombstoned and got.events_processed == 10


def test_latest_active_by_events_processed(opener):
    s = svc()
    store = opener(s)
    put(store, row(s, version="v1", events=5), b"1")
    put(store, row(s, version="v2", events=50), b"2")
    v3 = put(store, row(s, version="v3", events=500), b"3")
    store.tombstone(v3)
    assert store.latest_active("Proj").projector_version == "v2"
    assert store.latest_active("Other") is None


def test_paging_past_one_page(opener):
    s = svc()
    store = opener(s)
    names = [(f"P{i:02d}", f"v{j}") for i in range(7) for j in range(3)]
    for n, v in names:
        put(store, row(s, name=n, version=v), b"x")
    seen = []
    after = None
    while True:
        page = store.list_page(after=after, limit=4)
        seen += [(r.projector_name, r.projector_version) for r in page]
        if len(page) < 4:
            break
        after = (page[-1].projector_name, page[-1].projector_version)
    assert seen == sorted(names)
    assert [r.projector_version for r in store.list_page(projector_name="P03")] == ["v0", "v1", "v2"]


def test_service_isolation(opener):
    a, b = svc(), svc()
    sa, sb = opener(a), opener(b)
    put(sa, row(a), b"from-a")
    assert sb.get("Proj", "v1") is None
    assert sb.latest_active("Proj") is None
    assert sb.list_page() == []
    put(sb, row(b), b"from-b")
    assert read_all(sa, sa.get("Proj", "v1")) == b"from-a"
    assert read_all(sb, sb.get("Proj", "v1")) == b"from-b"


def test_metadata_round_trip(opener):
    s = svc()
    store = opener(s)
    r = row(s, size=1234, csize=567, build_host="host-1", generation=3).replace(
        last_sortable_unique_id="063881234567890123400000000001", payload_type="Custom.Type")
    put(store, r, b"abc")
    got = store.get("Proj", "v1")
    for field in ("last_sortable_unique_id", "payload_type", "original_size_bytes",
                  "compressed_size_bytes", "build_source", "build_host", "generation",
                  "safe_window_threshold", "events_processed"):
        assert getattr(got, field) == getattr(r, field), field
    assert got.created_at is not None and got.updated_at is not None
    assert got.updated_at.tzinfo is not None


def test_concurrent_writers_one_winner_per_round(opener):
    s = svc()
    store = opener(s)
    base = put(store, row(s, events=0), b"round-0")
    for rnd in range(1, 4):
        current = store.get("Proj", "v1")

        def attempt(i):
            w = opener(s)
            try:
                put(w, row(s, events=rnd * 100 + i), f"round-{rnd}-writer-{i}".encode(), expected=current)
                return i
            except ConcurrencyConflictError:
                return None

        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(attempt, range(8)))
        winners = [i for i in results if i is not None]
        assert len(winners) == 1, results
        got = store.get("Proj", "v1")
        assert got.events_processed == rnd * 100 + winners[0]
        assert read_all(store, got) == f"round-{rnd}-writer-{winners[0]}".encode()
    assert base.revision < store.get("Proj", "v1").revision


def test_errors_are_sekiops_errors(opener):
    s = svc()
    store = opener(s)
    with pytest.raises(SekiopsError):
        put(store, row(s, name=""), b"x")
