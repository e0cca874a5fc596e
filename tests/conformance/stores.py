"""Factories that open a fresh, isolated store of each kind for the conformance suites.

Each factory takes pytest's ``request`` (to reach the session's real servers) and a unique
name, and returns ``open(service_id) -> store`` so a test can open several services over the
same underlying database or container.
"""

from __future__ import annotations

import uuid

STATE_KINDS = ["memory", "sqlite", "postgres", "cosmos"]
BLOB_KINDS = ["memory", "local", "azure"]
#: pytest marks for kinds that need a server (so `-m "not cosmos"` deselects them)
SERVER_MARK = {"postgres": "postgres", "cosmos": "cosmos", "azure": "azurite", "memory": "memory_store",
               "sqlite": "sqlite_store", "local": "local_store"}


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
        server = request.getfixturevalue("cosmos_env")  # sets COSMOS_KEY for this test only
        host = server.endpoint.split("://", 1)[1]
        url = f"cosmos+https://{host}/db{name}/multiProjectionStates?verify=false"
    else:
        raise AssertionError(kind)

    opened = []
    request.addfinalizer(lambda: [s.close() for s in opened])

    def open_(service_id: str = "default", **options):
        # Tests isolate themselves by service id (a shared server database holds many).
        store = open_state_store(url, service_id=service_id, **options)
        opened.append(store)
        return store

    open_.kind = kind

    return open_


def blob_opener(kind: str, request, tmp_path):
    from sekiops.blob import open_blob_store

    name = "t" + uuid.uuid4().hex[:12]
    if kind == "memory":
        url = f"memory://{name}"
    elif kind == "local":
        url = f"file://{tmp_path}/{name}"
    elif kind == "azure":
        request.getfixturevalue("azure_storage_env")  # sets the connection string for this test only
        url = f"azblob://{name}"
    else:
        raise AssertionError(kind)
    return lambda: open_blob_store(url)
