"""The test servers work with the real Python SDKs (and behave like the real services)."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import uuid

import pytest

# cosmosdb-server's certificate is self-signed (and expired): clients skip verification.
pytestmark = pytest.mark.filterwarnings("ignore:Unverified HTTPS request")

# --------------------------------------------------------------------------- Azurite


def test_azurite_blob_roundtrip(azurite):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container("c" + uuid.uuid4().hex[:12])
    payload = os.urandom(300_000)
    container.upload_blob("dir/a.bin", payload)
    container.upload_blob("dir/b.txt", b"hello", overwrite=True)

    assert container.download_blob("dir/a.bin").readall() == payload
    assert container.get_blob_client("dir/b.txt").download_blob().readall() == b"hello"
    assert sorted(b.name for b in container.list_blobs(name_starts_with="dir/")) == [
        "dir/a.bin",
        "dir/b.txt",
    ]
    assert azurite.blob_endpoint.startswith("http://127.0.0.1:")
    container.delete_container()


@pytest.fixture
def environment_after_teardown():
    """Set up before azure_storage_env, so torn down after it: checks it left the environment as found."""
    before = {k: os.environ.get(k) for k in ("AZURE_STORAGE_CONNECTION_STRING", "COSMOS_ENDPOINT", "COSMOS_KEY")}
    yield before
    after = {k: os.environ.get(k) for k in before}
    assert after == before, "an *_env fixture leaked its variables past its test"


def test_azure_storage_env_is_set_for_one_test_only(environment_after_teardown, azure_storage_env):
    # argument order is setup order: azure_storage_env (and its monkeypatch) is torn down first, then
    # environment_after_teardown compares the environment with the one it found -- in any test order
    assert os.environ["AZURE_STORAGE_CONNECTION_STRING"] == azure_storage_env.connection_string
    assert environment_after_teardown["AZURE_STORAGE_CONNECTION_STRING"] != azure_storage_env.connection_string


# --------------------------------------------------------------------------- Cosmos


@pytest.fixture(scope="module")
def cosmos_container(cosmos_server):
    from azure.cosmos import CosmosClient, PartitionKey

    client = CosmosClient(cosmos_server.endpoint, credential=cosmos_server.key, connection_verify=False)
    db = client.create_database_if_not_exists("db" + uuid.uuid4().hex[:8])
    container = db.create_container_if_not_exists("items", partition_key=PartitionKey(path="/pk"))
    yield container
    client.delete_database(db.id)


def test_cosmos_item_semantics(cosmos_container):
    from azure.core import MatchConditions
    from azure.cosmos import exceptions

    created = cosmos_container.create_item({"id": "a", "pk": "p1", "v": 1})
    assert cosmos_container.read_item("a", partition_key="p1")["v"] == 1

    # Missing item (upstream cosmosdb-server answers 500 here; the launcher fixes it).
    with pytest.raises(exceptions.CosmosResourceNotFoundError) as missing:
        cosmos_container.read_item("nope", partition_key="p1")
    assert missing.value.status_code == 404
    # Existing id, other partition key value: not found either.
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        cosmos_container.read_item("a", partition_key="other")

    # Create-if-absent.
    with pytest.raises(exceptions.CosmosResourceExistsError) as dup:
        cosmos_container.create_item({"id": "a", "pk": "p1", "v": 2})
    assert dup.value.status_code == 409

    # Replace-if-match.
    updated = cosmos_container.replace_item(
        "a", {"id": "a", "pk": "p1", "v": 2},
        etag=created["_etag"], match_condition=MatchConditions.IfNotModified,
    )
    assert updated["v"] == 2 and updated["_etag"] != created["_etag"]
    with pytest.raises(exceptions.CosmosAccessConditionFailedError) as stale:
        cosmos_container.replace_item(
            "a", {"id": "a", "pk": "p1", "v": 3},
            etag=created["_etag"], match_condition=MatchConditions.IfNotModified,
        )
    assert stale.value.status_code == 412
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        cosmos_container.replace_item("nope", {"id": "nope", "pk": "p1"})
    with pytest.raises(exceptions.CosmosAccessConditionFailedError):
        cosmos_container.delete_item(
            "a", partition_key="p1", etag=created["_etag"], match_condition=MatchConditions.IfNotModified
        )
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        cosmos_container.delete_item("nope", partition_key="p1")
    assert cosmos_container.read_item("a", partition_key="p1")["v"] == 2


def test_cosmos_query_with_parameters(cosmos_container):
    for i in range(5):
        cosmos_container.upsert_item({"id": f"q{i}", "pk": "pq", "n": i, "kind": "q"})
    rows = list(
        cosmos_container.query_items(
            "SELECT c.id, c.n FROM c WHERE c.kind = @kind AND c.n >= @min ORDER BY c.n",
            parameters=[{"name": "@kind", "value": "q"}, {"name": "@min", "value": 3}],
            partition_key="pq",
        )
    )
    assert rows == [{"id": "q3", "n": 3}, {"id": "q4", "n": 4}]
    cross = list(
        cosmos_container.query_items(
            "SELECT VALUE c.id FROM c WHERE c.kind = @kind",
            parameters=[{"name": "@kind", "value": "q"}],
            enable_cross_partition_query=True,
        )
    )
    assert sorted(cross) == [f"q{i}" for i in range(5)]


def test_cosmos_missing_database_and_container(cosmos_server, cosmos_container):
    from azure.cosmos import CosmosClient, exceptions

    client = CosmosClient(cosmos_server.endpoint, credential=cosmos_server.key, connection_verify=False)
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        client.get_database_client("no-such-db").read()
    db = client.get_database_client(cosmos_container.container_link.split("/")[1])
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        db.get_container_client("no-such-container").read()


def _raw_cosmos(server, method, path, body=None, headers=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(server.host, server.port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_cosmos_launcher_patches_raw_protocol(cosmos_server, cosmos_container):
    base = "/" + cosmos_container.container_link  # dbs/<db>/colls/<container>
    db_id = base.split("/")[2]
    pk = {"x-ms-documentdb-partitionkey": '["p1"]'}

    status, headers, body = _raw_cosmos(cosmos_server, "GET", f"{base}/docs/missing", headers=pk)
    assert status == 404 and body["code"] == "NotFound" and body["message"]
    assert headers.get("connection", headers.get("Connection")) == "keep-alive"

    # Upstream: 500 (TypeError inside the server) for a document created in a missing container.
    status, _, body = _raw_cosmos(
        cosmos_server, "POST", f"/dbs/{db_id}/colls/missing/docs", body={"id": "x", "pk": "p1"}, headers=pk
    )
    assert (status, body["code"]) == (404, "NotFound")

    # Upstream: 500 for an unparsable partition key header.
    status, _, body = _raw_cosmos(
        cosmos_server, "DELETE", f"{base}/docs/a", headers={"x-ms-documentdb-partitionkey": "{bad"}
    )
    assert (status, body["code"]) == (400, "BadRequest")


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_roundtrip(postgres_server):
    import psycopg

    assert postgres_server.url.startswith("postgresql://sekiops:")
    with psycopg.connect(postgres_server.url) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, payload bytea NOT NULL)")
        blob = os.urandom(100_000)
        conn.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, blob, 2, b"x"))
        conn.commit()
    with psycopg.connect(postgres_server.url) as conn:
        rows = conn.execute("SELECT id, payload FROM t ORDER BY id").fetchall()
        assert [r[0] for r in rows] == [1, 2] and bytes(rows[0][1]) == blob
        assert conn.execute("SELECT current_database(), current_user").fetchone() == ("sekiops", "sekiops")
        conn.execute("DROP TABLE t")


def test_postgres_rejects_a_wrong_password(postgres_server):
    import psycopg

    bad = postgres_server.url.replace(postgres_server.password, "wrong")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bad, connect_timeout=10)
