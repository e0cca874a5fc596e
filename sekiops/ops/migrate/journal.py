"""The checkpoint journal of a migration: JSON lines, append-only, one writer at a time.

One file per migration (``--journal FILE``); every run, resume and rollback appends to it.
Lines (each a JSON object with ``t`` = type):

* ``header`` (first line): format version, kind, where (redacted URLs), parameters, backup
  directory (relative to the journal), who created it and when;
* ``run``: a run started (run id, who, when, options); ``end``: it ended (status, totals);
* ``begin``: intent for one item, written and fsynced *before* the item is changed: the row as
  read (``before``: metadata and compare-and-swap token), where its previous envelope bytes are
  kept (``backup``: a file in the backup directory, by sha256), the payload sha256 taken before,
  and what the write will store (``intended``: offload key, or sha256/length of the StateData);
* ``done`` (row as stored, payload sha256 after, verified), ``skipped`` (reason), ``failed``
  (error, whether the row was put back), ``reset`` (an interrupted ``begin`` whose write never
  happened; the item is simply redone): the outcome of the last ``begin`` or check;
* ``canary``: the canary rows passed.

Every item record carries ``phase`` (``migrate`` or ``rollback``) and ``item`` (``name/version``,
or the blob key for gc-blobs). Replaying the lines gives each item's state: a ``begin`` without
an outcome is an interrupted step that the next run resolves by looking at the row (untouched,
written by us, or moved by someone else). A torn last line (the process died mid-write) is cut
off when the journal is reopened; only ``begin`` lines need to be durable, so only they are
fsynced (an outcome lost to a machine crash is recomputed from its ``begin``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ...errors import GuardRefusedError, UsageError
from ...format.record import SnapshotRow, parse_timestamp

FORMAT = 1
PHASES = ("migrate", "rollback")
OUTCOMES = ("done", "skipped", "failed", "reset")


# --- rows <-> JSON -------------------------------------------------------------------------------

_ROW_FIELDS = [f.name for f in dataclasses.fields(SnapshotRow)]


def row_to_dict(row: SnapshotRow | None) -> dict | None:
    if row is None:
        return None
    out = {}
    for name in _ROW_FIELDS:
        value = getattr(row, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def row_from_dict(data: dict | None) -> SnapshotRow | None:
    if data is None:
        return None
    values: dict[str, Any] = {k: data.get(k) for k in _ROW_FIELDS if k in data}
    for name in ("created_at", "updated_at"):
        if values.get(name):
            values[name] = parse_timestamp(values[name])
    return SnapshotRow(**values)


# --- replay --------------------------------------------------------------------------------------


@dataclasses.dataclass
class ItemState:
    phase: str
    item: str
    #: the last ``begin`` (kept after its outcome: rollback needs it)
    begin: dict | None = None
    #: True while the last ``begin`` has no outcome yet (interrupted step)
    pending: bool = False
    #: the last outcome record (done/skipped/failed/reset)
    outcome: dict | None = None
    #: the last ``done`` record, with the ``begin`` it closed
    done: dict | None = None
    done_begin: dict | None = None

    @property
    def status(self) -> str | None:
        if self.pending:
            return "pending"
        return self.outcome["t"] if self.outcome else None


class Journal:
    """An open journal, locked against a second writer (``flock``) until closed."""

    def __init__(self, path: str, fd: int | None, header: dict, records: list[dict]):
        self.path = path
        self._fd = fd
        self.header = header
        self.items: dict[tuple[str, str], ItemState] = {}
        self.runs: list[dict] = []
        self.canary_passed = False
        self._order: list[tuple[str, str]] = []
        for rec in records:
            self._apply(rec)

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str) -> Journal:
        """Replay a journal without locking it (dry runs, reports)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise UsageError(f"no journal at {path!r}") from None
        header, records, _ = _parse(data, path)
        return cls(path, None, header, records)

    @classmethod
    def open(cls, path: str, header: dict | None = None) -> Journal:
        """Open for appending (created with ``header`` when absent; refused when in use)."""
        path = os.path.abspath(path)
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            raise UsageError(f"journal directory {directory!r} does not exist")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise GuardRefusedError(f"journal {path!r} is in use by another sekiops run; "
                                        "wait for it or stop it (--stop-file)") from None
            data = _read_fd(fd)
            if not data.strip():
                if header is None:
                    raise UsageError(f"journal {path!r} is empty")
                os.ftruncate(fd, 0)
                header = {"t": "header", "format": FORMAT, **header}
                os.write(fd, _line(header))
                os.fsync(fd)
                fsync_dir(directory)
                return cls(path, fd, header, [])
            stored, records, good = _parse(data, path)
            if good < len(data):  # torn last line of a killed run: never acted upon
                os.ftruncate(fd, good)
                os.fsync(fd)
            if header is not None:
                check_same_migration(stored, header, path)
            return cls(path, fd, stored, records)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------------

    def append(self, record: dict, durable: bool = False) -> None:
        if self._fd is None:
            raise UsageError(f"journal {self.path!r} is open read-only")
        os.write(self._fd, _line(record))
        if durable:
            os.fsync(self._fd)
        self._apply(record)

    # --- state ---------------------------------------------------------------------------------

    def _apply(self, rec: dict) -> None:
        t = rec.get("t")
        if t == "run":
            self.runs.append(rec)
            return
        if t == "canary":
            self.canary_passed = self.canary_passed or rec.get("result") == "passed"
            return
        if t not in ("begin",) + OUTCOMES:
            return
        key = (rec.get("phase", "migrate"), rec["item"])
        st = self.items.get(key)
        if st is None:
            st = self.items[key] = ItemState(*key)
            self._order.append(key)
        if t == "begin":
            st.begin, st.pending = rec, True
            return
        st.outcome = rec
        if t == "done":
            st.done, st.done_begin = rec, st.begin
        if st.pending:
            st.pending = False

    def item(self, phase: str, item: str) -> ItemState | None:
        return self.items.get((phase, item))

    def states(self, phase: str) -> Iterator[ItemState]:
        """Item states of one phase, in the order they first appeared."""
        for key in self._order:
            if key[0] == phase:
                yield self.items[key]

    def pending(self, phase: str) -> list[ItemState]:
        return [st for st in self.states(phase) if st.pending]

    @property
    def backup_dir(self) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), self.header["backupDir"])


