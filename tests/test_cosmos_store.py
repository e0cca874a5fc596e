"""Cosmos DB state store specifics, against the test cosmosdb-server (``cosmos_server`` fixture).

Documents are checked raw, through the azure-cosmos SDK, as Sekiban would see them. What the test
server cannot produce (HTTP 429 with ``x-ms-retry-after-ms``, 503, 413, a lost connection) is
injected at the HTTP level by :class:`FaultTransport`, an azure-core transport wrapped around the
real one: matching requests get a synthetic answer (or error) instead of reaching the server,
everything else goes to the server unchanged.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid

import pytest
import requests
from azure.core.exceptions import ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport, RequestsTransportResponse
from azure.cosmos import CosmosClient, PartitionKey

from sekiops.errors import (
    ConcurrencyConflictError,
    CorruptSnapshotError,
    ItemTooLargeError,
    SekiopsError,
    StoreError,
    StoreUnavailableError,
    TombstonedError,
)
from sekiops.format.constants import COSMOS_ITEM_LIMIT, PAYLOAD_TYPE, RECORD_THRESHOLD_COSMOS
from sekiops.format.record import SnapshotRow
from sekiops.state import iter_rows, open_state_store
from sekiops.state.cosmos import INLINE_LIMIT, PROPERTIES, CosmosStateStore, cosmos_target

# Tests using the server are marked ``cosmos`` by tests/conftest.py.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

DOTNET_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")


# --- helpers ----------------------------------------------------------------------------------


class FaultTransport(RequestsTransport):
    """Fault injection around the real requests transport.

    ``fail(match, status, headers, times)`` answers the next ``times`` requests for which
    ``match(request)`` is true with ``status`` (without sending them); ``raise_on(match, exc)``
    raises ``exc`` instead. Every request is recorded in ``sent`` as (method, url, injected).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rules: list[dict] = []
        self.sent: list[tuple[str, str, bool]] = []
        self.headers: list[dict] = []  # request headers, parallel to ``sent``

    def fail(self, match, status, headers=None, times=1, body=None):
        self.rules.append(dict(match=match, status=status, headers=headers or {}, left=times, body=body))

    def raise_on(self, match, exc, times=1):
        self.rules.append(dict(match=match, exc=exc, left=times))

    def send(self, request, **kwargs):
        for rule in self.rules:
            if rule["left"] > 0 and rule["match"](request):
                rule["left"] -= 1
                self.sent.append((request.method, request.url, True))
                self.headers.append(dict(request.headers))
                if "exc" in rule:
                    raise rule["exc"]
                resp = requests.Response()
                resp.status_code = rule["status"]
                resp.headers.update({"content-type": "application/json",
                                     "x-ms-activity-id": str(uuid.uuid4()), **rule["headers"]})
                body = rule["body"]
                if body is None:
                    body = {"code": str(rule["status"]), "message": f"injected HTTP {rule['status']}"}
                resp._content = body if isinstance(body, bytes) else json.dumps(body).encode()
                resp.url = request.url
                resp.encoding = "utf-8"
                return RequestsTransportResponse(request, resp)
        self.sent.append((request.method, request.url, False))
        self.headers.append(dict(request.headers))
        return super().send(request, **kwargs)


def is_doc_read(r) -> bool:
    return r.method == "GET" and "/docs/" in r.url


def is_doc_create(r) -> bool:
    return (r.method == "POST" and r.url.rstrip("/").endswith("/docs")
            and not any(k.lower() == "x-ms-documentdb-isquery" for k in (r.headers or {})))


def is_doc_replace(r) -> bool:
    return r.method == "PUT" and "/docs/" in r.url


def is_query(r) -> bool:
    return r.method == "POST" and r.url.rstrip("/").endswith("/docs") and any(
        k.lower() == "x-ms-documentdb-isquery" for k in (r.headers or {}))


def svc() -> str:
    return "svc-" + uuid.uuid4().hex[:10]


