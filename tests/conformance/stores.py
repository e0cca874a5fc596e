"""Factories that open a fresh, isolated store of each kind for the conformance suites.

Each factory takes pytest's ``request`` (to reach the session's real servers) and a unique
name, and returns ``open(service_id) -> store`` so a test can open several services over the
same underlying database or container.
"""

from __future__ import annotations

import os
import uuid

STATE_KINDS = ["memory", "sqlite", "postgres", "cosmos"]
BLOB_KINDS = ["memory", "local", "azure"]


def state_opener(kind: str, request, tmp_path):
    from sekiops.state import open_state_store

    name = "t" + uuid.uuid4().hex[:12]
    if kind == "memory":
        url = f"memory://{name}"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path}/{name}.db"
    elif kind == "postgres":
        server = request.getfixturevalue("postgres_server")
        url = server.url  # a fresh schema/table is not needed: rows are isolated by service id
    elif kind == "cosmos":
        server = request.getfixturevalue("cosmos_server")
        os.environ["COSMOS_KEY"] = server.key
        host = server.endpoint.split("://", 1)[1]
        url = f"cosmos+https://{host}/db{name}/multiProjectionStates?verify=false"
    else:
        raise AssertionError(kind)

    def open_(service_id: str = "default", **options):
        # Services are suffixed so each test is isolated even in a shared server database.
        return open_state_store(url, service_id=service_id, **options)

    return open_


def blob_opener(kind: str, request, tmp_path):
    from sekiops.blob import open_blob_store

    name = "t" + uuid.uuid4().hex[:12]
    if kind == "memory":
        url = f"memory://{name}"
    elif kind == "local":
        url = f"file://{tmp_path}/{name}"
    elif kind == "azure":
        server = request.getfixturevalue("azurite")
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = server.connection_string
        url = f"azblob://{name}"
    else:
        raise AssertionError(kind)
    return lambda: open_blob_store(url)
