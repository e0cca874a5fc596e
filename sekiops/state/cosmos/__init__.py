"""Azure Cosmos DB (NoSQL API) state store: Sekiban's ``multiProjectionStates`` documents.

URL: ``cosmos+https://host[:port]/DATABASE/CONTAINER`` (or ``cosmos+http://``); the key from
``COSMOS_KEY``, else Entra ID. One job per module:

* :mod:`.url` — the URL and its query flags -> endpoint, database, container, options;
* :mod:`.documents` — Sekiban's document shape <-> :class:`~sekiops.format.record.SnapshotRow`, and
  the query text that lists documents without their ``stateData``;
* :mod:`.calls` — every SDK call: sekiops' retry rule (429/503, transient read failures) and the
  mapping of SDK errors to sekiops' (the key scrubbed from every message);
* :mod:`.client` — sign-in, the SDK client's options, opening or creating the container;
* :mod:`.store` — :class:`CosmosStateStore`: reads, listing (with its ORDER BY fallbacks),
  compare-and-swap writes on ``_etag``, tombstones.

The Base64 text of StateData is encoded and decoded in slices by :mod:`sekiops.state.base64text`
(shared with DynamoDB). The registry opens this store as ``sekiops.state.cosmos:CosmosStateStore.from_url``.
"""

from __future__ import annotations

from ..base64text import DECODE_CHUNK, ENCODE_CHUNK
from .calls import RETRYABLE_ALWAYS, RETRYABLE_READS, SILENT_RETRIES
from .documents import (
    DOCUMENT_TYPE,
    INLINE_LIMIT,
    ITEM_HEADROOM,
    META_PROPERTIES,
    PARTITION_KEY_PATH,
    PK_KIND,
    PROPERTIES,
    STATUS_DOCUMENT_TYPE,
    STATUS_ID_PREFIX,
    SYSTEM_PROPERTIES,
    SYSTEM_PROPERTIES_ALLOWANCE,
)
from .store import CosmosStateStore
from .url import DEFAULT_CONTAINER, DEFAULT_DATABASE, KEY_ENV, cosmos_target

__all__ = ["CosmosStateStore", "cosmos_target", "INLINE_LIMIT", "DEFAULT_DATABASE", "DEFAULT_CONTAINER",
           # the module's other public names, as importable as when this package was one module
           "KEY_ENV", "PROPERTIES", "META_PROPERTIES", "SYSTEM_PROPERTIES", "SYSTEM_PROPERTIES_ALLOWANCE",
           "DOCUMENT_TYPE", "STATUS_DOCUMENT_TYPE", "STATUS_ID_PREFIX", "PK_KIND", "PARTITION_KEY_PATH",
           "ITEM_HEADROOM", "ENCODE_CHUNK", "DECODE_CHUNK", "RETRYABLE_ALWAYS", "RETRYABLE_READS", "SILENT_RETRIES"]