def row(service, name="Proj", version="v1", events=10, **kw) -> SnapshotRow:
    return SnapshotRow(service_id=service, projector_name=name, projector_version=version,
                       last_sortable_unique_id="063881234567890123400000000001", events_processed=events,
                       original_size_bytes=kw.pop("size", 0), compressed_size_bytes=kw.pop("csize", 0),
                       safe_window_threshold="063881234500000000000000000000", build_source="SEKIOPS_STREAM",
                       **kw)


def put(store, r, data: bytes | None, expected=None):
    return store.write(r, io.BytesIO(data) if data is not None else None,
                       len(data) if data is not None else 0, expected)


def read_all(store, r) -> bytes:
    with store.open_state_stream(r) as f:
        return f.read()


class Env:
    """One fresh database on the test server: URL, raw SDK container, store opener."""

    def __init__(self, server, monkeypatch):
        monkeypatch.setenv("COSMOS_KEY", server.key)
        self.server = server
        self.db = "db" + uuid.uuid4().hex[:12]
        host = server.endpoint.split("://", 1)[1].rstrip("/")
        self.url = f"cosmos+https://{host}/{self.db}/multiProjectionStates?verify=false"
        self.raw_client = CosmosClient(server.endpoint, credential=server.key, connection_verify=False)
        self.stores: list = []

    def open(self, service_id="default", **options) -> CosmosStateStore:
        store = open_state_store(self.url, service_id=service_id, **options)
        self.stores.append(store)
        return store

    @property
    def raw(self):
        return self.raw_client.get_database_client(self.db).get_container_client("multiProjectionStates")

    def close(self):
        for s in self.stores:
            s.close()
        self.raw_client.close()


@pytest.fixture
def env(cosmos_server, monkeypatch):
    e = Env(cosmos_server, monkeypatch)
    yield e
    e.close()


# --- URL, location, secrets -------------------------------------------------------------------


def test_url_defaults_and_location():
    assert cosmos_target("cosmos+https://acct.documents.azure.com") == (
        "https://acct.documents.azure.com:443/", "SekibanDcb", "multiProjectionStates",
        "cosmos+https://acct.documents.azure.com:443/SekibanDcb/multiProjectionStates")
    assert cosmos_target("cosmos+http://localhost:8081/Db1?verify=false")[1:] == (
        "Db1", "multiProjectionStates", "cosmos+http://localhost:8081/Db1/multiProjectionStates")
    with pytest.raises(SekiopsError):
        cosmos_target("cosmos+https://host/a/b/c")


def test_store_basics(env):
    s = env.open(svc())
    assert s.kind == "cosmos"
    assert s.record_offload_threshold == RECORD_THRESHOLD_COSMOS == 1_000_000
    assert s.inline_limit == (COSMOS_ITEM_LIMIT - 16 * 1024) * 3 // 4
    host = env.server.endpoint.split("://", 1)[1].rstrip("/")
    assert s.location == f"cosmos+https://{host}/{env.db}/multiProjectionStates"


def test_key_never_shown(cosmos_server, monkeypatch):
    secret = "S3cretK3y" + "A" * 79 + "=="
    monkeypatch.setenv("COSMOS_KEY", secret)
    host = cosmos_server.endpoint.split("://", 1)[1].rstrip("/")
    store = open_state_store(f"cosmos+https://{host}/db{uuid.uuid4().hex[:8]}/c?verify=false", service_id="default")
    try:
        assert secret not in repr(store) and secret not in store.location and secret not in repr(vars(store))
    finally:
        store.close()
    # unreachable endpoint: StoreUnavailableError naming the redacted location, no key
    with pytest.raises(StoreUnavailableError) as err:
        open_state_store("cosmos+https://127.0.0.1:1/SekibanDcb/multiProjectionStates?verify=false&key=" + secret)
    assert "cosmos+https://127.0.0.1:1/SekibanDcb/multiProjectionStates" in str(err.value)
    assert secret not in str(err.value)


def test_create_false_refuses_missing_container(env):
    with pytest.raises(StoreError, match="no database"):
        open_state_store(env.url + "&create=false")


