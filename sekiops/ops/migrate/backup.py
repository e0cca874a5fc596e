"""Content-addressed backups of what a migration replaces, in a private directory next to the journal.

Before a row is changed its previous envelope bytes (inline StateData or the record-level blob)
are saved here as ``{sha256[:2]}/{sha256}.bin``, fsynced, and named in the journal's ``begin``
line; gc-blobs saves each blob before deleting it. Rollback reads them back, checking the hash.
Keeping our own copy (rather than trusting that an old blob stays) means a later gc-blobs cannot
take away what a rollback needs. Same bytes, same file: a rerun never stores anything twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import shutil
from typing import BinaryIO

from ...errors import IntegrityError, SpoolError, UsageError
from ...streams import CHUNK, copy_hashing
from .journal import fsync_dir

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
#: free space kept on the backup file system beyond the bytes being saved
MIN_FREE_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class BackupRef:
    sha256: str
    bytes: int

    @property
    def file(self) -> str:
        return f"{self.sha256[:2]}/{self.sha256}.bin"

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: dict | None) -> BackupRef | None:
        if not data:
            return None
        sha = data.get("sha256", "")
        if not _SHA_RE.match(sha):
            raise UsageError(f"journal backup reference has a bad sha256: {sha[:80]!r}")
        return cls(sha, int(data["bytes"]))


class BackupDir:
    def __init__(self, path: str, create: bool = True):
        self.path = os.path.abspath(path)
        if create:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        elif not os.path.isdir(self.path):
            raise UsageError(f"backup directory {self.path!r} is missing; rollback needs it")

    def clean_incoming(self) -> int:
        """Remove partial saves of killed runs (call with the journal locked: nobody else saves here)."""
        removed = 0
        for name in os.listdir(self.path):
            if name.startswith(".incoming-"):
                try:
                    os.unlink(os.path.join(self.path, name))
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def _file(self, sha: str) -> str:
        return os.path.join(self.path, sha[:2], f"{sha}.bin")

    def check_room(self, size: int) -> None:
        vfs = os.statvfs(self.path)
        free = vfs.f_bavail * vfs.f_frsize
        if free < size + MIN_FREE_BYTES:
            raise SpoolError(f"only {free} bytes free for backups in {self.path}; saving {size} bytes "
                             f"needs {size + MIN_FREE_BYTES}. Free space or move the journal")

    def save(self, stream: BinaryIO, expected_size: int | None = None) -> BackupRef:
        """Copy the stream into the backup directory (durably) and return its reference."""
        if expected_size is not None:
            self.check_room(expected_size)
        tmp = os.path.join(self.path, f".incoming-{secrets.token_hex(8)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                n, digest = copy_hashing(stream, out)
                out.flush()
                os.fsync(out.fileno())
            ref = BackupRef(digest, n)
            final = self._file(ref.sha256)
            if os.path.exists(final) and os.path.getsize(final) == n:
                return ref  # same bytes already kept
            os.makedirs(os.path.dirname(final), mode=0o700, exist_ok=True)
            os.replace(tmp, final)
            fsync_dir(os.path.dirname(final))
            return ref
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def open(self, ref: BackupRef) -> BinaryIO:
        """The saved bytes, after checking they still hash to the reference."""
        path = self._file(ref.sha256)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise UsageError(f"backup {ref.file} is missing from {self.path}") from None
        h = hashlib.sha256()
        n = 0
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        if h.hexdigest() != ref.sha256 or n != ref.bytes:
            f.close()
            raise IntegrityError(f"backup {ref.file} in {self.path} is damaged ({n} bytes, sha256 "
                                 f"{h.hexdigest()[:12]}...); not using it")
        f.seek(0)
        return f

    def copy_to(self, ref: BackupRef, out: BinaryIO) -> None:
        with self.open(ref) as f:
            shutil.copyfileobj(f, out, CHUNK)
