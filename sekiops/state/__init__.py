"""State stores, chosen by URL scheme through a small registry.

``sqlite:///path.db``: :mod:`.sqlite`; ``postgresql://``: :mod:`.postgres`;
``cosmos+https://host/DB/CONTAINER``: :mod:`.cosmos`; ``memory://``: :mod:`.memory`.
"""

from __future__ import annotations

import importlib

from ..errors import UsageError
from ..format.constants import DEFAULT_SERVICE_ID
from ..format.record import check_service_id
from ..urls import STATE_URL_ENV, redact, resolve
from .base import StateStore, iter_rows

REGISTRY: dict[str, str] = {
    "sqlite": "sekiops.state.sqlite:SqliteStateStore.from_url",
    "memory": "sekiops.state.memory:MemoryStateStore.from_url",
    "postgresql": "sekiops.state.postgres:PostgresStateStore.from_url",
    "postgres": "sekiops.state.postgres:PostgresStateStore.from_url",
    "cosmos+https": "sekiops.state.cosmos:CosmosStateStore.from_url",
    "cosmos+http": "sekiops.state.cosmos:CosmosStateStore.from_url",
}


def register(scheme: str, target: str) -> None:
    REGISTRY[scheme] = target


def open_state_store(url: str | None = None, service_id: str = DEFAULT_SERVICE_ID,
                     **options) -> StateStore:
    """Open the state store named by ``url`` (or $SEKIOPS_STATE_URL), scoped to ``service_id``."""
    url = resolve(url, STATE_URL_ENV)
    if url is None:
        raise UsageError(f"no state store: pass --state URL or set {STATE_URL_ENV}")
    check_service_id(service_id)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in REGISTRY:
        raise UsageError(f"unknown state store URL scheme {scheme!r} in {redact(url)!r}; "
                         f"known: {', '.join(sorted(REGISTRY))}")
    module, _, attr = REGISTRY[scheme].partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj(url, service_id=service_id, **options)


__all__ = ["StateStore", "iter_rows", "open_state_store", "register", "REGISTRY"]
