"""Connecting to Cosmos DB: sign-in, the SDK client's options, and opening (or creating) the container.

The SDK is configured so that sekiops' own retry rule (:mod:`.calls`) is the only one: its throttle
retries would multiply the attempts, and its regional failover would chase an emulator's
advertised endpoints. Containers sekiops creates get Sekiban's partition key ``/pk`` and composite
indexes on (pk, id) and (projectorName, projectorVersion), which the listing's ORDER BY uses.
"""

from __future__ import annotations

import base64
import binascii
import copy
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ...errors import StoreError, StoreMissingError, UsageError
from ...timeouts import Timeouts
from .documents import PARTITION_KEY_PATH
from .url import KEY_ENV

#: The indexing policy of a container sekiops creates (stateData and _etag are never queried).
INDEXING_POLICY = {
    "indexingMode": "consistent", "automatic": True,
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [{"path": "/stateData/?"}, {"path": '/"_etag"/?'}],
    "compositeIndexes": [
        [{"path": "/pk", "order": "ascending"}, {"path": "/id", "order": "ascending"}],
        [{"path": "/projectorName", "order": "ascending"},
         {"path": "/projectorVersion", "order": "ascending"}],
    ],
}


def sign_in(key: str | None, credential: Any, location: str) -> tuple[Any, Any]:
    """(what the client signs in with, a credential the store must close or None).

    The account key when given (checked to be Base64, never shown), else ``credential``, else
    Entra ID through ``azure.identity.DefaultAzureCredential``.
    """
    if key:
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{location}: the Cosmos DB key ({KEY_ENV}) is not a Base64 account "
                             f"key ({len(key)} characters; value not shown)") from None
        return key, None
    if credential is not None:
        return credential, None
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise UsageError(f"{location}: no {KEY_ENV} set and azure-identity is not installed "
                         "for Entra ID sign-in") from None
    owned = DefaultAzureCredential()
    return owned, owned


def client_options(endpoint: str, timeouts: Timeouts, *, verify: bool, transport: Any,
                   client_kwargs: dict | None) -> dict[str, Any]:
    """Keyword arguments for ``CosmosClient``: no SDK retries or failover, sekiops' deadlines."""
    from azure.cosmos import documents

    if not verify or (urlsplit(endpoint).hostname or "") in ("localhost", "127.0.0.1", "::1"):
        # Asked for (or, on loopback, done by the SDK anyway): don't warn on every request.
        try:
            from urllib3.exceptions import InsecureRequestWarning
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        except ImportError:  # pragma: no cover
            pass
    policy = documents.ConnectionPolicy()
    # sekiops retries 429/503 itself (bounded, with jitter); the SDK's throttle retries would
    # multiply the attempts, and its regional failover would chase an emulator's advertised
    # endpoints. 0 can only be set through the policy object (the kwargs treat 0 as "unset").
    policy.RetryOptions = documents.RetryOptions(max_retry_attempt_count=0, max_wait_time_in_seconds=0)
    kwargs: dict[str, Any] = dict(
        connection_policy=policy, enable_endpoint_discovery=False,
        connection_timeout=timeouts.connect, read_timeout=timeouts.io,
        retry_connect=1, retry_read=0, retry_backoff_factor=0.2, retry_backoff_max=2,
    )
    if not verify:
        kwargs["connection_verify"] = False
    if transport is not None:
        kwargs["transport"] = transport
    kwargs.update(client_kwargs or {})
    return kwargs


def open_container(client: Any, database_name: str, container_name: str, *, create: bool,
                   run: Callable[..., Any], location: str, shape: dict) -> Any:
    """The container's client, after checking it is Sekiban's (partition key ``/pk``).

    ``run(what, fn, idempotent=...)`` is the store's retrying call. Missing database or container:
    created when ``create`` (409, someone else created it meanwhile, is fine), else
    StoreMissingError carrying ``shape``.
    """
    from azure.cosmos import PartitionKey
    from azure.cosmos.exceptions import CosmosHttpResponseError

    db = client.get_database_client(database_name)
    try:
        run("read database", db.read)
    except CosmosHttpResponseError as exc:
        if exc.status_code != 404:
            raise StoreError(f"{location}: read database: HTTP {exc.status_code}") from None
        if not create:
            raise StoreMissingError(f"{location}: no database {database_name!r} (create=false)",
                                    shape=shape) from None
        try:
            run("create database", lambda: client.create_database(database_name), idempotent=False)
        except CosmosHttpResponseError as exc2:
            if exc2.status_code != 409:  # 409: created meanwhile by someone else: fine
                raise StoreError(f"{location}: create database: HTTP {exc2.status_code}") from None
    container = db.get_container_client(container_name)
    try:
        props = run("read container", container.read)
    except CosmosHttpResponseError as exc:
        if exc.status_code != 404:
            raise StoreError(f"{location}: read container: HTTP {exc.status_code}") from None
        if not create:
            raise StoreMissingError(f"{location}: no container {container_name!r} (create=false)",
                                    shape=shape) from None
        try:
            run("create container", lambda: db.create_container(
                container_name, partition_key=PartitionKey(path=PARTITION_KEY_PATH),
                indexing_policy=copy.deepcopy(INDEXING_POLICY)), idempotent=False)
        except CosmosHttpResponseError as exc2:
            if exc2.status_code != 409:
                raise StoreError(f"{location}: create container: HTTP {exc2.status_code}") from None
        container = db.get_container_client(container_name)
        props = run("read container", container.read)
    paths = ((props or {}).get("partitionKey") or {}).get("paths") or []
    if paths and paths != [PARTITION_KEY_PATH]:
        raise StoreError(f"{location}: container partition key is {paths}, Sekiban's is "
                         f"[{PARTITION_KEY_PATH!r}]: not a Sekiban multiProjectionStates container")
    return container