def default_backup_dir(journal_path: str) -> str:
    """Backups live next to the journal: ``FILE.backup/`` (relative, so the pair can be moved)."""
    return os.path.basename(journal_path) + ".backup"


#: Header fields that must match for a run to append to an existing journal.
_IDENTITY = ("kind", "where", "params")


def check_same_migration(stored: dict, wanted: dict, path: str) -> None:
    for field in _IDENTITY:
        if stored.get(field) != wanted.get(field):
            raise GuardRefusedError(
                f"journal {path!r} belongs to another migration ({field} differs: "
                f"{json.dumps(stored.get(field), sort_keys=True, default=str)[:200]} vs "
                f"{json.dumps(wanted.get(field), sort_keys=True, default=str)[:200]}); "
                "use another --journal or the same parameters")


def _line(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":"), sort_keys=False, default=str) + "\n").encode("utf-8")


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    parts: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def _parse(data: bytes, path: str) -> tuple[dict, list[dict], int]:
    """(header, records, bytes of complete lines). A torn final line is dropped."""
    good = data.rfind(b"\n") + 1
    records = []
    for n, raw in enumerate(data[:good].splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            raise UsageError(f"journal {path!r} line {n} is not JSON; it was edited or damaged") from None
        if not isinstance(rec, dict) or "t" not in rec:
            raise UsageError(f"journal {path!r} line {n} is not a journal record")
        records.append(rec)
    if not records or records[0].get("t") != "header":
        raise UsageError(f"{path!r} is not a sekiops migration journal (no header line)")
    header = records[0]
    if header.get("format") != FORMAT:
        raise UsageError(f"journal {path!r} has format {header.get('format')!r}; this sekiops reads {FORMAT}")
    return header, records[1:], good


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
