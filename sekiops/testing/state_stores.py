"""The state store conformance suite (see :mod:`sekiops.testing`)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ..errors import ConcurrencyConflictError, SekiopsError, TombstonedError
from ..format.record import SnapshotRow
from ..state.base import StateStore, iter_rows

Opener = Callable[..., StateStore]


def new_service() -> str:
    return "svc-" + uuid.uuid4().hex[:10]


def make_row(service: str, name: str = "Proj", version: str = "v1", events: int = 10, **kw) -> SnapshotRow:
    return SnapshotRow(service_id=service, projector_name=name, projector_version=version,
                       last_sortable_unique_id="0" * 30, events_processed=events,
                       original_size_bytes=kw.pop("size", 0), compressed_size_bytes=kw.pop("csize", 0),
                       safe_window_threshold="0" * 30, build_source="TEST", **kw)


def put(store: StateStore, r: SnapshotRow, data: bytes | None, expected: SnapshotRow | None = None) -> SnapshotRow:
    return store.write(r, io.BytesIO(data) if data is not None else None,
                       len(data) if data is not None else 0, expected)


def read_all(store: StateStore, r: SnapshotRow) -> bytes:
    with store.open_state_stream(r) as f:
        return f.read()


class StateStoreConformance:
    """Every state store keeps this contract. Subclass it and implement :meth:`make_opener`."""

    #: options for ``open(service_id, **options)`` that let the store hold record-level offloaded rows
    offload_options: dict = {}

    def make_opener(self, request, tmp_path) -> Opener:
        """``open(service_id="default", **options) -> StateStore`` over one fresh table/container;
        every call opens another store object on the same data (tests open several services)."""
        raise NotImplementedError

    @pytest.fixture
    def opener(self, request, tmp_path) -> Iterator[Opener]:
        opened: list[StateStore] = []
        make = self.make_opener(request, tmp_path)

        def open_(service_id: str = "default", **options) -> StateStore:
            store = make(service_id, **options)
            opened.append(store)
            return store

        yield open_
        for store in opened:
            store.close()

    # --- rows ----------------------------------------------------------------------------------

    def test_round_trip_inline(self, opener):
        s = new_service()
        store = opener(s)
        data = bytes(range(256)) * 40
        stored = put(store, make_row(s), data)
        assert stored.revision >= 1 and stored.token
        got = store.get("Proj", "v1")
        assert got.events_processed == 10 and not got.is_offloaded and got.state_length == len(data)
        assert read_all(store, got) == data

    def test_empty_inline_payload_is_empty_not_null(self, opener):
        s = new_service()
        store = opener(s)
        put(store, make_row(s), b"")
        got = store.get("Proj", "v1")
        assert got.state_length == 0
        assert read_all(store, got) == b""

    def test_offloaded_row_has_no_state(self, opener):
        s = new_service()
        store = opener(s, **self.offload_options)
        r = make_row(s, is_offloaded=True, offload_key="Proj/v1/" + "a" * 64 + ".bin",
                     offload_provider="AzureBlobStorage")
        put(store, r, None)
        got = store.get("Proj", "v1")
        assert got.is_offloaded and got.offload_key == r.offload_key and got.offload_provider == "AzureBlobStorage"
        assert got.state_length in (None, 0)

    def test_large_inline_state_streams(self, opener):
        s = new_service()
        store = opener(s)
        size = store.inline_limit // 2 - 1000 if store.inline_limit is not None else 5 * 1024 * 1024 + 7
        data = (b"0123456789abcdef" * (size // 16 + 1))[:size]
        put(store, make_row(s), data)
        got = store.get("Proj", "v1")
        assert got.state_length == size
        with store.open_state_stream(got) as f:
            first = f.read(1000)
            rest = f.read()
        assert first + rest == data

    def test_metadata_round_trip(self, opener):
        s = new_service()
        store = opener(s)
        r = make_row(s, size=1234, csize=567, build_host="host-1", generation=3).replace(
            last_sortable_unique_id="063881234567890123400000000001", payload_type="Custom.Type")
        put(store, r, b"abc")
        got = store.get("Proj", "v1")
        for field in ("last_sortable_unique_id", "payload_type", "original_size_bytes",
                      "compressed_size_bytes", "build_source", "build_host", "generation",
                      "safe_window_threshold", "events_processed"):
            assert getattr(got, field) == getattr(r, field), field
        assert got.created_at is not None and got.updated_at is not None
        assert got.updated_at.tzinfo is not None

    # --- compare-and-swap ----------------------------------------------------------------------

    def test_create_conflict(self, opener):
        s = new_service()
        store = opener(s)
        put(store, make_row(s), b"a")
        with pytest.raises(ConcurrencyConflictError):
            put(store, make_row(s, events=11), b"b")
        assert read_all(store, store.get("Proj", "v1")) == b"a"

    def test_replace_with_stale_token_conflicts(self, opener):
        s = new_service()
        store = opener(s)
        first = put(store, make_row(s), b"a")
        second = put(store, make_row(s, events=11), b"b", expected=first)
        assert second.token != first.token
        with pytest.raises(ConcurrencyConflictError):
            put(store, make_row(s, events=12), b"c", expected=first)
        got = store.get("Proj", "v1")
        assert got.events_processed == 11 and read_all(store, got) == b"b"

    def test_tombstone_is_never_erased(self, opener):
        s = new_service()
        store = opener(s)
        first = put(store, make_row(s), b"a")
        tomb = store.tombstone(first)
        assert tomb.is_tombstoned
        assert store.latest_active("Proj") is None
        assert store.get("Proj", "v1").is_tombstoned
        with pytest.raises((TombstonedError, ConcurrencyConflictError)):
            put(store, make_row(s, events=99), b"z", expected=tomb)
        with pytest.raises((TombstonedError, ConcurrencyConflictError)):
            put(store, make_row(s, events=99), b"z")
        got = store.get("Proj", "v1")
        assert got.is_tombstoned and got.events_processed == 10

    def test_concurrent_writers_one_winner_per_round(self, opener):
        s = new_service()
        store = opener(s)
        base = put(store, make_row(s, events=0), b"round-0")
        for rnd in range(1, 4):
            current = store.get("Proj", "v1")

            def attempt(i, rnd=rnd, current=current):
                w = opener(s)
                try:
                    put(w, make_row(s, events=rnd * 100 + i), f"round-{rnd}-writer-{i}".encode(), expected=current)
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

    # --- reads and listings --------------------------------------------------------------------

    def test_latest_active_by_events_processed(self, opener):
        s = new_service()
        store = opener(s)
        put(store, make_row(s, version="v1", events=5), b"1")
        put(store, make_row(s, version="v2", events=50), b"2")
        v3 = put(store, make_row(s, version="v3", events=500), b"3")
        store.tombstone(v3)
        assert store.latest_active("Proj").projector_version == "v2"
        assert store.latest_active("Other") is None

    def test_paging_past_one_page(self, opener):
        s = new_service()
        store = opener(s)
        names = [(f"P{i:02d}", f"v{j}") for i in range(7) for j in range(3)]
        for n, v in names:
            put(store, make_row(s, name=n, version=v), b"x")
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
        assert [(r.projector_name, r.projector_version) for r in iter_rows(store, page_size=5)] == sorted(names)

    # --- services ------------------------------------------------------------------------------

    def test_service_isolation(self, opener):
        a, b = new_service(), new_service()
        sa, sb = opener(a), opener(b)
        put(sa, make_row(a), b"from-a")
        assert sb.get("Proj", "v1") is None
        assert sb.latest_active("Proj") is None
        assert sb.list_page() == []
        put(sb, make_row(b), b"from-b")
        assert read_all(sa, sa.get("Proj", "v1")) == b"from-a"
        assert read_all(sb, sb.get("Proj", "v1")) == b"from-b"

    def test_for_service_scopes_and_shares(self, opener):
        a, b = new_service(), new_service()
        sa = opener(a)
        put(sa, make_row(a), b"from-a")
        sb = sa.for_service(b)
        assert sb.service_id == b and sb.get("Proj", "v1") is None
        put(sb, make_row(b), b"from-b")
        sb.close()  # a scoped store never closes the connection it borrowed
        assert read_all(sa, sa.get("Proj", "v1")) == b"from-a"
        assert read_all(opener(b), opener(b).get("Proj", "v1")) == b"from-b"
        if sa.capabilities.lists_all_services:
            assert {a, b} <= set(sa.list_service_ids())

    # --- declared capabilities -----------------------------------------------------------------

    def test_range_reads_as_declared(self, opener):
        s = new_service()
        store = opener(s)
        data = bytes(range(256)) * 5000
        if store.inline_limit is not None:
            data = data[:store.inline_limit]  # DynamoDB: a 400 KB item holds ~300 KB of StateData
        stored = put(store, make_row(s), data)
        if not store.capabilities.range_reads:
            with pytest.raises(NotImplementedError):
                store.read_state_range(stored, 0, 10)
            return
        assert store.read_state_range(stored, 0, 100) == data[:100]
        assert store.read_state_range(stored, 1000, 4096) == data[1000:5096]
        assert store.read_state_range(stored, len(data) - 10, 100) == data[-10:]
        put(store, make_row(s, events=11), b"moved", expected=stored)
        with pytest.raises(ConcurrencyConflictError):
            store.read_state_range(stored, 0, 10)

    def test_record_offload_refusal_is_explained(self, opener):
        store = opener(new_service())
        caps = store.capabilities
        assert isinstance(caps.record_offload, bool)
        if not caps.record_offload:
            assert caps.record_offload_refusal, "a store that refuses record-level offload must say why"

    def test_errors_are_sekiops_errors(self, opener):
        s = new_service()
        store = opener(s)
        with pytest.raises(SekiopsError):
            put(store, make_row(s, name=""), b"x")
