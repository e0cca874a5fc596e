"""Data-loss, hang and leak paths between the crash matrix and the hostile-input suites:
restore outputs that would clobber a store, signals, special files under blob keys, plans
that write, and redaction of passwords whatever they hold."""

from __future__ import annotations

import fcntl
import io
import json
import os
import random
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

from sekiops.blob import open_blob_store
from sekiops.pipeline.persist import PersistOptions, persist_stream
from sekiops.state import open_state_store
from sekiops.urls import redact

SLUI = "0" * 30
STATE = json.dumps({"customers": [{"id": i, "name": f"c{i}"} for i in range(5000)]}).encode()


@pytest.fixture
def deployment(tmp_path):
    db, blobs = tmp_path / "snapshots.db", tmp_path / "blobs"
    state, blob = open_state_store(f"sqlite:///{db}"), open_blob_store(str(blobs))
    persist_stream(state, blob, io.BytesIO(STATE), projector_name="P", projector_version="1", events_processed=1,
                   last_sortable_unique_id=SLUI, options=PersistOptions(payload_threshold=100))
    state.close()
    env = {**os.environ, "SEKIOPS_STATE_URL": f"sqlite:///{db}", "SEKIOPS_BLOB_URL": str(blobs),
           "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool"), "SEKIOPS_FAILPOINT_DIR": str(tmp_path)}
    return db, blobs, env


def cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "sekiops", *args], env=env, capture_output=True, text=True,
                          timeout=120, **kw)


def rows(db) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM dcb_multi_projection_states").fetchone()[0]


def one_error_line(p) -> str:
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    return lines[0]


# --- restore --out never clobbers a store ---------------------------------------------------------


@pytest.mark.parametrize("target", ["db", "db-wal", "db-journal", "inside-blobs", "blob-root", "inside-spool",
                                    "symlink-to-db", "hardlink-to-db"])
def test_restore_out_refuses_the_stores_own_files(deployment, tmp_path, target):
    db, blobs, env = deployment
    (tmp_path / "spool").mkdir(exist_ok=True)
    path = {"db": db, "db-wal": f"{db}-wal", "db-journal": f"{db}-journal", "inside-blobs": blobs / "x.json",
            "blob-root": blobs, "inside-spool": tmp_path / "spool" / "x.json",
            "symlink-to-db": tmp_path / "link.json", "hardlink-to-db": tmp_path / "hard.json"}[target]
    if target == "symlink-to-db":
        os.symlink(db, path)
    if target == "hardlink-to-db":
        os.link(db, path)
    before = db.read_bytes()
    p = cli(["restore", "--projector", "P", "--out", str(path)], env)
    assert p.returncode == 2, p.stderr
    line = one_error_line(p)
    assert "refusing to write the restore output" in line
    assert db.read_bytes() == before and rows(db) == 1
    assert not list(tmp_path.glob("**/.*.partial"))


# --- signals ----------------------------------------------------------------------------------------


