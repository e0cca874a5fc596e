"""gc-blobs and the orphan audit against writers racing them, on every blob store.

Sekiban's blobs are content addressed: a projection that returns to an earlier state persists
the same bytes under the same key an audit may just have certified as an orphan. Whatever the
interleaving — a persist (upload and row) between certification and delete, an upload just
before the delete with the row written just after, a row written while the audit lists — the
row must stay restorable, byte for byte, with ``--verify``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from conformance.stores import BLOB_KINDS, SERVER_MARK, blob_url
from sekiops.blob import open_blob_store
from sekiops.format.envelope import EnvelopeMeta, offloaded_envelope_bytes
from sekiops.format.record import SnapshotRow
from sekiops.ops.audit import audit_orphans
from sekiops.ops.migrate import RunOptions, make_plan, open_endpoints, run_plan
from sekiops.pipeline.persist import PersistOptions, persist_stream
from sekiops.pipeline.restore import RestoreOptions, restore
from sekiops.state import open_state_store

SLUI = "0" * 30
#: the projection's state before it changed, and after: X comes back later (same bytes, same key)
STATE_X = json.dumps({"customers": [{"id": i, "name": f"c{i}"} for i in range(3000)]}).encode()
STATE_Y = json.dumps({"customers": [{"id": i, "name": f"d{i}"} for i in range(3000)]}).encode()
OFFLOAD = PersistOptions(payload_threshold=100)  # every payload goes to a blob


@pytest.fixture(params=[pytest.param(k, marks=getattr(pytest.mark, SERVER_MARK[k])) for k in BLOB_KINDS])
def deployment(request, tmp_path):
    """A SQLite state store and a blob store where blob K (state X's payload) is an orphan
    older than the grace window: the row moved on to state Y."""
    kind = request.param
    db = f"sqlite:///{tmp_path}/s.db"
    url = blob_url(kind, request, tmp_path)
    state, blob = open_state_store(db), open_blob_store(url)
    first = persist(state, blob, STATE_X, "1", events=1)
    persist(state, blob, STATE_Y, "1", events=2)
    orphan = first.payload_key
    grace = "1h"
    if kind == "local":
        old = time.time() - 48 * 3600
        os.utime(os.path.join(blob.root, *orphan.split("/")), (old, old))
    elif kind == "memory":
        with blob.open_read(orphan) as f:
            blob.put_raw(orphan, f.read(), when=datetime.now(UTC) - timedelta(hours=48))
    else:  # Azurite cannot back-date a blob: a zero grace window certifies it
        grace = "0s"
    yield kind, db, url, state, blob, orphan, grace
    state.close()
    blob.close()


def persist(state, blob, data: bytes, version: str, events: int = 1):
    return persist_stream(state, blob, io.BytesIO(data), projector_name="P", projector_version=version,
                          events_processed=events, last_sortable_unique_id=SLUI, options=OFFLOAD)


def restored(state, blob, version: str, tmp_path) -> bytes:
    out = tmp_path / f"restored-{uuid.uuid4().hex[:6]}.json"
    restore(state, blob, str(out), projector_name="P", projector_version=version,
            options=RestoreOptions(verify=True))
    return out.read_bytes()


def gc_run(db, url, grace, hooks):
    grace_hours = timedelta(seconds=0 if grace == "0s" else 3600).total_seconds() / 3600
    with open_endpoints("gc-blobs", db, url) as ep:
        plan = make_plan("gc-blobs", ep, grace_hours=grace_hours)
        items = [i.item for i in plan.items]
        result = run_plan(plan, ep, RunOptions(execute=True, journal=f"gc-{uuid.uuid4().hex[:6]}.jsonl",
                                               canary=0, hooks=hooks))
    return items, result


def test_the_orphan_is_certified_first(deployment, tmp_path, monkeypatch):
    kind, db, url, state, blob, orphan, grace = deployment
    monkeypatch.chdir(tmp_path)
    items, result = gc_run(db, url, grace, {})
    assert orphan in items and result.status == "complete", result.message
    assert result.counts["done"] == 1, result.items
    assert not blob.exists(orphan)  # the control: without a racing writer it is deleted


def test_a_persist_between_certification_and_delete_keeps_the_row_restorable(deployment, tmp_path, monkeypatch):
    """The projection returns to state X under a new version after the audit certified K: upload
    (same key) and row both land before the delete."""
    kind, db, url, state, blob, orphan, grace = deployment
    monkeypatch.chdir(tmp_path)
    raced = []

    def before_write(item, prep):
        if item.item == orphan:
            raced.append(persist(open_state_store(db), open_blob_store(url), STATE_X, "2"))

    items, result = gc_run(db, url, grace, {"before_write": before_write})
    assert orphan in items and raced and raced[0].payload_key == orphan
    assert blob.exists(orphan), f"gc deleted a blob row P/2 references ({result.message})"
    assert restored(state, blob, "2", tmp_path) == STATE_X
    assert result.counts["done"] == 0 and result.counts["skipped"] == 1


def test_an_upload_just_before_the_delete_with_the_row_just_after(deployment, tmp_path, monkeypatch):
    """A grain uploads K (same bytes) right before the delete and writes its row right after:
    the references re-read before the delete see no row yet, so only the conditional delete
    (the version certified, not the one just written) keeps K."""
    kind, db, url, state, blob, orphan, grace = deployment
    monkeypatch.chdir(tmp_path)
    payload = gzip.compress(STATE_X, compresslevel=1)

    def before_delete(key):
        if key == orphan:
            with open_blob_store(url) as grain_blob:
                with blob.open_read(orphan) as f:  # the grain's bytes are the same bytes
                    payload_bytes = f.read()
                grain_blob.write(io.BytesIO(payload_bytes), "P")

    items, result = gc_run(db, url, grace, {"before_delete": before_delete})
    assert orphan in items
    # the grain's row lands now, pointing at the key it uploaded
    size = blob.stat(orphan).size if blob.exists(orphan) else len(payload)
    meta = EnvelopeMeta(projector_name="P", projector_version="3", version=1)
    env = offloaded_envelope_bytes(meta, orphan, blob.provider, size)
    state.write(SnapshotRow(service_id="default", projector_name="P", projector_version="3", events_processed=1),
                io.BytesIO(env), len(env), None)
    assert blob.exists(orphan), f"gc deleted a blob just written again ({result.message})"
    assert restored(state, blob, "3", tmp_path) == STATE_X


def test_a_row_written_while_the_audit_lists_is_no_orphan(deployment, tmp_path):
    """Audit certification time vs a new row: K is listed as unreferenced, then a persist of
    state X lands before the audit returns. The audit re-reads the rows written since its scan."""
    kind, db, url, state, blob, orphan, grace = deployment

    def after_listing():
        persist(open_state_store(db), open_blob_store(url), STATE_X, "4")

    report = audit_orphans(state, blob, grace=grace, after_listing=after_listing)
    assert report["certified"]
    assert orphan not in [o["key"] for o in report["orphans"]]
    assert orphan in [r["key"] for r in report["referencedSinceListing"]]
    assert restored(state, blob, "4", tmp_path) == STATE_X


@pytest.mark.local_store
def test_cli_gc_paused_before_its_delete_while_a_persist_runs(tmp_path):
    """Across processes: `sekiops migrate run gc-blobs --execute` stopped at its last step before
    the delete (fail point), a `sekiops persist` of the same state in between, then the gc goes on."""
    db, url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/blobs"
    state, blob = open_state_store(db), open_blob_store(url)
    orphan = persist(state, blob, STATE_X, "1", events=1).payload_key
    persist(state, blob, STATE_Y, "1", events=2)
    old = time.time() - 48 * 3600
    os.utime(os.path.join(blob.root, *orphan.split("/")), (old, old))
    (tmp_path / "x.json").write_bytes(STATE_X)
    env = {**os.environ, "SEKIOPS_STATE_URL": db, "SEKIOPS_BLOB_URL": url, "SEKIOPS_FAILPOINT_DIR": str(tmp_path),
           "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool")}
    cli = [sys.executable, "-m", "sekiops"]
    gc = subprocess.Popen(cli + ["migrate", "run", "gc-blobs", "--execute", "--grace", "24h", "--canary", "0",
                                 "--journal", str(tmp_path / "gc.jsonl")],
                          env={**env, "SEKIOPS_FAILPOINTS": "gc_before_delete=pause"}, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "gc_before_delete.paused").exists():
            assert gc.poll() is None, gc.communicate()
            assert time.monotonic() < deadline, "gc never reached its delete"
            time.sleep(0.05)
        p = subprocess.run(cli + ["persist", "--projector", "P", "--version", "2", "--events-processed", "1",
                                  "--last-sortable-unique-id", SLUI, "--in", str(tmp_path / "x.json"),
                                  "--payload-threshold", "100"], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["payload_key"] == orphan
    finally:
        (tmp_path / "gc_before_delete.resume").touch()
    out, err = gc.communicate(timeout=120)
    assert gc.returncode in (0, 2), err
    assert blob.exists(orphan), f"gc deleted the blob of the row persisted meanwhile:\n{out}\n{err}"
    r = subprocess.run(cli + ["restore", "--projector", "P", "--version", "2", "--out", str(tmp_path / "out.json"),
                              "--verify"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.json").read_bytes() == STATE_X


def test_gc_of_many_orphans_keeps_items_and_references_on_disk(tmp_path, monkeypatch):
    """References, orphans, plan items, results and the audit record past their memory budget
    (set tiny here) move to disk: the run is the same, every orphan deleted exactly once."""
    import sekiops.spill as spill

    monkeypatch.setattr(spill, "KEY_BUDGET", 20)
    monkeypatch.setattr(spill, "RECORD_BUDGET", 20)
    monkeypatch.chdir(tmp_path)
    db, url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/blobs"
    state, blob = open_state_store(db), open_blob_store(url)
    for i in range(40):  # 40 referenced payload blobs (more than the key budget)
        persist(state, blob, json.dumps({"n": i, "pad": os.urandom(300).hex()}).encode(), f"v{i}")
    orphans = {blob.write(io.BytesIO(f"orphan {i}".encode()), "P").key for i in range(150)}
    with open_endpoints("gc-blobs", db, url) as ep:
        plan = make_plan("gc-blobs", ep, grace_hours=0)
        assert plan.items.records.spilled and plan.context["audit"]["orphans"].spilled
        assert {i.item for i in plan.items} == orphans and len(plan.items) == 150
        result = run_plan(plan, ep, RunOptions(execute=True, journal="gc.jsonl", canary=5, proceed=True,
                                               concurrency=8))
    assert result.status == "complete" and result.counts["done"] == 150
    assert result.items.spilled and len(result.items) == 150
    left = {b.key for b in blob.list()}
    assert not left & orphans and len(left) == 40
    record = json.load(open(result.audit))
    assert len(record["items"]) == 150 and record["totals"]["done"] == 150
    for i in range(40):
        assert restored(state, blob, f"v{i}", tmp_path)
