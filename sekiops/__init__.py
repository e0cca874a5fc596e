"""sekiops: operate Sekiban multi-projection snapshots.

The public library, imported lazily so the CLI starts fast::

    from sekiops import open_state_store, open_blob_store, persist, restore
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

# A library logs; the application decides where it goes. Without this, Python's last-resort
# handler would print warnings (a retried row write) on stderr beside the CLI's one error line.
logging.getLogger("sekiops").addHandler(logging.NullHandler())

_EXPORTS = {
    "open_state_store": "sekiops.state",
    "open_blob_store": "sekiops.blob",
    "iter_rows": "sekiops.state.base",
    "StateStore": "sekiops.state.base",
    "BlobStore": "sekiops.blob.base",
    "SnapshotRow": "sekiops.format.record",
    "persist": "sekiops.pipeline.persist",
    "persist_stream": "sekiops.pipeline.persist",
    "PersistOptions": "sekiops.pipeline.persist",
    "PersistResult": "sekiops.pipeline.persist",
    "restore": "sekiops.pipeline.restore",
    "open_payload_stream": "sekiops.pipeline.restore",
    "find_row": "sekiops.pipeline.restore",
    "RestoreOptions": "sekiops.pipeline.restore",
    "RestoreResult": "sekiops.pipeline.restore",
    "read_envelope": "sekiops.format.envelope",
    "Spool": "sekiops.pipeline.spool",
    "SekiopsError": "sekiops.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sekiops' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
