"""Orphan audits over large containers: peak memory and time of ``sekiops audit-blobs`` at N blobs.

Sekiban never deletes a blob (its issue #270), so a real container holds hundreds of thousands
to millions of content-addressed blobs, most of them orphans. For each size the benchmark

1. builds a container in a **separate process** (``python -m sekiops.ops.bench audit-setup``: a
   child's peak RSS starts from its parent's, so the audit must not be that child): ``blobs``
   blobs under ``P{0..projectors-1}/{sha256}.bin`` and one snapshot row per referenced blob
   (``referenced`` of them: an offloaded v10 envelope naming the blob), in a SQLite state store
   of its own; the local store is built once and cached (``workdir/audit-N``), Azurite is filled
   through the blob API;
2. runs the product's own command in a fresh process under the ``wait4`` launcher --
   ``sekiops audit-blobs --grace 0 --format json`` with its output streamed to a file, as an
   operator would redirect it -- and reads the kernel's peak RSS and the wall time; the audit's
   own counts come from the end of that output (blobs, referenced, orphans, seconds);
3. beside it, the idle baseline: the same command on an empty container.

Every number here is measured. Nothing is modelled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ...blob import open_blob_store
from ...format.constants import PAYLOAD_TYPE
from ...format.envelope import EnvelopeMeta, offloaded_envelope_bytes
from ...format.record import SnapshotRow, utcnow
from ...state import open_state_store
from .inputs import package_root
from .measure import run_measured

SERVICE = "audit-bench"
LAST_SORTABLE = "063912345678901234500000000001"


def setup_child(state_url: str, blob_url: str, blobs: int, referenced: int, projectors: int = 100,
                workers: int = 16, progress: Callable[[str], object] | None = None,
                blobs_exist: bool = False) -> dict:
    """Create ``blobs`` blobs and ``referenced`` rows pointing at the first ones (run in its own process).
    ``blobs_exist``: the blobs are there already (another row count over the same container)."""
    if referenced > blobs:
        raise ValueError("more referenced blobs than blobs")
    state = open_state_store(state_url, service_id=SERVICE, create=True)
    blob = open_blob_store(blob_url, create=True)
    if blob is None:  # an empty URL and no $SEKIOPS_BLOB_URL
        state.close()
        raise ValueError("the audit benchmark needs a blob store URL")
    t0 = time.perf_counter()
    try:
        put_raw = getattr(blob, "put_raw", None)  # the local and memory stores' write without hashing
        local = put_raw is not None and blob.provider in ("local", "file", "filesystem")

        def content(i: int) -> bytes:
            return b'{"bench":"audit","blob":%d}' % i

        def key_of(i: int) -> tuple[str, str, bytes]:
            data = content(i)
            sha = hashlib.sha256(data).hexdigest()
            return blob.key_for(f"P{i % projectors}", sha), sha, data

        def put(i: int) -> None:
            key, sha, data = key_of(i)
            if local:
                assert put_raw is not None  # local means the store has put_raw
                put_raw(key, data)
            else:
                written = blob.write(io.BytesIO(data), f"P{i % projectors}", sha256=sha, size=len(data))
                assert written.key == key, (written.key, key)

        if blobs_exist:
            pass
        elif local:
            for i in range(blobs):
                put(i)
                if progress and i and i % 100_000 == 0:
                    progress(f"  {i:,} blobs")
        else:
            with ThreadPoolExecutor(workers) as ex:
                for n, _ in enumerate(ex.map(put, range(blobs), chunksize=64)):
                    if progress and n and n % 10_000 == 0:
                        progress(f"  {n:,} blobs")
        blobs_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        now = utcnow()
        for i in range(referenced):
            key, sha, data = key_of(i)
            name, version = f"P{i % projectors}", f"v{i // projectors}"
            meta = EnvelopeMeta(projector_name=name, projector_version=version,
                                last_sortable_unique_id=LAST_SORTABLE, version=1,
                                original_size_bytes=len(data), compressed_size_bytes=len(data))
            env = offloaded_envelope_bytes(meta, key, blob.provider, len(data))
            row = SnapshotRow(service_id=SERVICE, projector_name=name, projector_version=version,
                              payload_type=PAYLOAD_TYPE, last_sortable_unique_id=LAST_SORTABLE, events_processed=1,
                              original_size_bytes=len(env), compressed_size_bytes=len(env),
                              safe_window_threshold=LAST_SORTABLE, created_at=now, updated_at=now,
                              build_source="SEKIOPS_BENCH", build_host="bench")

            state.write(row, io.BytesIO(env), len(env), None)
            if progress and i and i % 20_000 == 0:
                progress(f"  {i:,} rows")
        rows_s = time.perf_counter() - t1
    finally:
        state.close()
        blob.close()
    return {"blobs": blobs, "referenced": referenced, "projectors": projectors, "blobs_s": round(blobs_s, 2),
            "rows_s": round(rows_s, 2)}


_TAIL_FIELDS = ("blobs", "referenced", "orphanCount", "rows", "seconds", "certified")


def tail_fields(path: str, size: int = 1 << 20) -> dict:
    """The report's summary fields, read from the end of its JSON (the orphans come first)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(0, end - size))
        tail = f.read().decode("utf-8", "replace")
    out = {}
    for name in _TAIL_FIELDS:
        found = re.findall(rf'^\s*"{name}": (true|false|null|-?[0-9.]+)', tail, re.M)
        if found:
            out[name] = json.loads(found[-1])
    return out


