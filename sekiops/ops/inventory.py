"""Inventory: one record per snapshot row of a deployment, metadata only (no payload bytes)."""

from __future__ import annotations

from typing import Iterator

from ..format.record import SnapshotRow
from ..state.base import StateStore, iter_rows

CONTRACT_COLUMNS = ["serviceId", "projectorName", "projectorVersion", "eventsProcessed", "isOffloaded",
                    "offloadKey", "lifecycle", "storedBytes", "originalSizeBytes", "compressedSizeBytes",
                    "updatedAt", "buildSource"]


def row_record(row: SnapshotRow) -> dict:
    return {
        "serviceId": row.service_id,
        "projectorName": row.projector_name,
        "projectorVersion": row.projector_version,
        "eventsProcessed": row.events_processed,
        "isOffloaded": row.is_offloaded,
        "offloadKey": row.offload_key,
        "offloadProvider": row.offload_provider,
        "lifecycle": "tombstoned" if row.is_tombstoned else "active",
        "storedBytes": row.stored_bytes,
        "originalSizeBytes": row.original_size_bytes,
        "compressedSizeBytes": row.compressed_size_bytes,
        "payloadType": row.payload_type,
        "lastSortableUniqueId": row.last_sortable_unique_id,
        "updatedAt": row.updated_at.isoformat() if row.updated_at else None,
        "buildSource": row.build_source,
        "buildHost": row.build_host,
        "revision": row.revision,
    }


def inventory_records(state: StateStore, page_size: int = 500) -> Iterator[dict]:
    for row in iter_rows(state, page_size=page_size):
        yield row_record(row)