def test_existing_container_is_read_not_recreated(env):
    def creates(t):
        return [u for m, u, _ in t.sent if m == "POST" and re.search(r"/dbs/?$|/colls/?$", u)]

    first, second = FaultTransport(), FaultTransport()
    env.open(transport=first)
    assert len(creates(first)) == 2  # database, then container (partition key /pk)
    props = env.raw.read()
    assert props["partitionKey"]["paths"] == ["/pk"]
    assert [[p["path"] for p in ix] for ix in props["indexingPolicy"]["compositeIndexes"]] == [
        ["/pk", "/id"], ["/projectorName", "/projectorVersion"]]
    env.open(transport=second)
    assert creates(second) == [] and any(m == "GET" for m, _, _ in second.sent)


# --- document shape ---------------------------------------------------------------------------


def test_exact_document_shape(env):
    s = svc()
    store = env.open(s)
    data = bytes(range(256)) * 3 + b"xy"  # length not a multiple of 3: padded Base64
    stored = put(store, row(s, size=1234, csize=777, generation=2), data)
    doc = env.raw.read_item("v1", partition_key=f"{s}|MultiProjectionState_Proj")
    user_keys = [k for k in doc if not k.startswith("_")]
    assert sorted(user_keys) == sorted(PROPERTIES)
    assert len(PROPERTIES) == 23
    assert doc["documentType"] == "projectionState"
    assert doc["id"] == "v1" and doc["projectorVersion"] == "v1" and doc["projectorName"] == "Proj"
    assert doc["pk"] == f"{s}|MultiProjectionState_Proj"
    assert doc["partitionKey"] == "MultiProjectionState_Proj"
    assert doc["serviceId"] == s
    assert doc["payloadType"] == PAYLOAD_TYPE
    assert doc["stateData"] == base64.b64encode(data).decode() and doc["stateData"].endswith("=")
    assert doc["isOffloaded"] is False
    assert doc["offloadKey"] is None and doc["offloadProvider"] is None and doc["buildHost"] is None
    assert doc["eventsProcessed"] == 10 and doc["originalSizeBytes"] == 1234 and doc["compressedSizeBytes"] == 777
    assert doc["lastSortableUniqueId"] == "063881234567890123400000000001"
    assert doc["safeWindowThreshold"] == "063881234500000000000000000000"
    assert DOTNET_TS.match(doc["createdAt"]) and DOTNET_TS.match(doc["updatedAt"])
    assert doc["buildSource"] == "SEKIOPS_STREAM" and doc["generation"] == 2 and doc["lifecycle"] == 0
    assert "revision" not in doc and "Revision" not in doc
    assert stored.token == doc["_etag"] and stored.state_length == len(data)

    # offloaded: stateData present and null; empty inline payload: "" (never null)
    put(store, row(s, version="v2", is_offloaded=True, offload_key="Proj/v2/" + "a" * 64 + ".bin",
                   offload_provider="AzureBlobStorage"), None)
    off = env.raw.read_item("v2", partition_key=f"{s}|MultiProjectionState_Proj")
    assert "stateData" in off and off["stateData"] is None and off["isOffloaded"] is True
    assert off["offloadKey"] == "Proj/v2/" + "a" * 64 + ".bin" and off["offloadProvider"] == "AzureBlobStorage"
    put(store, row(s, version="v3"), b"")
    empty = env.raw.read_item("v3", partition_key=f"{s}|MultiProjectionState_Proj")
    assert empty["stateData"] == ""
    assert store.get("Proj", "v3").state_length == 0


def test_listing_reports_state_length_from_base64(env):
    s = svc()
    store = env.open(s)
    for i, n in enumerate([0, 1, 2, 3, 4, 5, 1000]):
        put(store, row(s, version=f"v{i}"), b"z" * n)
    got = {r.projector_version: r.state_length for r in store.list_page()}
    assert got == {f"v{i}": n for i, n in enumerate([0, 1, 2, 3, 4, 5, 1000])}
    assert all(r.token for r in store.list_page())


