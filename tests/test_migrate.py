"""Guarded migrations (issue 7): offload, reencode, copy, gc-blobs, with real stores.

Backends: the embedded default (SQLite + local directory), PostgreSQL + Azurite and Cosmos DB
(cosmosdb-server) + Azurite. Crash tests run the CLI in a subprocess and SIGKILL it — at random
times (1,000 rows) or at the runner's fail points — then resume; afterwards every row must have
been written exactly once and restore to the payload it had before.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from sekiops.blob import open_blob_store
from sekiops.errors import GuardRefusedError, SekiopsError
from sekiops.format.envelope import EnvelopeMeta, inline_envelope_bytes, offloaded_envelope_bytes, read_envelope
from sekiops.format.record import SnapshotRow
from sekiops.ops.migrate import Controls, RunOptions, make_plan, open_endpoints, run_plan
from sekiops.ops.migrate.journal import Journal
from sekiops.ops.migrate.plan import open_envelope
from sekiops.ops.migrate.rollback import open_rollback_endpoints, run_rollback
from sekiops.pipeline.persist import PersistOptions, persist
from sekiops.pipeline.restore import restore
from sekiops.state import open_state_store
from sekiops.state.base import iter_rows

FAST_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# --- data ----------------------------------------------------------------------------------------


def state_json(i: int, tag: str = "") -> bytes:
    return json.dumps({"id": i, "tag": tag, "items": [f"item-{i}-{k}" for k in range(i % 9 + 3)]}).encode()


def envelope(name: str, version: str, events: int, state: bytes, fmt: str) -> bytes:
    """Envelope bytes in one of the formats Sekiban has written: v10, v9 (gzip), json (payloadJson)."""
    payload = gzip.compress(state, mtime=0)
    meta = EnvelopeMeta(projector_name=name, projector_version=version, version=events,
                        last_sortable_unique_id="0" * 30, original_size_bytes=len(state),
                        compressed_size_bytes=len(payload))
    env = inline_envelope_bytes(meta, payload)
    if fmt == "v9":
        return gzip.compress(env, mtime=0)
    if fmt == "json":
        doc = json.loads(env)
        doc["inlineState"].update(payloadBase64=None, payloadJson=state.decode(), compressedSizeBytes=len(state))
        return json.dumps(doc).encode()
    return env


def put_rows(state, n: int, fmts=("v10",), names: int = 5, tag: str = "", prefix: str = "") -> list[str]:
    items = []
    for i in range(n):
        name, version = f"{prefix}Proj{i % names}", f"v{i}"
        env = envelope(name, version, i + 1, state_json(i, tag), fmts[i % len(fmts)])
        row = SnapshotRow(service_id=state.service_id, projector_name=name, projector_version=version,
                          events_processed=i + 1, last_sortable_unique_id="0" * 30,
                          original_size_bytes=len(env), compressed_size_bytes=len(env), build_source="GRAIN")
        state.write(row, io.BytesIO(env), len(env), None)
        items.append(f"{name}/{version}")
    return items


def payload_sha(state, blob, name: str, version: str) -> str:
    out = io.BytesIO()
    restore(state, blob, out, projector_name=name, projector_version=version)
    return hashlib.sha256(out.getvalue()).hexdigest()


def stored_payload_sha(state, blob, row) -> str:
    """sha256 of the payload bytes exactly as stored (Base64-decoded, or the payloadJson text)."""
    sink = io.BytesIO()
    with open_envelope(state, blob, row) as f:
        read_envelope(f, row.where, payload_sink=sink)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def snapshot(state, blob) -> dict:
    """item -> (raw envelope bytes as stored, restored payload sha256, row)."""
    out = {}
    for row in iter_rows(state):
        with open_envelope(state, blob, row) as f:
            raw = f.read()
        out[f"{row.projector_name}/{row.projector_version}"] = (
            raw, payload_sha(state, blob, row.projector_name, row.projector_version), row)
    return out


def journal_records(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def done_counts(path: str, phase: str = "migrate") -> dict:
    counts: dict = {}
    for rec in journal_records(path):
        if rec["t"] == "done" and rec.get("phase") == phase:
            counts[rec["item"]] = counts.get(rec["item"], 0) + 1
    return counts


def cli(*args, env=None, check=True, timeout=120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sekiops", *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"sekiops {' '.join(args)} -> {proc.returncode}\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# --- backends ------------------------------------------------------------------------------------


class Deployment:
    """URLs of one state store + blob store, and openers for them."""

    def __init__(self, kind: str, state_url: str, blob_url: str, service_id: str):
        self.kind, self.state_url, self.blob_url, self.service_id = kind, state_url, blob_url, service_id
        self._opened = []

    def state(self, service_id: str | None = None, url: str | None = None):
        store = open_state_store(url or self.state_url, service_id=service_id or self.service_id)
        self._opened.append(store)
        return store

    def blob(self):
        store = open_blob_store(self.blob_url)
        self._opened.append(store)
        return store

    def close(self):
        for s in self._opened:
            s.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("cosmos", marks=pytest.mark.cosmos)])
def deployment(request, tmp_path):
    dep = make_deployment(request.param, request, tmp_path)
    yield dep
    dep.close()


def make_deployment(kind: str, request, tmp_path, record_threshold: int | None = None) -> Deployment:
    sid = "svc-" + uuid.uuid4().hex[:10]
    name = "t" + uuid.uuid4().hex[:12]
    if kind == "sqlite":
        q = f"?record_threshold={record_threshold}" if record_threshold is not None else ""
        return Deployment(kind, f"sqlite:///{tmp_path}/{name}.db{q}", f"file://{tmp_path}/{name}-blobs", sid)
    request.getfixturevalue("azure_storage_env")
    blob_url = f"azblob://{name}"
    if kind == "postgres":
        return Deployment(kind, request.getfixturevalue("postgres_server").url, blob_url, sid)
    server = request.getfixturevalue("cosmos_env")
    host = server.endpoint.split("://", 1)[1]
    return Deployment(kind, f"cosmos+https://{host}/db{name}/multiProjectionStates?verify=false", blob_url, sid)


@pytest.fixture(autouse=True)
def private_spool(tmp_path, monkeypatch):
    spool = os.path.join(FAST_DIR or str(tmp_path), "sekiops-spool-" + uuid.uuid4().hex[:8])
    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", spool)
    monkeypatch.chdir(tmp_path)
    yield
    import shutil

    shutil.rmtree(spool, ignore_errors=True)


# --- dry run -------------------------------------------------------------------------------------


def tree(path: str) -> dict:
    out = {}
    for d, _, files in os.walk(path):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.mark.parametrize("kind,extra", [
    ("offload", ["--threshold", "100", "--payload-level"]),
    ("offload", ["--threshold", "100"]),
    ("reencode", []),
    ("copy", ["--to-service-id", "other"]),
    ("gc-blobs", ["--services", "SID", "--grace", "0"]),
])
def test_dry_run_writes_nothing(tmp_path, kind, extra):
    work = tmp_path / "work"
    work.mkdir()
    db = f"sqlite:///{work}/state.db" + ("?record_threshold=100" if extra == ["--threshold", "100"] else "")
    blob_url = f"file://{work}/blobs"
    state = open_state_store(db, service_id="svc-a")
    put_rows(state, 12, fmts=("v10", "v9", "json"))
    state.close()
    blob = open_blob_store(blob_url)
    blob.put_raw("Proj0/" + "a" * 64 + ".bin", b"orphan")
    before = tree(str(tmp_path))
    extra = [e.replace("SID", "svc-a") for e in extra]
    common = [kind, "--state", db, "--blob", blob_url, "--service-id", "svc-a", *extra]
    plan = json.loads(cli("migrate", "plan", *common, "--format", "json").stdout)
    assert plan["estimate"]["rows"] > 0 and plan["items"], plan
    assert {"bytesUploaded", "bytesFreedRows", "cosmosRU", "seconds"} <= set(plan["estimate"])
    out = json.loads(cli("migrate", "run", *common, "--format", "json").stdout)
    assert out["result"]["status"] == "dry-run"
    text = cli("migrate", "run", *common).stdout
    assert "dry run: nothing was written" in text and "estimated time" in text
    assert "Cosmos" not in text  # no Cosmos store involved: its limits and RU are not this target's
    assert tree(str(tmp_path)) == before  # no row, blob, journal, backup or audit file appeared


# --- crash and resume ----------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 8])
def test_reencode_1000_rows_killed_at_random_and_resumed(tmp_path, concurrency):
    """SIGKILL the CLI at random moments until it completes: each row migrated exactly once,
    one row at a time and with eight in flight (the journal is order-independent)."""
    base = tmp_path if FAST_DIR is None else os.path.join(FAST_DIR, "sekiops-mig-" + uuid.uuid4().hex[:8])
    os.makedirs(base, exist_ok=True)
    try:
        db = f"sqlite:///{base}/state.db"
        blob_url = f"file://{base}/blobs"
        journal = os.path.join(base, "reencode.jsonl")
        state = open_state_store(db)
        items = put_rows(state, 1000, fmts=("v9", "json"), names=20)
        blob = open_blob_store(blob_url)
        before = {k: v[1] for k, v in snapshot(state, blob).items()}
        stored_before = {f"{r.projector_name}/{r.projector_version}": stored_payload_sha(state, blob, r)
                         for r in iter_rows(state)}
        rng = random.Random(7)
        kills = 0
        args = [sys.executable, "-m", "sekiops", "migrate", "run", "reencode", "--state", db, "--blob", blob_url,
                "--execute", "--journal", journal, "--canary", "0", "--format", "json",
                "--concurrency", str(concurrency)]
        while True:
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:  # six runs killed at random moments, then one left to finish
                out, err = proc.communicate(timeout=rng.uniform(1.0, 4.0) if kills < 6 else 300)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills += 1
                continue
            assert proc.returncode == 0, err.decode()[-2000:]
            assert json.loads(out)["result"]["status"] == "complete"
            break
        assert kills >= 2  # the runs really were interrupted...
        assert len({r["run"] for r in journal_records(journal) if r["t"] == "done"}) >= 2  # ...mid-migration
        counts = done_counts(journal)
        assert set(counts) == set(items) and set(counts.values()) == {1}
        for row in iter_rows(state):
            assert row.revision == 2, f"{row.where} written {row.revision - 1} times"
            assert row.build_source == "SEKIOPS_MIGRATE"
            with state.open_state_stream(row) as f:
                env = read_envelope(f, row.where)
            assert not env.gzipped and env.payload_source == "base64"
            item = f"{row.projector_name}/{row.projector_version}"
            assert payload_sha(state, blob, row.projector_name, row.projector_version) == before[item]
            assert stored_payload_sha(state, blob, row) == stored_before[item]  # byte for byte
        state.close()
    finally:
        if FAST_DIR is not None:
            import shutil

            shutil.rmtree(base, ignore_errors=True)


def test_offload_killed_at_each_stage_resumes_and_rolls_back(deployment, tmp_path):
    """Fail points kill the run at every stage; the resumed run finishes; rollback restores the bytes."""
    state = deployment.state()
    blob = deployment.blob()
    items = put_rows(state, 8, fmts=("v10", "v9"))
    original = snapshot(state, blob)
    journal = str(tmp_path / "offload.jsonl")
    common = ["migrate", "run", "offload", "--state", deployment.state_url, "--blob", deployment.blob_url,
              "--service-id", deployment.service_id, "--threshold", "100", "--journal", journal, "--canary", "0"]
    if deployment.kind == "sqlite":  # strict Sekiban mode never offloads at record level
        common[common.index(deployment.state_url)] = deployment.state_url + "?record_threshold=100"
    for stage in ("migrate_after_begin", "migrate_after_write", "migrate_after_done"):
        env = {**os.environ, "SEKIOPS_FAILPOINTS": f"{stage}=kill"}
        proc = cli(*common, "--execute", env=env, check=False)
        assert proc.returncode == -signal.SIGKILL, (stage, proc.returncode, proc.stderr[-2000:])
    out = json.loads(cli(*common, "--execute", "--format", "json").stdout)
    assert out["result"]["status"] == "complete"
    counts = done_counts(journal)
    assert set(counts) == set(items) and set(counts.values()) == {1}
    done_after = {r["item"]: r["after"]["token"] for r in journal_records(journal) if r["t"] == "done"}
    assert all(r["verified"] for r in journal_records(journal) if r["t"] == "done")
    for item, (raw, sha, _) in original.items():
        name, version = item.split("/")
        row = state.get(name, version)
        assert row.is_offloaded and row.offload_key.startswith(item + "/")
        assert row.token == done_after[item]  # nothing wrote it after its one migration
        assert payload_sha(state, blob, name, version) == sha
        with blob.open_read(row.offload_key) as f:
            assert f.read() == raw  # the envelope moved byte for byte
    # rollback: dry run first, then for real (killed once in the middle), then a no-op rerun
    rb = ["migrate", "rollback", "--journal", journal, "--state", deployment.state_url, "--blob", deployment.blob_url]
    assert "dry run" in cli(*rb).stdout
    assert all(state.get(*i.split("/")).is_offloaded for i in items)
    proc = cli(*rb, "--execute", env={**os.environ, "SEKIOPS_FAILPOINTS": "migrate_after_write=kill"}, check=False)
    assert proc.returncode == -signal.SIGKILL
    out = json.loads(cli(*rb, "--execute", "--format", "json").stdout)
    assert out["result"]["status"] == "complete" and out["result"]["counts"]["failed"] == 0
    assert set(done_counts(journal, "rollback").values()) == {1}
    after = snapshot(state, blob)
    for item, (raw, sha, _row) in original.items():
        assert after[item][0] == raw and after[item][1] == sha
        assert not after[item][2].is_offloaded and after[item][2].build_source == "GRAIN"
    again = json.loads(cli(*rb, "--execute", "--format", "json").stdout)
    assert again["result"]["counts"]["done"] == 0


# --- concurrent writers --------------------------------------------------------------------------


def grain_persist(state, blob, name: str, version: str, events: int, tag: str) -> str:
    """What a live grain does: persist a new state with compare-and-swap. Returns its payload sha."""
    body = state_json(events, tag)
    persist(state, blob, lambda out: out.write(body), projector_name=name, projector_version=version,
            events_processed=events, last_sortable_unique_id="1" * 30,
            options=PersistOptions(payload_threshold=10**9, record_threshold=10**9))
    return hashlib.sha256(body).hexdigest()


def test_concurrent_writer_is_never_overwritten(deployment):
    state = deployment.state()
    blob = deployment.blob()
    items = put_rows(state, 9, fmts=("v9",))
    grain_state = deployment.state()  # the grain's own connection
    raced = {}

    def before_write(item, prep):  # a grain persists between our read and our write
        if int(item.projector_version[1:]) % 3 == 0:
            raced[item.item] = grain_persist(grain_state, blob, item.projector_name, item.projector_version,
                                             1000 + len(raced), "grain")

    with open_endpoints("reencode", deployment.state_url, deployment.blob_url,
                        service_id=deployment.service_id) as ep:
        plan = make_plan("reencode", ep)
        assert len(plan.items) == 9
        result = run_plan(plan, ep, RunOptions(execute=True, journal="race.jsonl", canary=0,
                                               hooks={"before_write": before_write}))
    assert result.status == "complete"
    assert result.counts["skipped"] == len(raced) == 3 and result.counts["done"] == 6
    skipped = {i["item"]: i["reason"] for i in result.items if i["result"] == "skipped"}
    assert set(skipped) == set(raced) and all("another writer" in r for r in skipped.values())
    audit = json.load(open(result.audit))
    assert sum(1 for i in audit["items"] if i["result"] == "skipped") == 3
    for item in items:
        name, version = item.split("/")
        row = state.get(name, version)
        if item in raced:
            assert row.build_source == "SEKIOPS_STREAM" and row.events_processed >= 1000
            assert payload_sha(state, blob, name, version) == raced[item]
        else:
            assert row.build_source == "SEKIOPS_MIGRATE"


def test_writer_thread_during_run_is_never_overwritten(tmp_path):
    """A grain persisting continuously while the run goes: its last write is always what remains."""
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    state = open_state_store(db)
    items = put_rows(state, 60, fmts=("json",), names=3)
    blob = open_blob_store(blob_url)
    last: dict[str, str] = {}
    stop = threading.Event()

    def grain():
        gs = open_state_store(db)
        rng = random.Random(3)
        n = 0
        while not stop.is_set():
            item = rng.choice(items)
            name, version = item.split("/")
            n += 1
            try:
                last[item] = grain_persist(gs, blob, name, version, 10_000 + n, f"g{n}")
            except SekiopsError:  # lost a race with the migration's write: a grain retries later
                pass
            time.sleep(0.003)
        gs.close()

    t = threading.Thread(target=grain)
    t.start()
    try:
        with open_endpoints("reencode", db, blob_url) as ep:
            result = run_plan(make_plan("reencode", ep), ep, RunOptions(execute=True, journal="t.jsonl", canary=0))
    finally:
        stop.set()
        t.join()
    assert result.status == "complete", result.message
    assert result.counts["failed"] == 0, [i for i in result.items if i["result"] == "failed"]
    for item, sha in last.items():
        assert payload_sha(state, blob, *item.split("/")) == sha, f"{item}: the grain's write was overwritten"
    assert result.counts["done"] + result.counts["skipped"] >= 1


# --- guards --------------------------------------------------------------------------------------


def test_canary_then_continue(tmp_path):
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    state = open_state_store(db)
    put_rows(state, 10, fmts=("v9",))
    common = ["migrate", "run", "reencode", "--state", db, "--blob", blob_url, "--execute", "--journal", "c.jsonl",
              "--format", "json"]
    first = json.loads(cli(*common, "--canary", "3").stdout)["result"]
    assert first["status"] == "canary" and first["counts"]["done"] == 3
    again = json.loads(cli(*common, "--canary", "3").stdout)["result"]
    assert again["status"] == "canary" and again["counts"]["done"] == 0  # needs --continue
    rest = json.loads(cli(*common, "--canary", "3", "--continue").stdout)["result"]
    assert rest["status"] == "complete" and rest["counts"]["done"] == 7
    assert all(r.build_source == "SEKIOPS_MIGRATE" for r in iter_rows(state))


def test_stop_and_pause_files_act_between_rows(tmp_path):
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    state = open_state_store(db)
    put_rows(state, 20, fmts=("v9",))
    pause, stopf = tmp_path / "pause", tmp_path / "stop"
    seen = []

    def progress(ev):
        seen.append(ev)
        if ev["event"] == "item" and ev["counts"]["done"] == 5:
            pause.touch()
        if ev["event"] == "paused":
            stopf.touch()

    with open_endpoints("reencode", db, blob_url) as ep:
        opts = RunOptions(execute=True, journal="p.jsonl", canary=0, pause_file=str(pause), stop_file=str(stopf),
                          concurrency=1)  # one at a time: the stop lands exactly after the fifth row
        result = run_plan(make_plan("reencode", ep), ep, opts, progress=progress)
        assert result.status == "stopped" and result.counts["done"] == 5
        assert any(e["event"] == "paused" for e in seen)
        # no half-migrated row: 5 rewritten, 15 untouched, none pending in the journal
        revs = sorted(r.revision for r in iter_rows(state))
        assert revs == [1] * 15 + [2] * 5
        assert not Journal.read("p.jsonl").pending("migrate")
        pause.unlink()
        stopf.unlink()
        controls = Controls()
        threading.Timer(0.3, controls.stop).start()  # the console's Stop button
        slow = RunOptions(execute=True, journal="p.jsonl", canary=0, rate=20)
        result = run_plan(make_plan("reencode", ep), ep, slow, controls=controls)
        assert result.status == "stopped" and 0 < result.counts["done"] < 15
        result = run_plan(make_plan("reencode", ep), ep, RunOptions(execute=True, journal="p.jsonl", canary=0))
    assert result.status == "complete"
    assert set(done_counts(str(tmp_path / "p.jsonl")).values()) == {1}
    assert all(r.revision == 2 for r in iter_rows(state))


def test_paused_means_nothing_in_flight_with_concurrency(tmp_path):
    """With 4 workers, "paused" is announced only after the items in flight finished: the done count
    the console shows at "paused" does not move while the pause lasts (browser suite: 5 == 4)."""
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    state = open_state_store(db)
    put_rows(state, 24, fmts=("v9",))
    controls = Controls()
    at_pause, later = [], []

    def progress(ev):
        if ev["event"] == "item" and ev["counts"]["done"] == 6:
            controls.pause()
        if ev["event"] == "paused" and not at_pause:
            at_pause.append(ev["counts"]["done"])

            def look_then_stop():
                later.append(sum(1 for r in iter_rows(state) if r.revision == 2))
                controls.stop()
            threading.Timer(1.0, look_then_stop).start()

    with open_endpoints("reencode", db, blob_url) as ep:
        opts = RunOptions(execute=True, journal=str(tmp_path / "c.jsonl"), canary=0, concurrency=4)
        result = run_plan(make_plan("reencode", ep), ep, opts, controls=controls, progress=progress)
    assert result.status == "stopped"
    assert at_pause and later == at_pause == [result.counts["done"]]
    assert sum(1 for r in iter_rows(state) if r.revision == 2) == result.counts["done"]


class Throttled:
    """A real store whose first writes answer 429 with a retry-after, as Cosmos DB does."""

    def __init__(self, store, failures: int, retry_after: float):
        self._store, self.failures, self.retry_after = store, failures, retry_after

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write(self, *args, **kw):
        from sekiops.errors import StoreUnavailableError

        if self.failures:
            self.failures -= 1
            exc = StoreUnavailableError("HTTP 429 (throttled: request rate too large)")
            exc.retry_after = self.retry_after
            raise exc
        return self._store.write(*args, **kw)


def test_backoff_honours_retry_after(tmp_path):
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    put_rows(open_state_store(db), 3, fmts=("v9",))
    waits = []
    with open_endpoints("reencode", db, blob_url) as ep:
        ep.state = ep.target_state = Throttled(ep.state, failures=3, retry_after=0.05)
        plan = make_plan("reencode", ep)
        result = run_plan(plan, ep, RunOptions(execute=True, journal="b.jsonl", canary=0),
                          progress=lambda ev: ev["event"] == "backoff" and waits.append(ev["seconds"]))
        assert result.status == "complete" and result.counts["done"] == 3
        assert len(waits) == 3 and all(0.05 <= w <= 0.06 for w in waits)
        # a store that stays down: bounded, then the run stops resumably
        put_rows(open_state_store(db), 2, fmts=("v9",), prefix="New")
        ep.state = ep.target_state = Throttled(ep.state._store, failures=10**6, retry_after=0.01)
        from sekiops.ops.migrate.guards import BackoffPolicy

        result = run_plan(make_plan("reencode", ep), ep, RunOptions(
            execute=True, journal="b.jsonl", canary=0, backoff=BackoffPolicy(attempts=4, total=1)))
        assert result.status == "throttled" and "resumes from its journal" in result.message


def test_verification_failure_puts_the_row_back_and_stops(tmp_path, monkeypatch):
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    state = open_state_store(db)
    put_rows(state, 4, fmts=("v9",))
    original = snapshot(state, None)
    import sekiops.ops.migrate.steps as steps

    real = steps.write_inline_envelope

    def corrupting(out, meta, payload, length):  # a bug that changes one payload byte
        data = bytearray(payload.read(length))
        data[-1] ^= 0x01
        return real(out, meta, io.BytesIO(bytes(data)), length)

    monkeypatch.setattr(steps, "write_inline_envelope", corrupting)
    with open_endpoints("reencode", db, blob_url) as ep:
        result = run_plan(make_plan("reencode", ep), ep, RunOptions(execute=True, journal="v.jsonl", canary=0,
                                                                    concurrency=1))
        assert result.status == "failed" and "verification failed" in result.message
        assert result.counts == {"done": 0, "skipped": 0, "failed": 1, "reverted": 1, "already": 0}
        after = snapshot(state, None)
        for item, (raw, sha, _) in original.items():
            assert after[item][0] == raw and after[item][1] == sha  # the first row was put back; others untouched
        # with rows in flight, each of them verifies itself: every bad write is put back
        result = run_plan(make_plan("reencode", ep), ep, RunOptions(execute=True, journal="v.jsonl", canary=0,
                                                                    concurrency=4))
    assert result.status == "failed" and 1 <= result.counts["failed"] == result.counts["reverted"] <= 4
    assert result.counts["done"] == 0
    after = snapshot(state, None)
    for item, (raw, sha, _) in original.items():
        assert after[item][0] == raw and after[item][1] == sha


def test_journal_is_exclusive_and_belongs_to_one_migration(tmp_path):
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    put_rows(open_state_store(db), 3, fmts=("v9",))
    with open_endpoints("reencode", db, blob_url) as ep:
        plan = make_plan("reencode", ep)
        header = {"kind": plan.kind, "where": plan.where, "params": plan.params, "backupDir": "x"}
        with Journal.open("j.jsonl", header):
            with pytest.raises(GuardRefusedError, match="in use"):
                Journal.open("j.jsonl", header)
        with pytest.raises(GuardRefusedError, match="another migration"):
            Journal.open("j.jsonl", {**header, "params": {"projector": "Proj1"}})
        with open("j.jsonl", "ab") as f:  # a run killed in the middle of a line
            f.write(b'{"t":"begin","phase":"migrate","item":"Proj0/v0","bef')
        with Journal.open("j.jsonl", header) as j:
            assert not j.pending("migrate")
            j.append({"t": "run", "run": "x"})
        assert [r["t"] for r in journal_records("j.jsonl")] == ["header", "run"]
    proc = cli("migrate", "run", "offload", "--state", db, "--blob", blob_url, "--threshold", "100", "--execute",
               check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "strict Sekiban mode" in proc.stderr


def test_audit_record_has_who_where_parameters_and_rows(deployment, tmp_path):
    state = deployment.state()
    put_rows(state, 3, fmts=("json",))
    out = json.loads(cli("migrate", "run", "reencode", "--state", deployment.state_url, "--blob",
                         deployment.blob_url, "--service-id", deployment.service_id, "--execute", "--canary", "0",
                         "--journal", str(tmp_path / "a.jsonl"), "--format", "json").stdout)
    audit = json.load(open(out["result"]["audit"]))
    assert "@" in audit["who"] and audit["startedAt"] and audit["endedAt"] and audit["status"] == "complete"
    assert audit["where"]["serviceId"] == deployment.service_id and audit["parameters"] == {"projector": None}
    assert audit["totals"]["done"] == 3 and len(audit["items"]) == 3
    for item in audit["items"]:
        assert item["before"]["token"] != item["after"]["token"] and item["payloadSha256"]
    text = open(out["result"]["audit"]).read() + open(tmp_path / "a.jsonl").read()
    from urllib.parse import urlsplit

    for secret in (os.environ.get("COSMOS_KEY"), "AccountKey=", urlsplit(deployment.state_url).password):
        if secret:
            assert secret not in text
    if urlsplit(deployment.state_url).password:
        assert "***" in text


# --- copy ----------------------------------------------------------------------------------------


def test_copy_to_another_deployment_and_service(deployment, tmp_path):
    """Copy (payload-offloaded rows included) to a SQLite + local deployment under another service id."""
    src = deployment.state()
    blob = deployment.blob()
    put_rows(src, 5, fmts=("v10", "v9", "json"))
    big = os.urandom(3000)  # incompressible: its payload goes to a blob
    persist(src, blob, lambda out: out.write(json.dumps({"blob": big.hex()}).encode()), projector_name="Big",
            projector_version="v1", events_processed=1, last_sortable_unique_id="0" * 30,
            options=PersistOptions(payload_threshold=1000))
    original = snapshot(src, blob)
    before_src = {k: (v[0], v[2].token) for k, v in original.items()}
    to_state, to_blob = f"sqlite:///{tmp_path}/target.db", f"file://{tmp_path}/target-blobs"
    common = ["migrate", "run", "copy", "--state", deployment.state_url, "--blob", deployment.blob_url,
              "--service-id", deployment.service_id, "--to-state", to_state, "--to-blob", to_blob,
              "--to-service-id", "copied", "--canary", "0", "--journal", str(tmp_path / "copy.jsonl")]
    proc = cli(*common, "--execute", env={**os.environ, "SEKIOPS_FAILPOINTS": "migrate_after_write=kill"},
               check=False)
    assert proc.returncode == -signal.SIGKILL
    out = json.loads(cli(*common, "--execute", "--format", "json").stdout)["result"]
    assert out["status"] == "complete" and out["counts"]["failed"] == 0
    target, tblob = open_state_store(to_state, service_id="copied"), open_blob_store(to_blob)
    assert set(done_counts(str(tmp_path / "copy.jsonl")).values()) == {1}
    for item, (_raw, sha, row) in original.items():
        name, version = item.split("/")
        assert payload_sha(target, tblob, name, version) == sha
        copied = target.get(name, version)
        assert copied.service_id == "copied" and copied.events_processed == row.events_processed
    # the source was never touched
    for k, v in snapshot(src, blob).items():
        assert (v[0], v[2].token) == before_src[k]
    # a second copy run overwrites nothing; rollback tombstones what the copy created
    again = json.loads(cli(*common, "--format", "json").stdout)
    assert again["plan"]["estimate"]["rows"] == 0
    rb = json.loads(cli("migrate", "rollback", "--journal", str(tmp_path / "copy.jsonl"), "--execute",
                        "--format", "json").stdout)["result"]
    assert rb["status"] == "complete" and rb["counts"]["done"] == len(original)
    assert all(r.is_tombstoned for r in iter_rows(target))
    target.close()


# --- gc-blobs ------------------------------------------------------------------------------------


def gc_fixture(tmp_path, blob_url=None):
    db = f"sqlite:///{tmp_path}/gc.db?record_threshold=200"
    blob_url = blob_url or f"file://{tmp_path}/blobs"
    blob = open_blob_store(blob_url)
    a, b = open_state_store(db, service_id="svc-a"), open_state_store(db, service_id="svc-b")
    # both services: record-level (envelope) and payload-level blobs
    for store, n in ((a, 4), (b, 3)):
        for i in range(n):
            persist(store, blob, lambda out, i=i, s=store.service_id: out.write(
                        json.dumps({"noise": os.urandom(400).hex()}).encode()),
                    projector_name=f"P{i}", projector_version="v1", events_processed=1,
                    last_sortable_unique_id="0" * 30, options=PersistOptions(payload_threshold=300 if i % 2 else 10**9,
                                                                             record_threshold=200))
    orphans = [blob.write(io.BytesIO(os.urandom(100 + i)), f"P{i}").key for i in range(4)]
    referenced = {k.key for k in blob.list()} - set(orphans)
    return db, blob_url, blob, a, b, orphans, referenced


def age(blob_url: str, keys, hours: float = 48) -> None:
    if blob_url.startswith("file://"):
        when = time.time() - hours * 3600
        for k in keys:
            os.utime(os.path.join(blob_url[len("file://"):], *k.split("/")), (when, when))


def test_gc_blobs_deletes_only_certified_orphans_of_every_service(tmp_path):
    db, blob_url, blob, a, b, orphans, referenced = gc_fixture(tmp_path)
    age(blob_url, [k.key for k in blob.list()])
    young = blob.write(io.BytesIO(b"just uploaded by a grain"), "P0").key  # inside the grace window
    with open_endpoints("gc-blobs", db, blob_url, service_id="svc-a") as ep:
        plan = make_plan("gc-blobs", ep, grace_hours=24)  # services discovered: svc-a and svc-b
        assert plan.params["services"] == ["svc-a", "svc-b"]
        assert sorted(i.item for i in plan.items) == sorted(orphans)
        # after the audit a grain of svc-b persists a row whose payload has an orphan's bytes (same
        # content, same key): the re-check before each delete sees it and keeps the blob
        reused = orphans[0]
        env = offloaded_envelope_bytes(EnvelopeMeta(projector_name="P0", projector_version="v2"), reused,
                                       blob.provider, blob.stat(reused).size)
        row = SnapshotRow(service_id="svc-b", projector_name="P0", projector_version="v2", events_processed=0)
        b.write(row, io.BytesIO(env), len(env), None)
        result = run_plan(plan, ep, RunOptions(execute=True, journal="gc.jsonl", canary=0))
    assert result.status == "complete"
    assert result.counts["done"] == 3 and result.counts["skipped"] == 1
    assert blob.exists(reused) and blob.exists(young)
    assert all(blob.exists(k) for k in referenced)
    assert not any(blob.exists(k) for k in orphans[1:])
    # rollback uploads the deleted blobs again from the backups
    ep = open_rollback_endpoints("gc.jsonl")
    try:
        rb = run_rollback("gc.jsonl", ep, RunOptions(execute=True, canary=0))
    finally:
        ep.close()
    assert rb.status == "complete" and rb.counts["done"] == 3
    assert all(blob.exists(k) for k in orphans)


def test_gc_blobs_deletes_nothing_when_a_row_is_undecodable(tmp_path):
    db, blob_url, blob, a, b, orphans, referenced = gc_fixture(tmp_path)
    age(blob_url, [k.key for k in blob.list()])
    bad = b"{not an envelope"
    b.write(SnapshotRow(service_id="svc-b", projector_name="Broken", projector_version="v1"), io.BytesIO(bad),
            len(bad), None)
    all_keys = {k.key for k in blob.list()}
    with open_endpoints("gc-blobs", db, blob_url, service_id="svc-a") as ep:
        plan = make_plan("gc-blobs", ep, grace_hours=1, services=["svc-a", "svc-b"])
        assert plan.refused and not plan.items
        with pytest.raises(GuardRefusedError):
            run_plan(plan, ep, RunOptions(execute=True, journal="gc.jsonl"))
    assert {k.key for k in blob.list()} == all_keys and not os.path.exists("gc.jsonl")


def test_gc_blobs_on_azurite_keeps_every_referenced_blob(tmp_path, azure_storage_env):
    db, blob_url, blob, a, b, orphans, referenced = gc_fixture(tmp_path, f"azblob://t{uuid.uuid4().hex[:12]}")
    with open_endpoints("gc-blobs", db, blob_url, service_id="svc-a") as ep:
        plan = make_plan("gc-blobs", ep, grace_hours=0, services=["svc-a", "svc-b"])
        result = run_plan(plan, ep, RunOptions(execute=True, journal="gc.jsonl", canary=0))
    assert result.status == "complete" and result.counts["done"] == len(orphans)
    assert {k.key for k in blob.list()} == referenced


def test_gc_blobs_never_deletes_a_blob_a_row_takes_before_the_delete(tmp_path):
    """A grain persists a row using the blob between the plan and the delete: the references are
    read again right before the delete, so the blob is kept (skipped, not deleted and put back)."""
    db, blob_url, blob, a, b, orphans, referenced = gc_fixture(tmp_path)
    age(blob_url, [k.key for k in blob.list()])
    taken = []

    def before_write(item, prep):  # a grain persists a row using this blob just as it is deleted
        if taken:
            return
        env = offloaded_envelope_bytes(EnvelopeMeta(projector_name=item.item.split("/")[0], projector_version="v9"),
                                       item.item, blob.provider, item.delete_bytes)
        row = SnapshotRow(service_id="svc-b", projector_name=item.item.split("/")[0], projector_version="v9")
        b.write(row, io.BytesIO(env), len(env), None)
        taken.append(item.item)

    with open_endpoints("gc-blobs", db, blob_url, service_id="svc-a") as ep:
        plan = make_plan("gc-blobs", ep, grace_hours=1)
        result = run_plan(plan, ep, RunOptions(execute=True, journal="gc.jsonl", canary=0, concurrency=1,
                                               hooks={"before_write": before_write}))
    assert result.status == "complete" and len(taken) == 1, result.message
    assert result.counts["skipped"] == 1 and result.counts["done"] == len(orphans) - 1
    assert any("referenced by" in (i["reason"] or "") for i in result.items if i["result"] == "skipped")
    assert blob.exists(taken[0])
    assert all(blob.exists(k) for k in referenced)


def test_gc_blobs_puts_a_blob_back_when_a_row_takes_it_during_the_delete(tmp_path):
    """The row lands after the references were read and after the delete: verification sees it
    and the blob is put back from the backup under its exact key."""
    db, blob_url, blob, a, b, orphans, referenced = gc_fixture(tmp_path)
    age(blob_url, [k.key for k in blob.list()])
    taken = []

    def after_delete(key):
        env = offloaded_envelope_bytes(EnvelopeMeta(projector_name=key.split("/")[0], projector_version="v9"),
                                       key, blob.provider, 100)
        row = SnapshotRow(service_id="svc-b", projector_name=key.split("/")[0], projector_version="v9")
        b.write(row, io.BytesIO(env), len(env), None)
        taken.append(key)

    with open_endpoints("gc-blobs", db, blob_url, service_id="svc-a") as ep:
        plan = make_plan("gc-blobs", ep, grace_hours=1)
        step_delete = ep.blob.delete

        def delete_then_row(key, **kw):  # the row is written in the instant after the delete
            done = step_delete(key, **kw)
            if not taken:
                after_delete(key)
            return done

        ep.blob.delete = delete_then_row
        result = run_plan(plan, ep, RunOptions(execute=True, journal="gc.jsonl", canary=0, concurrency=1))
    assert result.status == "failed" and result.counts["reverted"] == 1 and len(taken) == 1
    assert "referenced the blob right after it was deleted" in result.message
    assert blob.exists(taken[0])  # put back from the backup, same key
    assert all(blob.exists(k) for k in referenced)


def test_reencode_v9_offloaded_shapes_and_rollback(tmp_path):
    """v9 envelopes whose payload is in a blob, and v9 envelopes stored as record-level blobs."""
    db, blob_url = f"sqlite:///{tmp_path}/s.db?record_threshold=300", f"file://{tmp_path}/b"
    state, blob = open_state_store(db), open_blob_store(blob_url)
    for i in range(4):
        name, version, body = f"P{i}", "v1", state_json(i * 7, "x" * (i * 40))
        payload = gzip.compress(body, mtime=0)
        meta = EnvelopeMeta(projector_name=name, projector_version=version, version=3,
                            original_size_bytes=len(body), compressed_size_bytes=len(payload))
        if i % 2:  # payload-level blob, v9 envelope inline in the row
            key = blob.write(io.BytesIO(payload), name).key
            env = gzip.compress(offloaded_envelope_bytes(meta, key, blob.provider, len(payload)), mtime=0)
            row = SnapshotRow(service_id="default", projector_name=name, projector_version=version,
                              events_processed=3)
            state.write(row, io.BytesIO(env), len(env), None)
        else:  # v9 envelope (inline payload) as a record-level blob
            env = gzip.compress(inline_envelope_bytes(meta, payload), mtime=0)
            key = blob.write(io.BytesIO(env), f"{name}/{version}").key
            row = SnapshotRow(service_id="default", projector_name=name, projector_version=version,
                              events_processed=3, is_offloaded=True, offload_key=key, offload_provider=blob.provider)
            state.write(row, None, 0, None)
    original = snapshot(state, blob)
    with open_endpoints("reencode", db, blob_url) as ep:
        plan = make_plan("reencode", ep)
        assert {i.action for i in plan.items} == {"reencode-v9"} and len(plan.items) == 4
        result = run_plan(plan, ep, RunOptions(execute=True, journal="r.jsonl", canary=0))
        assert result.status == "complete" and result.counts["done"] == 4
        for item, (_raw, sha, row) in original.items():
            name, version = item.split("/")
            now = state.get(name, version)
            with open_envelope(state, blob, now) as f:
                env = read_envelope(f, item)
            assert not env.gzipped and payload_sha(state, blob, name, version) == sha
            if row.is_offloaded:  # still above the store's threshold: a new record-level blob
                assert now.is_offloaded and now.offload_key != row.offload_key
                assert blob.exists(row.offload_key)  # the old envelope blob is kept
            else:
                assert env.is_offloaded  # payload blob untouched, referenced by the v10 envelope
        rb = run_rollback("r.jsonl", ep, RunOptions(execute=True, canary=0))
    assert rb.status == "complete" and rb.counts["done"] == 4
    after = snapshot(state, blob)
    assert {k: (v[0], v[1]) for k, v in after.items()} == {k: (v[0], v[1]) for k, v in original.items()}


def test_copy_plan_tells_the_truth_about_the_target(tmp_path):
    """A payload-offloaded row's blob is counted in the bytes uploaded; each row says where its
    envelope and payload will live under the target's thresholds; limits are the target's own."""
    src_db, src_blobs = f"sqlite:///{tmp_path}/src.db", f"file://{tmp_path}/src-blobs"
    state, blob = open_state_store(src_db), open_blob_store(src_blobs)
    big = json.dumps({"rows": [os.urandom(16).hex() for _ in range(150000)]}).encode()  # ~5.7 MB, gzips to ~3 MB
    res = persist(state, blob, lambda out: out.write(big), projector_name="Big", projector_version="1",
                  events_processed=1, last_sortable_unique_id="0" * 30)
    assert res.payload_location == "blob"
    persist(state, blob, lambda out: out.write(b'{"small": true}'), projector_name="Small", projector_version="1",
            events_processed=1, last_sortable_unique_id="0" * 30)
    medium = json.dumps({"rows": [os.urandom(16).hex() for _ in range(600)]}).encode()  # envelope ~15 KB
    persist(state, blob, lambda out: out.write(medium), projector_name="Medium", projector_version="1",
            events_processed=1, last_sortable_unique_id="0" * 30)
    state.close()
    with open_endpoints("copy", src_db, src_blobs, to_state=f"sqlite:///{tmp_path}/dst.db?record_threshold=10000",
                        to_blob=f"file://{tmp_path}/dst-blobs", create=False) as ep:
        plan = make_plan("copy", ep)
    items = {i.item: i for i in plan.items}
    assert items["Big/1"].payload_location == "blob" and items["Small/1"].payload_location == "inline"
    assert items["Big/1"].upload_bytes >= res.compressed_size_bytes  # the payload blob is uploaded
    assert items["Big/1"].placement == "inline"  # its small envelope stays in the row
    assert items["Medium/1"].placement == "blob" and items["Medium/1"].upload_bytes > 10000
    assert items["Small/1"].placement == "inline" and items["Small/1"].upload_bytes == 0
    assert plan.estimate.bytes_uploaded >= res.compressed_size_bytes
    assert not any(i.flags for i in plan.items)
    assert not (tmp_path / "dst.db").exists() and not (tmp_path / "dst-blobs").exists()
    # a Cosmos-sized envelope into a target without a blob store is flagged with that target's limit
    with open_endpoints("copy", src_db, src_blobs, to_state=f"sqlite:///{tmp_path}/dst2.db", create=False) as ep:
        ep.target_blob = None
        plan = make_plan("copy", ep)
    assert any("no target blob store" in f for f in {i.item: i for i in plan.items}["Big/1"].flags)


@pytest.mark.parametrize("concurrency", [4, 16])
def test_a_stop_with_rows_in_flight_leaves_no_half_written_row(tmp_path, concurrency):
    """With many rows in flight a stop starts no new row and lets each one in flight finish its
    life cycle: no pending begin in the journal, and a rerun finishes the rest exactly once."""
    db, blob_url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/b"
    state = open_state_store(db)
    put_rows(state, 60, fmts=("v9",))
    controls = Controls()

    def progress(ev):
        if ev["event"] == "item" and ev["counts"]["done"] == 10:
            controls.stop()

    with open_endpoints("reencode", db, blob_url) as ep:
        opts = RunOptions(execute=True, journal="p.jsonl", canary=0, concurrency=concurrency)
        result = run_plan(make_plan("reencode", ep), ep, opts, controls=controls, progress=progress)
        assert result.status == "stopped" and 10 <= result.counts["done"] < 10 + concurrency
        assert not Journal.read("p.jsonl").pending("migrate")
        revs = sorted(r.revision for r in iter_rows(state))
        assert revs.count(2) == result.counts["done"] and revs.count(1) == 60 - result.counts["done"]
        result = run_plan(make_plan("reencode", ep), ep, RunOptions(execute=True, journal="p.jsonl", canary=0,
                                                                    concurrency=concurrency))
    assert result.status == "complete"
    assert set(done_counts(str(tmp_path / "p.jsonl")).values()) == {1}
    assert all(r.revision == 2 for r in iter_rows(state))
