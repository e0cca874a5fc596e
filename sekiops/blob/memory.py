"""In-process blob store, for tests and examples. ``memory://NAME`` instances are shared per process."""

from __future__ import annotations

import hashlib
import io
import threading
from datetime import datetime, timezone
from typing import BinaryIO, Iterator

from ..errors import BlobNotFoundError, IntegrityError
from ..format.constants import PROVIDER_MEMORY
from ..format.keys import check_key, content_key
from .base import BlobInfo, BlobWrite

_INSTANCES: dict[str, "MemoryBlobStore"] = {}
_LOCK = threading.Lock()


class MemoryBlobStore:
    provider = PROVIDER_MEMORY

    def __init__(self, name: str = "default", provider: str | None = None):
        self.location = f"memory://{name}"
        self._blobs: dict[str, tuple[bytes, datetime]] = {}
        self._lock = threading.Lock()
        if provider:
            self.provider = provider

    @classmethod
    def from_url(cls, url: str, create: bool = True) -> "MemoryBlobStore":
        name = url.split("://", 1)[1].strip("/") or "default"
        with _LOCK:
            return _INSTANCES.setdefault(name, cls(name))

    def write(self, stream: BinaryIO, name: str, *, sha256: str | None = None,
              size: int | None = None) -> BlobWrite:
        data = stream.read()
        digest = hashlib.sha256(data).hexdigest()
        if (sha256 and sha256 != digest) or (size is not None and size != len(data)):
            raise IntegrityError(f"{self.location}: bytes written under {name!r} differ from the caller's hash/size")
        key = content_key(name, digest)
        with self._lock:
            self._blobs[key] = (data, datetime.now(timezone.utc))
        return BlobWrite(key, len(data), digest)

    def put_raw(self, key: str, data: bytes, when: datetime | None = None) -> None:
        """Store bytes under an arbitrary (checked) key: for tests and for old GUID keys."""
        with self._lock:
            self._blobs[check_key(key)] = (bytes(data), when or datetime.now(timezone.utc))

    def open_read(self, key: str) -> BinaryIO:
        check_key(key)
        with self._lock:
            item = self._blobs.get(key)
        if item is None:
            raise BlobNotFoundError(f"blob {key!r} not found in {self.location}")
        return io.BytesIO(item[0])

    def stat(self, key: str) -> BlobInfo | None:
        check_key(key)
        item = self._blobs.get(key)
        return BlobInfo(key, len(item[0]), item[1]) if item else None

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def delete(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            return self._blobs.pop(key, None) is not None

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        with self._lock:
            items = sorted(self._blobs.items())
        for key, (data, when) in items:
            if key.startswith(prefix):
                yield BlobInfo(key, len(data), when)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"MemoryBlobStore({self.location!r})"