def test_older_documents_read_leniently(env):
    """No documentType, PascalCase properties (a custom-serialised or older Sekiban)."""
    s = svc()
    env.open(s)  # creates the container
    payload = b"old-envelope-bytes"
    env.raw.create_item({
        "id": "v9", "pk": f"{s}|MultiProjectionState_Legacy", "ServiceId": s,
        "PartitionKey": "MultiProjectionState_Legacy", "ProjectorName": "Legacy", "ProjectorVersion": "v9",
        "PayloadType": PAYLOAD_TYPE, "LastSortableUniqueId": "0" * 30, "EventsProcessed": 42,
        "StateData": base64.b64encode(payload).decode(), "IsOffloaded": False, "OffloadKey": None,
        "OffloadProvider": None, "OriginalSizeBytes": 18, "CompressedSizeBytes": 18,
        "SafeWindowThreshold": "0" * 30, "CreatedAt": "2025-01-02T03:04:05.1234567Z",
        "UpdatedAt": "2025-01-02T03:04:05.1234567+00:00", "BuildSource": "GRAIN", "BuildHost": "h"})
    store = env.open(s)
    got = store.get("Legacy", "v9")
    assert got is not None and got.events_processed == 42 and got.build_source == "GRAIN"
    assert got.state_length == len(payload) and read_all(store, got) == payload
    assert store.latest_active("Legacy").projector_version == "v9"
    assert [(r.projector_name, r.state_length) for r in store.list_page()] == [("Legacy", len(payload))]
    # replacing it writes the full camelCase shape
    put(store, row(s, name="Legacy", version="v9", events=43), b"new", expected=got)
    doc = env.raw.read_item("v9", partition_key=f"{s}|MultiProjectionState_Legacy")
    assert doc["documentType"] == "projectionState" and doc["eventsProcessed"] == 43
    # tombstone keeps the document's own casing
    legacy2 = dict(id="v8", pk=f"{s}|MultiProjectionState_Legacy", ServiceId=s, ProjectorName="Legacy",
                   ProjectorVersion="v8", EventsProcessed=1, StateData="", IsOffloaded=False,
                   CreatedAt="2025-01-02T03:04:05Z", UpdatedAt="2025-01-02T03:04:05Z", Lifecycle=0)
    env.raw.create_item(legacy2)
    t = store.tombstone(store.get("Legacy", "v8"))
    assert t.is_tombstoned
    raw = env.raw.read_item("v8", partition_key=f"{s}|MultiProjectionState_Legacy")
    assert raw["Lifecycle"] == 1 and "lifecycle" not in raw


def test_status_and_foreign_documents_never_returned(env):
    s, other = svc(), svc()
    store = env.open(s)
    pk = f"{s}|MultiProjectionState_Proj"
    put(store, row(s), b"mine")
    raw = env.raw
    # status documents in the same partition, both ways of recognising them
    raw.create_item({"id": "STATUS_Proj", "pk": pk, "documentType": "projectionStatus", "serviceId": s,
                     "projectorName": "Proj", "eventsProcessed": 10**9})
    raw.create_item({"id": "STATUS_Proj_2", "pk": pk, "serviceId": s, "projectorName": "Proj",
                     "projectorVersion": "zz", "eventsProcessed": 10**9})
    raw.create_item({"id": "v-status", "pk": pk, "documentType": "projectionStatus", "serviceId": s,
                     "projectorName": "Proj", "projectorVersion": "v-status", "eventsProcessed": 10**9})
    # a document in our partition claiming another service id
    raw.create_item({"id": "v-foreign", "pk": pk, "documentType": "projectionState", "serviceId": other,
                     "projectorName": "Proj", "projectorVersion": "v-foreign", "eventsProcessed": 10**9,
                     "stateData": "", "isOffloaded": False, "lifecycle": 0})
    # another service's rows (the test server does not scope queries by partition key: WHERE must)
    other_store = env.open(other)
    put(other_store, row(other, events=10**6), b"theirs")
    put(other_store, row(other, name="Other", events=10**6), b"theirs")

    assert store.get("Proj", "STATUS_Proj") is None
    assert store.get("Proj", "STATUS_Proj_2") is None
    assert store.get("Proj", "v-status") is None
    assert store.get("Proj", "v-foreign") is None
    assert store.get("Other", "v1") is None
    latest = store.latest_active("Proj")
    assert latest.projector_version == "v1" and latest.events_processed == 10
    assert store.latest_active("Other") is None
    assert [(r.projector_name, r.projector_version) for r in store.list_page()] == [("Proj", "v1")]
    assert [(r.projector_name, r.projector_version) for r in store.list_page(projector_name="Proj")] == [("Proj", "v1")]
    assert [r.service_id for r in other_store.list_page()] == [other, other]
    # a full page of skipped documents does not end the listing early
    assert [r.projector_version for r in iter_rows(store, page_size=1)] == ["v1"]


