"""The state store protocol: Sekiban's MultiProjection rows with compare-and-swap.

One class per backend implements it (memory, sqlite, postgres, cosmos). Stores know rows and
StateData bytes only; which bytes go inline and which to a blob is the pipeline's decision
(:mod:`sekiops.pipeline`), taken with the store's ``record_offload_threshold``.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator, Protocol, runtime_checkable

from ..format.record import SnapshotRow


@runtime_checkable
class StateStore(Protocol):
    #: Short kind name: ``memory``, ``sqlite``, ``postgres``, ``cosmos``.
    kind: str
    #: The service id every read and write is scoped to.
    service_id: str
    #: Redacted location for messages: never contains a secret.
    location: str
    #: Envelope bytes above which Sekiban offloads at record level; None = never offloads.
    record_offload_threshold: int | None
    #: Largest inline StateData the store can hold (None = no limit beyond memory-safe streaming).
    inline_limit: int | None

    def get(self, projector_name: str, projector_version: str) -> SnapshotRow | None:
        """The row for that projector and version (tombstoned included), or None."""
        ...

    def latest_active(self, projector_name: str) -> SnapshotRow | None:
        """The active row with the most EventsProcessed (ties: latest UpdatedAt)."""
        ...

    def list_page(self, after: tuple[str, str] | None = None, limit: int = 500,
                  projector_name: str | None = None) -> list[SnapshotRow]:
        """Up to ``limit`` rows ordered by (ProjectorName, ProjectorVersion), strictly after ``after``.

        Metadata only: StateData is never fetched by a listing.
        """
        ...

    def open_state_stream(self, row: SnapshotRow) -> BinaryIO:
        """A stream over the row's inline StateData, read in bounded slices."""
        ...

    def write(self, row: SnapshotRow, state: BinaryIO | None, state_length: int,
              expected: SnapshotRow | None) -> SnapshotRow:
        """Create (``expected`` None) or replace (``expected`` = the row as last read) one row.

        Compare-and-swap: if the stored row is not exactly ``expected`` any more (another writer
        created or moved it, or it was tombstoned), raise ConcurrencyConflictError and write
        nothing. ``state`` supplies ``state_length`` bytes of StateData (None when offloaded).
        Returns the row as stored, with its new token.
        """
        ...

    def list_service_ids(self) -> list[str]:
        """Every service id with rows in the underlying table or container (audits cover them all)."""
        ...

    def tombstone(self, expected: SnapshotRow) -> SnapshotRow:
        """Mark the row Lifecycle 1 (compare-and-swap on ``expected``)."""
        ...

    def close(self) -> None: ...


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
    from ..errors import ConcurrencyConflictError, TombstonedError

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