def run_audit_benchmark(sizes=(10_000, 100_000, 1_000_000), *, workdir: str, blob_url: str | None = None,
                        referenced_fraction: float = 0.1, referenced: int | None = None, repeat: int = 1,
                        python: str | None = None, progress: Callable[[str], object] | None = None,
                        timeout: float = 3600.0, env: dict | None = None) -> list[dict]:
    """Rows: one per size (plus the idle baseline), measured in fresh processes.

    ``blob_url`` None: a local directory per size under ``workdir`` (kept: building a million
    files takes a while); else that container (e.g. Azurite's) with a prefix per size, so the
    sizes do not see each other's blobs. Snapshot rows: ``referenced`` (a fixed count, at most the
    size), else ``referenced_fraction`` of the blobs; each row count has its own state store over
    the same blobs.
    """
    python = python or sys.executable
    say = progress or (lambda _m: None)
    os.makedirs(workdir, exist_ok=True)
    child_env = dict(env or os.environ)
    root = package_root()
    child_env["PYTHONPATH"] = root + (os.pathsep + child_env["PYTHONPATH"] if child_env.get("PYTHONPATH") else "")
    child_env.setdefault("SEKIOPS_SPOOL_DIR", os.path.join(workdir, "spool"))
    rows = []
    for n in [0, *sizes]:
        label = "idle" if n == 0 else f"{n:,}"
        here = os.path.join(workdir, f"audit-{n}" + ("" if blob_url is None else "-remote"))
        os.makedirs(here, exist_ok=True)
        n_refs = min(n, referenced) if referenced is not None else int(n * referenced_fraction)
        db = os.path.join(here, "state.db" if n_refs == int(n * 0.1) else f"state-{n_refs}.db")
        state_url = "sqlite:///" + db
        this_blob = os.path.join(here, "blobs") if blob_url is None else _with_prefix(blob_url, f"auditbench{n}")
        blobs_marker = os.path.join(here, "ready.json")
        rows_marker = db + ".ready"
        if not (os.path.exists(blobs_marker) and (os.path.exists(rows_marker) or db.endswith("state.db"))):
            try:
                os.unlink(db)
            except FileNotFoundError:
                pass
            have_blobs = os.path.exists(blobs_marker)
            say(f"audit {label}: building the container ({'its' if have_blobs else f'{n:,}'} blobs, "
                f"{n_refs:,} rows) in a separate process")
            m = run_measured([python, "-m", "sekiops.ops.bench", "audit-setup", "--state", state_url, "--blob",
                              this_blob, "--blobs", str(n), "--referenced", str(n_refs)]
                             + (["--blobs-exist"] if have_blobs else []),
                             env=child_env, cwd=here, timeout=timeout)
            if not m.ok:
                raise RuntimeError(f"audit set-up for {label} failed: {m.error_line()}")
            for marker in (blobs_marker, rows_marker):
                with open(marker, "w") as f:
                    json.dump(m.json() or {}, f)
        for rnd in range(max(1, repeat)):
            out = os.path.join(here, "audit-output.json")
            argv = [python, "-m", "sekiops", "audit-blobs", "--state", state_url, "--blob", this_blob,
                    "--service-id", SERVICE, "--grace", "0", "--format", "json"]
            m = run_measured(argv, env=child_env, cwd=here, timeout=timeout, stdout_path=out)
            fields = tail_fields(out) if m.ok else {}
            try:
                os.unlink(out)
            except FileNotFoundError:
                pass
            row = {"blobs": n, "rows": n_refs, "label": label, "round": rnd, "ok": m.ok and fields.get("blobs") == n,
                   "error": None if m.ok else m.error_line(), "peak_rss_bytes": m.peak_rss_bytes,
                   "wall_s": round(m.wall_s, 3), "audit_s": fields.get("seconds"),
                   "referenced": fields.get("referenced"), "orphans": fields.get("orphanCount"),
                   "certified": fields.get("certified"), "store": "local" if blob_url is None else _scheme(blob_url)}
            if m.ok and fields.get("blobs") != n:
                row["error"] = f"the audit listed {fields.get('blobs')} blobs, expected {n}"
            rows.append(row)
            say(f"audit {label}: peak {m.peak_rss_bytes / 2**20:.1f} MiB, {m.wall_s:.2f} s wall"
                + (f", audit {fields.get('seconds')} s, {fields.get('orphanCount')} orphans" if m.ok else
                   f": FAILED {row['error']}"))
    base = [r["peak_rss_bytes"] for r in rows if r["blobs"] == 0 and r["ok"]]
    for r in rows:
        if base and r["ok"]:
            r["baseline_rss_bytes"] = min(base)
            r["overhead_bytes"] = r["peak_rss_bytes"] - min(base)
    return rows


def _with_prefix(url: str, prefix: str) -> str:
    return url + ("&" if "?" in url else "?") + f"prefix={prefix}"


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "local"
