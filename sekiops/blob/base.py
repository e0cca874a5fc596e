"""The blob store contract: content-addressed writes by stream, reads by stream.

Mirrors Sekiban's accessor (``write(stream, name) -> key``, ``open_read(key)``) and adds what
audits and garbage collection need (stat with a version, list, conditional delete). Keys a
store writes are ``{prefix}/{name}/{sha256}.bin`` (:func:`sekiops.format.keys.content_key`);
keys it reads are whatever a row or envelope names, checked by
:func:`sekiops.format.keys.check_key`.

What a backend can do beyond the core is declared in :class:`BlobCapabilities`, never probed.
"""

from __future__ import annotations

import abc
import builtins
import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from ..errors import BlobNotFoundError, StoreMissingError, UsageError
from ..format import keys


@dataclasses.dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    last_modified: datetime | None
    #: Opaque token that changes whenever the key is written again, even with the same bytes
    #: (Azure ETag, S3 VersionId, local inode/mtime): what a conditional delete compares.
    version: str | None = None


@dataclasses.dataclass(frozen=True)
class BlobWrite:
    """What a write produced: the content-addressed key, the byte count and their sha256."""

    key: str
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class BlobCapabilities:
    """What a blob store offers beyond the core contract."""

    #: ``read_range(key, offset, length)`` reads a slice without the rest
    range_reads: bool = False
    #: ``delete(key, if_version=v)`` deletes only that exact write of the key, atomically: a
    #: write of the same key after ``v`` was read (same bytes or not) survives
    conditional_delete: bool = False
    #: when ``conditional_delete`` is False: why, and how to get it, in the store's own words
    conditional_delete_note: str | None = None


class BlobStore(abc.ABC):
    #: Provider name written into rows and envelopes (e.g. ``AzureBlobStorage``).
    provider: str
    #: Redacted location for messages: never contains a secret.
    location: str
    #: Sekiban's key prefix for keys this store writes ("" = none); see keys.content_key.
    prefix: str = ""
    capabilities: BlobCapabilities = BlobCapabilities()

    def key_for(self, name: str, sha256: str) -> str:
        """The key ``write`` gives these bytes: ``{prefix}/{name}/{sha256}.bin`` as Sekiban builds it."""
        return keys.content_key(name, sha256, prefix=self.prefix)

    @abc.abstractmethod
    def write(self, stream: BinaryIO, name: str, *, sha256: str | None = None,
              size: int | None = None) -> BlobWrite:
        """Store the stream's bytes under :meth:`key_for` and return the key.

        ``sha256``/``size`` are hints from a caller that already hashed the bytes; a store
        checks them against what it actually wrote and fails on a difference. Writing the same
        bytes twice is idempotent (and counts as a new write: ``version`` and ``last_modified``
        change). A failed write leaves no blob under the final key.
        """

    @abc.abstractmethod
    def write_key(self, stream: BinaryIO, key: str, *, sha256: str | None = None,
                  size: int | None = None) -> BlobWrite:
        """Store the stream's bytes under exactly ``key`` (put-backs, copies of old GUID keys).

        A content-addressed key must match the bytes' sha256, or nothing is written.
        """

    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream of the blob; BlobNotFoundError when absent."""

    @abc.abstractmethod
    def stat(self, key: str) -> BlobInfo | None:
        """Size, last modification and version of the blob, or None when absent."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    @abc.abstractmethod
    def delete(self, key: str, *, if_version: str | None = None) -> bool:
        """Delete one blob; False when it was already gone.

        ``if_version`` (only with ``capabilities.conditional_delete``): delete only if the
        stored blob is still that version, else raise BlobChangedError and delete nothing.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every blob whose key starts with ``prefix``, streamed page by page (no order promised).

        Keys are returned as :meth:`canonical_key` gives them for the key a row names.
        """

    def canonical_key(self, key: str) -> str:
        """The name the store keeps ``key`` under, as its listing shows it.

        The identity for most stores; Azure keeps ``\\`` as ``/``. Audits compare a row's key and
        a listed name through this, so a referenced blob is never mistaken for an orphan.
        """
        return key

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the blob from ``offset`` (``capabilities.range_reads``)."""
        raise NotImplementedError(f"{type(self).__name__} declares no range reads")

    def local_paths(self) -> builtins.list[str]:  # list: the method above, in this class
        """Directories of this machine the store keeps blobs in (the local store's root): an
        output must never be written inside them."""
        return []

    def close(self) -> None:  # noqa: B027 - a no-op by default, not abstract: stores without clients keep it
        """Release clients; idempotent."""

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_if_version(store: BlobStore, if_version: str | None) -> None:
    """Refuse a conditional delete on a store that cannot do one atomically."""
    if if_version is not None and not store.capabilities.conditional_delete:
        raise UsageError(f"{store.location} cannot delete conditionally"
                         + (f": {store.capabilities.conditional_delete_note}"
                            if store.capabilities.conditional_delete_note else ""))


class AbsentBlobStore(BlobStore):
    """A blob store that does not exist yet (a copy's target directory before ``run --execute``):
    empty, nothing writable; built from StoreMissingError's ``shape``."""

    def __init__(self, shape: dict):
        self.provider = shape.get("provider", "absent")
        self.location = shape.get("location", "(absent)")
        self.prefix = shape.get("prefix", "")
        self.capabilities = shape.get("capabilities") or BlobCapabilities()
        self._shape = shape

    def _absent(self):
        raise StoreMissingError(f"{self.location} does not exist yet; `migrate run --execute` creates it",
                                shape=self._shape)

    def write(self, stream, name, *, sha256=None, size=None):
        self._absent()

    def write_key(self, stream, key, *, sha256=None, size=None):
        self._absent()

    def open_read(self, key):
        raise BlobNotFoundError(f"blob {key!r} not found: {self.location} does not exist yet")

    def stat(self, key):
        return None

    def delete(self, key, *, if_version=None):
        return False

    def list(self, prefix=""):
        return iter(())
