"""Collections that stay in memory while small and spill to a private temp file when large.

Audits of containers with millions of blobs must not grow with the container: the referenced
keys and the orphans found are held here. Spilled data lives in the spool directory
(:mod:`sekiops.pipeline.spool`: private, 0700, locked files removed by the next process if we
die) and is deleted on ``close()``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import weakref
from array import array
from collections.abc import Iterable, Iterator, Sequence

from .pipeline.spool import Spool, SpoolFile

#: keys held in memory before a KeySet moves to disk (about 200 bytes each with their value)
KEY_BUDGET = 100_000
#: records held in memory before a SpilledList moves to disk
RECORD_BUDGET = 10_000
#: a spilled SpilledList remembers the file offset of every INDEX_STRIDE-th record (indexing reads forward)
INDEX_STRIDE = 1024


def _spool_file(tag: str) -> SpoolFile:
    return Spool(max_total_bytes=2**62, clean=False).create(tag)


class KeySet:
    """Keys with a small value each (who references them) and a "seen" mark; memory-bounded."""

    def __init__(self, budget: int | None = None):
        self.budget = budget or KEY_BUDGET
        self._mem: dict[str, list] = {}
        self._file: SpoolFile | None = None
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, str]] = []
        self._count = 0

    @property
    def spilled(self) -> bool:
        return self._db is not None

    def _spill(self) -> None:
        # The spool file itself is the database: private, locked while we live, removed by the
        # next process if we die (SQLite's own locks are fcntl locks, independent of flock).
        self._file = spool = _spool_file("keyset")
        weakref.finalize(self, spool.close)
        self._db = sqlite3.connect(spool.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE k (key TEXT PRIMARY KEY, ref TEXT, seen INTEGER NOT NULL DEFAULT 0) "
                         "WITHOUT ROWID")
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO k (key, ref, seen) VALUES (?, ?, ?)",
                             ((k, v[0], v[1]) for k, v in self._mem.items()))
        self._db.execute("COMMIT")
        self._mem = {}

    def _flush(self) -> None:
        if self._pending and self._db is not None:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO k (key, ref) VALUES (?, ?)", self._pending)
            self._db.execute("COMMIT")
            self._pending = []

    def add(self, key: str, ref: str = "") -> None:
        """Add ``key`` (the first ``ref`` given for a key is kept)."""
        if self._db is None:
            if key not in self._mem:
                self._mem[key] = [ref, 0]
                if len(self._mem) > self.budget:
                    self._spill()
            return
        self._pending.append((key, ref))
        if len(self._pending) >= 5000:
            self._flush()

    def get(self, key: str) -> str | None:
        """The ref recorded for ``key``, or None when absent."""
        if self._db is None:
            item = self._mem.get(key)
            return item[0] if item is not None else None
        self._flush()
        row = self._db.execute("SELECT ref FROM k WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def mark_seen(self, key: str) -> bool:
        """Mark ``key`` as seen (e.g. listed); True when it is in the set."""
        if self._db is None:
            item = self._mem.get(key)
            if item is None:
                return False
            item[1] = 1
            return True
        self._flush()
        return self._db.execute("UPDATE k SET seen = 1 WHERE key = ?", (key,)).rowcount > 0

    def unseen(self) -> Iterator[tuple[str, str]]:
        """(key, ref) of every key never marked seen, in key order."""
        if self._db is None:
            yield from sorted((k, v[0]) for k, v in self._mem.items() if not v[1])
            return
        self._flush()
        yield from self._db.execute("SELECT key, ref FROM k WHERE seen = 0 ORDER BY key")

    def __len__(self) -> int:
        if self._db is None:
            return len(self._mem)
        self._flush()
        return self._db.execute("SELECT count(*) FROM k").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = {}


class SpilledList(Sequence):
    """A list of JSON-able records: in memory up to a budget, then in a private JSON-lines file.

    Behaves as a read-only sequence (len, iteration, indexing, ``==`` with a list); JSON output
    streams it (:func:`write_json`).
    """

    def __init__(self, items: Iterable[dict] = (), budget: int | None = None):
        self.budget = budget or RECORD_BUDGET
        self._mem: list[dict] = []
        self._file: SpoolFile | None = None
        #: the file offset of every INDEX_STRIDE-th record: a sparse index, so memory does not grow
        #: with the records (one Python int per record was ~36 bytes: 72 MB for a million-blob audit)
        self._offsets = array("q")
        self._count = 0
        self._written = 0
        for item in items:
            self.append(item)

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def append(self, item: dict) -> None:
        if self._file is None:
            self._mem.append(item)
            self._count += 1
            if len(self._mem) > self.budget:
                self._file = spool = _spool_file("records")
                weakref.finalize(self, spool.close)
                for rec in self._mem:
                    self._write(rec)
                self._mem = []
            return
        self._write(item)
        self._count += 1

    def _write(self, rec: dict) -> None:
        assert self._file is not None, "spilled before the first write"
        f = self._file.file
        f.seek(0, os.SEEK_END)
        if self._written % INDEX_STRIDE == 0:
            self._offsets.append(f.tell())
        self._written += 1
        f.write(json.dumps(rec, separators=(",", ":")).encode("utf-8") + b"\n")

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[dict]:
        if self._file is None:
            yield from list(self._mem)
            return
        f = self._file.file
        f.flush()
        with open(self._file.path, "rb") as r:
            for line in r:
                yield json.loads(line)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        if self._file is None:
            return self._mem[index]
        f = self._file.file
        f.flush()
        with open(self._file.path, "rb") as r:
            r.seek(self._offsets[index // INDEX_STRIDE])
            for _ in range(index % INDEX_STRIDE):
                r.readline()
            return json.loads(r.readline())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, SpilledList)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __repr__(self) -> str:
        where = "on disk" if self._file is not None else "in memory"
        return f"<SpilledList of {self._count} records {where}>"

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = []
        del self._offsets[:]
        self._count = 0
        self._written = 0


def write_json(obj, stream, indent: int | None = 2) -> None:
    """``json.dump`` that streams SpilledLists (and any iterable that is not a dict) item by item."""

    def default(value):
        if isinstance(value, SpilledList):
            return list(value)  # only reached inside json.dumps of a small part
        return str(value)

    def emit(value, level: int) -> None:
        pad = "" if indent is None else "\n" + " " * (indent * (level + 1))
        end = "" if indent is None else "\n" + " " * (indent * level)
        if isinstance(value, dict):
            if not value:
                stream.write("{}")
                return
            stream.write("{")
            for i, (k, v) in enumerate(value.items()):
                stream.write(("," if i else "") + pad + json.dumps(str(k)) + ": ")
                emit(v, level + 1)
            stream.write(end + "}")
        elif isinstance(value, (list, tuple, SpilledList)):
            if not len(value):
                stream.write("[]")
                return
            stream.write("[")
            for i, v in enumerate(value):
                stream.write(("," if i else "") + pad)
                emit(v, level + 1)
            stream.write(end + "]")
        else:
            stream.write(json.dumps(value, default=default))

    emit(obj, 0)
    stream.write("\n")