def test_full_pages_despite_filtered_documents(env):
    s = svc()
    store = env.open(s)
    for v in ("a1", "a3", "a5"):
        put(store, row(s, version=v), b"x")
    pk = f"{s}|MultiProjectionState_Proj"
    for v in ("a2", "a4"):  # status-like documents interleaved in key order
        env.raw.create_item({"id": v, "pk": pk, "documentType": "projectionStatus", "serviceId": s})
    assert [r.projector_version for r in iter_rows(store, page_size=2)] == ["a1", "a3", "a5"]


# --- listing order fallbacks --------------------------------------------------------------------


def _seed_names(store, s):
    names = [(f"P{i:02d}", f"v{j}") for i in range(5) for j in range(3)]
    for n, v in reversed(names):
        put(store, row(s, name=n, version=v), b"x")
    return names


def _page_all(store, limit):
    seen, after = [], None
    while True:
        page = store.list_page(after=after, limit=limit)
        seen += [(r.projector_name, r.projector_version) for r in page]
        if len(page) < limit:
            return seen
        after = (page[-1].projector_name, page[-1].projector_version)


def test_listing_on_container_without_composite_index(env):
    """A Sekiban-created container has no composite index: the store falls back to ORDER BY pk."""
    db = env.raw_client.create_database(env.db)
    db.create_container("multiProjectionStates", partition_key=PartitionKey(path="/pk"))
    s = svc()
    store = env.open(s)
    names = _seed_names(store, s)
    for limit in (1, 2, 4, 7, 100):
        assert _page_all(store, limit) == sorted(names), limit
    assert store._order_mode == "name"
    assert [r.projector_version for r in store.list_page(projector_name="P03")] == ["v0", "v1", "v2"]


def test_listing_unordered_scan_fallback(env):
    s = svc()
    store = env.open(s)
    names = _seed_names(store, s)
    store._order_mode = "scan"
    for limit in (1, 4, 100):
        assert _page_all(store, limit) == sorted(names)
    assert [r.projector_version for r in store.list_page(after=("P01", "v1"), limit=2)] == ["v2", "v0"]


