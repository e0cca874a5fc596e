"""Many writers and readers on one projector, across PROCESSES (multiprocessing, spawn).

Per backend (SQLite file, PostgreSQL, Cosmos DB, with blobs in a shared local directory; DynamoDB
with an S3 bucket, both on moto):

* WRITERS processes run ROUNDS rounds of the full persist pipeline on the same row. In each
  round every writer reads the row (``persist`` does, before calling the body), then all meet at
  a barrier inside the body, then all write with compare-and-swap. Round 1 is a create race (no
  row yet), the others are replace races. Exactly one writer wins each round; every loser gets
  ConcurrencyConflictError (nothing else).
* A TOMBSTONER process joins the barriers and, from round TOMBSTONE_FROM on, races the writers
  with ``tombstone(expected)`` until it wins; if it has not won by FORCE_ROUND, it tombstones
  after the writers have read the row and before they write (their compare-and-swap is then
  against a stale token). From then on no writer ever wins again (they get TombstonedError or
  ConcurrencyConflictError), and the row stays tombstoned with the last winner's snapshot.
* READERS processes restore the projector in a loop the whole time. Every restore must be
  byte-for-byte one of the states a writer wrote (never a mix, never a half-written snapshot);
  the only errors allowed are NotFoundError (before the first write), TombstonedError (after
  the tombstone) and ConcurrencyConflictError (restore's own retries exhausted under churn).

States differ in size by round and writer, so rounds mix inline rows, payload-level blobs and
record-level blobs.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import random
import uuid
from collections import Counter
from pathlib import Path

import pytest

PROJ = "RaceProj"
WRITERS = 4
READERS = 2
ROUNDS = 16
TOMBSTONE_FROM = 12   # the tombstoner races the writers from this round on...
FORCE_ROUND = 15      # ...and, if it has not won yet, tombstones between their read and their write
BARRIER_TIMEOUT = 120
#: payload blob when a writer's compressed state exceeds this (odd writers); record-level blob
#: when the envelope exceeds RECORD (even writers' big states)
PAYLOAD = 20_000
RECORD = 50_000


def make_state(rnd: int, writer: int) -> bytes:
    """Deterministic state of ``writer`` in round ``rnd``; size varies with both."""
    size = [60, 30_000, 120_000][(rnd * 7 + writer) % 3]
    rng = random.Random(rnd * 1000 + writer)
    pad = f"{rng.getrandbits(4 * size):x}" if size else ""
    return json.dumps({"round": rnd, "writer": writer, "pad": pad}, separators=(",", ":")).encode()


def slui(rnd: int) -> str:
    return f"{639040640000000000 + rnd:019d}{rnd:011d}"


def _open(urls: dict, spool_dir: str):
    os.environ["SEKIOPS_SPOOL_DIR"] = spool_dir
    if "COSMOS_KEY" in urls:
        os.environ["COSMOS_KEY"] = urls["COSMOS_KEY"]
    from sekiops.blob import open_blob_store
    from sekiops.state import open_state_store

    return (open_state_store(urls["state"], service_id=urls["service_id"]), open_blob_store(urls["blob"]))


def writer_proc(urls: dict, wid: int, barrier, results, spool_dir: str) -> None:
    from sekiops.errors import ConcurrencyConflictError, TombstonedError
    from sekiops.pipeline.persist import PersistOptions, persist
    from sekiops.pipeline.spool import Spool

    state, blob = _open(urls, spool_dir)
    opts = PersistOptions(payload_threshold=PAYLOAD if wid % 2 else 10**12, record_threshold=RECORD)
    for rnd in range(1, ROUNDS + 1):
        body = make_state(rnd, wid)
        met = []

        def write_body(out, met=met, body=body):
            barrier.wait(BARRIER_TIMEOUT)  # A: everyone has read the row
            met.append(True)
            barrier.wait(BARRIER_TIMEOUT)  # B: now race
            out.write(body)

        try:
            persist(state, blob, write_body, projector_name=PROJ, projector_version="1", events_processed=rnd,
                    last_sortable_unique_id=slui(rnd), options=opts, spool=Spool())
            outcome = "win"
        except ConcurrencyConflictError:
            outcome = "conflict"
        except TombstonedError:
            outcome = "tombstoned"
        except Exception as exc:  # reported, the parent fails the test
            outcome = f"error: {type(exc).__name__}: {exc}"
        if not met:  # refused before the body: still meet the others
            barrier.wait(BARRIER_TIMEOUT)
            barrier.wait(BARRIER_TIMEOUT)
        results.put(("write", rnd, wid, outcome))
        barrier.wait(BARRIER_TIMEOUT)  # end of round
    state.close()


def tombstoner_proc(urls: dict, barrier, results, spool_dir: str) -> None:
    from sekiops.errors import ConcurrencyConflictError, TombstonedError

    state, _ = _open(urls, spool_dir)
    done = False

    def attempt(rnd, row):
        nonlocal done
        try:
            state.tombstone(row)
            done = True
            results.put(("tombstone", rnd, -1, "win"))
        except (ConcurrencyConflictError, TombstonedError) as exc:
            results.put(("tombstone", rnd, -1, f"conflict: {type(exc).__name__}"))
        except Exception as exc:
            results.put(("tombstone", rnd, -1, f"error: {type(exc).__name__}: {exc}"))

    for rnd in range(1, ROUNDS + 1):
        row = state.get(PROJ, "1") if (rnd >= TOMBSTONE_FROM and not done) else None
        barrier.wait(BARRIER_TIMEOUT)  # A: the writers have read the row
        if row is not None and rnd == FORCE_ROUND:
            attempt(rnd, row)  # lands before any writer writes: their reads are now stale
        barrier.wait(BARRIER_TIMEOUT)  # B
        if row is not None and rnd != FORCE_ROUND:
            attempt(rnd, row)  # races the writers
        barrier.wait(BARRIER_TIMEOUT)  # C: end of round
    state.close()


def reader_proc(urls: dict, stop, results, spool_dir: str) -> None:
    from sekiops.errors import ConcurrencyConflictError, NotFoundError, SekiopsError, TombstonedError
    from sekiops.pipeline.restore import restore
    from sekiops.pipeline.spool import Spool

    state, blob = _open(urls, spool_dir)
    counts: Counter = Counter()
    bad: list[str] = []
    seen_any = False
    while not stop.is_set() and len(bad) < 5:
        buf = io.BytesIO()
        try:
            # the version named: after the tombstone this is TombstonedError (without it, "no active
            # snapshot", NotFoundError, which a reader could not tell from "not written yet")
            restore(state, blob, buf, projector_name=PROJ, projector_version="1", spool=Spool())
        except NotFoundError:
            counts["not-found"] += 1
            if seen_any:
                bad.append("NotFoundError after a snapshot existed")
            continue
        except TombstonedError:
            counts["tombstoned"] += 1
            continue
        except ConcurrencyConflictError:
            counts["conflict-retries-exhausted"] += 1
            continue
        except SekiopsError as exc:
            bad.append(f"{type(exc).__name__}: {exc}")
            continue
        data = buf.getvalue()
        try:
            doc = json.loads(data)
            ok = data == make_state(doc["round"], doc["writer"])
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            counts["exact"] += 1
            seen_any = True
        else:
            bad.append(f"torn or mixed snapshot ({len(data)} bytes: {data[:80]!r})")
    results.put(("reader", dict(counts), bad))
    state.close()


def _urls(kind: str, request, tmp_path: Path) -> dict:
    urls = {"service_id": "race-" + uuid.uuid4().hex[:10], "blob": str(tmp_path / "blobs")}
    if kind == "sqlite":
        # record-level offload on SQLite is sekiops' extension: enabled by the URL
        urls["state"] = f"sqlite:///{tmp_path}/race.db?record_threshold={RECORD}"
    elif kind == "postgres":
        urls["state"] = request.getfixturevalue("postgres_server").url
    elif kind == "dynamodb":
        from conformance.stores import dynamodb_url, s3_url

        urls["state"] = dynamodb_url(request)  # the AWS environment is inherited by the processes
        urls["blob"] = s3_url(request)
    else:
        server = request.getfixturevalue("cosmos_env")
        host = server.endpoint.split("://", 1)[1].rstrip("/")
        urls["state"] = f"cosmos+https://{host}/racedb/multiProjectionStates?verify=false"
        urls["COSMOS_KEY"] = server.key
    return urls


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "cosmos", pytest.param("dynamodb", marks=pytest.mark.aws)])
def test_many_writers_and_readers_across_processes(kind, request, tmp_path):
    from sekiops.errors import TombstonedError
    from sekiops.pipeline.restore import RestoreOptions, restore
    from sekiops.state.base import iter_rows

    urls = _urls(kind, request, tmp_path)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS + 1)
    stop = ctx.Event()
    results = ctx.Queue()
    spools = tmp_path / "spools"
    spools.mkdir()
    procs = [ctx.Process(target=writer_proc, args=(urls, w, barrier, results, str(spools / f"w{w}")))
             for w in range(WRITERS)]
    procs.append(ctx.Process(target=tombstoner_proc, args=(urls, barrier, results, str(spools / "t"))))
    readers = [ctx.Process(target=reader_proc, args=(urls, stop, results, str(spools / f"r{i}")))
               for i in range(READERS)]
    for p in readers + procs:
        p.start()
    try:
        for p in procs:
            p.join(300)
            assert p.exitcode == 0, f"a writer/tombstoner process failed (exit {p.exitcode})"
    finally:
        stop.set()
        for p in readers:
            p.join(60)
        for p in readers + procs:
            if p.is_alive():
                p.kill()
    items = []
    while len([i for i in items if i[0] == "reader"]) < READERS or len(
            [i for i in items if i[0] in ("write", "tombstone")]) < WRITERS * ROUNDS:
        items.append(results.get(timeout=30))
    for p in readers:
        assert p.exitcode == 0

    writes = [i for i in items if i[0] == "write"]
    errors = [i for i in writes if i[3].startswith("error")]
    assert not errors, errors
    tomb = [i for i in items if i[0] == "tombstone"]
    assert not [t for t in tomb if t[3].startswith("error")], tomb
    tomb_wins = [t[1] for t in tomb if t[3] == "win"]
    assert len(tomb_wins) == 1, f"the tombstone never won (or won twice): {tomb}"
    tomb_round = tomb_wins[0]

    last_winner = None
    for rnd in range(1, ROUNDS + 1):
        outcomes = {w: o for (_, r, w, o) in writes if r == rnd}
        wins = [w for w, o in outcomes.items() if o == "win"]
        mutations = len(wins) + (1 if rnd == tomb_round else 0)
        if rnd <= tomb_round:
            # compare-and-swap: exactly one winner per round (a writer, or the tombstone)
            assert mutations == 1, f"round {rnd}: {outcomes}, tombstone round {tomb_round}"
            losers = {w: o for w, o in outcomes.items() if o != "win"}
            # losing to a writer: ConcurrencyConflictError; losing to the tombstone: either that
            # or TombstonedError (the store re-reads the row to say why the swap failed)
            allowed = ("conflict", "tombstoned") if rnd == tomb_round else ("conflict",)
            assert all(o in allowed for o in losers.values()), f"round {rnd}: {losers}"
        else:
            # tombstones survive concurrent writers: nobody wins any more
            assert wins == [], f"round {rnd}: a write succeeded over a tombstone: {outcomes}"
            assert all(o in ("tombstoned", "conflict") for o in outcomes.values()), outcomes
        if wins:
            last_winner = (rnd, wins[0])

    reader_reports = [i for i in items if i[0] == "reader"]
    total_exact = 0
    for _, counts, bad in reader_reports:
        assert not bad, f"a reader saw something it must never see: {bad}"
        total_exact += counts.get("exact", 0)
    assert total_exact > 0, f"the readers never completed a restore: {reader_reports}"

    # the final row: tombstoned, holding the last winner's snapshot, every blob key present
    from sekiops.blob import open_blob_store
    from sekiops.state import open_state_store

    if "COSMOS_KEY" in urls:
        os.environ["COSMOS_KEY"] = urls["COSMOS_KEY"]
    state = open_state_store(urls["state"], service_id=urls["service_id"])
    blob = open_blob_store(urls["blob"])
    try:
        rows = list(iter_rows(state))
        assert [r.where for r in rows] == [f"{urls['service_id']}/{PROJ}/1"]
        assert rows[0].is_tombstoned
        with pytest.raises(TombstonedError):
            restore(state, blob, io.BytesIO(), projector_name=PROJ, projector_version="1")
        buf = io.BytesIO()
        res = restore(state, blob, buf, projector_name=PROJ, projector_version="1",
                      options=RestoreOptions(include_tombstoned=True, verify=True))
        assert buf.getvalue() == make_state(*last_winner)
        for key in (res.envelope_key, res.payload_key):
            if key:
                assert blob.exists(key)
    finally:
        state.close()
    locations = Counter()
    for (_, r, w, o) in writes:
        if o == "win":
            size = len(make_state(r, w))
            locations["small" if size < 1000 else ("payload-blob" if w % 2 else "record-or-inline")] += 1
    print(f"[concurrency {kind}] rounds={ROUNDS} writers={WRITERS} tombstone-round={tomb_round} "
          f"readers-exact={total_exact} reader-counts={[c for _, c, _ in reader_reports]} wins={dict(locations)}")
