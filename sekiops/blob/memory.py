"""In-process blob store, for tests and examples. ``memory://NAME`` instances are shared per process."""

from __future__ import annotations

import hashlib
import io
import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from ..errors import BlobChangedError, BlobNotFoundError, IntegrityError
from ..format.constants import PROVIDER_MEMORY
from ..format.keys import check_key, content_hash
from ..urls import blob_prefix
from .base import BlobCapabilities, BlobInfo, BlobStore, BlobWrite, check_if_version

_INSTANCES: dict[str, MemoryBlobStore] = {}
_LOCK = threading.Lock()
_VERSIONS = itertools.count(1)


class MemoryBlobStore(BlobStore):
    provider = PROVIDER_MEMORY
    capabilities = BlobCapabilities(range_reads=True, conditional_delete=True)

    def __init__(self, name: str = "default", provider: str | None = None, prefix: str = ""):
        self.location = f"memory://{name}"
        self._blobs: dict[str, tuple[bytes, datetime, str]] = {}
        self._lock = threading.Lock()
        self.prefix = prefix
        if provider:
            self.provider = provider

    @classmethod
    def from_url(cls, url: str, create: bool = True) -> MemoryBlobStore:
        name = url.split("://", 1)[1].split("?", 1)[0].strip("/") or "default"
        with _LOCK:
            shared = _INSTANCES.setdefault(name, cls(name))
        prefix = blob_prefix(url)
        if prefix == shared.prefix:
            return shared
        view = cls.__new__(cls)  # same blobs, another prefix for writes
        view.__dict__.update(shared.__dict__)
        view.prefix = prefix
        return view

    def write(self, stream: BinaryIO, name: str, *, sha256: str | None = None,
              size: int | None = None) -> BlobWrite:
        data = stream.read()
        digest = hashlib.sha256(data).hexdigest()
        if (sha256 and sha256 != digest) or (size is not None and size != len(data)):
            raise IntegrityError(f"{self.location}: bytes written under {name!r} differ from the caller's hash/size")
        return self._put(self.key_for(name, digest), data, digest)

    def write_key(self, stream: BinaryIO, key: str, *, sha256: str | None = None,
                  size: int | None = None) -> BlobWrite:
        check_key(key)
        data = stream.read()
        digest = hashlib.sha256(data).hexdigest()
        promised = content_hash(key)
        if ((sha256 and sha256 != digest) or (size is not None and size != len(data))
                or (promised is not None and promised != digest)):
            raise IntegrityError(f"{self.location}: bytes for {key!r} differ from the declared hash/size")
        return self._put(key, data, digest)

    def _put(self, key: str, data: bytes, digest: str, when: datetime | None = None) -> BlobWrite:
        with self._lock:
            self._blobs[key] = (data, when or datetime.now(UTC), str(next(_VERSIONS)))
        return BlobWrite(key, len(data), digest)

    def put_raw(self, key: str, data: bytes, when: datetime | None = None) -> None:
        """Store bytes under an arbitrary (checked) key, optionally back-dated: for tests."""
        self._put(check_key(key), bytes(data), hashlib.sha256(data).hexdigest(), when)

    def open_read(self, key: str) -> BinaryIO:
        check_key(key)
        with self._lock:
            item = self._blobs.get(key)
        if item is None:
            raise BlobNotFoundError(f"blob {key!r} not found in {self.location}")
        return io.BytesIO(item[0])

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        with self.open_read(key) as f:
            f.seek(offset)
            return f.read(length)

    def stat(self, key: str) -> BlobInfo | None:
        check_key(key)
        with self._lock:
            item = self._blobs.get(key)
        return BlobInfo(key, len(item[0]), item[1], item[2]) if item else None

    def delete(self, key: str, *, if_version: str | None = None) -> bool:
        check_key(key)
        check_if_version(self, if_version)
        with self._lock:
            item = self._blobs.get(key)
            if item is None:
                return False
            if if_version is not None and item[2] != if_version:
                raise BlobChangedError(f"{self.location}: blob {key!r} was written again since version "
                                       f"{if_version}; not deleted")
            del self._blobs[key]
            return True

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        with self._lock:
            items = sorted(self._blobs.items())
        for key, (data, when, version) in items:
            if key.startswith(prefix):
                yield BlobInfo(key, len(data), when, version)

    def __repr__(self) -> str:
        return f"MemoryBlobStore({self.location!r})"
