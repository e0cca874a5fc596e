"""``cosmos+https://host[:port]/DATABASE/CONTAINER?flags`` -> where to connect and with which options.

Database and container default to ``SekibanDcb`` / ``multiProjectionStates``. The key comes from
``COSMOS_KEY``; without it, Entra ID through ``azure.identity.DefaultAzureCredential``. Query
flags: ``verify=false`` (don't verify TLS: emulators' self-signed certificates), ``create=false``
(never create the database or container), ``timeout=`` and ``connect_timeout=`` (sekiops.timeouts).
Kept apart from the store so a URL can be checked without azure-cosmos or a server.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from ...errors import UsageError
from ...urls import query_flags, redact

DEFAULT_DATABASE = "SekibanDcb"
DEFAULT_CONTAINER = "multiProjectionStates"
KEY_ENV = "COSMOS_KEY"


def cosmos_target(url: str) -> tuple[str, str, str, str]:
    """``cosmos+https://host:port/DB/CONTAINER`` -> (endpoint, database, container, location)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("cosmos+https", "cosmos+http"):
        raise UsageError(f"not a Cosmos DB URL: {redact(url)!r} (expected cosmos+https://host/DB/CONTAINER)")
    http_scheme = scheme.split("+", 1)[1]
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise UsageError(f"bad port in Cosmos DB URL {redact(url)!r}") from None
    if not host:
        raise UsageError(f"Cosmos DB URL has no host: {redact(url)!r}")
    port = port or (443 if http_scheme == "https" else 80)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if len(segments) > 2:
        raise UsageError(f"Cosmos DB URL path must be /DATABASE/CONTAINER: {redact(url)!r}")
    database = segments[0] if segments else DEFAULT_DATABASE
    container = segments[1] if len(segments) > 1 else DEFAULT_CONTAINER
    for what, value in (("database", database), ("container", container)):
        if any(c in value for c in "/\\?#") or len(value) > 255:
            raise UsageError(f"invalid Cosmos DB {what} name {value!r}")
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    endpoint = f"{http_scheme}://{hostport}/"
    location = f"{scheme}://{hostport}/{database}/{container}"
    return endpoint, database, container, location


def flag(value: str) -> bool:
    """A query flag's truth: ``1``, ``true``, ``yes``, ``on`` (any case)."""
    return value.strip().lower() in ("1", "true", "yes", "on")


def options_from_url(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` completed from the URL's query flags and $COSMOS_KEY (explicit options win)."""
    flags = query_flags(url)
    if "verify" in flags and "verify" not in options:
        options["verify"] = flag(flags["verify"])
    if "create" in flags and "create" not in options:
        options["create"] = flag(flags["create"])
    if "timeout" in flags and "read_timeout" not in options:
        options["read_timeout"] = flags["timeout"]
    if "connect_timeout" in flags and "connection_timeout" not in options:
        options["connection_timeout"] = flags["connect_timeout"]
    if "key" not in options and "credential" not in options:
        options["key"] = os.environ.get(KEY_ENV, "").strip() or None
    return options
