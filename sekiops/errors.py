"""Every expected failure in sekiops is a SekiopsError.

The CLI turns any of these into one ``error:`` line and exit status 2; anything else is a bug
(exit 1, traceback). Messages name what failed and where, and never carry secrets.
"""

from __future__ import annotations


class SekiopsError(Exception):
    """Base of every expected failure: bad input, bad data, unreachable store, refused guard."""


class UsageError(SekiopsError):
    """Arguments or configuration that cannot work (bad URL, unknown option value)."""


class CorruptSnapshotError(SekiopsError):
    """Stored bytes that do not decode as the Sekiban format says (envelope, Base64, gzip, lengths)."""


class IntegrityError(CorruptSnapshotError):
    """Bytes that decode but do not match what the row or envelope declares (hash, length)."""


class VersionMismatchError(SekiopsError):
    """The envelope's projector name/version differs from the row's or the requested one."""


class NotFoundError(SekiopsError):
    """No active snapshot row for the requested projector/version."""


class TombstonedError(SekiopsError):
    """The row is tombstoned (Lifecycle 1): Sekiban never restores it and sekiops never overwrites it."""


class BlobNotFoundError(SekiopsError):
    """A row or envelope points at a blob that the blob store does not have."""


class UnsafeKeyError(SekiopsError):
    """A blob key that would leave the blob store's root (``..``, absolute, backslash, symlink)."""


class ConcurrencyConflictError(SekiopsError):
    """Compare-and-swap lost: another writer created or moved the row first. Nothing was written."""


class StoreUnavailableError(SekiopsError):
    """A state or blob store could not be reached or answered with a transient failure.

    ``retry_after``: seconds the server asked callers to wait (Cosmos ``x-ms-retry-after-ms``),
    when it said so; batch runners (migrations) honour it before their next attempt.
    """

    transient = True

    def __init__(self, message: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class StoreError(SekiopsError):
    """A store refused an operation permanently (permissions, limits, schema)."""


class ItemTooLargeError(StoreError):
    """The row would exceed the store's item size limit (Cosmos DB: 2 MB)."""


class SpoolError(SekiopsError):
    """The temp-file spool refused work: too many files, too many bytes, not enough disk, unsafe dir."""


class OutputError(SekiopsError):
    """The output file could not be written (disk full, permission denied, missing directory)."""


class GuardRefusedError(SekiopsError):
    """An operational guard refused to go on (regressing EventsProcessed, strict mode, missing --execute)."""
