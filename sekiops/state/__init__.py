"""State stores, chosen by URL scheme through a registry (built-ins, ``register()``, entry points).

``sqlite:///path.db``: :mod:`.sqlite`; ``postgresql://``: :mod:`.postgres`;
``cosmos+https://host/DB/CONTAINER``: :mod:`.cosmos`; ``dynamodb://TABLE``: :mod:`.dynamodb`;
``memory://``: :mod:`.memory`. Third-party backends: entry point group ``sekiops.state_stores``.
"""

from __future__ import annotations

from ..errors import UsageError
from ..format.constants import DEFAULT_SERVICE_ID
from ..format.record import check_service_id
from ..registry import SchemeRegistry, url_scheme
from ..urls import STATE_URL_ENV, remember_environment_secrets, remember_url_secrets, resolve
from .base import StateCapabilities, StateStore, iter_rows

BACKENDS = SchemeRegistry("state store", "sekiops.state_stores", {
    "sqlite": "sekiops.state.sqlite:SqliteStateStore.from_url",
    "memory": "sekiops.state.memory:MemoryStateStore.from_url",
    "postgresql": "sekiops.state.postgres:PostgresStateStore.from_url",
    "postgres": "sekiops.state.postgres:PostgresStateStore.from_url",
    "cosmos+https": "sekiops.state.cosmos:CosmosStateStore.from_url",
    "cosmos+http": "sekiops.state.cosmos:CosmosStateStore.from_url",
    "dynamodb": "sekiops.state.dynamodb:DynamoDbStateStore.from_url",
})
#: The built-in backends (scheme -> "module:factory"); see BACKENDS for the live registry.
REGISTRY = BACKENDS.builtins
register = BACKENDS.register


def open_state_store(url: str | None = None, service_id: str = DEFAULT_SERVICE_ID,
                     **options) -> StateStore:
    """Open the state store named by ``url`` (or $SEKIOPS_STATE_URL), scoped to ``service_id``."""
    url = resolve(url, STATE_URL_ENV)
    if url is None:
        raise UsageError(f"no state store: pass --state URL or set {STATE_URL_ENV}")
    check_service_id(service_id)
    remember_environment_secrets()
    remember_url_secrets(url)
    factory = BACKENDS.factory(url_scheme(url), url)
    return factory(url, service_id=service_id, **options)


__all__ = ["StateStore", "StateCapabilities", "iter_rows", "open_state_store", "register", "BACKENDS",
           "REGISTRY"]
