"""No operation waits forever on a store that stops answering.

A PostgreSQL server stopped with SIGSTOP right after a persist uploaded its blobs, and servers
that accept connections and never answer (Cosmos DB, Azure Blob, PostgreSQL): every command
ends with exit 2 and one ``error:`` line naming the store and the deadline, within a bounded
time set by SEKIOPS_TIMEOUT / SEKIOPS_CONNECT_TIMEOUT (sekiops.timeouts).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from servers import launch

SLUI = "0" * 30
STATE = json.dumps({"items": list(range(20000))}).encode()
#: generous bound for a 3 s silence deadline: a few attempts, connects and backoffs
BOUND = 90


def cli(args, env, timeout=BOUND + 60):
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "sekiops", *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    return p, time.monotonic() - t


def deadline_env(tmp_path, **extra):
    env = {**os.environ, "SEKIOPS_TIMEOUT": "3s", "SEKIOPS_CONNECT_TIMEOUT": "3s",
           "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool"), "SEKIOPS_FAILPOINT_DIR": str(tmp_path)}
    env.update(extra)
    return env


def _server_pids(postmaster: int) -> list[int]:
    """The postmaster and every process it forked (backends call setsid: no common group)."""
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                pids.append(int(entry))
    return pids


@pytest.fixture
def stopped_postgres():
    """A PostgreSQL cluster of this test's own (the session's must not be stopped)."""
    server = launch.start_postgres()
    stopped: list[int] = []

    def stop():
        for pid in _server_pids(server.proc.pid):
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    yield server, stop
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    server.stop()


def test_postgres_stopped_after_the_upload(stopped_postgres, tmp_path):
    server, stop = stopped_postgres
    src = tmp_path / "state.json"
    src.write_bytes(STATE)
    env = deadline_env(tmp_path, SEKIOPS_FAILPOINTS="row_write=pause")
    proc = subprocess.Popen([sys.executable, "-m", "sekiops", "persist", "--state", server.url,
                             "--blob", str(tmp_path / "blobs"), "--projector", "P", "--version", "1",
                             "--events-processed", "1", "--last-sortable-unique-id", SLUI, "--in", str(src),
                             "--payload-threshold", "100"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "row_write.paused").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    assert list((tmp_path / "blobs").rglob("*.bin"))  # the upload happened
    stop()
    t = time.monotonic()
    (tmp_path / "row_write.resume").touch()
    _, stderr = proc.communicate(timeout=BOUND + 60)
    took = time.monotonic() - t
    assert proc.returncode == 2, stderr
    assert took < BOUND, f"still waiting after {took:.0f} s"
    assert stderr.startswith("error: ") and len(stderr.splitlines()) == 1 and "Traceback" not in stderr
    assert "SEKIOPS_TIMEOUT" in stderr or "no answer" in stderr or "cannot connect" in stderr
    assert server.password not in stderr


def test_postgres_stopped_before_a_restore(stopped_postgres, tmp_path):
    server, stop = stopped_postgres
    from sekiops.blob import open_blob_store
    from sekiops.pipeline.persist import persist_stream
    from sekiops.state import open_state_store

    with open_state_store(server.url) as state:
        persist_stream(state, open_blob_store(str(tmp_path / "blobs")), io.BytesIO(STATE), projector_name="P",
                       projector_version="1", events_processed=1, last_sortable_unique_id=SLUI)
    stop()
    p, took = cli(["restore", "--state", server.url, "--blob", str(tmp_path / "blobs"), "--projector", "P",
                   "--out", str(tmp_path / "out.json")], deadline_env(tmp_path))
    assert p.returncode == 2 and took < BOUND, (took, p.stderr)
    assert p.stderr.startswith("error: ") and not (tmp_path / "out.json").exists()


class SilentServer:
    """Accepts TCP connections and never answers (a wedged server, a black-holing proxy)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)  # held open, never read from or written to

    def close(self):
        self._stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.parametrize("store", ["postgres", "cosmos", "azure"])
def test_a_server_that_never_answers(silent, tmp_path, store):
    env = deadline_env(tmp_path)
    state = f"sqlite:///{tmp_path}/s.db"
    if store == "postgres":
        state = f"postgresql://u:pw-never-shown@127.0.0.1:{silent.port}/db"
        commands = [["inventory", "--state", state]]
    elif store == "cosmos":
        state = f"cosmos+http://127.0.0.1:{silent.port}/db/c"
        env["COSMOS_KEY"] = launch.COSMOS_EMULATOR_KEY
        commands = [["inventory", "--state", state]]
    else:
        env["AZURE_STORAGE_CONNECTION_STRING"] = (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={launch.AZURITE_ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{silent.port}/devstoreaccount1;")
        src = tmp_path / "state.json"
        src.write_bytes(STATE)
        commands = [["persist", "--state", state, "--blob", "azblob://silent", "--projector", "P", "--version", "1",
                     "--events-processed", "1", "--last-sortable-unique-id", SLUI, "--in", str(src),
                     "--payload-threshold", "100"],
                    ["audit-blobs", "--state", state, "--blob", "azblob://silent"]]
    for command in commands:
        p, took = cli(command, env)
        assert p.returncode == 2, p.stderr
        assert took < BOUND, f"{command[0]} waited {took:.0f} s"
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
        assert "pw-never-shown" not in p.stderr and launch.AZURITE_ACCOUNT_KEY not in p.stderr
