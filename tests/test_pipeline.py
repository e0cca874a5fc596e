"""Library-level tests of the persist and restore pipelines (sekiops/pipeline).

The embedded default (a SQLite file in Sekiban's schema + a local blob directory, both under
tmp_path) is used throughout, with memory:// stores where they make a point quicker.  Oracles:

* ``reference_reader`` (written from the format page only) checks what persist writes, reading
  the raw row with sqlite3 and the blobs straight from the directory;
* rows built BY HAND in Sekiban's schema (raw SQL INSERT, envelopes serialised here the way
  System.Text.Json writes them -- never with sekiops' writer) check what restore reads.

Failures are injected either in-process (a store method monkeypatched to raise) or with
SEKIOPS_FAILPOINTS in a ``python -m sekiops`` subprocess.  The 150 MB round trips are marked
``slow`` but stay in the default run.  The helpers at the top (HandStore, run_cli, ...)
are reused by tests/test_cli.py.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import random
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import pytest

import reference_reader as ref  # tests/ is on sys.path (pytest's rootdir-based import mode)
from sekiops.blob.local import LocalBlobStore
from sekiops.blob.memory import MemoryBlobStore
from sekiops.errors import (
    BlobNotFoundError,
    ConcurrencyConflictError,
    CorruptSnapshotError,
    GuardRefusedError,
    NotFoundError,
    SekiopsError,
    SpoolError,
    StoreUnavailableError,
    TombstonedError,
    VersionMismatchError,
)
from sekiops.ops import synth
from sekiops.pipeline import spool as spool_mod
from sekiops.pipeline.persist import PersistOptions, persist, persist_stream
from sekiops.pipeline.restore import RestoreOptions, restore
from sekiops.pipeline.spool import Spool
from sekiops.state import open_state_store
from sekiops.state.memory import MemoryStateStore
from sekiops.state.sqlite import SqliteStateStore

pytestmark = pytest.mark.usefixtures("private_spool")  # every test spools in its own directory


REPO = Path(__file__).resolve().parents[1]
SLUI = "063904064000000000000000000001"
SLUI2 = "063904064000000000000000000002"
GUID = "0e5c2f4a-8c1b-4f5e-9d3a-1b2c3d4e5f60"
PAYLOAD_TYPE = "Sekiban.Dcb.Snapshots.SerializableMultiProjectionStateEnvelope"
PAYLOAD_THRESHOLD = (2_097_152 - 16_384) * 3 // 4  # 1,560,576 (format page, section 6)
MB = 1024 * 1024

# A projector state with every character class a JSON writer must escape.
STATE = json.dumps({
    "customers": {"c-1": {"name": "Tōkyō Café +81 <b>&'`\"", "tags": ["vip", "漢字", "😀"], "n": 1}},
    "note": "back\\slash \t tab \u2028 sep", "count": 1,
}, ensure_ascii=False).encode("utf-8")


# =============================================================================================
# Helpers (also imported by tests/test_cli.py)
# =============================================================================================


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MB), b""):
            h.update(chunk)
    return h.hexdigest()


def spool_files(directory) -> list[str]:
    d = Path(directory)
    if not d.exists():
        return []
    return sorted(p.name for p in d.iterdir() if p.name.startswith("snapshot-") and p.name.endswith(".tmp"))


def dir_blobs(root) -> dict[str, bytes]:
    """Every blob of a local blob directory, key -> bytes (the store's private incoming folder skipped)."""
    root = Path(root)
    out = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and ".sekiops-incoming" in dirnames:
            dirnames.remove(".sekiops-incoming")
        for fn in filenames:
            p = Path(dirpath) / fn
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def dir_listing(root) -> dict[str, int]:
    """key -> size of every file under root, the incoming folder included (nothing may hide there)."""
    root = Path(root)
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def raw_sqlite_rows(db) -> list[dict]:
    conn = sqlite3.connect(str(db))
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(
            "SELECT * FROM dcb_multi_projection_states ORDER BY ServiceId, ProjectorName, ProjectorVersion")]
    finally:
        conn.close()


def raw_sqlite_row(db, name, version, service_id="default") -> dict | None:
    for r in raw_sqlite_rows(db):
        if (r["ServiceId"], r["ProjectorName"], r["ProjectorVersion"]) == (service_id, name, version):
            return r
    return None


def sqlite_fingerprint(db) -> tuple[int, str]:
    """(row count, sha256 of every column of every row): 'nothing was written' means this is unchanged."""
    if not Path(db).exists():
        return (-1, "")
    conn = sqlite3.connect(str(db))
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        if "dcb_multi_projection_states" not in tables:
            return (-1, ",".join(tables))
        h = hashlib.sha256()
        n = 0
        for row in conn.execute("SELECT * FROM dcb_multi_projection_states ORDER BY 1, 2, 3"):
            h.update(repr(row).encode())
            n += 1
        return (n, h.hexdigest())
    finally:
        conn.close()


def memory_raw_row(state: MemoryStateStore, name: str, version: str) -> dict:
    row = state.get(name, version)
    data = None
    if not row.is_offloaded:
        with state.open_state_stream(row) as f:
            data = f.read()
    return {"ServiceId": row.service_id, "ProjectorName": row.projector_name,
            "ProjectorVersion": row.projector_version, "PayloadType": row.payload_type,
            "LastSortableUniqueId": row.last_sortable_unique_id, "EventsProcessed": row.events_processed,
            "StateData": data, "IsOffloaded": row.is_offloaded, "OffloadKey": row.offload_key,
            "OffloadProvider": row.offload_provider, "OriginalSizeBytes": row.original_size_bytes,
            "CompressedSizeBytes": row.compressed_size_bytes, "CreatedAt": row.created_at,
            "UpdatedAt": row.updated_at, "BuildSource": row.build_source, "Lifecycle": row.lifecycle}


def memory_blobs(blob: MemoryBlobStore) -> dict[str, bytes]:
    out = {}
    for info in blob.list():
        with blob.open_read(info.key) as f:
            out[info.key] = f.read()
    return out


# --- Sekiban's JSON, written by hand -----------------------------------------------------------