def test_listing_never_selects_state_data(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    put(store, row(s), b"secret-state" * 100)
    seen = []
    orig = store._container.query_items

    def spy(query, **kw):
        seen.append(query)
        return orig(query, **kw)

    store._container.query_items = spy
    store.list_page()
    store.list_page(projector_name="Proj")
    store.latest_active("Proj")
    assert len(seen) == 3
    for q in seen:
        rest = re.sub(r"(LENGTH\(c\.(stateData|StateData)\))|(RIGHT\(c\.(stateData|StateData), 2\))", "", q)
        assert "statedata" not in rest.lower() and "SELECT *" not in rest, q
        assert "@" in q and "c.pk" in q


def test_state_written_from_short_reads(env):
    """A stream that returns a few bytes per read still yields exact Base64 (3-byte carry)."""

    class Dribble(io.RawIOBase):
        def __init__(self, data):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def read(self, n=-1):
            step = 1 + self.pos % 7
            out = self.data[self.pos:self.pos + min(step, n if n >= 0 else step)]
            self.pos += len(out)
            return out

    s = svc()
    store = env.open(s)
    data = bytes(range(256)) * 5 + b"q"
    store.write(row(s), Dribble(data), len(data), None)
    doc = env.raw.read_item("v1", partition_key=f"{s}|MultiProjectionState_Proj")
    assert doc["stateData"] == base64.b64encode(data).decode()
    with pytest.raises(CorruptSnapshotError):  # a stream shorter than declared: nothing written
        store.write(row(s, version="v2"), io.BytesIO(b"abc"), 10, None)
    assert store.get("Proj", "v2") is None


def test_entra_sign_in_failure_is_store_error(cosmos_server, monkeypatch):
    """Without COSMOS_KEY the store signs in with a token credential (DefaultAzureCredential by
    default; a failing stand-in here, so the test never probes a real identity endpoint)."""
    from azure.core.exceptions import ClientAuthenticationError

    class NoCredential:
        def get_token(self, *scopes, **kw):
            raise ClientAuthenticationError("no identity available")

        def get_token_info(self, *scopes, **kw):
            raise ClientAuthenticationError("no identity available")

    monkeypatch.delenv("COSMOS_KEY", raising=False)
    host = cosmos_server.endpoint.split("://", 1)[1].rstrip("/")
    with pytest.raises(StoreError, match="sign in"):
        open_state_store(f"cosmos+https://{host}/db{uuid.uuid4().hex[:8]}/c?verify=false",
                         credential=NoCredential())


# --- concurrency ------------------------------------------------------------------------------


def test_state_stream_rechecks_etag(env):
    s = svc()
    store = env.open(s)
    first = put(store, row(s), b"one")
    put(store, row(s, events=11), b"two", expected=first)
    with pytest.raises(ConcurrencyConflictError):
        store.open_state_stream(first)


def test_tombstone_written_after_read_blocks_replace(env):
    s = svc()
    store, other = env.open(s), env.open(s)
    first = put(store, row(s), b"a")
    other.tombstone(other.get("Proj", "v1"))
    with pytest.raises(ConcurrencyConflictError):  # etag moved: 412, nothing written
        put(store, row(s, events=99), b"z", expected=first)
    with pytest.raises(TombstonedError):
        put(store, row(s, events=99), b"z", expected=store.get("Proj", "v1"))
    with pytest.raises(TombstonedError):
        put(store, row(s, events=99), b"z")
    got = store.get("Proj", "v1")
    assert got.is_tombstoned and got.events_processed == 10 and read_all(store, got) == b"a"


def test_corrupt_base64_is_corrupt_snapshot(env):
    s = svc()
    store = env.open(s)
    put(store, row(s), b"abc")
    doc = env.raw.read_item("v1", partition_key=f"{s}|MultiProjectionState_Proj")
    doc["stateData"] = "!!!!QUJD"
    env.raw.replace_item("v1", doc)
    with pytest.raises(CorruptSnapshotError):
        read_all(store, store.get("Proj", "v1"))


# --- size limits ------------------------------------------------------------------------------


class _Untouchable(io.RawIOBase):
    def readable(self):
        return True

    def readinto(self, b):
        raise AssertionError("the state stream must not be read")


def test_over_2mb_inline_state_is_refused_before_sending(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    before = len(t.sent)
    size = 1_600_000  # Base64: 2,133,336 characters > 2 MiB
    with pytest.raises(ItemTooLargeError) as err:
        store.write(row(s), _Untouchable(), size, None)
    assert len(t.sent) == before  # nothing sent
    msg = str(err.value)
    assert f"{s}/Proj/v1" in msg and "1600000" in msg and str(COSMOS_ITEM_LIMIT) in msg
    assert store.get("Proj", "v1") is None


def test_inline_limit_fits_in_one_item(env):
    s = svc()
    store = env.open(s)
    data = (b"0123456789abcdef" * (INLINE_LIMIT // 16 + 1))[:INLINE_LIMIT]
    stored = put(store, row(s, build_host="h" * 256), data)
    assert stored.state_length == INLINE_LIMIT
    doc = env.raw.read_item("v1", partition_key=f"{s}|MultiProjectionState_Proj")
    assert len(json.dumps(doc, separators=(",", ":")).encode()) < COSMOS_ITEM_LIMIT
    with store.open_state_stream(store.get("Proj", "v1")) as f:
        chunks = iter(lambda: f.read(100_000), b"")
        assert b"".join(chunks) == data


# --- injected HTTP faults (the test server never throttles or limits items) --------------------


def test_429_twice_then_success_is_retried_with_bounded_delay(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    put(store, row(s), b"data")
    t.fail(is_doc_read, 429, {"x-ms-retry-after-ms": "100", "x-ms-substatus": "3200"}, times=2)
    start = time.monotonic()
    got = store.get("Proj", "v1")
    elapsed = time.monotonic() - start
    assert got is not None and got.events_processed == 10
    assert [inj for m, u, inj in t.sent if m == "GET" and "/docs/" in u] == [True, True, False]
    assert 0.2 <= elapsed < 2.0, elapsed  # waited the server's 2 x 100 ms (+ <= 20 % jitter), no more


def test_429_on_write_and_query_is_retried(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    t.fail(lambda r: is_doc_create(r), 429, {"x-ms-retry-after-ms": "10"}, times=1)
    put(store, row(s), b"data")  # a throttled create was not applied: retrying it is safe
    t.fail(is_query, 429, {"x-ms-retry-after-ms": "10"}, times=2)
    assert [r.projector_version for r in store.list_page()] == ["v1"]
    t.fail(is_doc_read, 503, {}, times=1)
    assert store.get("Proj", "v1") is not None


def test_persistent_429_gives_store_unavailable(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    t.fail(is_doc_read, 429, {"x-ms-retry-after-ms": "20"}, times=100)
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError) as err:
        store.get("Proj", "v1")
    assert time.monotonic() - start < 2.0
    assert "429" in str(err.value) and "5 attempts" in str(err.value)
    assert err.value.retry_after == pytest.approx(0.02)  # the server's ask, for batch runners
    assert sum(1 for m, u, inj in t.sent if inj) == 5


def test_429_wait_budget_is_bounded(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t, retry_max_wait=1.0)
    t.fail(is_doc_read, 429, {"x-ms-retry-after-ms": "700"}, times=100)
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        store.get("Proj", "v1")
    assert time.monotonic() - start < 1.5
    assert sum(1 for m, u, inj in t.sent if inj) == 2  # 0.7 s waited once; a second wait would pass 1 s


def test_413_is_item_too_large(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    t.fail(is_doc_create, 413, {}, times=1)
    with pytest.raises(ItemTooLargeError):
        put(store, row(s), b"data")
    assert store.get("Proj", "v1") is None


def test_lost_connection_on_write_is_not_retried(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    t.raise_on(is_doc_create, ServiceResponseError("Read timed out"), times=1)
    with pytest.raises(StoreUnavailableError, match="may or may not"):
        put(store, row(s), b"data")
    assert sum(1 for m, u, inj in t.sent if inj) == 1
    assert store.get("Proj", "v1") is None


def test_lost_connection_on_read_is_retried(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    put(store, row(s), b"data")
    t.raise_on(is_doc_read, ServiceResponseError("Read timed out"), times=2)
    assert store.get("Proj", "v1").events_processed == 10


def test_minimal_write_answer_uses_etag_header(env):
    """Real Cosmos honours ``Prefer: return=minimal`` (empty body, new etag in the header); the
    test server always echoes the document, so that answer is injected here."""
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    t.fail(is_doc_create, 201, {"etag": '"0000abcd-0000-0000-0000-000000000000"'}, body=b"")
    stored = put(store, row(s, generation=4), b"data")
    assert stored.token == '"0000abcd-0000-0000-0000-000000000000"'
    assert stored.generation == 4 and stored.state_length == 4 and stored.projector_version == "v1"
    injected = [h for (m, u, inj), h in zip(t.sent, t.headers, strict=True) if inj]
    assert len(injected) == 1
    assert {k.lower(): v for k, v in injected[0].items()}.get("prefer") == "return=minimal"


def test_other_http_errors_are_store_errors(env):
    s = svc()
    t = FaultTransport()
    store = env.open(s, transport=t)
    t.fail(is_doc_read, 400, {}, times=1)
    with pytest.raises(StoreError):
        store.get("Proj", "v1")
