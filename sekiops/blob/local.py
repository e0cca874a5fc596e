"""Local-directory blob store: key ``a/b/c.bin`` is the file ``ROOT/a/b/c.bin``.

Every key a row can name maps to exactly one path inside the root, and the listing maps each
path back to exactly that key: ``/``-separated segments become directories; an empty segment
(a Sekiban 10.23 prefix such as ``/tenant`` or ``///``) becomes the directory ``.sekiops-empty``;
``\\`` and spaces are ordinary file-name characters. Segment names starting ``.sekiops-`` are
the store's own (incoming uploads, quarantine) and never a key's. Symlinks are never followed,
every opened file is checked (through /proc/self/fd) to lie under the root, and only regular
files are read: a FIFO, socket or device under a key is refused at once, never opened blocking.

Conditional delete (gc): the file is renamed into ``.sekiops-quarantine`` (atomic), and deleted
only when the renamed file is exactly the version that was certified (inode, mtime, size);
otherwise it is put back (unless a newer write already took the key). A quarantined file of a
process that died mid-delete is put back by the next process that opens the store.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import os
import secrets
import shutil
import stat as stat_mod
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from ..errors import (
    BlobChangedError,
    BlobNotFoundError,
    IntegrityError,
    StoreError,
    StoreMissingError,
    StoreUnavailableError,
    UnsafeKeyError,
    os_reason,
)
from ..format.constants import PROVIDER_LOCAL
from ..format.keys import check_key, content_hash
from ..lockfiles import remove_if_unlocked
from ..streams import copy_hashing
from ..urls import blob_prefix
from .base import BlobCapabilities, BlobInfo, BlobStore, BlobWrite, check_if_version

RESERVED = ".sekiops-"
INCOMING = ".sekiops-incoming"
QUARANTINE = ".sekiops-quarantine"
EMPTY_SEGMENT = ".sekiops-empty"
CHUNK = 1024 * 1024
#: a quarantined file untouched this long belongs to a dead process (a live delete takes ms)
QUARANTINE_STALE_SECONDS = 60


LONG_SEGMENT = ".sekiops-long-"
#: file systems allow 255 bytes per name; longer key segments are stored as pieces of this size
PIECE_BYTES = 200


def key_to_parts(key: str) -> list[str]:
    """The path components of a (checked) key (see the module docstring).

    A segment longer than a file name may be (a 256-character projector name) becomes a marker
    ``.sekiops-long-N`` followed by N pieces; every other segment is kept as it is.
    """
    parts: list[str] = []
    for seg in key.split("/"):
        if seg == "":
            parts.append(EMPTY_SEGMENT)
            continue
        if seg.startswith(RESERVED):
            raise UnsafeKeyError(f"blob key {key[:120]!r} names the store's private folder {seg[:40]!r}")
        if len(seg.encode("utf-8")) <= 255:
            parts.append(seg)
            continue
        pieces = _pieces(seg)
        if any(p in (".", "..") or p.startswith(RESERVED) for p in pieces):
            raise UnsafeKeyError(f"blob key {key[:120]!r} has a segment this store cannot split safely")
        parts.append(f"{LONG_SEGMENT}{len(pieces)}")
        parts.extend(pieces)
    if parts[-1] == EMPTY_SEGMENT:
        raise UnsafeKeyError(f"blob key {key[:120]!r} ends with '/': it names a folder, not a blob")
    return parts


def _pieces(seg: str) -> list[str]:
    pieces: list[str] = []
    cur: list[str] = []
    size = 0
    for ch in seg:
        n = len(ch.encode("utf-8"))
        if size + n > PIECE_BYTES:
            pieces.append("".join(cur))
            cur, size = [], 0
        cur.append(ch)
        size += n
    pieces.append("".join(cur))
    return pieces


def parts_to_key(parts: list[str]) -> str | None:
    """The key of a path's components, or None when they end inside a long segment's pieces."""
    segments: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if part == EMPTY_SEGMENT:
            segments.append("")
        elif part.startswith(LONG_SEGMENT):
            try:
                n = int(part[len(LONG_SEGMENT):])
            except ValueError:
                return None
            if n < 1 or i + n >= len(parts):
                return None
            segments.append("".join(parts[i + 1:i + 1 + n]))
            i += n
        else:
            segments.append(part)
        i += 1
    return "/".join(segments)


def _version(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def _info(key: str, st: os.stat_result) -> BlobInfo:
    return BlobInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), _version(st))


class LocalBlobStore(BlobStore):
    provider = PROVIDER_LOCAL
    capabilities = BlobCapabilities(range_reads=True, conditional_delete=True)

    def __init__(self, root: str, provider: str | None = None, create: bool = True, prefix: str = ""):
        if create:
            os.makedirs(root, mode=0o750, exist_ok=True)
        if not os.path.isdir(root):
            if not os.path.exists(root):
                raise StoreMissingError(f"blob root {root!r} does not exist", shape={
                    "provider": provider or self.provider, "location": f"file://{os.path.abspath(root)}",
                    "prefix": prefix, "capabilities": self.capabilities})
            raise StoreError(f"blob root {root!r} is not a directory")
        self.root = os.path.realpath(root)
        self.location = f"file://{self.root}"
        self.prefix = prefix
        if provider:
            self.provider = provider
        self._reclaim_incoming()
        self._reclaim_quarantine()

    @classmethod
    def from_url(cls, url: str, create: bool = True) -> LocalBlobStore:
        if url.startswith("file://"):
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise UnsafeKeyError(f"file URL must be local: {url!r}")
            path = unquote(parts.path)
        else:
            path = url
        return cls(os.path.abspath(path), create=create, prefix=blob_prefix(url))

    # --- leftovers of dead processes ---------------------------------------------------------

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

    def _reclaim_quarantine(self) -> None:
        """Put back blobs a dead process quarantined but never confirmed deleting (never lose one)."""
        quarantine = os.path.join(self.root, QUARANTINE)
        try:
            entries = os.listdir(quarantine)
        except OSError:
            return
        for entry in entries:
            folder = os.path.join(quarantine, entry)
            try:
                st = os.lstat(os.path.join(folder, "blob"))
            except FileNotFoundError:
                _rmtree_quiet(folder)
                continue
            except OSError:
                continue
            if time.time() - st.st_ctime < QUARANTINE_STALE_SECONDS:
                continue  # a live delete in progress
            try:
                with open(os.path.join(folder, "key"), "rb") as f:
                    key = f.read().decode("utf-8")
                self._put_back(os.path.join(folder, "blob"), key)
            except (OSError, UnicodeDecodeError, UnsafeKeyError):
                continue  # left for a person: never deleted here
            _rmtree_quiet(folder)

    # --- confinement -------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        check_key(key)
        parts = key_to_parts(key)
        # No component below the root may be a symlink (checked component by component).
        cur = self.root
        for part in parts:
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    raise UnsafeKeyError(f"blob key {key[:120]!r} has a segment too long for a file name") from None
                raise
            if stat_mod.S_ISLNK(st.st_mode):
                raise UnsafeKeyError(f"blob key {key!r} goes through a symlink in {self.location}")
        path = os.path.join(self.root, *parts)
        if not path.startswith(self.root + os.sep):
            raise UnsafeKeyError(f"blob key {key[:120]!r} resolves outside {self.location}")
        return path

    def _check_fd(self, fd: int, key: str) -> None:
        real = os.path.realpath(f"/proc/self/fd/{fd}")
        if not (real == self.root or real.startswith(self.root + os.sep)):
            os.close(fd)
            raise UnsafeKeyError(f"blob key {key!r} resolves outside {self.location}")

    # --- writes ------------------------------------------------------------------------------

    def write(self, stream: BinaryIO, name: str, *, sha256: str | None = None,
              size: int | None = None) -> BlobWrite:
        self.key_for(name, "0" * 64)  # refuses a bad name or an over-long prefixed key up front
        return self._write(stream, lambda digest: self.key_for(name, digest), name, sha256, size)

    def write_key(self, stream: BinaryIO, key: str, *, sha256: str | None = None,
                  size: int | None = None) -> BlobWrite:
        self._path(key)
        promised = content_hash(key)
        if sha256 and promised and sha256 != promised:
            raise IntegrityError(f"{self.location}: sha256 hint differs from the one key {key!r} promises")
        return self._write(stream, lambda digest: key, key, sha256 or promised, size)

    def _write(self, stream: BinaryIO, key_of, what: str, sha256: str | None, size: int | None) -> BlobWrite:
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
                    f"{self.location}: bytes written under {what!r} differ from the caller's "
                    f"hash/size (got {n} bytes, sha256 {digest[:12]}...)")
            key = key_of(digest)
            final = self._path(key)
            os.makedirs(os.path.dirname(final), mode=0o750, exist_ok=True)
            self._path(key)  # re-check: no symlink appeared on the way
            os.replace(tmp, final)
            return BlobWrite(key, n, digest)
        except OSError as exc:
            raise _os_error(exc, self.location, what) from exc
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

    # --- reads -------------------------------------------------------------------------------

    def _open_regular(self, key: str) -> int:
        """A descriptor of the blob's regular file: opened without blocking or following links."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {key!r} not found in {self.location}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeKeyError(f"blob key {key!r} is a symlink in {self.location}") from None
            if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EISDIR):
                raise UnsafeKeyError(f"blob {key!r} in {self.location} is not a regular file; refused") from None
            raise _os_error(exc, self.location, key) from exc
        try:
            self._check_fd(fd, key)
        except UnsafeKeyError:
            raise
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            kind = ("a FIFO" if stat_mod.S_ISFIFO(st.st_mode) else "a socket" if stat_mod.S_ISSOCK(st.st_mode)
                    else "a device" if stat_mod.S_ISCHR(st.st_mode) or stat_mod.S_ISBLK(st.st_mode)
                    else "a directory" if stat_mod.S_ISDIR(st.st_mode) else "not a regular file")
            raise UnsafeKeyError(f"blob {key!r} in {self.location} is {kind}, not a regular file; refused "
                                 "(never opened for reading)")
        os.set_blocking(fd, True)
        return fd

    def open_read(self, key: str) -> BinaryIO:
        return os.fdopen(self._open_regular(key), "rb", buffering=CHUNK)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        fd = self._open_regular(key)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def stat(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return _info(key, st)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every regular file as the key that names it (see the module docstring), streamed:
        directories are read entry by entry, never whole (a projector's folder may hold
        millions of blobs)."""
        stack: list[tuple[str, list[str]]] = [(self.root, [])]
        while stack:
            dirpath, parts = stack.pop()
            try:
                entries = os.scandir(dirpath)
            except OSError:
                continue
            with entries:
                for entry in entries:
                    name = entry.name
                    if not parts and name in (INCOMING, QUARANTINE):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    sub = parts + [name]
                    if stat_mod.S_ISDIR(st.st_mode):
                        folder = parts_to_key(sub)
                        if prefix and folder is not None and not _may_hold(folder + "/", prefix):
                            continue
                        stack.append((entry.path, sub))
                    elif stat_mod.S_ISREG(st.st_mode):
                        key = parts_to_key(sub)
                        if key is not None and key.startswith(prefix):
                            yield _info(key, st)

    # --- deletes -----------------------------------------------------------------------------

    def delete(self, key: str, *, if_version: str | None = None) -> bool:
        check_if_version(self, if_version)
        path = self._path(key)
        if if_version is None:
            try:
                os.unlink(path)
                return True
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _os_error(exc, self.location, key) from exc
        return self._delete_if(path, key, if_version)

    def _delete_if(self, path: str, key: str, if_version: str) -> bool:
        folder = os.path.join(self.root, QUARANTINE, secrets.token_hex(12))
        try:
            os.makedirs(folder, mode=0o700)
            with open(os.path.join(folder, "key"), "wb") as f:
                f.write(key.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            held = os.path.join(folder, "blob")
            try:
                os.rename(path, held)  # atomic: from here no writer can touch these bytes
            except FileNotFoundError:
                _rmtree_quiet(folder)
                return False
            st = os.lstat(held)
            if _version(st) == if_version:
                os.unlink(held)
                _rmtree_quiet(folder)
                return True
            self._put_back(held, key)
            _rmtree_quiet(folder)
        except OSError as exc:
            raise _os_error(exc, self.location, key) from exc
        raise BlobChangedError(f"{self.location}: blob {key!r} was written again since it was certified "
                               f"(version {if_version} -> {_version(st)}); not deleted")

    def _put_back(self, held: str, key: str) -> None:
        """Return a quarantined file to its key, unless a newer write already took the key."""
        path = self._path(key)
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        try:
            os.link(held, path)  # never replaces: a newer write of the same key wins
        except FileExistsError:
            pass
        os.unlink(held)

    def local_paths(self) -> builtins.list[str]:  # list: the method above, in this class
        return [self.root]

    def __repr__(self) -> str:
        return f"LocalBlobStore({self.location!r})"


def _may_hold(folder_key: str, prefix: str) -> bool:
    """Can keys under ``folder_key`` (ending '/') start with ``prefix``?"""
    return folder_key.startswith(prefix) or prefix.startswith(folder_key)


def _rmtree_quiet(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _os_error(exc: OSError, location: str, key: str) -> Exception:
    what = os_reason(exc)
    if exc.errno in (errno.EIO, errno.EAGAIN):
        return StoreUnavailableError(f"{location}: {what} at {key!r}")
    return StoreError(f"{location}: {what} at {key!r}")
