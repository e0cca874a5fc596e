"""The snapshot row as Sekiban stores it, independent of any particular store."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

from ..errors import UsageError
from .constants import BUILD_SOURCE_MAX, LIFECYCLE_ACTIVE, LIFECYCLE_TOMBSTONED, PAYLOAD_TYPE

SERVICE_ID_RE = re.compile(r"^[a-z0-9-]{1,64}$")


def check_service_id(service_id: str) -> str:
    """Sekiban's rule: lower-case letters, digits and '-', 1 to 64 characters."""
    if not isinstance(service_id, str) or not SERVICE_ID_RE.fullmatch(service_id):
        raise UsageError(f"invalid service id {service_id!r}: must match ^[a-z0-9-]{{1,64}}$")
    return service_id


def check_projector(name: str, version: str) -> None:
    if not name or len(name) > 256 or any(c in name for c in "\x00/\\|?#"):
        raise UsageError(f"invalid projector name {name!r}")
    if not version or len(version) > 128 or any(c in version for c in "\x00/\\|?#"):
        raise UsageError(f"invalid projector version {version!r} for projector {name!r}")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True)
class SnapshotRow:
    """One row of a MultiProjection state store: everything but the StateData bytes.

    ``state_length`` is the length of the inline StateData (None when offloaded or unknown);
    ``token`` is the store's opaque compare-and-swap token (Revision, or Cosmos ``_etag``).
    """

    service_id: str
    projector_name: str
    projector_version: str
    payload_type: str = PAYLOAD_TYPE
    last_sortable_unique_id: str = ""
    events_processed: int = 0
    is_offloaded: bool = False
    offload_key: str | None = None
    offload_provider: str | None = None
    original_size_bytes: int = 0
    compressed_size_bytes: int = 0
    safe_window_threshold: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    build_source: str = ""
    build_host: str | None = None
    generation: int = 0
    revision: int = 0
    lifecycle: int = LIFECYCLE_ACTIVE
    state_length: int | None = None
    token: str | None = None

    @property
    def is_tombstoned(self) -> bool:
        return self.lifecycle == LIFECYCLE_TOMBSTONED

    @property
    def where(self) -> str:
        """Short location for messages: service/projector/version."""
        return f"{self.service_id}/{self.projector_name}/{self.projector_version}"

    @property
    def stored_bytes(self) -> int | None:
        """Envelope bytes as stored: inline length, or (for offloaded rows) the declared envelope size."""
        if not self.is_offloaded:
            return self.state_length
        return self.original_size_bytes or None

    def replace(self, **changes) -> SnapshotRow:
        return dataclasses.replace(self, **changes)

    def validate_for_write(self) -> None:
        check_service_id(self.service_id)
        check_projector(self.projector_name, self.projector_version)
        if self.events_processed < 0:
            raise UsageError(f"{self.where}: EventsProcessed must not be negative")
        if len(self.build_source) > BUILD_SOURCE_MAX:
            raise UsageError(f"{self.where}: BuildSource longer than {BUILD_SOURCE_MAX} characters")
        if self.is_offloaded and not self.offload_key:
            raise UsageError(f"{self.where}: an offloaded row needs an OffloadKey")


# --- .NET round-trip timestamps and SortableUniqueIds -------------------------------------------

_DOTNET_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def format_dotnet_timestamp(value: datetime) -> str:
    """``2026-02-25T10:00:00.0000000Z``: the .NET round-trip ("O") form, UTC, 7 fraction digits."""
    value = value.astimezone(UTC)
    return f"{value.year:04d}-" + value.strftime("%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0Z"


def parse_timestamp(text: str | None) -> datetime | None:
    """Parse ISO-8601 / .NET round-trip text (up to 7 fraction digits, Z or offset) as aware UTC."""
    if text is None or text == "":
        return None
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    s = str(text).strip()
    m = re.match(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$", s)
    if not m:
        raise ValueError(f"not a timestamp: {s[:40]!r}")
    date, clock, frac, tz = m.groups()
    micro = (frac or "0")[:6].ljust(6, "0")
    tzs = "+00:00" if tz in (None, "Z") else (tz if ":" in tz else tz[:3] + ":" + tz[3:])
    return datetime.fromisoformat(f"{date}T{clock}.{micro}{tzs}").astimezone(UTC)


def sortable_unique_id(when: datetime, suffix: int = 0) -> str:
    """A 30-digit SortableUniqueId: 19-digit .NET ticks then 11 digits."""
    delta = when.astimezone(UTC) - _DOTNET_EPOCH
    ticks = (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10
    return f"{ticks:019d}{suffix % 10**11:011d}"


def sortable_unique_id_time(value: str) -> datetime | None:
    """The time encoded in a SortableUniqueId, or None when it is not one."""
    if not isinstance(value, str) or len(value) != 30 or not value.isdigit():
        return None

    try:
        return _DOTNET_EPOCH + timedelta(microseconds=int(value[:19]) // 10)
    except OverflowError:
        return None
