"""Every expected failure in sekiops is a SekiopsError.

The CLI turns any of these into one ``error:`` line and exit status 2; anything else is a bug
(exit 1, traceback). Messages name what failed and where, and never carry secrets.
"""

from __future__ import annotations

import errno


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


class BlobChangedError(ConcurrencyConflictError):
    """A conditional delete found the blob written again since it was certified; nothing deleted."""


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


class StoreMissingError(StoreError):
    """The database, table, container or directory does not exist and the store was opened with
    ``create=False``. ``shape`` (when the backend knows it) describes the store that would be
    created: what a plan needs to say where rows would land (see state.base.AbsentStateStore)."""

    def __init__(self, message: str = "", shape: dict | None = None):
        super().__init__(message)
        self.shape = shape


class ItemTooLargeError(StoreError):
    """The row would exceed the store's item size limit (Cosmos DB: 2 MB)."""


class SpoolError(SekiopsError):
    """The temp-file spool refused work: too many files, too many bytes, not enough disk, unsafe dir."""


class OutputError(SekiopsError):
    """The output file could not be written (disk full, permission denied, missing directory)."""


class GuardRefusedError(SekiopsError):
    """An operational guard refused to go on (regressing EventsProcessed, strict mode, missing --execute)."""


class BadInputError(SekiopsError):
    """Input given to sekiops (a state file, stdin) is not what the command needs: not one JSON
    document, empty, truncated. The message names the input and the byte offset."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where SIGINT raises KeyboardInterrupt so the same cleanup runs
    (partial outputs and temp files removed). ``signum``: the CLI exits 128 + signum.

    Not a SekiopsError: nothing may catch it as an ordinary failure and carry on."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


def os_reason(exc: OSError) -> str:
    """A short human reason for an OSError: disk full, permission denied, quota exceeded..."""
    return {errno.ENOSPC: "disk full", errno.EDQUOT: "quota exceeded", errno.EFBIG: "file too large",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EROFS: "read-only file system", errno.ENAMETOOLONG: "name too long",
            errno.ENOENT: "no such file or directory", errno.EISDIR: "is a directory",
            errno.ENOTDIR: "not a directory"}.get(exc.errno or 0, exc.strerror or str(exc))
