"""In-process state store, for tests and examples. ``memory://NAME`` data is shared per process."""

from __future__ import annotations

import io
import threading
from typing import BinaryIO

from ..errors import ConcurrencyConflictError, CorruptSnapshotError
from ..format.constants import LIFECYCLE_TOMBSTONED
from ..format.record import SnapshotRow, check_service_id, utcnow
from .base import StateCapabilities, StateStore, check_expected

_DATA: dict[str, dict] = {}
_LOCKS: dict[str, threading.Lock] = {}
_LOCK = threading.Lock()


class MemoryStateStore(StateStore):
    kind = "memory"
    capabilities = StateCapabilities(range_reads=True)

    def __init__(self, name: str = "default", service_id: str = "default",
                 record_offload_threshold: int | None = None, inline_limit: int | None = None,
                 create: bool = True):
        with _LOCK:
            self._rows: dict[tuple[str, str, str], tuple[SnapshotRow, bytes | None]] = _DATA.setdefault(name, {})
            self._lock = _LOCKS.setdefault(name, threading.Lock())
        self._name = name
        self.service_id = service_id
        self.location = f"memory://{name}"
        self.record_offload_threshold = record_offload_threshold
        self.inline_limit = inline_limit

    @classmethod
    def from_url(cls, url: str, service_id: str = "default", **options) -> MemoryStateStore:
        return cls(url.split("://", 1)[1].strip("/") or "default", service_id=service_id, **options)

    def _key(self, name: str, version: str) -> tuple[str, str, str]:
        return (self.service_id, name, version)

    def get(self, projector_name: str, projector_version: str) -> SnapshotRow | None:
        item = self._rows.get(self._key(projector_name, projector_version))
        return item[0] if item else None

    def latest_active(self, projector_name: str) -> SnapshotRow | None:
        rows = [r for (s, n, _), (r, _) in list(self._rows.items())
                if s == self.service_id and n == projector_name and not r.is_tombstoned]
        if not rows:
            return None
        return max(rows, key=lambda r: (r.events_processed, r.updated_at or utcnow()))

    def list_page(self, after=None, limit: int = 500, projector_name: str | None = None):
        keys = sorted(k for k in list(self._rows) if k[0] == self.service_id
                      and (projector_name is None or k[1] == projector_name)
                      and (after is None or (k[1], k[2]) > tuple(after)))
        return [self._rows[k][0] for k in keys[:limit]]

    def list_service_ids(self) -> list[str]:
        return sorted({k[0] for k in list(self._rows)})

    def open_state_stream(self, row: SnapshotRow) -> BinaryIO:
        item = self._rows.get(self._key(row.projector_name, row.projector_version))
        if item is None or item[1] is None:
            raise CorruptSnapshotError(f"{self.location}: {row.where} has no inline StateData")
        return io.BytesIO(item[1])

    def read_state_range(self, row: SnapshotRow, offset: int, length: int) -> bytes:
        item = self._rows.get(self._key(row.projector_name, row.projector_version))
        if item is None or (row.token is not None and item[0].token != row.token):
            raise ConcurrencyConflictError(f"{self.location}: {row.where} changed since it was listed")
        if item[1] is None:
            raise CorruptSnapshotError(f"{self.location}: {row.where} has no inline StateData")
        return item[1][offset:offset + length]

    def for_service(self, service_id: str) -> MemoryStateStore:
        return MemoryStateStore(self._name, service_id=check_service_id(service_id),
                                record_offload_threshold=self.record_offload_threshold,
                                inline_limit=self.inline_limit)

    def write(self, row: SnapshotRow, state: BinaryIO | None, state_length: int,
              expected: SnapshotRow | None) -> SnapshotRow:
        row.validate_for_write()
        data = state.read(state_length) if state is not None else None
        if data is not None and len(data) != state_length:
            raise CorruptSnapshotError(f"{self.location}: StateData stream for {row.where} ended early")
        key = self._key(row.projector_name, row.projector_version)
        with self._lock:
            current = self.get(row.projector_name, row.projector_version)
            check_expected(current, expected, self.location, row.where)
            now = utcnow()
            revision = (current.revision + 1) if current else 1
            stored = row.replace(
                service_id=self.service_id, revision=revision, token=str(revision),
                created_at=current.created_at if current else (row.created_at or now),
                updated_at=row.updated_at or now,
                state_length=None if row.is_offloaded else len(data or b""))
            self._rows[key] = (stored, None if row.is_offloaded else (data or b""))
            return stored

    def tombstone(self, expected: SnapshotRow) -> SnapshotRow:
        key = self._key(expected.projector_name, expected.projector_version)
        with self._lock:
            current = self.get(expected.projector_name, expected.projector_version)
            check_expected(current, expected, self.location, expected.where)
            assert current is not None  # check_expected refuses a row that disappeared
            stored = current.replace(lifecycle=LIFECYCLE_TOMBSTONED, revision=current.revision + 1,
                                     token=str(current.revision + 1), updated_at=utcnow())
            self._rows[key] = (stored, self._rows[key][1])
            return stored

    def __repr__(self) -> str:
        return f"MemoryStateStore({self.location!r}, service_id={self.service_id!r})"
