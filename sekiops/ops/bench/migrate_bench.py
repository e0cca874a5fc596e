"""Migration throughput against far-away stores: rows per second at concurrency 1, 4, 16.

A deployment of thousands of snapshots behind 20-50 ms of network per call is latency-bound
when its rows are migrated one at a time. This benchmark puts a :class:`.LatencyProxy` in front
of the state server and of the blob server (every call +``delay``, both on loopback), fills a
fresh service with ``rows`` snapshot rows whose envelopes are inline (~``row_bytes`` each; in a
separate process, directly, not through the proxies), and runs the product's own command in a
fresh process through the proxies::

    sekiops migrate run offload --threshold 1KiB --canary 0 --execute --format json [--concurrency N]

which moves every envelope to the blob store (record-level offload: one blob upload, one
compare-and-swap row write, one verification read of each row and blob). Measured: the whole
process's wall time (start-up, plan, migration, verification) and the rows it migrated; rows/s =
rows / wall. The concurrency levels run interleaved over rounds (same background load); each
round uses a new service id, so every run migrates the same number of fresh rows.

``--concurrency`` comes with the concurrent runner (``RunOptions(concurrency=N)``); on a sekiops
without it only concurrency 1 runs, and the rows say so.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from ...blob import open_blob_store
from ...pipeline.persist import PersistOptions, persist_stream
from ...state import open_state_store
from .inputs import package_root
from .latency_proxy import LatencyProxy
from .measure import run_measured

LAST_SORTABLE = "063912345678901234500000000001"


def setup_child(state_url: str, blob_url: str | None, service_id: str, rows: int, row_bytes: int) -> dict:
    """``rows`` inline snapshots of ~``row_bytes`` of state JSON each, persisted the normal way."""
    state = open_state_store(state_url, service_id=service_id, create=True)
    blob = open_blob_store(blob_url, create=True) if blob_url else None
    t = time.perf_counter()
    try:
        for i in range(rows):
            doc = json.dumps({"row": i, "pad": secrets.token_hex(max(1, row_bytes // 2))}).encode()
            persist_stream(state, blob, io.BytesIO(doc), projector_name=f"M{i % 10}", projector_version=f"v{i // 10}",
                           events_processed=1, last_sortable_unique_id=LAST_SORTABLE,
                           options=PersistOptions(payload_threshold=1 << 30, record_threshold=1 << 30, threads=1))
    finally:
        state.close()
        if blob is not None:
            blob.close()
    return {"rows": rows, "seconds": round(time.perf_counter() - t, 2)}


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url.split("+", 1)[1] if url.startswith("cosmos+") else url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _swap_port(text: str, host: str, port: int, new_port: int) -> str:
    return re.sub(rf"(//(?:[^/@]*@)?)({re.escape(host)}|127\.0\.0\.1|localhost):{port}\b",
                  rf"\g<1>127.0.0.1:{new_port}", text)


def has_concurrency(python: str, env: dict) -> bool:
    """Does this sekiops's ``migrate run`` take ``--concurrency``?"""
    out = subprocess.run([python, "-m", "sekiops", "migrate", "run", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    return "--concurrency" in out.stdout


def run_migrate_benchmark(*, label: str, state_url: str, blob_url: str, blob_endpoint: str, workdir: str,
                          env: dict | None = None, concurrency=(1, 4, 16), rows: int = 200, row_bytes: int = 4096,
                          delay: float = 0.020, rounds: int = 1, python: str | None = None,
                          progress: Callable[[str], object] | None = None, timeout: float = 1800.0) -> list[dict]:
    """Rows per second of ``sekiops migrate run offload`` at each concurrency, through latency proxies.

    ``state_url``: the state store (postgresql://... or cosmos+https://...); ``blob_url``: the
    blob store (``azblob://container``) and ``blob_endpoint`` the blob server's URL (its host:port
    is proxied; ``AZURE_STORAGE_CONNECTION_STRING`` in ``env`` is rewritten to the proxy).
    Returns one row per (concurrency, round).
    """
    python = python or sys.executable
    say = progress or (lambda _m: None)
    base_env = dict(env or os.environ)
    root = package_root()
    base_env["PYTHONPATH"] = root + (os.pathsep + base_env["PYTHONPATH"] if base_env.get("PYTHONPATH") else "")
    base_env.setdefault("SEKIOPS_SPOOL_DIR", os.path.join(workdir, "spool"))
    os.makedirs(workdir, exist_ok=True)
    levels = list(concurrency)
    concurrent = has_concurrency(python, base_env)
    if not concurrent:
        say("migrate run has no --concurrency here: only concurrency 1 runs")
    s_host, s_port = _host_port(state_url, 5432 if state_url.startswith("postgres") else 443)
    b_host, b_port = _host_port(blob_endpoint, 80)
    out_rows = []
    run_id = time.strftime("%H%M%S") + secrets.token_hex(2)
    with LatencyProxy((s_host, s_port), delay) as sp, LatencyProxy((b_host, b_port), delay) as bp:
        assert sp.port is not None and bp.port is not None  # start() raised otherwise
        p_state = _swap_port(state_url, s_host, s_port, sp.port)
        p_env = dict(base_env)
        if "AZURE_STORAGE_CONNECTION_STRING" in p_env:
            p_env["AZURE_STORAGE_CONNECTION_STRING"] = _swap_port(p_env["AZURE_STORAGE_CONNECTION_STRING"],
                                                                  b_host, b_port, bp.port)
        for rnd in range(max(1, rounds)):
            for c in levels:
                if c > 1 and not concurrent:
                    out_rows.append({"store": label, "concurrency": c, "round": rnd, "ok": False,
                                     "error": "this sekiops has no migrate run --concurrency"})
                    continue
                service = f"mbench-{run_id}-{rnd}-{c}"
                m = run_measured([python, "-m", "sekiops.ops.bench", "migrate-setup", "--state", state_url,
                                  "--blob", blob_url, "--service-id", service, "--rows", str(rows),
                                  "--row-bytes", str(row_bytes)], env=base_env, cwd=workdir, timeout=timeout)
                if not m.ok:
                    raise RuntimeError(f"migration set-up failed: {m.error_line()}")
                journal = os.path.join(workdir, f"journal-{service}.jsonl")
                argv = [python, "-m", "sekiops", "migrate", "run", "offload", "--state", p_state, "--blob", blob_url,
                        "--service-id", service, "--threshold", "1KiB", "--canary", "0", "--execute",
                        "--format", "json", "--journal", journal]
                if concurrent:
                    argv += ["--concurrency", str(c)]
                calls_before = (sp.connections, bp.connections)
                m = run_measured(argv, env=p_env, cwd=workdir, timeout=timeout)
                doc = m.json() or {}
                counts = (doc.get("result") or {}).get("counts") or {}
                done = counts.get("done", 0)
                row = {"store": label, "concurrency": c, "round": rnd, "ok": m.ok and done == rows,
                       "error": None if m.ok else m.error_line(), "rows": rows, "done": done,
                       "wall_s": round(m.wall_s, 3), "rows_per_s": round(done / m.wall_s, 2) if m.wall_s else None,
                       "peak_rss_bytes": m.peak_rss_bytes, "delay_ms": round(delay * 1000, 1),
                       "connections": (sp.connections - calls_before[0]) + (bp.connections - calls_before[1])}
                if m.ok and done != rows:
                    row["error"] = f"migrated {done} of {rows} rows: {(doc.get('result') or {}).get('message')}"
                out_rows.append(row)
                say(f"migrate {label} concurrency {c}: " + (f"{done} rows in {m.wall_s:.2f} s = "
                                                            f"{row['rows_per_s']} rows/s" if row["ok"] else
                                                            f"FAILED {row['error']}"))
    return out_rows
