"""Output files: never written over a store, swept when a killed run left them half-written, and
remembered once complete (so an interrupt that arrives afterwards is reported as "completed").

* :func:`check_output_path` refuses an output that is the state store's own file (a SQLite
  database, its -wal/-journal/-shm), lies inside a local blob root or the temp-file spool, or is
  an input of the same command: ``restore --out snapshots.db`` must not replace every snapshot
  with one JSON document.
* Restore writes ``.NAME.RANDOM.partial`` next to the output, holds an advisory lock on it while
  it lives, and renames it into place only when every check passed. :func:`sweep_partials`
  removes partials nobody holds that are older than :data:`PARTIAL_GRACE` (a SIGKILLed run's).
* :func:`mark_completed` / :func:`completed`: what this process has finished for good.
"""

from __future__ import annotations

import os
import re
import time

from ..errors import OutputError
from ..lockfiles import remove_if_unlocked

#: a partial output nobody holds is swept once it is this old (seconds)
PARTIAL_GRACE = 600.0
_PARTIAL_RE = re.compile(r"^\..{1,64}\.[0-9a-f]{12}\.partial$", re.S)
_COMPLETED: list[str] = []


def partial_name(path: str, token: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)[:64]}.{token}.partial")


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)  # a hard link or bind mount of it


def _inside(path: str, folder: str) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def check_output_path(path: str, *, state=None, blob=None, spool_dir: str | None = None,
                      inputs: tuple[str, ...] = (), what: str = "output") -> None:
    """Refuse (OutputError, nothing written) an output that would overwrite or pollute a store."""
    shown = repr(path)
    for f in (state.local_paths() if state is not None else []):
        if _same_file(path, f):
            raise OutputError(f"refusing to write the {what} to {shown}: it is the state store's own file ({f}); "
                              "writing there would replace every snapshot in it")
    for d in (blob.local_paths() if blob is not None else []):
        if _inside(path, d):
            raise OutputError(f"refusing to write the {what} to {shown}: it lies inside the local blob store "
                              f"{d} (a file there would be mistaken for a blob)")
    if spool_dir and _inside(path, spool_dir):
        raise OutputError(f"refusing to write the {what} to {shown}: it lies inside the temp-file spool "
                          f"{spool_dir}, whose files are deleted by any sekiops process")
    for i in inputs:
        if i and i != "-" and _same_file(path, i):
            raise OutputError(f"refusing to write the {what} to {shown}: it is this command's own input")


def sweep_partials(directory: str, grace: float = PARTIAL_GRACE) -> int:
    """Remove the unlocked ``.partial`` outputs of killed runs older than ``grace``; the count."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    now = time.time()
    for name in names:
        if not _PARTIAL_RE.match(name):
            continue
        path = os.path.join(directory, name)
        try:
            if now - os.lstat(path).st_mtime < grace:
                continue
            removed += remove_if_unlocked(path)
        except OSError:
            continue
    return removed


def mark_completed(description: str) -> None:
    _COMPLETED.append(description)


def completed() -> list[str]:
    return list(_COMPLETED)