def pascal(obj):
    if isinstance(obj, dict):
        return {k[:1].upper() + k[1:]: pascal(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [pascal(v) for v in obj]
    return obj


def gz(data: bytes) -> bytes:
    """gzip as .NET's GZipStream(CompressionLevel.Fastest) writes it: one member, no name, mtime 0."""
    return gzip.compress(data, compresslevel=1, mtime=0)


def sekiban_meta(name, version, events, original, compressed, sizes=True) -> dict:
    m = {"multiProjectionPayloadType": "App.Projections.CustomerDirectory, App", "projectorName": name,
         "projectorVersion": version, "lastSortableUniqueId": SLUI, "lastEventId": GUID, "version": events,
         "isCatchedUp": True, "isSafeState": True}
    if sizes:
        m.update({"originalSizeBytes": original, "compressedSizeBytes": compressed})
    return m


def envelope_inline(payload: bytes | None, *, name, version, events=42, decoded: bytes | None = None,
                    payload_json: str | None = None, casing="camel", v9=False, sizes=True,
                    b64: str | None | bool = True, extra: dict | None = None) -> bytes:
    """An inline envelope as Sekiban writes it (payloadBase64), or an old one (payloadJson).

    ``b64=True`` encodes ``payload``; a string is written as is; None writes null.
    """
    if b64 is True:
        b64 = None if payload is None else base64.b64encode(payload).decode("ascii")
    stored = payload if payload is not None else (payload_json or "").encode("utf-8")
    dec = decoded if decoded is not None else (gzip.decompress(stored) if stored[:2] == b"\x1f\x8b" else stored)
    inline = {"payloadJson": payload_json, "payloadBase64": b64}
    inline.update(sekiban_meta(name, version, events, len(dec), len(stored), sizes))
    if extra:
        inline.update(extra)
    env = {"isOffloaded": False, "inlineState": inline, "offloadedState": None}
    return _finish(env, casing, v9)


def envelope_offloaded(key: str, payload: bytes, *, name, version, events=42, casing="camel", v9=False,
                       provider="AzureBlobStorage", payload_length: int | None = None,
                       original: int | None = None, compressed: int | None = None) -> bytes:
    if original is None:
        original = len(gzip.decompress(payload) if payload[:2] == b"\x1f\x8b" else payload)
    off = {"offloadKey": key, "storageProvider": provider}
    off.update(sekiban_meta(name, version, events, original,
                            len(payload) if compressed is None else compressed))
    off["payloadLength"] = len(payload) if payload_length is None else payload_length
    env = {"isOffloaded": True, "inlineState": None, "offloadedState": off}
    return _finish(env, casing, v9)


def _finish(env: dict, casing: str, v9: bool) -> bytes:
    if casing == "pascal":
        env = pascal(env)
    data = ref.stj_dumps(env).encode("ascii")
    assert b"+" not in data
    return gz(data) if v9 else data


def content_key(name: str, data: bytes) -> str:
    return f"{name}/{hashlib.sha256(data).hexdigest()}.bin"


SEKIBAN_SQLITE_DDL = """
CREATE TABLE dcb_multi_projection_states (
    ServiceId TEXT NOT NULL,
    ProjectorName TEXT NOT NULL,
    ProjectorVersion TEXT NOT NULL,
    PayloadType TEXT NOT NULL,
    LastSortableUniqueId TEXT NOT NULL,
    EventsProcessed INTEGER NOT NULL,
    StateData BLOB NULL,
    IsOffloaded INTEGER NOT NULL,
    OffloadKey TEXT NULL,
    OffloadProvider TEXT NULL,
    OriginalSizeBytes INTEGER NOT NULL,
    CompressedSizeBytes INTEGER NOT NULL,
    SafeWindowThreshold TEXT NOT NULL,
    CreatedAt TEXT NOT NULL,
    UpdatedAt TEXT NOT NULL,
    BuildSource TEXT NOT NULL,
    BuildHost TEXT NULL{control}
    , PRIMARY KEY (ServiceId, ProjectorName, ProjectorVersion)
);
CREATE INDEX IX_MultiProjectionStates_Service_ProjectorName
    ON dcb_multi_projection_states (ServiceId, ProjectorName);
"""
CONTROL_DDL = """,
    Generation INTEGER NOT NULL DEFAULT 0,
    Lifecycle INTEGER NOT NULL DEFAULT 0,
    Revision INTEGER NOT NULL DEFAULT 0"""


class HandStore:
    """A Sekiban deployment built by hand: SQLite file in Sekiban's schema + a blob directory."""

    def __init__(self, root: Path, control: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = self.root / "sekiban.db"
        self.blob_dir = self.root / "blobs"
        self.blob_dir.mkdir(exist_ok=True)
        self.control = control
        conn = sqlite3.connect(str(self.db))
        conn.executescript(SEKIBAN_SQLITE_DDL.format(control=CONTROL_DDL if control else ""))
        conn.close()

    @property
    def state_url(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def blob_url(self) -> str:
        return f"file://{self.blob_dir}"

    def put_blob(self, key: str, data: bytes) -> str:
        p = self.blob_dir.joinpath(*key.split("/"))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return key

    def insert(self, name, version, state_data: bytes | None, *, events=42, offloaded=False, offload_key=None,
               provider=None, lifecycle=0, service_id="default", size=None, payload_type=PAYLOAD_TYPE,
               updated="2026-02-25T10:00:00.0000000Z", state_file: Path | None = None, revision=1):
        cols = ["ServiceId", "ProjectorName", "ProjectorVersion", "PayloadType", "LastSortableUniqueId",
                "EventsProcessed", "StateData", "IsOffloaded", "OffloadKey", "OffloadProvider",
                "OriginalSizeBytes", "CompressedSizeBytes", "SafeWindowThreshold", "CreatedAt", "UpdatedAt",
                "BuildSource", "BuildHost"]
        if size is None:
            size = state_file.stat().st_size if state_file is not None else len(state_data or b"")
        vals = [service_id, name, version, payload_type, SLUI, events,
                sqlite3.Binary(state_data) if state_data is not None else None, int(offloaded), offload_key,
                provider, size, size, SLUI, "2026-02-25T09:00:00.0000000Z", updated, "GRAIN_STREAM", "grain-host-1"]
        if state_file is not None:
            vals[6] = None
        if self.control:
            cols += ["Generation", "Lifecycle", "Revision"]
            vals += [0, lifecycle, revision]
        conn = sqlite3.connect(str(self.db))
        try:
            if state_file is None:
                conn.execute(f"INSERT INTO dcb_multi_projection_states ({', '.join(cols)}) "
                             f"VALUES ({', '.join('?' * len(cols))})", vals)
            else:  # a big StateData, streamed in with incremental blob I/O
                vals[6] = size
                ph = ", ".join("zeroblob(?)" if c == "StateData" else "?" for c in cols)
                cur = conn.execute(f"INSERT INTO dcb_multi_projection_states ({', '.join(cols)}) VALUES ({ph})",
                                   vals)
                with conn.blobopen("dcb_multi_projection_states", "StateData", cur.lastrowid) as b, \
                        open(state_file, "rb") as f:
                    for chunk in iter(lambda: f.read(4 * MB), b""):
                        b.write(chunk)
            conn.commit()
        finally:
            conn.close()

    def add(self, name, version, envelope: bytes, *, row_offload=False, row_key=None, **kw) -> None:
        """One row: the envelope inline (StateData) or offloaded at record level (blob at OffloadKey)."""
        if row_offload:
            key = row_key or content_key(f"{name}/{version}", envelope)
            self.put_blob(key, envelope)
            self.insert(name, version, None, offloaded=True, offload_key=key, provider="AzureBlobStorage",
                        size=len(envelope), **kw)
        else:
            self.insert(name, version, envelope, **kw)

    def raw_row(self, name, version, service_id="default") -> dict:
        return raw_sqlite_row(self.db, name, version, service_id)

    def blobs(self) -> dict[str, bytes]:
        return dir_blobs(self.blob_dir)

    def open(self, service_id="default"):
        return (SqliteStateStore(str(self.db), service_id=service_id, create=False),
                LocalBlobStore(str(self.blob_dir), create=False))


# --- subprocess runs of the CLI ----------------------------------------------------------------


@dataclasses.dataclass
class CliRun:
    rc: int
    out: bytes
    err: str
    maxrss_kb: int
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def json(self):
        return json.loads(self.out)


def cli_env(spool_dir, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEKIOPS_STATE_URL", "SEKIOPS_BLOB_URL", "SEKIOPS_FAILPOINTS", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["SEKIOPS_SPOOL_DIR"] = str(spool_dir)
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ru_maxrss of a child includes the hiwater RSS of the process that spawned it (fork copies the
# parent's page counts; vfork/posix_spawn exec from the parent's mm), so a child spawned straight
# from a big pytest process would report the test process's peak. A tiny launcher spawns the real
# command and reports the grandchild's wait4 ru_maxrss through a file.
_LAUNCHER = r"""
import os, sys
report, argv = sys.argv[1], sys.argv[2:]
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
    f.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):
    import signal
    sig = os.WTERMSIG(status)
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
sys.exit(os.WEXITSTATUS(status))
"""


def run_cli(args, *, env: dict, stdin: bytes | str | Path | None = None, cwd=None, timeout: float = 120) -> CliRun:
    """``python -m sekiops ARGS``; stdout/stderr through files; the child's own peak RSS (wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            (open(stdin, "rb") if isinstance(stdin, Path) else tempfile.TemporaryFile()) as inp, \
            tempfile.NamedTemporaryFile("r") as report:
        if isinstance(stdin, (bytes, str)):
            inp.write(stdin.encode() if isinstance(stdin, str) else stdin)
            inp.flush()
            inp.seek(0)
        t = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, report.name, sys.executable, "-m", "sekiops",
                                 *map(str, args)], stdin=inp, stdout=out, stderr=err, env=env, cwd=cwd,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        seconds = time.monotonic() - t
        out.seek(0)
        err.seek(0)
        maxrss = int(report.read() or 0)
        return CliRun(proc.returncode, out.read(), err.read().decode("utf-8", "replace"), maxrss, seconds)


# =============================================================================================
# Fixtures
# =============================================================================================


@pytest.fixture
def embedded(tmp_path):
    """The embedded default: SQLite file (strict, Sekiban-compatible) + local blob directory."""
    db = tmp_path / "state.db"
    blob_dir = tmp_path / "blobs"
    state = open_state_store(f"sqlite:///{db}")
    blob = LocalBlobStore(str(blob_dir))
    yield state, blob, db, blob_dir
    state.close()


@pytest.fixture(scope="session")
def big_state(tmp_path_factory):
    """About 150 MB of synthetic projector state JSON, written by synth.write_state to a file."""
    d = tmp_path_factory.mktemp("big")
    path = d / "state-150mb.json"
    with open(path, "wb") as f:
        n = synth.write_state(f, 150 * MB)
    assert n == path.stat().st_size and abs(n - 150 * MB) < 64 * 1024
    yield path, n, sha256_file(path)
    path.unlink()


@pytest.fixture
def reclaim(tmp_path):
    """Delete the big files a test leaves in tmp_path (pytest keeps the last runs' directories)."""
    yield
    for p in tmp_path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_size > 8 * MB:
                p.unlink()
        except OSError:
            pass


def exact_json(size: int, seed: int = 1) -> bytes:
    """Deterministic JSON text of exactly ``size`` bytes (hex noise: compresses about 2x)."""
    if size == 0:
        return b""
    head, tail = b'{"data":"', b'"}'
    assert size >= len(head) + len(tail)
    body = random.Random(seed).randbytes(size).hex().encode()[: size - len(head) - len(tail)]
    return head + body + tail


def noise(size: int, seed: int = 3) -> bytes:
    """Opaque bytes (persisted with input_format="raw": a custom serializer's payload)."""
    return random.Random(seed).randbytes(size)


def json_of(doc: bytes, copies: int) -> bytes:
    """One JSON document holding ``copies`` copies of ``doc`` (an array)."""
    return b"[" + b",".join([doc] * copies) + b"]"


def persist_bytes(state, blob, data: bytes, *, name="Orders", version="1.0.0", events=42, options=None, **kw):
    """Persist ``data``; bytes that are not one JSON document (noise, b"") go as an opaque
    payload (input_format="raw"), as a custom serializer's would."""
    options = options or PersistOptions()
    try:
        json.loads(data)
    except ValueError:
        options = dataclasses.replace(options, input_format="raw", allow_empty=True)
    return persist_stream(state, blob, io.BytesIO(data), projector_name=name, projector_version=version,
                          events_processed=events, last_sortable_unique_id=SLUI, options=options, **kw)


def restore_bytes(state, blob, *, name="Orders", version="1.0.0", tmp_path=None, **opts) -> bytes:
    buf = io.BytesIO()
    restore(state, blob, buf, projector_name=name, projector_version=version,
            options=RestoreOptions(**opts) if opts else None)
    return buf.getvalue()


# =============================================================================================
# 1. Round trips
# =============================================================================================

SMALL_SIZES = [pytest.param(0, id="0B"), pytest.param(1024, id="1KB"), pytest.param(2 * MB, id="2MB")]


@pytest.mark.parametrize("size", SMALL_SIZES)
def test_round_trip_small_embedded(embedded, tmp_path, private_spool, size):
    state, blob, db, blob_dir = embedded
    data = exact_json(size)
    res = persist_bytes(state, blob, data, options=PersistOptions())
    assert res.mode == "streaming" and res.original_size_bytes == size
    assert res.payload_location == "inline" and res.envelope_location == "inline"  # 2 MB gzips below 1.56 MB
    assert spool_files(private_spool) == []
    assert res.payload_sha256 == hashlib.sha256(ref.stored_payload(raw_sqlite_row(db, "Orders", "1.0.0"),
                                                                   {})).hexdigest()
    out = tmp_path / "out.json"
    rr = restore(state, blob, str(out), projector_name="Orders", projector_version="1.0.0",
                 options=RestoreOptions(verify=True))
    assert out.read_bytes() == data
    assert rr.original_size_bytes == size and rr.events_processed == 42
    assert "declared-lengths" in rr.verified
    # the oracle reads the same bytes from the raw row
    ref.check_written_row(raw_sqlite_row(db, "Orders", "1.0.0"), dir_blobs(blob_dir),
                          record_threshold=float("inf"), expected_state=data)


@pytest.mark.parametrize("size", SMALL_SIZES)
def test_round_trip_small_memory(size):
    state = MemoryStateStore(f"rt-{uuid.uuid4().hex}")
    blob = MemoryBlobStore("rt")
    data = exact_json(size, seed=size + 7)
    persist_bytes(state, blob, data, options=PersistOptions())
    assert restore_bytes(state, blob) == data
    ref.check_written_row(memory_raw_row(state, "Orders", "1.0.0"), memory_blobs(blob), expected_state=data)


@pytest.mark.slow
def test_round_trip_150mb_offloaded(embedded, tmp_path, private_spool, big_state, reclaim):
    path, size, digest = big_state
    state, blob, db, blob_dir = embedded
    with open(path, "rb") as f:
        res = persist_stream(state, blob, f, projector_name="CustomerDirectory", projector_version="3.1.0",
                             events_processed=1_234_567, last_sortable_unique_id=SLUI,
                             options=PersistOptions())
    assert res.payload_location == "blob"
    assert res.envelope_location == "inline"  # SQLite (strict) never offloads at record level
    assert spool_files(private_spool) == []
    assert res.original_size_bytes == size
    assert res.compressed_size_bytes > PAYLOAD_THRESHOLD
    assert res.payload_key == f"CustomerDirectory/{res.payload_sha256}.bin"
    blob_file = blob_dir.joinpath(*res.payload_key.split("/"))
    assert blob_file.stat().st_size == res.compressed_size_bytes
    assert sha256_file(blob_file) == res.payload_sha256
    row = raw_sqlite_row(db, "CustomerDirectory", "3.1.0")
    assert row["IsOffloaded"] == 0 and row["EventsProcessed"] == 1_234_567
    env = ref.parse_envelope(row["StateData"])
    assert env["isOffloaded"] is True and env["offloadedState"]["offloadKey"] == res.payload_key
    assert env["offloadedState"]["originalSizeBytes"] == size
    out = tmp_path / "restored.json"
    rr = restore(state, blob, str(out), projector_name="CustomerDirectory",
                 options=RestoreOptions(verify=True))
    assert rr.payload_location == "blob" and "payload-sha256" in rr.verified
    assert out.stat().st_size == size and sha256_file(out) == digest


@pytest.mark.slow
def test_cli_150mb_streaming_persist_and_restore_in_bounded_memory(tmp_path, private_spool, big_state, reclaim):
    """The streaming paths hold neither the state nor the payload: a 150 MB state moves through a
    `python -m sekiops` child whose peak RSS stays within 64 MB of the same command on a tiny state."""
    path, size, digest = big_state
    env = cli_env(private_spool)
    state_url, blobs = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "blobs"
    tiny = tmp_path / "tiny.json"
    tiny.write_bytes(b'{"tiny":true}')
    common = ["--state", state_url, "--blob", blobs, "--events-processed", "1", "--last-sortable-unique-id", SLUI]
    runs = {}
    for name, inp in (("Tiny", tiny), ("Big", path)):
        r = run_cli(["persist", "--projector", name, "--version", "1", "--in", inp, *common], env=env)
        assert r.rc == 0, r.err
        runs[("persist", name)] = r
        r = run_cli(["restore", "--state", state_url, "--blob", blobs, "--projector", name, "--verify",
                     "--out", tmp_path / f"{name}.out"], env=env)
        assert r.rc == 0, r.err
        runs[("restore", name)] = r
    assert json.loads(runs[("persist", "Big")].out)["payload_location"] == "blob"
    assert sha256_file(tmp_path / "Big.out") == digest
    for op in ("persist", "restore"):
        growth = (runs[(op, "Big")].maxrss_kb - runs[(op, "Tiny")].maxrss_kb) / 1024
        assert growth <= 64, f"{op} of a {size} B state grew RSS by {growth:.0f} MB"


# =============================================================================================
# 2. What persist writes, checked by the independent reference reader
# =============================================================================================

LEVELS = [("inline", "inline"), ("inline", "blob"), ("blob", "inline"), ("blob", "blob")]


def _forced(row_level, payload_level, record_threshold=200):
    return PersistOptions(payload_threshold=100 if payload_level == "blob" else PAYLOAD_THRESHOLD,
                          record_threshold=record_threshold if row_level == "blob" else None)


@pytest.mark.parametrize("name", ["Orders", "Kunden+Übersicht"])
@pytest.mark.parametrize("row_level,payload_level", LEVELS)
def test_reference_reader_accepts_sqlite_rows(tmp_path, row_level, payload_level, name):
    """SQLite extension mode (?record_threshold=N) so record-level offload is possible."""
    db = tmp_path / "ext.db"
    blob_dir = tmp_path / "blobs"
    state = open_state_store(f"sqlite:///{db}?record_threshold=1000000")
    assert state.record_offload_threshold == 1_000_000 and not state.strict
    blob = LocalBlobStore(str(blob_dir))
    data = json_of(STATE, 40)  # ~5 KB, gzips to well over 100 bytes
    opts = _forced(row_level, payload_level)
    res = persist_bytes(state, blob, data, name=name, version="2.0.0+build.7", options=opts)
    assert (res.envelope_location, res.payload_location) == (row_level, payload_level)
    row = raw_sqlite_row(db, name, "2.0.0+build.7")
    blobs = dir_blobs(blob_dir)
    ref.check_written_row(row, blobs, record_threshold=opts.record_threshold or 1_000_000,
                          payload_threshold=opts.payload_threshold, expected_state=data)
    assert ref.read_row(row, blobs) == data
    assert restore_bytes(state, blob, name=name, version="2.0.0+build.7", verify=True) == data
    state.close()


def test_sqlite_store_threshold_from_url_offloads_records(tmp_path):
    """?record_threshold=N alone (default PersistOptions) makes the SQLite store offload envelopes > N."""
    db = tmp_path / "ext.db"
    state = open_state_store(f"sqlite:///{db}?record_threshold=300")
    blob = LocalBlobStore(str(tmp_path / "blobs"))
    res = persist_bytes(state, blob, json_of(STATE, 10))
    assert res.envelope_location == "blob" and res.envelope_bytes > 300
    row = raw_sqlite_row(db, "Orders", "1.0.0")
    assert row["IsOffloaded"] == 1 and row["StateData"] is None
    assert row["OffloadKey"] == res.envelope_key and row["OffloadProvider"]
    ref.check_written_row(row, dir_blobs(tmp_path / "blobs"), record_threshold=300, expected_state=json_of(STATE, 10))


@pytest.mark.parametrize("row_level,payload_level", LEVELS)
def test_reference_reader_accepts_memory_rows(row_level, payload_level):
    state = MemoryStateStore(f"ref-{uuid.uuid4().hex}",
                             record_offload_threshold=200 if row_level == "blob" else None)
    blob = MemoryBlobStore("ref")
    data = json_of(STATE, 40)
    opts = PersistOptions(payload_threshold=100 if payload_level == "blob" else PAYLOAD_THRESHOLD)
    res = persist_bytes(state, blob, data, options=opts)
    assert (res.envelope_location, res.payload_location) == (row_level, payload_level)
    ref.check_written_row(memory_raw_row(state, "Orders", "1.0.0"), memory_blobs(blob),
                          record_threshold=200 if row_level == "blob" else None,
                          payload_threshold=opts.payload_threshold, expected_state=data)
    assert restore_bytes(state, blob, verify=True) == data


def test_strict_sqlite_refuses_record_offload_and_uploads_nothing(embedded):
    """Sekiban's SQLite store never offloads at record level: strict mode refuses it, and a refused
    persist must not leave an envelope blob behind (nothing written)."""
    state, blob, db, blob_dir = embedded
    assert state.strict
    with pytest.raises(GuardRefusedError, match="(?i)strict|record level"):
        persist_bytes(state, blob, json_of(STATE, 10), options=PersistOptions(record_threshold=100))
    assert sqlite_fingerprint(db)[0] == 0
    assert dir_blobs(blob_dir) == {}, "strict refusal came after the envelope blob was uploaded"


# =============================================================================================
# 3. Thresholds: offload when size > threshold, never at equality
# =============================================================================================


@pytest.mark.parametrize("threshold", [PAYLOAD_THRESHOLD, 1000])
def test_payload_threshold_equality_and_plus_one(embedded, threshold):
    state, blob, db, blob_dir = embedded
    for version, size, where in (("eq", threshold, "inline"), ("plus1", threshold + 1, "blob")):
        data = noise(size, seed=size)
        res = persist_bytes(state, blob, data, version=version,
                            options=PersistOptions(payload_threshold=threshold, compress=False))
        assert res.compressed_size_bytes == size
        assert res.payload_location == where, (version, size)
        row = raw_sqlite_row(db, "Orders", version)
        ref.check_written_row(row, dir_blobs(blob_dir), payload_threshold=threshold, record_threshold=float("inf"),
                              expected_state=data)
        assert restore_bytes(state, blob, version=version, verify=True) == data


@pytest.mark.parametrize("store", ["memory", "sqlite-ext"])
def test_record_threshold_equality_and_plus_one(tmp_path, store):
    data = noise(3000)
    probe = MemoryStateStore(f"probe-{uuid.uuid4().hex}")
    envelope_len = persist_bytes(probe, None, data, options=PersistOptions(compress=False)).envelope_bytes
    for version, threshold, where in (("eq", envelope_len, "inline"), ("minus1", envelope_len - 1, "blob")):
        if store == "memory":
            state, blob = MemoryStateStore(f"rec-{uuid.uuid4().hex}"), MemoryBlobStore(f"rec-{version}")
        else:
            state = open_state_store(f"sqlite:///{tmp_path / (version + '.db')}?record_threshold=10")
            blob = LocalBlobStore(str(tmp_path / f"blobs-{version}"))
        res = persist_bytes(state, blob, data, options=PersistOptions(compress=False,
                                                                      record_threshold=threshold))
        assert res.envelope_bytes == envelope_len
        assert res.envelope_location == where, (version, threshold)
        if store == "memory":
            row, blobs = memory_raw_row(state, "Orders", "1.0.0"), memory_blobs(blob)
        else:
            row, blobs = raw_sqlite_row(tmp_path / (version + ".db"), "Orders", "1.0.0"), dir_blobs(blob.root)
        ref.check_written_row(row, blobs, record_threshold=threshold, expected_state=data)
        assert restore_bytes(state, blob) == data


def test_sqlite_extension_threshold_equality_from_url(tmp_path):
    data = noise(2000, seed=9)
    probe = MemoryStateStore(f"probe-{uuid.uuid4().hex}")
    n = persist_bytes(probe, None, data, options=PersistOptions(compress=False)).envelope_bytes
    for name, threshold, where in (("Eq", n, "inline"), ("Minus", n - 1, "blob")):
        state = open_state_store(f"sqlite:///{tmp_path / name}.db?record_threshold={threshold}")
        blob = LocalBlobStore(str(tmp_path / f"b{name}"))
        res = persist_bytes(state, blob, data, options=PersistOptions(compress=False))
        assert res.envelope_location == where


def test_no_blob_store_nothing_offloaded_at_any_size(tmp_path):
    """No blob store configured: nothing is offloaded, whatever the thresholds and sizes."""
    db = tmp_path / "ext.db"
    state = open_state_store(f"sqlite:///{db}?record_threshold=10")
    data = noise(3 * MB)  # raw: 3 MB > 1,560,576 payload threshold and > every record threshold
    res = persist_bytes(state, None, data, options=PersistOptions(compress=False, payload_threshold=10,
                                                                  record_threshold=10))
    assert (res.envelope_location, res.payload_location) == ("inline", "inline")
    assert res.envelope_key is None and res.payload_key is None and res.upload_bytes == 0
    row = raw_sqlite_row(db, "Orders", "1.0.0")
    assert row["IsOffloaded"] == 0 and row["OffloadKey"] is None
    ref.check_written_row(row, {}, has_blob_store=False, expected_state=data)
    assert restore_bytes(state, None) == data
    mem = MemoryStateStore(f"nb-{uuid.uuid4().hex}", record_offload_threshold=10)
    res = persist_bytes(mem, None, data, options=PersistOptions(compress=False, payload_threshold=10))
    assert (res.envelope_location, res.payload_location) == ("inline", "inline")
    ref.check_written_row(memory_raw_row(mem, "Orders", "1.0.0"), {}, has_blob_store=False, expected_state=data)


# =============================================================================================
# 4. Restore of rows built by hand, as Sekiban writes them
# =============================================================================================


@dataclasses.dataclass
class Variant:
    id: str
    row: str = "inline"          # record level: inline | blob
    payload: str = "inline"      # payload level: inline | blob
    fmt: str = "v10"             # v10 | v9 (gzip envelope)
    casing: str = "camel"        # camel | pascal
    codec: str = "gzip"          # gzip | raw (JSON payload bytes as they are)
    field: str = "base64"        # base64 | json (legacy payloadJson)
    keys: str = "content"        # content | guid | guid-prefix
    state: bytes = STATE
    version: str = "1.0.0"
    sizes: bool = True


def _variants() -> list:
    out = []
    for row in ("inline", "blob"):
        for payload in ("inline", "blob"):
            for fmt in ("v10", "v9"):
                for casing in ("camel", "pascal"):
                    out.append(Variant(f"row-{row}-payload-{payload}-{fmt}-{casing}", row, payload, fmt, casing))
    out += [
        Variant("raw-json-payload-inline", codec="raw"),
        Variant("raw-json-payload-offloaded", payload="blob", codec="raw"),
        Variant("raw-json-both-offloaded-pascal-v9", row="blob", payload="blob", codec="raw", casing="pascal",
                fmt="v9"),
        Variant("legacy-payloadJson", field="json", codec="raw", sizes=False),
        Variant("legacy-payloadJson-pascal-v9", field="json", codec="raw", casing="pascal", fmt="v9", sizes=False),
        Variant("legacy-payloadJson-row-offloaded", field="json", codec="raw", row="blob"),
        Variant("plus-escapes-raw", codec="raw", state=b'{"arrows":">>>>>>>>>>>>","x":"?>?>?>"}',
                version="1.0.0+build.7"),
        Variant("plus-escapes-gzip-row-offloaded", row="blob", version="2.0.0+sha.abc"),
        Variant("guid-payload-key", payload="blob", keys="guid"),
        Variant("guid-payload-key-prefix", payload="blob", keys="guid-prefix"),
        Variant("guid-record-key-prefix", row="blob", keys="guid-prefix"),
        Variant("guid-both-keys-prefix-v9", row="blob", payload="blob", keys="guid-prefix", fmt="v9"),
        Variant("guid-both-keys", row="blob", payload="blob", keys="guid", casing="pascal"),
        Variant("empty-state-gzip", state=b""),
        Variant("empty-state-raw", state=b"", codec="raw"),
        Variant("empty-state-offloaded-gzip", state=b"", payload="blob"),
        Variant("empty-state-legacy-json", state=b"", field="json", codec="raw"),
        Variant("big-unicode-state", state=("漢字😀+" * 5000).encode("utf-8"), row="blob", payload="blob"),
    ]
    return [pytest.param(v, id=v.id) for v in out]


def build_variant(hs: HandStore, v: Variant, name="CustomerDirectory") -> bytes:
    payload = gz(v.state) if v.codec == "gzip" else v.state
    if v.payload == "blob":
        if v.keys == "content":
            pkey = content_key(name, payload)
        else:
            pkey = ("snapshots/" if v.keys == "guid-prefix" else "") + f"{name}/{uuid.uuid4().hex}.bin"
        hs.put_blob(pkey, payload)
        env = envelope_offloaded(pkey, payload, name=name, version=v.version, casing=v.casing, v9=v.fmt == "v9")
    elif v.field == "json":
        env = envelope_inline(None, payload_json=v.state.decode("utf-8"), name=name, version=v.version,
                              casing=v.casing, v9=v.fmt == "v9", sizes=v.sizes, b64=None)
    else:
        env = envelope_inline(payload, name=name, version=v.version, casing=v.casing, v9=v.fmt == "v9",
                              sizes=v.sizes)
    row_key = None
    if v.row == "blob" and v.keys != "content":
        row_key = ("snapshots/" if v.keys == "guid-prefix" else "") + f"{name}/{v.version}/{uuid.uuid4().hex}.bin"
    hs.add(name, v.version, env, row_offload=v.row == "blob", row_key=row_key)
    return env


@pytest.mark.parametrize("v", _variants())
def test_restore_hand_built_variant(tmp_path, private_spool, v):
    hs = HandStore(tmp_path / "sekiban")
    env = build_variant(hs, v)
    if "plus" in v.id:
        assert b"\\u002B" in (gzip.decompress(env) if v.fmt == "v9" else env)
    state, blob = hs.open()
    # the oracle agrees with the hand-built row
    assert ref.read_row(hs.raw_row("CustomerDirectory", v.version), hs.blobs()) == v.state
    for verify in (False, True):
        out = tmp_path / f"out-{verify}.json"
        res = restore(state, blob, str(out), projector_name="CustomerDirectory", projector_version=v.version,
                      options=RestoreOptions(verify=verify))
        assert out.read_bytes() == v.state, v.id
        assert res.envelope_format == v.fmt
        assert res.envelope_casing == v.casing
        assert res.envelope_location == v.row and res.payload_location == v.payload
        assert res.payload_gzip == (v.codec == "gzip")
        assert res.original_size_bytes == len(v.state)
        if verify and v.keys == "content":
            if v.payload == "blob":
                assert "payload-sha256" in res.verified
            if v.row == "blob":
                assert "envelope-sha256" in res.verified
    # and without --version (the only active row)
    assert restore_bytes(state, blob, name="CustomerDirectory", version=None) == v.state


@pytest.mark.parametrize("row_level,payload_level", LEVELS)
@pytest.mark.parametrize("target", ["path", "stream"])
def test_restore_leaves_no_temp_files(tmp_path, private_spool, row_level, payload_level, target):
    """Restore spools the inline payload to a private temp file; it must be deleted afterwards
    (it holds the snapshot's bytes, and counts against the spool guards until someone cleans it)."""
    hs = HandStore(tmp_path / "sekiban")
    build_variant(hs, Variant("x", row=row_level, payload=payload_level))
    state, blob = hs.open()
    out = str(tmp_path / "out.json") if target == "path" else io.BytesIO()
    restore(state, blob, out, projector_name="CustomerDirectory", spool=Spool(str(private_spool)))
    assert spool_files(private_spool) == []


def test_restore_base64_wins_over_payload_json(tmp_path):
    """Format page: payload = decode(payloadBase64), else payloadJson. An envelope carrying both (in
    Sekiban's property order, payloadJson first) must restore the Base64 payload, as the oracle does."""
    hs = HandStore(tmp_path)
    env = envelope_inline(gz(STATE), name="P", version="1", payload_json='{"stale":true}')
    hs.add("P", "1", env)
    state, blob = hs.open()
    assert ref.read_row(hs.raw_row("P", "1"), {}) == STATE
    assert restore_bytes(state, blob, name="P", version="1") == STATE


def test_restore_tolerates_unknown_fields_and_missing_flag(tmp_path):
    """Liberal reading: unknown properties ignored, isOffloaded absent (inferred), sizes absent."""
    hs = HandStore(tmp_path)
    payload = gz(STATE)
    inline = {"futureField": {"a": [1, 2, {"b": None}]}, "payloadBase64": base64.b64encode(payload).decode(),
              "projectorName": "P", "projectorVersion": "1", "version": 42}
    env = ref.stj_dumps({"$schema": "x", "inlineState": inline, "offloadedState": None}).encode()
    hs.add("P", "1", env)
    state, blob = hs.open()
    assert restore_bytes(state, blob, name="P", version="1") == STATE


def test_restore_old_schema_without_control_columns(tmp_path):
    """A SQLite file from before Generation/Lifecycle/Revision existed is read as it is."""
    hs = HandStore(tmp_path, control=False)
    hs.add("P", "1", envelope_inline(gz(STATE), name="P", version="1"))
    state, blob = hs.open()
    assert restore_bytes(state, blob, name="P", version=None) == STATE


def test_restore_picks_newest_active_version_and_refuses_tombstones(tmp_path):
    hs = HandStore(tmp_path)
    for version, events, lifecycle in (("1.0.0", 10, 0), ("2.0.0", 30, 0), ("3.0.0", 20, 0), ("4.0.0", 99, 1)):
        hs.add("Orders", version, envelope_inline(gz(version.encode()), name="Orders", version=version,
                                                  events=events), events=events, lifecycle=lifecycle)
    # another service's row with more events must not be picked
    hs.add("Orders", "9.0.0", envelope_inline(gz(b"other service"), name="Orders", version="9.0.0", events=500),
           events=500, service_id="other-svc")
    state, blob = hs.open()
    assert restore_bytes(state, blob, version=None) == b"2.0.0"
    assert restore_bytes(state, blob, version="3.0.0") == b"3.0.0"
    with pytest.raises(TombstonedError):
        restore_bytes(state, blob, version="4.0.0")
    assert restore_bytes(state, blob, version="4.0.0", include_tombstoned=True) == b"4.0.0"
    with pytest.raises(NotFoundError):
        restore_bytes(state, blob, version="9.0.0")
    other, _ = hs.open(service_id="other-svc")
    assert restore_bytes(other, blob, version=None) == b"other service"
    with pytest.raises(NotFoundError):
        restore_bytes(state, blob, name="Nobody", version=None)


def test_restore_error_types(tmp_path):
    """Library contract: each expected failure is a specific SekiopsError subclass, naming where."""
    hs = HandStore(tmp_path)
    payload = gz(STATE)
    hs.add("Mismatch", "2.0.0", envelope_inline(payload, name="Mismatch", version="1.0.0"))
    hs.add("NoBlob", "1", envelope_offloaded(content_key("NoBlob", payload), payload, name="NoBlob", version="1"))
    hs.add("Corrupt", "1", envelope_inline(payload[:-9], name="Corrupt", version="1", decoded=STATE))
    state, blob = hs.open()
    for name, version, exc in (("Mismatch", "2.0.0", VersionMismatchError), ("NoBlob", "1", BlobNotFoundError),
                               ("Corrupt", "1", CorruptSnapshotError)):
        out = tmp_path / f"{name}.out"
        with pytest.raises(exc) as ei:
            restore(state, blob, str(out), projector_name=name, projector_version=version)
        assert isinstance(ei.value, SekiopsError) and name in str(ei.value)
        assert not out.exists()


def test_restore_all_tombstoned_is_not_found(tmp_path):
    hs = HandStore(tmp_path)
    hs.add("Orders", "1", envelope_inline(gz(b"x"), name="Orders", version="1"), lifecycle=1)
    state, blob = hs.open()
    with pytest.raises(NotFoundError):
        restore_bytes(state, blob, version=None)


# =============================================================================================
# 5. Bounded memory: a 120 MB inline payloadBase64 envelope, restored in a subprocess
# =============================================================================================


def _gzip_compressobj():
    try:
        from isal import isal_zlib
        return isal_zlib.compressobj(1, zlib.DEFLATED, 31)
    except ImportError:  # pragma: no cover
        return zlib.compressobj(1, zlib.DEFLATED, 31)


@pytest.mark.slow
def test_restore_120mb_inline_envelope_in_bounded_memory(tmp_path, private_spool, reclaim):
    hs = HandStore(tmp_path / "sekiban")
    work = tmp_path / "work"
    work.mkdir()
    payload_path, env_path = work / "payload.gz", work / "envelope.json"
    rng = random.Random(120)
    raw_hash, raw_len = hashlib.sha256(), 0
    comp = _gzip_compressobj()
    with open(payload_path, "wb") as p:
        for _ in range(160):  # 160 MiB of hex text -> ~86 MiB of gzip -> ~120 MB of envelope
            chunk = rng.randbytes(MB // 2).hex().encode()
            raw_hash.update(chunk)
            raw_len += len(chunk)
            p.write(comp.compress(chunk))
        p.write(comp.flush())
    payload_len = payload_path.stat().st_size
    meta = sekiban_meta("Big", "1.0.0", 42, raw_len, payload_len)
    with open(env_path, "wb") as e, open(payload_path, "rb") as p:
        e.write(b'{"isOffloaded":false,"inlineState":{"payloadJson":null,"payloadBase64":"')
        for chunk in iter(lambda: p.read(3 * 256 * 1024), b""):
            e.write(base64.b64encode(chunk).replace(b"+", b"\\u002B"))
        e.write(b'",' + ref.stj_dumps(meta)[1:-1].encode() + b'},"offloadedState":null}')
    env_len = env_path.stat().st_size
    assert env_len >= 120 * 1000 * 1000
    hs.insert("Big", "1.0.0", None, state_file=env_path)
    hs.add("Tiny", "1.0.0", envelope_inline(gz(b'{"tiny":true}'), name="Tiny", version="1.0.0"))
    env = cli_env(private_spool)
    tiny = run_cli(["restore", "--state", hs.state_url, "--projector", "Tiny", "--out", work / "tiny.json"], env=env)
    assert tiny.rc == 0, tiny.err
    big = run_cli(["restore", "--state", hs.state_url, "--projector", "Big", "--out", work / "big.json",
                   "--verify"], env=env, timeout=300)
    assert big.rc == 0, big.err
    out = work / "big.json"
    assert out.stat().st_size == raw_len and sha256_file(out) == raw_hash.hexdigest()
    summary = json.loads(big.out)
    assert summary["payload_source"] == "base64" and summary["envelope_bytes"] == env_len
    growth_mb = (big.maxrss_kb - tiny.maxrss_kb) / 1024
    assert growth_mb <= 64, f"restore of a {env_len} B inline envelope grew RSS by {growth_mb:.0f} MB"


# =============================================================================================
# 6. Failure semantics
# =============================================================================================


class Counter:
    """Wraps a bound method: counts calls; ``fail`` decides per call whether to raise instead."""

    def __init__(self, fn, fail=lambda n: False, exc=lambda n: StoreUnavailableError(f"injected failure #{n}")):
        self.fn, self.fail, self.exc, self.calls = fn, fail, exc, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail(self.calls):
            raise self.exc(self.calls)
        return self.fn(*args, **kwargs)


def test_blob_upload_failure_writes_no_row(embedded, private_spool, monkeypatch):
    state, blob, db, blob_dir = embedded
    persist_bytes(state, blob, b'{"v":1}', events=1)  # an existing row that must survive untouched
    before = sqlite_fingerprint(db)
    writes = Counter(blob.write, fail=lambda n: True,
                     exc=lambda n: StoreUnavailableError(f"{blob.location}: connection reset while uploading"))
    monkeypatch.setattr(blob, "write", writes)
    with pytest.raises(StoreUnavailableError, match="uploading"):
        persist_bytes(state, blob, noise(5000), events=2, options=PersistOptions(payload_threshold=100, compress=False))
    assert writes.calls == 1
    assert sqlite_fingerprint(db) == before
    assert dir_listing(blob_dir) == {}
    assert spool_files(private_spool) == []
    assert restore_bytes(state, blob) == b'{"v":1}'


def test_blob_upload_failpoint_in_subprocess(tmp_path, private_spool):
    """SEKIOPS_FAILPOINTS=mid_upload=raise: exit 2, one error line, no row, no blob (not even a part file)."""
    db, blob_dir, inp = tmp_path / "s.db", tmp_path / "blobs", tmp_path / "in.json"
    inp.write_bytes(exact_json(50_000))
    for fp in ("mid_upload=raise", "after_spool=raise"):
        r = run_cli(["persist", "--state", f"sqlite:///{db}", "--blob", blob_dir, "--projector", "Orders",
                     "--version", "1", "--events-processed", "5", "--last-sortable-unique-id", SLUI, "--in", inp,
                     "--payload-threshold", "100"], env=cli_env(private_spool, SEKIOPS_FAILPOINTS=fp))
        assert r.rc == 2, (fp, r.err)
        assert len(r.err_lines) == 1 and r.err_lines[0].startswith("error: "), r.err
        assert "Traceback" not in r.err
        assert sqlite_fingerprint(db)[0] in (0, -1)
        assert dir_listing(blob_dir) == {}, fp
        assert spool_files(private_spool) == []


def test_crash_after_spool_leaves_orphan_cleaned_by_next_start(tmp_path, private_spool):
    db, inp = tmp_path / "s.db", tmp_path / "in.json"
    inp.write_bytes(exact_json(50_000))
    r = run_cli(["persist", "--state", f"sqlite:///{db}", "--projector", "Orders", "--version", "1",
                 "--events-processed", "5", "--last-sortable-unique-id", SLUI, "--in", inp],
                env=cli_env(private_spool, SEKIOPS_FAILPOINTS="after_spool=kill"))
    assert r.rc == -signal.SIGKILL
    leftovers = spool_files(private_spool)
    assert leftovers, "the killed persist should have left its temp file"
    sp = Spool(str(private_spool))
    assert sp.orphans_removed == len(leftovers)
    assert spool_files(private_spool) == []
    assert sqlite_fingerprint(db)[0] in (0, -1)


def _offload_everything(tmp_path):
    db = tmp_path / "ext.db"
    state = open_state_store(f"sqlite:///{db}?record_threshold=100")
    blob = LocalBlobStore(str(tmp_path / "blobs"))
    return state, blob, db


def test_transient_row_failure_retries_with_same_keys(tmp_path, private_spool, monkeypatch):
    state, blob, db = _offload_everything(tmp_path)
    uploads = Counter(blob.write)
    writes = Counter(state.write, fail=lambda n: n == 1)
    monkeypatch.setattr(blob, "write", uploads)
    monkeypatch.setattr(state, "write", writes)
    data = noise(4000)
    res = persist_bytes(state, blob, data, options=PersistOptions(payload_threshold=100,
                                                                  backoff_seconds=0.001))
    assert res.row_attempts == 2 and writes.calls == 2
    assert uploads.calls == 2  # payload blob + envelope blob, each once
    assert set(dir_blobs(blob.root)) == {res.payload_key, res.envelope_key}
    assert restore_bytes(state, blob, verify=True) == data


def test_transient_row_failure_mid_stream_rolls_back_and_rewinds(embedded, monkeypatch):
    """The first attempt fails after the store consumed part of the inline envelope stream: the
    retry must rewind it, and the stored row must be the complete envelope."""
    state, blob, db, blob_dir = embedded
    real_write = state.write
    calls = []

    class Breaking(io.RawIOBase):
        def __init__(self, src):
            self.src, self.n = src, 0

        def readable(self):
            return True

        def read(self, n=-1):
            data = self.src.read(n)
            self.n += len(data)
            if self.n > 1000:
                raise StoreUnavailableError("injected: connection dropped mid-row")
            return data

    def flaky(row, stream, length, expected):
        calls.append(length)
        if len(calls) == 1:
            return real_write(row, Breaking(stream), length, expected)
        return real_write(row, stream, length, expected)

    monkeypatch.setattr(state, "write", flaky)
    data = exact_json(200_000)
    res = persist_bytes(state, blob, data, options=PersistOptions(backoff_seconds=0.001))
    assert res.row_attempts == 2
    ref.check_written_row(raw_sqlite_row(db, "Orders", "1.0.0"), {}, expected_state=data)


def test_row_failure_exhausted_names_kept_blob_keys(tmp_path, private_spool, monkeypatch):
    state, blob, db = _offload_everything(tmp_path)
    uploads = Counter(blob.write)
    writes = Counter(state.write, fail=lambda n: True)
    monkeypatch.setattr(blob, "write", uploads)
    monkeypatch.setattr(state, "write", writes)
    data = noise(4000)
    with pytest.raises(StoreUnavailableError) as ei:
        persist_bytes(state, blob, data, options=PersistOptions(payload_threshold=100, row_attempts=3,
                                                                backoff_seconds=0.001))
    assert writes.calls == 3 and uploads.calls == 2
    kept = set(dir_blobs(blob.root))
    assert len(kept) == 2
    for key in kept:
        assert key in str(ei.value), f"error does not name kept blob {key}: {ei.value}"
    assert sqlite_fingerprint(db)[0] == 0
    assert spool_files(private_spool) == []
    # a later retry (store healthy again) reuses the content-addressed keys
    monkeypatch.setattr(state, "write", writes.fn)
    res = persist_bytes(state, blob, data, options=PersistOptions(payload_threshold=100))
    assert {res.payload_key, res.envelope_key} == kept
    assert set(dir_blobs(blob.root)) == kept
    assert restore_bytes(state, blob, verify=True) == data


def test_row_failure_on_busy_sqlite_names_kept_blob(tmp_path, private_spool):
    """A real transient failure: another connection holds SQLite's write lock for the whole persist."""
    db = tmp_path / "s.db"
    state = SqliteStateStore(str(db), timeout=0.05)
    blob = LocalBlobStore(str(tmp_path / "blobs"))
    locker = sqlite3.connect(str(db), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailableError) as ei:
            persist_bytes(state, blob, noise(4000), options=PersistOptions(payload_threshold=100,
                                                                           backoff_seconds=0.01))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    (key,) = dir_blobs(tmp_path / "blobs")
    assert key in str(ei.value) and "busy" in str(ei.value)
    assert sqlite_fingerprint(db)[0] == 0
    res = persist_bytes(state, blob, noise(4000), options=PersistOptions(payload_threshold=100))
    assert res.payload_key == key


def test_temp_delete_failure_warns_and_next_spool_cleans(embedded, private_spool, monkeypatch, caplog):
    state, blob, db, blob_dir = embedded
    real_unlink = os.unlink
    refused = []

    def unlink(path, *a, **kw):
        if str(path).startswith(str(private_spool)):
            refused.append(str(path))
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *a, **kw)

    monkeypatch.setattr(spool_mod.os, "unlink", unlink)
    sp = Spool(str(private_spool))
    data = exact_json(10_000)
    with caplog.at_level(logging.WARNING, logger="sekiops.spool"):
        res = persist_bytes(state, blob, data, spool=sp)
    assert res.revision == 1
    assert refused and sp.delete_failures == len(refused)
    assert any("could not delete temp file" in r.getMessage() for r in caplog.records)
    assert sorted(spool_files(private_spool)) == sorted(os.path.basename(p) for p in refused)
    monkeypatch.setattr(spool_mod.os, "unlink", real_unlink)
    assert Spool(str(private_spool)).orphans_removed == len(refused)
    assert spool_files(private_spool) == []
    assert restore_bytes(state, blob) == data


@pytest.mark.parametrize("store", ["sqlite", "memory"])
@pytest.mark.parametrize("existing", [False, True], ids=["create", "update"])
def test_lost_compare_and_swap_overwrites_nothing(tmp_path, store, existing):
    if store == "sqlite":
        mine = SqliteStateStore(str(tmp_path / "s.db"))
        theirs = SqliteStateStore(str(tmp_path / "s.db"))
        blob = LocalBlobStore(str(tmp_path / "blobs"))
    else:
        name = f"cas-{uuid.uuid4().hex}"
        mine, theirs, blob = MemoryStateStore(name), MemoryStateStore(name), MemoryBlobStore(name)
    if existing:
        persist_bytes(mine, blob, b'{"gen":0}', events=1)

    def body(out):  # runs between persist's read of the row and its compare-and-swap write
        out.write(b'{"gen":"mine"}')
        persist_bytes(theirs, blob, b'{"gen":"theirs"}', events=7)

    with pytest.raises(ConcurrencyConflictError):
        persist(mine, blob, body, projector_name="Orders", projector_version="1.0.0", events_processed=5,
                last_sortable_unique_id=SLUI)
    row = mine.get("Orders", "1.0.0")
    assert row.events_processed == 7 and row.revision == (2 if existing else 1)
    assert restore_bytes(mine, blob) == b'{"gen":"theirs"}'


def test_tombstoned_row_is_never_overwritten(embedded):
    state, blob, db, blob_dir = embedded
    persist_bytes(state, blob, b'{"v":1}', events=1)
    state.tombstone(state.get("Orders", "1.0.0"))
    before = sqlite_fingerprint(db)
    with pytest.raises(TombstonedError):
        persist_bytes(state, blob, noise(5000), events=2,
                      options=PersistOptions(payload_threshold=100, compress=False))
    assert sqlite_fingerprint(db) == before and dir_listing(blob_dir) == {}
    with pytest.raises(TombstonedError):
        restore_bytes(state, blob)
    assert restore_bytes(state, blob, include_tombstoned=True) == b'{"v":1}'


def test_tombstoned_between_read_and_write(embedded):
    state, blob, db, blob_dir = embedded
    persist_bytes(state, blob, b'{"v":1}', events=1)
    other = SqliteStateStore(str(db))

    def body(out):
        out.write(b'{"v":2}')
        other.tombstone(other.get("Orders", "1.0.0"))

    with pytest.raises(TombstonedError):
        persist(state, blob, body, projector_name="Orders", projector_version="1.0.0", events_processed=2,
                last_sortable_unique_id=SLUI)
    assert restore_bytes(state, blob, include_tombstoned=True) == b'{"v":1}'


def test_events_processed_regression_guard(embedded):
    state, blob, db, blob_dir = embedded
    persist_bytes(state, blob, b'{"v":100}', events=100)
    before = sqlite_fingerprint(db)
    with pytest.raises(GuardRefusedError, match="allow-regress"):
        persist_bytes(state, blob, b'{"v":50}', events=50)
    assert sqlite_fingerprint(db) == before
    res = persist_bytes(state, blob, b'{"v":100b}', events=100)  # equal is not a regression
    assert res.events_processed == 100
    res = persist_bytes(state, blob, b'{"v":50}', events=50, options=PersistOptions(allow_regress=True))
    assert res.events_processed == 50 and restore_bytes(state, blob) == b'{"v":50}'


# --- the spool ----------------------------------------------------------------------------------


def test_spool_max_files_guard(embedded, private_spool):
    state, blob, db, blob_dir = embedded
    holder = Spool(str(private_spool), max_files=3)
    held = [holder.create("held") for _ in range(3)]
    try:
        with pytest.raises(SpoolError, match="limit 3"):
            holder.create("one-more")
        with pytest.raises(SpoolError):
            persist_bytes(state, blob, b'{"x":1}', spool=Spool(str(private_spool), max_files=3))
    finally:
        for f in held:
            f.close()
    assert sqlite_fingerprint(db)[0] == 0
    assert spool_files(private_spool) == []


def test_spool_max_total_bytes_guard(embedded, private_spool):
    state, blob, db, blob_dir = embedded
    sp = Spool(str(private_spool), max_total_bytes=4096)
    f = sp.create("held")
    f.file.write(b"x" * 4096)
    f.file.flush()
    try:
        with pytest.raises(SpoolError, match="4096"):
            sp.create("more")
        with pytest.raises(SpoolError):
            persist_bytes(state, blob, b'{"x":1}', spool=sp)
    finally:
        f.close()
    assert sqlite_fingerprint(db)[0] == 0


def test_spool_min_free_bytes_guard(embedded, tmp_path, private_spool):
    state, blob, db, blob_dir = embedded
    sp = Spool(str(private_spool), min_free_bytes=1 << 62)
    with pytest.raises(SpoolError, match="free"):
        sp.create("x")
    with pytest.raises(SpoolError):
        persist_bytes(state, blob, b'{"x":1}', spool=sp)
    assert sqlite_fingerprint(db)[0] == 0 and dir_listing(blob_dir) == {}
    persist_bytes(state, blob, b'{"x":1}')
    out = tmp_path / "out.json"
    with pytest.raises(SpoolError):
        restore(state, blob, str(out), projector_name="Orders", spool=sp)
    assert not out.exists()


def test_spool_files_private_locked_and_unpredictable(embedded, private_spool):
    state, blob, db, blob_dir = embedded
    seen = {}

    def body(out):
        out.write(b'{"x":1}')
        st = os.stat(private_spool)
        seen["dir_mode"] = stat.S_IMODE(st.st_mode)
        for name in spool_files(private_spool):
            p = private_spool / name
            seen.setdefault("files", []).append((name, stat.S_IMODE(os.lstat(p).st_mode)))
            fd = os.open(p, os.O_RDONLY)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the persist in flight
            finally:
                os.close(fd)

    persist(state, blob, body, projector_name="Orders", projector_version="1.0.0", events_processed=1,
            last_sortable_unique_id=SLUI)
    assert seen["dir_mode"] == 0o700
    assert seen["files"], "no temp file while the body was written"
    for name, mode in seen["files"]:
        assert mode == 0o600, name
        assert re.fullmatch(r"snapshot-Orders-[0-9a-f]{32}\.tmp", name), name
    sp = Spool(str(private_spool))
    names = set()
    for _ in range(5):
        with sp.create("Orders") as f:
            names.add(os.path.basename(f.path))
    assert len(names) == 5
    assert spool_files(private_spool) == []


def test_spool_dir_permissions_are_tightened_and_symlinks_refused(tmp_path):
    d = tmp_path / "loose"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    Spool(str(d))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(SpoolError, match="symlink"):
        Spool(str(link))


_HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_spool_start_removes_unlocked_orphans_keeps_locked(tmp_path):
    d = tmp_path / "spool"
    Spool(str(d))
    orphan = d / f"snapshot-Orders-{'a' * 32}.tmp"
    orphan.write_bytes(b"left by a crashed run")
    locked = d / f"snapshot-Orders-{'b' * 32}.tmp"
    other = d / "notes.txt"
    other.write_text("not ours")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(locked)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        sp = Spool(str(d))
        assert sp.orphans_removed == 1
        assert not orphan.exists()
        assert locked.exists(), "a temp file locked by a live process was removed"
        assert other.exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert Spool(str(d)).orphans_removed == 1  # the holder died: now it is an orphan
    assert not locked.exists()


# =============================================================================================
# 7. The synthetic state generator used above
# =============================================================================================


def test_synth_write_state_terminates_for_any_target():
    """Regression (fixed in 765a925): write_state looped forever unless the target landed exactly on
    a 500-item block boundary. Run in a child with a timeout so a regression cannot hang the suite."""
    code = ("import io, json\nfrom sekiops.ops import synth\n"
            "for target in (0, 500, 2000, 100001, 2 * 1024 * 1024 + 7):\n"
            "    b = io.BytesIO()\n    n = synth.write_state(b, target)\n"
            "    assert n == len(b.getvalue()) and n <= max(target, 200), (target, n)\n"
            "    assert target < 5000 or n > target - 4096, (target, n)\n"
            "    json.loads(b.getvalue())\nprint('ok')")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        pytest.fail("synth.write_state did not return within 60 s (infinite loop)")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# =============================================================================================
# 8. Measuring a child's peak memory
# =============================================================================================

_SAMPLE_FROM_BIG_PARENT = r"""
import subprocess, sys
from sekiops.metrics import sample_command
ballast = bytearray(400 * 1024 * 1024)
ballast[::4096] = b"\x01" * len(ballast[::4096])  # the caller's RSS is now ~400 MB
rc, frame, peak = sample_command([sys.executable, "-c", "pass"], stdout=subprocess.DEVNULL)
print(rc, peak)
"""


def test_metrics_sample_command_does_not_report_the_callers_memory():
    """ru_maxrss from wait4 carries the spawning process's RSS high-water mark (fork copies the page
    counts, vfork/posix_spawn exec from the parent's mm): sample_command, called from a big process
    (a notebook kernel), must not report that as the child's peak. (run_cli above uses a launcher.)"""
    r = subprocess.run([sys.executable, "-c", _SAMPLE_FROM_BIG_PARENT], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    rc, peak = map(int, r.stdout.split())
    assert rc == 0
    assert peak < 100 * MB, f"`python -c pass` reported a {peak // MB} MB peak (the caller's, not its own)"
