"""Temp files owned by a live process hold an advisory lock (flock); orphans of dead ones do not."""

from __future__ import annotations

import fcntl
import os


def remove_if_unlocked(path: str) -> bool:
    """Remove ``path`` unless a live process holds its lock; True if removed.

    A missing file or a held lock is False; a failed unlink raises OSError.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)
