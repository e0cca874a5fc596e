"""Sekiban dcb-v10.23: prefixed blob keys, read and written exactly as Sekiban does, and its GC rules.

Snapshots written the 10.23 way (every prefix case of Sekiban's own tests, payload and record
level, local directory and Azurite) restore byte for byte with --verify; a prefixed persist
writes keys an independent reader (tests/reference_reader.py) accepts; the 512-character limit
refuses before anything is written; gc deletes nothing while any row is undecodable in one of
Sekiban's 16 ways, and never deletes a referenced prefixed blob.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta
from urllib.parse import quote

import pytest

import reference_reader as ref
from conformance.stores import SERVER_MARK, blob_url
from sekiops.blob import open_blob_store
from sekiops.errors import UnsafeKeyError
from sekiops.format.envelope import EnvelopeMeta, inline_envelope_bytes, offloaded_envelope_bytes
from sekiops.format.record import SnapshotRow
from sekiops.ops.audit import audit_orphans
from sekiops.ops.migrate import RunOptions, make_plan, open_endpoints, run_plan
from sekiops.pipeline.persist import PersistOptions, persist_stream
from sekiops.state import open_state_store

SLUI = "0" * 30
PREFIXES = ["tenant", "tenant///", "/tenant\\nested", "///", " ", "a b/c d"]
STATE = json.dumps({"customers": [{"id": i, "email": f"c{i}@example.com"} for i in range(4000)]}).encode()


def sekiban_write(state, blob, name: str, version: str, prefix: str, level: str) -> None:
    """A snapshot as Sekiban 10.23 writes it: gzip payload, blobs under prefixed content keys
    (computed by the independent reference reader), envelope inline or as a record-level blob."""
    payload = gzip.compress(STATE, compresslevel=1)
    meta = EnvelopeMeta(projector_name=name, projector_version=version, version=7, last_sortable_unique_id=SLUI,
                        original_size_bytes=len(STATE), compressed_size_bytes=len(payload))
    if level in ("payload", "both"):
        key = ref.content_key(name, payload, prefix)
        blob.write_key(io.BytesIO(payload), key)
        env = offloaded_envelope_bytes(meta, key, blob.provider, len(payload))
    else:
        env = inline_envelope_bytes(meta, payload)
    row = SnapshotRow(service_id=state.service_id, projector_name=name, projector_version=version, events_processed=7,
                      last_sortable_unique_id=SLUI, original_size_bytes=len(env), compressed_size_bytes=len(env))
    if level in ("record", "both"):
        key = ref.content_key(f"{name}/{version}", env, prefix)
        blob.write_key(io.BytesIO(env), key)
        state.write(row.replace(is_offloaded=True, offload_key=key, offload_provider=blob.provider), None, 0, None)
    else:
        state.write(row, io.BytesIO(env), len(env), None)


@pytest.fixture(params=[pytest.param(k, marks=getattr(pytest.mark, SERVER_MARK[k])) for k in ("local", "azure")])
def deployment(request, tmp_path):
    db = f"sqlite:///{tmp_path}/s.db?record_threshold=1000"  # sekiops' extension: record-level rows on SQLite
    url = blob_url(request.param, request, tmp_path)
    state, blob = open_state_store(db), open_blob_store(url)
    yield db, url, state, blob
    state.close()
    blob.close()


@pytest.mark.parametrize("level", ["payload", "record", "both"])
def test_snapshots_written_the_1023_way_restore_with_verify(deployment, tmp_path, level):
    db, url, state, blob = deployment
    for i, prefix in enumerate(PREFIXES):
        sekiban_write(state, blob, "Orders", f"v{i}", prefix, level)
    env = {**os.environ, "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool")}
    for i, prefix in enumerate(PREFIXES):
        out = tmp_path / f"out{i}.json"
        p = subprocess.run([sys.executable, "-m", "sekiops", "restore", "--state", db, "--blob", url,
                            "--projector", "Orders", "--version", f"v{i}", "--out", str(out), "--verify"],
                           env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (prefix, p.stderr)
        assert out.read_bytes() == STATE
        verified = json.loads(p.stdout)["verified"]
        assert ("payload-sha256" in verified) == (level != "record")
        assert ("envelope-sha256" in verified) == (level != "payload")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_prefixed_persist_writes_keys_an_independent_reader_accepts(tmp_path, prefix):
    db_path, root = tmp_path / "s.db", tmp_path / "blobs"
    url = f"file://{root}?prefix={quote(prefix, safe='')}"
    state, blob = open_state_store(f"sqlite:///{db_path}?record_threshold=100"), open_blob_store(url)
    res = persist_stream(state, blob, io.BytesIO(STATE), projector_name="Orders", projector_version="v1",
                         events_processed=3, last_sortable_unique_id=SLUI,
                         options=PersistOptions(payload_threshold=100))
    folder = prefix.rstrip("/")
    assert res.payload_key == f"{folder}/Orders/{res.payload_sha256}.bin"
    assert res.envelope_key.startswith(f"{folder}/Orders/v1/")
    blobs = {b.key: blob.open_read(b.key).read() for b in blob.list()}
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM dcb_multi_projection_states").fetchone())
    ref.check_written_row(row, blobs, record_threshold=100, payload_threshold=100, prefix=prefix,
                          expected_state=STATE)


def test_the_512_character_limit_refuses_before_anything_is_written(tmp_path):
    name, version = "p" * 200, "v" * 50   # record key = prefix/ + 200/ + 50/ + {64}.bin = len(prefix) + 321
    db = f"sqlite:///{tmp_path}/s.db?record_threshold=100"
    for prefix_len, ok in ((191, True), (192, False)):
        root = tmp_path / f"blobs{prefix_len}"
        url = f"file://{root}?prefix={'t' * prefix_len}"
        state, blob = open_state_store(db), open_blob_store(url)
        run = lambda state=state, blob=blob: persist_stream(  # noqa: E731
                                     state, blob, io.BytesIO(STATE), projector_name=name,
                                     projector_version=version, events_processed=1, last_sortable_unique_id=SLUI,
                                     options=PersistOptions(payload_threshold=100))
        if ok:
            res = run()
            assert len(res.envelope_key) == 512 and len(res.payload_key) == prefix_len + 1 + 200 + 1 + 68
        else:
            with pytest.raises(UnsafeKeyError, match="length 513, exceeding the limit of 512 characters"):
                run()
            assert list(blob.list()) == []  # not even the payload blob, whose own key was short enough
            assert state.get(name, version).revision == 1  # the row of the 512-character run, untouched
        state.close()


#: Sekiban's OffloadKeyEnumerator "invalid data is never silent" envelopes, verbatim
SEKIBAN_UNDECODABLE = ["", "null", "[]", "garbage", '{"isOffloaded":true', "{}", '{"isOffloaded":0}',
                       '{"isOffloaded":true}', '{"isOffloaded":true,"offloadedState":[]}',
                       '{"isOffloaded":true,"offloadedState":"bad"}', '{"isOffloaded":true,"offloadedState":{}}',
                       '{"isOffloaded":true,"offloadedState":{"offloadKey":null}}',
                       '{"isOffloaded":true,"offloadedState":{"offloadKey":""}}',
                       '{"isOffloaded":true,"offloadedState":{"offloadKey":42}}',
                       '{"IsOffloaded":true,"isOffloaded":false}', '{"isOffloaded":false} trailing']


@pytest.mark.parametrize("envelope", SEKIBAN_UNDECODABLE, ids=range(len(SEKIBAN_UNDECODABLE)))
def test_gc_deletes_nothing_while_a_row_is_undecodable(tmp_path, envelope, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db, url = f"sqlite:///{tmp_path}/s.db", f"file://{tmp_path}/blobs?prefix=tenant"
    state, blob = open_state_store(db), open_blob_store(url)
    orphan = blob.write(io.BytesIO(b"nobody references me"), "Orders").key
    data = envelope.encode()
    other = state.for_service("other")
    other.write(SnapshotRow(service_id="other", projector_name="Bad", projector_version="1"), io.BytesIO(data),
                len(data), None)
    report = audit_orphans(state, blob, grace=timedelta(0))
    assert not report["certified"] and report["orphans"] == [] and report["undecodable"]
    assert report["undecodable"][0]["projectorName"] == "Bad"
    with open_endpoints("gc-blobs", db, url) as ep:
        plan = make_plan("gc-blobs", ep, grace_hours=0)
        assert plan.refused and plan.items == []
    assert blob.exists(orphan)


def test_gc_never_deletes_a_referenced_prefixed_blob(tmp_path, monkeypatch):
    """Every Sekiban prefix shape, inline and record-level rows, two services: only the
    unreferenced blob goes; every row restores afterwards."""
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path}/s.db?record_threshold=1000"
    url = f"file://{tmp_path}/blobs"
    state, blob = open_state_store(db), open_blob_store(url)
    other = state.for_service("other")
    for i, prefix in enumerate(PREFIXES):
        sekiban_write(state if i % 2 else other, blob, "Orders", f"v{i}", prefix, ("payload", "record", "both")[i % 3])
    orphan = blob.write_key(io.BytesIO(b"unreferenced"), ref.content_key("Orders", b"unreferenced", "/tenant")).key
    referenced = {b.key for b in blob.list()} - {orphan}
    with open_endpoints("gc-blobs", db, url) as ep:
        plan = make_plan("gc-blobs", ep, grace_hours=0)
        assert [i.item for i in plan.items] == [orphan], plan.refused
        result = run_plan(plan, ep, RunOptions(execute=True, journal="gc.jsonl", canary=0))
    assert result.status == "complete" and result.counts["done"] == 1
    assert {b.key for b in blob.list()} == referenced
    from sekiops.pipeline.restore import RestoreOptions, restore

    for i in range(len(PREFIXES)):
        out = io.BytesIO()
        restore(state if i % 2 else other, blob, out, projector_name="Orders", projector_version=f"v{i}",
                options=RestoreOptions(verify=True))
        assert out.getvalue() == STATE


# --- rekey: move a deployment's blobs under a new prefix -------------------------------------------


@pytest.mark.parametrize("kind", [pytest.param("local", marks=pytest.mark.local_store),
                                  pytest.param("azure", marks=pytest.mark.azurite)])
def test_rekey_moves_every_blob_under_the_prefix_and_rolls_back(request, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    from sekiops.ops.migrate.rollback import run_rollback
    from sekiops.pipeline.restore import RestoreOptions, restore

    db = f"sqlite:///{tmp_path}/s.db?record_threshold=1000"
    old_url = blob_url(kind, request, tmp_path)
    new_url = old_url + "?prefix=" + quote("tenant/", safe="")
    state, old = open_state_store(db), open_blob_store(old_url)
    levels = {"v0": "payload", "v1": "record", "v2": "both", "v3": "inline"}
    for version, level in levels.items():
        sekiban_write(state, old, "Orders", version, "" if version != "v2" else "legacy", level)
    before = {b.key for b in old.list()}

    with open_endpoints("rekey", db, new_url, create=False) as ep:
        plan = make_plan("rekey", ep)
    assert sorted(i.item for i in plan.items) == ["Orders/v0", "Orders/v1", "Orders/v2"]  # v3 has no blob
    assert {b.key for b in old.list()} == before  # a plan writes nothing

    with open_endpoints("rekey", db, new_url) as ep:
        result = run_plan(plan, ep, RunOptions(execute=True, journal="rekey.jsonl", canary=0))
    assert result.status == "complete" and result.counts["done"] == 3, result.message
    for version in levels:
        row = state.get("Orders", version)
        refs = __import__("sekiops.ops.audit", fromlist=["row_references"]).row_references(state, old, row)
        assert all(r.startswith("tenant/Orders/") for r in refs), refs
        out = io.BytesIO()
        restore(state, old, out, projector_name="Orders", projector_version=version,
                options=RestoreOptions(verify=True))
        assert out.getvalue() == STATE
    assert before <= {b.key for b in old.list()}  # old keys stay for gc-blobs

    with open_endpoints("rekey", db, new_url) as ep:  # a rerun finds nothing to do
        assert make_plan("rekey", ep).items == []
        rb = run_rollback("rekey.jsonl", ep, RunOptions(execute=True, canary=0))
    assert rb.status == "complete" and rb.counts["done"] == 3
    with open_endpoints("rekey", db, old_url) as ep:
        assert sorted(i.item for i in make_plan("rekey", ep).items) == ["Orders/v2"]  # the legacy-prefixed row
