"""How the test suite opens a fresh, isolated store of each built-in kind, on the session's real
servers (tests/conftest.py). Used by the conformance subclasses and by suites that run on every
store pair (crash matrix, faults, concurrency)."""

from __future__ import annotations

import uuid
from urllib.parse import quote

STATE_KINDS = ["memory", "sqlite", "postgres", "cosmos", "dynamodb"]
#: ``s3``: a bucket with versioning Enabled (conditional deletes). ``s3-unversioned`` (a bucket
#: without versioning: no conditional delete, so gc refuses) is opened by name where wanted.
BLOB_KINDS = ["memory", "local", "azure", "s3"]
#: pytest marks for kinds that need a server (so `-m "not cosmos"` deselects them)
SERVER_MARK = {"postgres": "postgres", "cosmos": "cosmos", "azure": "azurite", "memory": "memory_store",
               "sqlite": "sqlite_store", "local": "local_store", "dynamodb": "aws", "s3": "aws",
               "s3-unversioned": "aws"}


def dynamodb_url(request, table: str | None = None) -> str:
    """A fresh DynamoDB table on the session's moto server (AWS env set for this test only)."""
    server = request.getfixturevalue("aws_env")
    return f"dynamodb://{table or 't' + uuid.uuid4().hex[:12]}?endpoint={server.endpoint}"


def s3_url(request, versioned: bool = True, bucket: str | None = None) -> str:
    """A fresh bucket on the session's moto server, versioning Enabled unless ``versioned`` is False."""
    server = request.getfixturevalue("aws_env")
    bucket = bucket or "t" + uuid.uuid4().hex[:12]
    s3 = server.client("s3")
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return f"s3://{bucket}?endpoint={server.endpoint}&path_style=true"


def state_url(kind: str, request, tmp_path) -> str:
    name = "t" + uuid.uuid4().hex[:12]
    if kind == "memory":
        return f"memory://{name}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/{name}.db"
    if kind == "postgres":
        return request.getfixturevalue("postgres_server").url  # rows are isolated by service id
    if kind == "cosmos":
        server = request.getfixturevalue("cosmos_env")  # sets COSMOS_KEY for this test only
        host = server.endpoint.split("://", 1)[1]
        return f"cosmos+https://{host}/db{name}/multiProjectionStates?verify=false"
    if kind == "dynamodb":
        return dynamodb_url(request)
    raise AssertionError(kind)


def state_opener(kind: str, request, tmp_path):
    """``open(service_id="default", **options)`` over one fresh table/container of ``kind``."""
    from sekiops.state import open_state_store

    url = state_url(kind, request, tmp_path)
    opened = []
    request.addfinalizer(lambda: [s.close() for s in opened])

    def open_(service_id: str = "default", **options):
        store = open_state_store(url, service_id=service_id, **options)
        opened.append(store)
        return store

    open_.kind = kind
    return open_


def blob_url(kind: str, request, tmp_path, prefix: str = "") -> str:
    name = "t" + uuid.uuid4().hex[:12]
    if kind == "memory":
        url = f"memory://{name}"
    elif kind == "local":
        url = f"file://{tmp_path}/{name}"
    elif kind == "azure":
        request.getfixturevalue("azure_storage_env")  # sets the connection string for this test only
        url = f"azblob://{name}"
    elif kind in ("s3", "s3-unversioned"):
        url = s3_url(request, versioned=kind == "s3")
        return url + (f"&prefix={quote(prefix, safe='')}" if prefix else "")
    else:
        raise AssertionError(kind)
    return url + (f"?prefix={quote(prefix, safe='')}" if prefix else "")


def blob_opener(kind: str, request, tmp_path):
    """``open(prefix="")`` over one fresh container of ``kind`` (each call: same container)."""
    from sekiops.blob import open_blob_store

    base = blob_url(kind, request, tmp_path)
    sep = "&" if "?" in base else "?"
    return lambda prefix="": open_blob_store(base + (f"{sep}prefix={quote(prefix, safe='')}" if prefix else ""))
