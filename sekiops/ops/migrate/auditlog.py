"""The audit record of one run: who, when, where (redacted), parameters, per-item before/after, totals.

Written next to the journal as ``{journal}.audit-{run id}.json``, rewritten atomically at batch
boundaries (at most every few seconds, so a run of a million items does not rewrite it a
million times) and when the run ends: even a killed run leaves a record up to its last write
(the journal has the rest). The per-item list stays in memory up to a budget and then on disk
(sekiops.spill), and is streamed into the file. Holds metadata only: no payload bytes, no secrets.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import tempfile
import time
from typing import Any

from ...format.record import utcnow
from ...spill import SpilledList, write_json
from ...urls import redact

#: least seconds between two rewrites of the record during a run (the last one is always written)
WRITE_EVERY = 5.0


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers without /etc/passwd entries)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def audit_path(journal_path: str, run_id: str) -> str:
    return f"{journal_path}.audit-{run_id}.json"


class AuditLog:
    def __init__(self, path: str, *, run_id: str, kind: str, phase: str, where: dict, params: dict,
                 options: dict, journal: str):
        self.path = path
        self.data: dict[str, Any] = {
            "runId": run_id, "phase": phase, "kind": kind, "who": who(),
            "startedAt": utcnow().isoformat(), "endedAt": None,
            "command": redact(" ".join(sys.argv)) if sys.argv and sys.argv[0] else None,
            "where": where, "parameters": params, "options": options, "journal": journal,
            "status": "running", "message": None, "totals": {}, "items": SpilledList(),
        }
        self._written_at = float("-inf")

    def item(self, item: str, action: str, result: str, *, before=None, after=None, reason: str | None = None,
             payload_sha256: str | None = None, **extra) -> None:
        self.data["items"].append({"item": item, "action": action, "result": result, "reason": reason,
                                   "before": before, "after": after, "payloadSha256": payload_sha256,
                                   "at": utcnow().isoformat(), **extra})

    def finish(self, status: str, totals: dict, message: str | None) -> None:
        self.data.update(status=status, totals=totals, message=message, endedAt=utcnow().isoformat())

    def write(self, totals: dict | None = None, force: bool = True) -> None:
        """Rewrite the record (atomically); ``force=False``: only if the last write is old enough."""
        if totals is not None:
            self.data["totals"] = totals
        if not force and time.monotonic() - self._written_at < WRITE_EVERY:
            return
        self._written_at = time.monotonic()
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".audit-", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                write_json(self.data, f, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
