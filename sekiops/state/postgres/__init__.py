"""PostgreSQL state store in Sekiban's exact schema (table ``dcb_multi_projection_states``).

URL: a libpq URL, ``postgresql://user:pw@host:5432/db?sslmode=require``, plus sekiops' own
``schema=`` and ``timeout=``. Big StateData (100+ MB envelopes exist) never passes through memory
whole: COPY-streamed writes, ``substring()`` slice reads. One job per module:

* :mod:`.url` — the URL -> libpq connection string, sekiops' own parameters, the password to
  scrub, and the session options that bound every wait;
* :mod:`.schema` — Sekiban's table: DDL, finding or creating it, records <-> rows;
* :mod:`.connection` — opening connections, one per thread, the silence watchdog, which errors
  are transient;
* :mod:`.state_data` — big values: binary COPY in, ``substring`` slices out;
* :mod:`.store` — :class:`PostgresStateStore`: transactions, reads, compare-and-swap writes,
  tombstones.

The client holds about one chunk/slice at a time. PostgreSQL itself may not: a StateData value that
TOAST compressed (storage MAIN/EXTENDED, the default) is decompressed server-side to serve each
substring (up to the end of the slice for pglz, whole for lz4). That costs server CPU and memory,
not ours. We do not change the column's storage (EXTERNAL would make slices cheap): the schema is
Sekiban's. The registry opens this store as ``sekiops.state.postgres:PostgresStateStore.from_url``.
"""

from __future__ import annotations

from .connection import is_transient
from .schema import (
    BYTEA_MAX,
    CHECK,
    CHECK_SQL,
    COLUMNS,
    CONTROL_COLUMNS,
    INDEX,
    INDEX_UPDATED,
    KEY_COLUMNS,
    META_COLUMNS,
    PRIMARY_KEY,
    TABLE,
)
from .state_data import CHUNK, COPY_PIECE, UPLOAD_TABLE, WRITE_METHODS
from .store import PostgresStateStore
from .url import OWN_PARAMETERS, split_schema

__all__ = ["PostgresStateStore", "split_schema", "is_transient",
           # the module's other public names, as importable as when this package was one module
           "TABLE", "PRIMARY_KEY", "INDEX", "INDEX_UPDATED", "CHECK", "CHECK_SQL", "COLUMNS", "KEY_COLUMNS",
           "META_COLUMNS", "CONTROL_COLUMNS", "BYTEA_MAX", "CHUNK", "COPY_PIECE", "UPLOAD_TABLE", "WRITE_METHODS",
           "OWN_PARAMETERS"]
