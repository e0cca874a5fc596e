"""The blob store protocol: content-addressed writes by stream, reads by stream.

Mirrors Sekiban's accessor (``write(stream, name) -> key``, ``open_read(key)``) and adds what
audits need (exists, stat, list, delete). Every key passes :func:`sekiops.format.keys.check_key`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import BinaryIO, Iterator, Protocol, runtime_checkable


@dataclasses.dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    last_modified: datetime | None


@dataclasses.dataclass(frozen=True)
class BlobWrite:
    """What a write produced: the content-addressed key, the byte count and their sha256."""

    key: str
    size: int
    sha256: str


@runtime_checkable
class BlobStore(Protocol):
    #: Provider name written into rows and envelopes (e.g. ``AzureBlobStorage``).
    provider: str
    #: Redacted location for messages: never contains a secret.
    location: str

    def write(self, stream: BinaryIO, name: str, *, sha256: str | None = None,
              size: int | None = None) -> BlobWrite:
        """Store the stream's bytes under ``{name}/{sha256}.bin`` and return the key.

        ``sha256``/``size`` are hints from a caller that already hashed the bytes; a store
        checks them against what it actually wrote and fails on a difference. Writing the same
        bytes twice is idempotent. A failed write leaves no blob under the final key.
        """
        ...

    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream of the blob; BlobNotFoundError when absent."""
        ...

    def stat(self, key: str) -> BlobInfo | None: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool:
        """Delete one blob; False when it was already gone."""
        ...

    def list(self, prefix: str = "") -> Iterator[BlobInfo]: ...

    def close(self) -> None: ...
