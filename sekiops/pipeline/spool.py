"""Private temp files for snapshots in flight, with Sekiban's guards.

Files live in a private directory (0700, owned by us, never a symlink) as
``snapshot-{name}-{random}.tmp`` (0600). Each is held under an exclusive advisory lock
(``flock``) while in use, so any file nobody holds is an orphan of a dead process and is
removed at once by the next sekiops process; a live persist's files are never touched.
Guards (Sekiban's defaults): at most 10 files in use, refuse when the files in use already
total >= 500 MiB or the disk lacks room.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import tempfile
import time

from ..errors import SpoolError
from ..lockfiles import remove_if_unlocked

log = logging.getLogger("sekiops.spool")

MAX_FILES = 10
MAX_TOTAL_BYTES = 500 * 1024 * 1024
MIN_FREE_BYTES = 64 * 1024 * 1024
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_spool_dir() -> str:
    return os.environ.get("SEKIOPS_SPOOL_DIR") or os.path.join(
        tempfile.gettempdir(), f"sekiops-snapshots-{os.getuid()}")


class SpoolFile:
    """One locked private temp file, used through its descriptor; ``close()`` deletes it."""

    def __init__(self, spool: Spool, path: str, fd: int):
        self.spool = spool
        self.path = path
        self.file = os.fdopen(fd, "w+b", buffering=1024 * 1024)
        self._deleted = False

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def size(self) -> int:
        self.file.flush()
        return os.fstat(self.file.fileno()).st_size

    def rewind(self):
        self.file.flush()
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        """Delete the file (once), whether or not a wrapper already closed its descriptor."""
        if self._deleted:
            return
        self._deleted = True
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # cleaned at the next start
            log.warning("could not delete temp file %s: %s", self.path, exc)
            self.spool.delete_failures += 1
        finally:
            self.file.close()  # releases the lock


class Spool:
    def __init__(self, directory: str | None = None, max_files: int = MAX_FILES,
                 max_total_bytes: int = MAX_TOTAL_BYTES, min_free_bytes: int = MIN_FREE_BYTES,
                 clean: bool = True):
        self.directory = directory or default_spool_dir()
        self.max_files = max_files
        self.max_total_bytes = max_total_bytes
        self.min_free_bytes = min_free_bytes
        self.delete_failures = 0
        self.orphans_removed = 0
        self._ensure_dir()
        if clean:
            self.orphans_removed = self.clean()

    def _ensure_dir(self) -> None:
        d = self.directory
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SpoolError(f"cannot create temp directory {d}: {exc.strerror}") from None
        st = os.lstat(d)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise SpoolError(f"temp directory {d} is not a real directory (symlink?); refusing to use it")
        if st.st_uid != os.getuid():
            raise SpoolError(f"temp directory {d} belongs to uid {st.st_uid}, not us; refusing to use it")
        if st.st_mode & 0o077:
            os.chmod(d, 0o700)

    def _entries(self):
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise SpoolError(f"cannot list temp directory {self.directory}: {exc.strerror}") from None
        for name in names:
            if name.startswith("snapshot-") and name.endswith(".tmp"):
                yield os.path.join(self.directory, name)

    def clean(self) -> int:
        """Remove every temp file no live process holds (orphans of crashed runs)."""
        removed = 0
        for path in self._entries():
            try:
                removed += remove_if_unlocked(path)  # a live process's files stay
            except OSError as exc:
                log.warning("could not remove orphan temp file %s: %s", path, exc)
        return removed

    def usage(self) -> tuple[int, int]:
        """(files, bytes) currently in the spool directory."""
        files = total = 0
        for path in self._entries():
            try:
                total += os.lstat(path).st_size
                files += 1
            except FileNotFoundError:
                pass
        return files, total

    def create(self, name: str) -> SpoolFile:
        files, total = self.usage()
        if files >= self.max_files:
            raise SpoolError(f"{files} snapshot temp files already in use in {self.directory} "
                             f"(limit {self.max_files}); try again when other persists finish")
        if total >= self.max_total_bytes:
            raise SpoolError(f"snapshot temp files in {self.directory} already total {total} bytes "
                             f"(limit {self.max_total_bytes}); refusing to start another")
        vfs = os.statvfs(self.directory)
        free = vfs.f_bavail * vfs.f_frsize
        if free < self.min_free_bytes:
            raise SpoolError(f"only {free} bytes free in {self.directory} (need at least {self.min_free_bytes})")
        safe = _NAME_RE.sub("_", name)[:80] or "x"
        path = os.path.join(self.directory, f"snapshot-{safe}-{secrets.token_hex(16)}.tmp")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot create temp file in {self.directory}: {exc.strerror}") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        return SpoolFile(self, path, fd)


def spool_write_error(exc: OSError, where: str) -> SpoolError:
    what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return SpoolError(f"writing temp file for {where}: {what}")


def now_ms() -> float:
    return time.perf_counter() * 1000.0
