"""The state store contract: Sekiban's MultiProjection rows with compare-and-swap.

One small abstract class, one module per backend (memory, sqlite, dynamodb) or one package
(postgres, cosmos: a module per job), and a conformance suite every backend runs
(:mod:`sekiops.testing`). Stores know rows and StateData bytes only; which bytes go inline and which
to a blob is the pipeline's decision (:mod:`sekiops.pipeline`), taken with the store's
``record_offload_threshold``.

What a backend can do beyond the core is declared in :class:`StateCapabilities`, never probed:
callers read ``store.capabilities`` and only then call the optional methods.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import ConcurrencyConflictError, StoreMissingError, TombstonedError, UsageError
from ..format.record import SnapshotRow


@dataclasses.dataclass(frozen=True)
class StateCapabilities:
    """What a state store offers beyond the core contract."""

    #: ``read_state_range(row, offset, length)`` reads a slice of inline StateData without the rest
    range_reads: bool = False
    #: the store may hold rows offloaded at record level (Sekiban's SQLite store never does)
    record_offload: bool = True
    #: when ``record_offload`` is False: why, and how to allow it, in the store's own words
    record_offload_refusal: str | None = None
    #: ``list_service_ids()`` sees every service of the table/container (an audit may certify)
    lists_all_services: bool = True
    #: listings may miss writes of the last moments (DynamoDB Scan): re-check before deleting
    eventually_consistent_listing: bool = False
    #: largest item the store accepts, in bytes, metadata included (None = no fixed limit)
    item_limit: int | None = None


class StateStore(abc.ABC):
    #: Short kind name: ``memory``, ``sqlite``, ``postgres``, ``cosmos``, ``dynamodb``.
    kind: str
    #: The service id every read and write is scoped to.
    service_id: str
    #: Redacted location for messages: never contains a secret.
    location: str
    #: Envelope bytes above which Sekiban offloads at record level; None = never offloads.
    record_offload_threshold: int | None = None
    #: Upper bound on any caller's record threshold (Sekiban's DynamoDB store offloads above
    #: min(caller's threshold, 350,000)); None = the caller's threshold is used as given.
    record_offload_cap: int | None = None
    #: Largest inline StateData the store can hold (None = no limit beyond memory-safe streaming).
    inline_limit: int | None = None
    #: What the store offers beyond the core contract.
    capabilities: StateCapabilities = StateCapabilities()

    @abc.abstractmethod
    def get(self, projector_name: str, projector_version: str) -> SnapshotRow | None:
        """The row for that projector and version (tombstoned included), or None."""

    @abc.abstractmethod
    def latest_active(self, projector_name: str) -> SnapshotRow | None:
        """The active row with the most EventsProcessed (ties: latest UpdatedAt)."""

    @abc.abstractmethod
    def list_page(self, after: tuple[str, str] | None = None, limit: int = 500,
                  projector_name: str | None = None) -> list[SnapshotRow]:
        """Up to ``limit`` rows ordered by (ProjectorName, ProjectorVersion), strictly after ``after``.

        Metadata only: StateData is never fetched by a listing.
        """

    @abc.abstractmethod
    def open_state_stream(self, row: SnapshotRow) -> BinaryIO:
        """A stream over the row's inline StateData, read in bounded slices."""

    @abc.abstractmethod
    def write(self, row: SnapshotRow, state: BinaryIO | None, state_length: int,
              expected: SnapshotRow | None) -> SnapshotRow:
        """Create (``expected`` None) or replace (``expected`` = the row as last read) one row.

        Compare-and-swap: if the stored row is not exactly ``expected`` any more (another writer
        created or moved it, or it was tombstoned), raise ConcurrencyConflictError and write
        nothing. ``state`` supplies ``state_length`` bytes of StateData (None when offloaded).
        Returns the row as stored, with its new token.
        """

    def check_row_for_write(self, row: SnapshotRow, expected: SnapshotRow | None = None) -> None:
        """What every backend's ``write`` refuses before touching the store: an invalid row, a row
        of another service, and an ``expected`` row that is another row or a tombstone."""
        row.validate_for_write()
        if row.service_id != self.service_id:
            raise UsageError(f"row for service {row.service_id!r} written through a store scoped to "
                             f"{self.service_id!r}")
        if expected is not None:
            if (expected.projector_name, expected.projector_version) != (row.projector_name, row.projector_version):
                raise UsageError(f"{self.location}: expected row {expected.where} is not {row.where}")
            if expected.is_tombstoned:
                raise TombstonedError(f"{self.location}: {row.where} is tombstoned; refusing to overwrite it")

    @abc.abstractmethod
    def list_service_ids(self) -> list[str]:
        """Every service id with rows in the underlying table or container (audits cover them all)."""

    @abc.abstractmethod
    def tombstone(self, expected: SnapshotRow) -> SnapshotRow:
        """Mark the row Lifecycle 1 (compare-and-swap on ``expected``)."""

    @abc.abstractmethod
    def for_service(self, service_id: str) -> StateStore:
        """The same table/container scoped to another service id, sharing this store's connection.

        Closing the returned store does not close this one.
        """

    def read_state_range(self, row: SnapshotRow, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the row's inline StateData from ``offset`` (``capabilities.range_reads``).

        Raises ConcurrencyConflictError when the row no longer has the token ``row`` carries.
        """
        raise NotImplementedError(f"{type(self).__name__} declares no range reads")

    def local_paths(self) -> list[str]:
        """Files of this machine the store keeps its rows in (SQLite: the database and its
        journals): an output must never be written over them."""
        return []

    def close(self) -> None:  # noqa: B027 - a no-op by default, not abstract: stores without connections keep it
        """Release connections; idempotent."""

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_rows(store: StateStore, page_size: int = 500,
              projector_name: str | None = None) -> Iterator[SnapshotRow]:
    """Every row of the store's service, page by page."""
    after = None
    while True:
        page = store.list_page(after=after, limit=page_size, projector_name=projector_name)
        yield from page
        if len(page) < page_size:
            return
        after = (page[-1].projector_name, page[-1].projector_version)


def check_expected(current: SnapshotRow | None, expected: SnapshotRow | None, location: str,
                   where: str) -> None:
    """Compare-and-swap rule shared by stores that check in-process (memory, SQLite).

    Create needs no row; replace needs the same token and an active row. A tombstone is never
    overwritten, whatever the caller expected.
    """
    if expected is None:
        if current is not None:
            if current.is_tombstoned:
                raise TombstonedError(f"{location}: {where} is tombstoned; refusing to overwrite it")
            raise ConcurrencyConflictError(
                f"{location}: {where} was created by another writer (revision {current.revision})")
        return
    if current is None:
        raise ConcurrencyConflictError(f"{location}: {where} disappeared since it was read")
    if current.is_tombstoned:
        raise TombstonedError(f"{location}: {where} is tombstoned; refusing to overwrite it")
    if current.token != expected.token or current.generation != expected.generation:
        raise ConcurrencyConflictError(
            f"{location}: {where} moved since it was read (revision {expected.revision} -> "
            f"{current.revision}); nothing overwritten")


class AbsentStateStore(StateStore):
    """A state store that does not exist yet (a copy's target before ``run --execute``): no rows,
    no services, nothing writable; its limits are those of the store that would be created.

    Built from :class:`~sekiops.errors.StoreMissingError`'s ``shape``, so a plan can say where
    every row would land without creating a file, table or container.
    """

    def __init__(self, shape: dict, service_id: str):
        self.kind = shape.get("kind", "absent")
        self.location = shape.get("location", "(absent)")
        self.service_id = service_id
        self.record_offload_threshold = shape.get("record_offload_threshold")
        self.inline_limit = shape.get("inline_limit")
        self.capabilities = shape.get("capabilities") or StateCapabilities()
        self._shape = shape

    def _absent(self):
        raise StoreMissingError(f"{self.location} does not exist yet; `migrate run --execute` creates it",
                                shape=self._shape)

    def get(self, projector_name, projector_version):
        return None

    def latest_active(self, projector_name):
        return None

    def list_page(self, after=None, limit=500, projector_name=None):
        return []

    def open_state_stream(self, row):
        self._absent()

    def write(self, row, state, state_length, expected):
        self._absent()

    def list_service_ids(self):
        return []

    def tombstone(self, expected):
        self._absent()

    def for_service(self, service_id: str) -> AbsentStateStore:
        return AbsentStateStore(self._shape, service_id)
