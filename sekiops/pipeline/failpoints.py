"""Named fail points for crash and fault tests (the etcd/gofail pattern), off unless asked.

``SEKIOPS_FAILPOINTS="after_upload=kill,row_write=raise"`` makes the pipeline SIGKILL itself or
raise at that stage; ``stage=pause`` stops there until a test lets it go on, so another process
can be interleaved deterministically: the process creates ``$SEKIOPS_FAILPOINT_DIR/STAGE.paused``
and waits (at most 120 s) for ``STAGE.resume``. Reading the variable once per process keeps the
cost to a dict lookup.
Stages of a persist: ``body`` (while the body is written), ``after_spool``, ``mid_upload``,
``after_upload``, ``row_write`` (just before the row write), ``after_row`` (row written, temp
files not yet deleted). Migrations add ``migrate_after_begin``, ``migrate_after_write`` and
``migrate_after_done`` (sekiops/ops/migrate); gc-blobs ``gc_before_delete`` (references
re-checked, the conditional delete next); the audit ``audit_after_listing``.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "SEKIOPS_FAILPOINTS"
DIR_ENV = "SEKIOPS_FAILPOINT_DIR"
PAUSE_LIMIT = 120.0
_ACTIVE: dict[str, str] | None = None


class InjectedFault(OSError):
    """Raised by a ``raise`` fail point (an OSError, as a real I/O failure would be)."""


def active() -> dict[str, str]:
    global _ACTIVE
    if _ACTIVE is None:
        spec = os.environ.get(ENV, "")
        _ACTIVE = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    return _ACTIVE


def hit(stage: str) -> None:
    action = active().get(stage) if os.environ.get(ENV) else None
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "raise":
        raise InjectedFault(f"injected fault at {stage}")
    if action == "pause":
        _pause(stage)


def _pause(stage: str) -> None:
    folder = os.environ.get(DIR_ENV) or "."
    paused, resume = os.path.join(folder, f"{stage}.paused"), os.path.join(folder, f"{stage}.resume")
    with open(paused, "w"):
        pass
    deadline = time.monotonic() + PAUSE_LIMIT
    while not os.path.exists(resume):
        if time.monotonic() > deadline:
            raise InjectedFault(f"fail point {stage} paused for {PAUSE_LIMIT:.0f} s and was never resumed")
        time.sleep(0.02)


class FailingReader:
    """Wraps a stream; hits ``stage`` once half of ``size`` bytes have been read (mid-upload)."""

    def __init__(self, src, stage: str, size: int):
        self._src, self._stage, self._half, self._read = src, stage, max(1, size // 2), 0

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self._read += len(data)
        if self._read >= self._half:
            hit(self._stage)
        return data

    def seek(self, *args):
        self._read = 0
        return self._src.seek(*args)

    def tell(self):
        return self._src.tell()

    def seekable(self) -> bool:
        return self._src.seekable()

    def readable(self) -> bool:
        return True