def _paused(tmp_path, stage: str, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (tmp_path / f"{stage}.paused").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{stage} never reached"
        time.sleep(0.02)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_restore_interrupted_removes_its_partial_output(deployment, tmp_path, sig, code):
    db, blobs, env = deployment
    out = tmp_path / "out.json"
    # as a terminal's Ctrl-C finds it: a test run started in the background by a non-interactive
    # shell inherits SIGINT ignored, and Python keeps an inherited SIG_IGN (POSIX job control)
    proc = subprocess.Popen([sys.executable, "-m", "sekiops", "restore", "--projector", "P", "--out", str(out)],
                            env={**env, "SEKIOPS_FAILPOINTS": "restore_before_rename=pause"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _paused(tmp_path, "restore_before_rename", proc)
    assert list(tmp_path.glob(".out.json.*.partial"))  # the output so far, not yet in place
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr.startswith(f"error: interrupted by {sig.name}") and len(stderr.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out.json.*.partial"))
    assert not [p for p in (tmp_path / "spool").glob("*")]


def test_persist_interrupted_writes_nothing_and_leaves_no_temp_file(deployment, tmp_path):
    db, blobs, env = deployment
    src = tmp_path / "new.json"
    src.write_bytes(STATE.replace(b"c1", b"d1"))
    before = sorted(p.name for p in blobs.rglob("*") if p.is_file())
    proc = subprocess.Popen([sys.executable, "-m", "sekiops", "persist", "--projector", "P", "--version", "1",
                             "--events-processed", "2", "--last-sortable-unique-id", SLUI, "--in", str(src),
                             "--payload-threshold", "100"],
                            env={**env, "SEKIOPS_FAILPOINTS": "after_spool=pause"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _paused(tmp_path, "after_spool", proc)
    assert list((tmp_path / "spool").glob("snapshot-*.tmp"))  # the spooled payload, in flight
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and stderr.startswith("error: interrupted by SIGTERM"), stderr
    assert not list((tmp_path / "spool").glob("snapshot-*.tmp"))
    assert sorted(p.name for p in blobs.rglob("*") if p.is_file()) == before
    with open_state_store(f"sqlite:///{db}") as state:
        assert state.get("P", "1").events_processed == 1


def test_a_signal_after_the_output_is_in_place_says_completed(deployment, tmp_path):
    db, blobs, env = deployment
    out = tmp_path / "out.json"
    proc = subprocess.Popen([sys.executable, "-m", "sekiops", "restore", "--projector", "P", "--out", str(out)],
                            env={**env, "SEKIOPS_FAILPOINTS": "restore_after_rename=pause"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _paused(tmp_path, "restore_after_rename", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "interrupted" not in stderr and "completed" in stderr and "SIGTERM" in stderr
    assert out.read_bytes() == STATE


def test_partials_of_killed_runs_are_swept_but_live_ones_kept(deployment, tmp_path):
    db, blobs, env = deployment
    stale = tmp_path / ".out.json.0123456789ab.partial"
    young = tmp_path / ".out.json.aaaaaaaaaaaa.partial"
    held = tmp_path / ".out.json.bbbbbbbbbbbb.partial"
    other = tmp_path / ".notours.partial"
    for f in (stale, young, held, other):
        f.write_bytes(b"half a restore")
    old = time.time() - 3600
    for f in (stale, held, other):
        os.utime(f, (old, old))
    holder = open(held, "rb")
    fcntl.flock(holder.fileno(), fcntl.LOCK_SH)  # a live restore of another process
    try:
        p = cli(["restore", "--projector", "P", "--out", str(tmp_path / "out.json")], env)
        assert p.returncode == 0, p.stderr
        assert not stale.exists() and young.exists() and held.exists() and other.exists()
    finally:
        holder.close()


# --- special files under blob keys ----------------------------------------------------------------


@pytest.fixture
def trapped(deployment, tmp_path):
    """The payload blob of P/1 replaced by a FIFO (no writer: a blocking open would hang forever)."""
    db, blobs, env = deployment
    key = [p for p in blobs.rglob("*.bin")][0]
    key.unlink()
    os.mkfifo(key)
    return db, blobs, env, key


@pytest.mark.parametrize("command", [
    ["restore", "--projector", "P", "--out", "OUT"],
    ["restore", "--projector", "P", "--out", "OUT", "--verify"],
    ["anatomy", "--projector", "P"],
])
def test_a_fifo_under_a_key_fails_at_once(trapped, tmp_path, command):
    db, blobs, env, key = trapped
    command = [str(tmp_path / "out.json") if a == "OUT" else a for a in command]
    t = time.monotonic()
    p = cli(command, env)
    assert time.monotonic() - t < 30
    assert p.returncode == 2 and "FIFO" in one_error_line(p)


def test_audit_and_migrations_do_not_hang_on_a_fifo(trapped, tmp_path):
    """Each command ends (the 120 s timeout of cli() would fail the test) without a traceback; the
    audit lists only regular files; the migrations report the FIFO item as failed or skipped."""
    db, blobs, env, key = trapped
    p = cli(["audit-blobs", "--format", "json", "--grace", "0"], env)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["missingReferenced"] and report["missingReferenced"][0]["key"].endswith(key.name)
    for args in (["migrate", "run", "offload", "--payload-level", "--threshold", "10", "--execute", "--canary", "0",
                  "--journal", str(tmp_path / "o.jsonl")],
                 ["migrate", "run", "copy", "--to-state", f"sqlite:///{tmp_path}/copy.db", "--to-blob",
                  str(tmp_path / "copyblobs"), "--execute", "--canary", "0", "--journal", str(tmp_path / "c.jsonl")]):
        p = cli(args + ["--format", "json"], env, cwd=tmp_path)
        assert p.returncode in (0, 2) and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("kind", ["socket", "device", "directory"])
def test_other_special_files_are_refused(deployment, tmp_path, kind):
    db, blobs, env = deployment
    key = [p for p in blobs.rglob("*.bin")][0]
    key.unlink()
    if kind == "socket":  # bound by a short relative name (AF_UNIX paths are limited to 108 bytes)
        s = socket.socket(socket.AF_UNIX)
        cwd = os.getcwd()
        os.chdir(key.parent)
        try:
            s.bind(key.name)
        finally:
            os.chdir(cwd)
    elif kind == "device":
        os.symlink("/dev/zero", key)  # a symlink to a device: refused as a symlink, never followed
    else:
        key.mkdir()
    p = cli(["restore", "--projector", "P", "--out", str(tmp_path / "out.json")], env)
    assert p.returncode == 2
    line = one_error_line(p)
    assert any(w in line for w in ("socket", "symlink", "directory", "not a regular file")), line


# --- plans write nothing --------------------------------------------------------------------------


def test_migrate_plan_creates_no_target(deployment, tmp_path):
    db, blobs, env = deployment
    new_db, new_blobs = tmp_path / "new.db", tmp_path / "newblobs"
    for args in (["migrate", "plan", "copy"], ["migrate", "run", "copy"]):  # plan, and run without --execute
        p = cli(args + ["--to-state", f"sqlite:///{new_db}", "--to-blob", str(new_blobs), "--format", "json"],
                env, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert not new_db.exists() and not new_blobs.exists()
    plan = json.loads(cli(["migrate", "plan", "copy", "--to-state", f"sqlite:///{new_db}", "--to-blob",
                           str(new_blobs), "--format", "json"], env).stdout)
    assert [i["item"] for i in plan["items"]] == ["P/1"]
    assert not list(tmp_path.glob("*.jsonl"))  # no journal either
    p = cli(["migrate", "run", "copy", "--to-state", f"sqlite:///{new_db}", "--to-blob", str(new_blobs),
             "--execute", "--canary", "0", "--journal", str(tmp_path / "copy.jsonl")], env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert new_db.exists() and rows(new_db) == 1


# --- passwords whatever they hold ------------------------------------------------------------------


PRINTABLE = string.printable.strip() + " "


@pytest.mark.parametrize("seed", range(20))
def test_passwords_with_every_printable_character_never_appear(seed):
    rng = random.Random(seed)
    for _ in range(50):
        pw = "".join(rng.choice(PRINTABLE) for _ in range(rng.randint(4, 24)))
        for form in (pw, quote(pw, safe="")):
            for template in ("postgresql://admin:{}@db.example:5432/sekiban", "cannot connect to "
                             "postgresql://u:{}@127.0.0.1:1/db (timeout) and retried",
                             "cosmos+https://u:{}@host/db/c?verify=false"):
                text = template.format(form)
                shown = redact(text)
                assert pw not in shown and form not in shown, (pw, shown)


@pytest.mark.parametrize("url", ["postgresql://u:SeCr3t/xyz@127.0.0.1:1/db", "postgresql://u:SeCr3t@xyz@127.0.0.1:1/db",
                                 "postgresql://u:SeCr3t#frag@127.0.0.1:1/db", "postgresql://u:SeCr3t?x@127.0.0.1:1/db"])
def test_malformed_urls_never_print_their_password(tmp_path, url):
    p = cli(["inventory", "--state", url], {**os.environ, "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool"),
                                             "SEKIOPS_CONNECT_TIMEOUT": "3"})
    assert p.returncode == 2 and "SeCr3t" not in p.stderr + p.stdout, p.stderr
    one_error_line(p)
    # said before connecting, readably, with no fragment of the password ('xyz', 'frag', 'x') as a host
    assert p.stderr.startswith("error: postgresql://u:***@127.0.0.1:1/db: the user name or password holds"), p.stderr
    assert "%40, %2F, %3F and %23" in p.stderr and "cannot connect" not in p.stderr


@pytest.mark.parametrize("url", ["postgresql://127.0.0.1:1/db?options=a@b", "postgresql://u:p%40ss%2Fw@127.0.0.1:1/db",
                                 "postgresql:///db?host=/tmp/none&user=a@b"])
def test_well_formed_urls_with_at_signs_are_not_refused(tmp_path, url):
    p = cli(["inventory", "--state", url], {**os.environ, "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool"),
                                             "SEKIOPS_CONNECT_TIMEOUT": "3"})
    assert p.returncode == 2 and "cannot connect" in p.stderr and "percent-encoded" not in p.stderr, p.stderr
    assert "p@ss/w" not in p.stderr
