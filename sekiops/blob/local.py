"""Local-directory blob store: key ``a/b/c.bin`` is the file ``ROOT/a/b/c.bin``.

Keys are confined to the root: unsafe keys are refused, symlinks are never followed, and every
opened file is checked (through /proc/self/fd) to really lie under the root.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat as stat_mod
from datetime import datetime, timezone
from typing import BinaryIO, Iterator
from urllib.parse import unquote, urlsplit

from ..errors import BlobNotFoundError, IntegrityError, StoreError, UnsafeKeyError
from ..format.constants import PROVIDER_LOCAL
from ..format.keys import check_key, content_key
from ..lockfiles import remove_if_unlocked
from ..streams import copy_hashing
from .base import BlobInfo, BlobWrite

INCOMING = ".sekiops-incoming"
CHUNK = 1024 * 1024


class LocalBlobStore:
    provider = PROVIDER_LOCAL

    def __init__(self, root: str, provider: str | None = None, create: bool = True):
        if create:
            os.makedirs(root, mode=0o750, exist_ok=True)
        if not os.path.isdir(root):
            raise StoreError(f"blob root {root!r} does not exist or is not a directory")
        self.root = os.path.realpath(root)
        self.location = f"file://{self.root}"
        if provider:
            self.provider = provider
        self._reclaim_incoming()

    def _reclaim_incoming(self) -> None:
        """Delete partial uploads of dead writers: every writer holds a lock on its .part file."""
        incoming = os.path.join(self.root, INCOMING)
        try:
            names = os.listdir(incoming)
        except OSError:
            return
        for name in names:
            try:
                remove_if_unlocked(os.path.join(incoming, name))
            except OSError:
                pass  # left for the next start

    @classmethod
    def from_url(cls, url: str, create: bool = True) -> "LocalBlobStore":
        if url.startswith("file://"):
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise UnsafeKeyError(f"file URL must be local: {url!r}")
            path = unquote(parts.path)
        else:
            path = url
        return cls(os.path.abspath(path), create=create)

    # --- confinement -------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        check_key(key)
        if key.split("/", 1)[0] == INCOMING:
            raise UnsafeKeyError(f"blob key {key!r} names the store's private incoming folder")
        path = os.path.join(self.root, *key.split("/"))
        # No component below the root may be a symlink (checked component by component).
        cur = self.root
        for part in key.split("/"):
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                break
            if stat_mod.S_ISLNK(st.st_mode):
                raise UnsafeKeyError(f"blob key {key!r} goes through a symlink in {self.location}")
        return path

    def _check_fd(self, fd: int, key: str) -> None:
        real = os.path.realpath(f"/proc/self/fd/{fd}")
        if not (real == self.root or real.startswith(self.root + os.sep)):
            os.close(fd)
            raise UnsafeKeyError(f"blob key {key!r} resolves outside {self.location}")

    # --- protocol ----------------------------------------------------------------------------

    def write(self, stream: BinaryIO, name: str, *, sha256: str | None = None,
              size: int | None = None) -> BlobWrite:
        check_key(f"{name}/x")
        incoming = os.path.join(self.root, INCOMING)
        os.makedirs(incoming, mode=0o700, exist_ok=True)
        tmp = os.path.join(incoming, secrets.token_hex(16) + ".part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(fd, "wb") as out:
                n, digest = copy_hashing(stream, out)
                out.flush()
                os.fsync(out.fileno())
            if (sha256 and sha256 != digest) or (size is not None and size != n):
                raise IntegrityError(
                    f"{self.location}: bytes written under {name!r} differ from the caller's "
                    f"hash/size (got {n} bytes, sha256 {digest[:12]}...)")
            key = content_key(name, digest)
            final = self._path(key)
            os.makedirs(os.path.dirname(final), mode=0o750, exist_ok=True)
            self._path(key)  # re-check: no symlink appeared on the way
            os.replace(tmp, final)
            return BlobWrite(key, n, digest)
        except OSError as exc:
            raise _os_error(exc, self.location, name) from exc
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def put_raw(self, key: str, data: bytes) -> None:
        """Write bytes under an arbitrary (checked) key: for tests and old GUID-keyed fixtures."""
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {key!r} not found in {self.location}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeKeyError(f"blob key {key!r} is a symlink in {self.location}") from None
            raise _os_error(exc, self.location, key) from exc
        self._check_fd(fd, key)
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BlobNotFoundError(f"blob {key!r} in {self.location} is not a regular file")
        return os.fdopen(fd, "rb", buffering=CHUNK)

    def stat(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return BlobInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _os_error(exc, self.location, key) from exc

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            if dirpath == self.root and INCOMING in dirnames:
                dirnames.remove(INCOMING)
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for fn in sorted(filenames):
                key = fn if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{fn}"
                if not key.startswith(prefix):
                    continue
                st = os.lstat(os.path.join(dirpath, fn))
                if stat_mod.S_ISREG(st.st_mode):
                    yield BlobInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LocalBlobStore({self.location!r})"


def _os_error(exc: OSError, location: str, key: str) -> Exception:
    from ..errors import StoreUnavailableError

    what = {errno.ENOSPC: "disk full", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
            errno.EDQUOT: "quota exceeded"}.get(exc.errno, exc.strerror or str(exc))
    if exc.errno in (errno.EIO, errno.EAGAIN):
        return StoreUnavailableError(f"{location}: {what} at {key!r}")
    return StoreError(f"{location}: {what} at {key!r}")
