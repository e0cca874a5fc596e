"""A demo Sekiban deployment on the embedded default, with everything an SRE meets in production.

SQLite rows + a local blob directory: a large projection (payload offloaded), small inline ones,
a record-level offloaded envelope (SQLite extension mode, as the URL says), a v9 gzip envelope,
a legacy ``payloadJson`` envelope, an old GUID-keyed blob, a tombstone, an older version beside
the newest, an orphan blob older than the audit's grace window, and an envelope over 2 MiB kept inline
in its row (written before record offload was configured), so notebook 02's default ``offload``
migration has a row to move. Its sample incident evidence names the deployment's own projections
(``CustomerDirectory``, ``OrderSummary``), so notebook 04's capacity table shows both the logs' and
the inventory's view of them.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import random
import time
import uuid
from collections.abc import Callable

from ..blob.local import LocalBlobStore
from ..format.constants import PAYLOAD_TYPE
from ..format.envelope import EnvelopeMeta, dotnet_json_string, inline_envelope_bytes
from ..format.record import SnapshotRow, sortable_unique_id, utcnow
from ..pipeline.persist import PersistOptions, persist
from ..state import open_state_store
from ..units import format_bytes
from .demo_evidence import write_demo_evidence
from .synth import write_state

#: the demo's SQLite runs in sekiops' record-offload extension mode so both offload levels show
RECORD_THRESHOLD = 1_000_000


@dataclasses.dataclass
class DemoDeployment:
    directory: str
    state_url: str
    blob_url: str
    big_state_path: str
    big_projector: str
    rows: int
    orphan_key: str
    #: notebook 04's evidence parameters (logs_file, metrics_file, time_from, time_to, memory_limit, service_id)
    evidence: dict = dataclasses.field(default_factory=dict)


def build_demo_deployment(directory: str, big_bytes: int = 150_000_000,
                          progress: Callable[[str], None] = lambda msg: None) -> DemoDeployment:
    """Create (or recreate) the demo deployment in ``directory``; return its URLs."""
    os.makedirs(directory, exist_ok=True)
    db = os.path.join(os.path.abspath(directory), "sekiban.db")
    for path in (db, db + "-journal"):
        if os.path.exists(path):
            os.unlink(path)
    blob_dir = os.path.join(os.path.abspath(directory), "blobs")
    state_url = f"sqlite:///{db}?record_threshold={RECORD_THRESHOLD}"
    state = open_state_store(state_url)
    blob = LocalBlobStore(blob_dir)
    now = utcnow()
    lsuid = sortable_unique_id(now)

    def put(name: str, version: str, events: int, body: bytes | str | None = None,
            path: str | None = None, **opts) -> None:
        def write_body(out):
            if path:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        out.write(chunk)
            else:
                assert body is not None, "put() takes a body or a path"
                out.write(body if isinstance(body, bytes) else body.encode())
        persist(state, blob, write_body, projector_name=name, projector_version=version,
                events_processed=events, last_sortable_unique_id=lsuid,
                payload_type_name=f"Demo.{name}Payload", options=PersistOptions(**opts))

    big_path = os.path.join(directory, "big-state.json")
    progress(f"generating a {format_bytes(big_bytes)} projector state")
    with open(big_path, "wb") as f:
        write_state(f, big_bytes)
    progress("persisting the large projection (streaming)")
    put("CustomerDirectory", "v3", 1_250_000, path=big_path)

    progress("persisting small and medium projections")
    for i, name in enumerate(["OrderSummary", "InventoryLevels", "UserSessions", "PriceBook"]):
        buf = io.BytesIO()
        write_state(buf, 20_000 * (i + 1) ** 3, seed=i)
        put(name, "v1", 10_000 * (i + 1), buf.getvalue())
    medium = io.BytesIO()
    write_state(medium, 6_000_000, seed=7)  # ~1.3 MB compressed: inline payload, envelope > 1 MB
    put("AuditTrail", "v2", 480_000, medium.getvalue())
    put("AuditTrail", "v1", 300_000, medium.getvalue()[:3_000_000].rsplit(b',{"customerId"', 1)[0] + b"]}")

    progress("adding a v9 gzip envelope, a payloadJson envelope, a GUID-keyed blob and a tombstone")
    _legacy_rows(state, blob, lsuid)
    progress("adding an envelope over 2 MiB kept inline (written before record offload was configured)")
    add_inline_rows(state, ["OrderHistory"], payload_bytes=1_700_000, lsuid=lsuid)
    put("RetiredReport", "v1", 5_000, '{"report":"retired"}')
    retired = state.get("RetiredReport", "v1")
    assert retired is not None  # persisted just above
    state.tombstone(retired)

    orphan = blob.write(io.BytesIO(os.urandom(4096)), "CustomerDirectory")
    old = time.time() - 3 * 86_400
    os.utime(os.path.join(blob_dir, *orphan.key.split("/")), (old, old))
    rows = len(state.list_page(limit=1000))
    progress("writing sample incident evidence (Application Insights traces, container memory metrics)")
    evidence = write_demo_evidence(os.path.join(os.path.abspath(directory), "evidence"), projector="CustomerDirectory",
                                   service_id=state.service_id)
    state.close()
    return DemoDeployment(directory, state_url, blob_dir, big_path, "CustomerDirectory", rows, orphan.key, evidence)


def _legacy_rows(state, blob: LocalBlobStore, lsuid: str) -> None:
    """Rows as older Sekiban versions wrote them, built by hand (not by sekiops' writer)."""
    def row(name, version, events, envelope_len, **kw):
        return SnapshotRow(service_id=state.service_id, projector_name=name, projector_version=version,
                           payload_type=PAYLOAD_TYPE, last_sortable_unique_id=lsuid, events_processed=events,
                           original_size_bytes=envelope_len, compressed_size_bytes=envelope_len,
                           safe_window_threshold=lsuid, build_source="GRAIN", build_host="silo-0", **kw)

    payload = gzip.compress(json.dumps({"tenants": [{"id": i, "plan": "pro"} for i in range(2000)]}).encode())
    meta = EnvelopeMeta("TenantPlans", "v1", lsuid, str(uuid.uuid4()), 2_000, payload_type_name="Demo.Tenants",
                        original_size_bytes=len(gzip.decompress(payload)), compressed_size_bytes=len(payload))
    v9 = gzip.compress(inline_envelope_bytes(meta, payload))
    state.write(row("TenantPlans", "v1", 2_000, len(v9)), io.BytesIO(v9), len(v9), None)

    text = json.dumps({"flags": {"beta": True, "region": "japaneast"}})
    env = ('{"isOffloaded":false,"inlineState":{"payloadJson":' + dotnet_json_string(text) +
           ',"payloadBase64":null,"multiProjectionPayloadType":"Demo.Flags","projectorName":"FeatureFlags",'
           f'"projectorVersion":"v1","lastSortableUniqueId":"{lsuid}","lastEventId":"{uuid.uuid4()}",'
           '"version":42,"isCatchedUp":true,"isSafeState":true,"originalSizeBytes":0,"compressedSizeBytes":0},'
           '"offloadedState":null}').encode()
    state.write(row("FeatureFlags", "v1", 42, len(env)), io.BytesIO(env), len(env), None)

    big = gzip.compress(os.urandom(1_700_000))  # incompressible: over the payload threshold
    key = f"legacy-prefix/Telemetry/{uuid.uuid4().hex}.bin"
    blob.put_raw(key, big)
    meta = EnvelopeMeta("Telemetry", "v1", lsuid, str(uuid.uuid4()), 9_000, payload_type_name="Demo.Telemetry",
                        original_size_bytes=1_700_000, compressed_size_bytes=len(big))
    env = ('{"isOffloaded":true,"inlineState":null,"offloadedState":{"offloadKey":' + dotnet_json_string(key) +
           ',"storageProvider":"AzureBlobStorage","multiProjectionPayloadType":"Demo.Telemetry",'
           f'"projectorName":"Telemetry","projectorVersion":"v1","lastSortableUniqueId":"{lsuid}",'
           f'"lastEventId":"{meta.last_event_id}","version":9000,"isCatchedUp":true,"isSafeState":true,'
           f'"payloadLength":{len(big)},"originalSizeBytes":1700000,"compressedSizeBytes":{len(big)}}}}}').encode()
    state.write(row("Telemetry", "v1", 9_000, len(env)), io.BytesIO(env), len(env), None)


def add_inline_rows(state, names, *, payload_bytes: int = 1_700_000, version: str = "v1", lsuid: str | None = None,
                    seed: int = 11) -> list[str]:
    """Write one row per name whose envelope stays inline in the row however large (as Sekiban wrote
    rows before record-level offload was configured): a gzip payload of about ``payload_bytes``,
    Base64 in the envelope (4/3 of it). Such rows are what ``offload`` migrations move. Returns the
    ``name/version`` items."""
    lsuid = lsuid or sortable_unique_id(utcnow())
    rng = random.Random(seed)
    items = []
    for name in names:
        # random hex: the gzip is about payload_bytes long (hex compresses to ~0.55 of itself)
        n = payload_bytes * 2 // 17 + 1
        while True:
            words = " ".join(f"{rng.getrandbits(64):016x}" for _ in range(n))
            body = json.dumps({"orders": words}).encode()
            payload = gzip.compress(body, compresslevel=6)
            if len(payload) >= payload_bytes:
                break
            n = int(n * payload_bytes / max(len(payload), 1)) + 1
        meta = EnvelopeMeta(name, version, lsuid, str(uuid.uuid4()), 77_000, payload_type_name=f"Demo.{name}",
                            original_size_bytes=len(body), compressed_size_bytes=len(payload))
        env = inline_envelope_bytes(meta, payload)
        row = SnapshotRow(service_id=state.service_id, projector_name=name, projector_version=version,
                          payload_type=PAYLOAD_TYPE, last_sortable_unique_id=lsuid, events_processed=77_000,
                          original_size_bytes=len(env), compressed_size_bytes=len(env), safe_window_threshold=lsuid,
                          build_source="GRAIN", build_host="silo-0")
        state.write(row, io.BytesIO(env), len(env), None)
        items.append(f"{name}/{version}")
    return items
