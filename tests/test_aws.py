"""DynamoDB + S3 (issue 14) against moto's real protocol server: Sekiban's exact item and object
layouts, record-level offload at 350,000 bytes, the 400 KB item limit, AES256, versioned
conditional deletes, every command across clouds, and faults on the wire.

Faults (throttling answers, connection resets, lost answers, cut bodies, stalls) are injected
by :class:`FaultProxy` (tests/servers/faultproxy.py), an HTTP proxy between boto3 and moto:
the SDK sees exactly what a real endpoint would send.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest

from conformance.stores import dynamodb_url, s3_url
from sekiops.blob import open_blob_store
from sekiops.errors import (
    BlobChangedError,
    ConcurrencyConflictError,
    IntegrityError,
    ItemTooLargeError,
    StoreError,
    StoreUnavailableError,
    TombstonedError,
    UsageError,
)
from sekiops.format.constants import PAYLOAD_TYPE, RECORD_THRESHOLD_DYNAMODB
from sekiops.format.envelope import EnvelopeMeta, inline_envelope_bytes, offloaded_envelope_bytes
from sekiops.pipeline.persist import PersistOptions, persist_stream
from sekiops.pipeline.restore import RestoreOptions, restore
from sekiops.state import open_state_store
from sekiops.state.base import iter_rows
from sekiops.state.dynamodb import INLINE_LIMIT, ITEM_LIMIT, dynamodb_target
from servers.faultproxy import FaultProxy, SilentServer, dynamodb_op, s3_op

pytestmark = pytest.mark.aws

REPO = Path(__file__).resolve().parents[1]
SLUI = "063904064000000000000000000001"
DOTNET_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")


def svc() -> str:
    return "aws-" + uuid.uuid4().hex[:10]


def state_json(n_bytes: int, seed: int = 1) -> bytes:
    """Projector-state JSON of about ``n_bytes`` that gzip barely shrinks (random hex)."""
    import random

    rng = random.Random(seed)
    items = []
    size = 0
    while size < n_bytes:
        text = rng.randbytes(500).hex()
        items.append(text)
        size += len(text) + 3
    return json.dumps({"seed": seed, "items": items}, separators=(",", ":")).encode()


def persist(state, blob, name: str, data: bytes, version: str = "1", events: int = 10, **options):
    return persist_stream(state, blob, io.BytesIO(data), projector_name=name, projector_version=version,
                          events_processed=events, last_sortable_unique_id=SLUI, options=PersistOptions(**options))


def restored(state, blob, name: str, version: str | None = None, **options) -> bytes:
    buf = io.BytesIO()
    restore(state, blob, buf, projector_name=name, projector_version=version,
            options=RestoreOptions(verify=True, **options))
    return buf.getvalue()


def table_of(url: str) -> str:
    return dynamodb_target(url)[0]


def bucket_of(url: str) -> str:
    return url.split("://", 1)[1].split("?", 1)[0]


@pytest.fixture
def aws(request, tmp_path, monkeypatch):
    """A fresh DynamoDB table and versioned S3 bucket on moto; raw clients for checks."""
    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", str(tmp_path / "spool"))
    state_url, blob_url = dynamodb_url(request), s3_url(request)
    server = request.getfixturevalue("moto_server")
    opened = []

    def state(service_id="default", url=None, **options):
        s = open_state_store(url or state_url, service_id=service_id, **options)
        opened.append(s)
        return s

    def blob(url=None):
        b = open_blob_store(url or blob_url)
        opened.append(b)
        return b

    ns = types.SimpleNamespace(state_url=state_url, blob_url=blob_url, state=state, blob=blob, server=server,
                               ddb=server.client("dynamodb"), s3=server.client("s3"), table=table_of(state_url),
                               bucket=bucket_of(blob_url))
    state()  # creates the table, as a first sekiops run against a new deployment does
    yield ns
    for s in opened:
        s.close()


def run_cli(argv, capsys) -> tuple[int, str, str]:
    from sekiops.cli.main import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- Sekiban's items, hand-built, restore byte for byte -----------------------------------------------


def sekiban_item(service: str, name: str, version: str, *, events: int, state_data: bytes | None = None,
                 offload_key: str | None = None, provider: str | None = None,
                 document_type: str | None = "projectionState", lifecycle: int = 0, revision: int = 1,
                 generation: int = 0, build_host: str | None = "grain-host-1") -> dict:
    """An item exactly as Sekiban's DynamoMultiProjectionState.ToAttributeValues writes it."""
    envelope_len = len(state_data) if state_data is not None else 0
    item = {
        "pk": {"S": f"SERVICE#{service}#PROJECTOR#{name}"}, "sk": {"S": f"VERSION#{version}"},
        "serviceId": {"S": service}, "projectorName": {"S": name}, "projectorVersion": {"S": version},
        "payloadType": {"S": PAYLOAD_TYPE}, "lastSortableUniqueId": {"S": SLUI},
        "eventsProcessed": {"N": str(events)}, "isOffloaded": {"BOOL": offload_key is not None},
        "originalSizeBytes": {"N": str(envelope_len)}, "compressedSizeBytes": {"N": str(envelope_len)},
        "safeWindowThreshold": {"S": SLUI}, "updatedAt": {"S": "2026-10-01T10:00:00.1234567Z"},
        "createdAt": {"S": "2026-09-30T08:00:00.0000000Z"}, "buildSource": {"S": "GRAIN_STREAM"},
        "generation": {"N": str(generation)}, "revision": {"N": str(revision)}, "lifecycle": {"N": str(lifecycle)},
    }
    if document_type:
        item["documentType"] = {"S": document_type}
    if state_data:
        item["stateData"] = {"S": base64.b64encode(state_data).decode()}
    if offload_key:
        item["offloadKey"] = {"S": offload_key}
        item["offloadProvider"] = {"S": provider or "AwsS3"}
    if build_host:
        item["buildHost"] = {"S": build_host}
    return item


def sekiban_put_object(aws, key: str, data: bytes) -> None:
    """As Sekiban's S3BlobStorageSnapshotAccessor: one PutObject, octet-stream, AES256."""
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=data, ContentType="application/octet-stream",
                      ServerSideEncryption="AES256")


def envelope_for(name: str, version: str, events: int, state: bytes) -> tuple[bytes, bytes]:
    payload = gzip.compress(state, compresslevel=1, mtime=0)
    meta = EnvelopeMeta(projector_name=name, projector_version=version, version=events,
                        last_sortable_unique_id=SLUI, original_size_bytes=len(state),
                        compressed_size_bytes=len(payload))
    return meta, payload


def test_sekiban_items_restore_byte_exactly(aws):
    """Inline, payload-offloaded, record-offloaded, both, legacy (no documentType), status items,
    another service's items and a tombstone, all written as Sekiban writes them."""
    s = svc()
    states = {}
    items = []
    # 1. inline envelope, inline payload
    states["Inline"] = state_json(3000, 1)
    meta, payload = envelope_for("Inline", "1", 11, states["Inline"])
    items.append(sekiban_item(s, "Inline", "1", events=11, state_data=inline_envelope_bytes(meta, payload)))
    # 2. payload offloaded (envelope inline, payload in S3 under {name}/{sha}.bin)
    states["PayOff"] = state_json(60_000, 2)
    meta, payload = envelope_for("PayOff", "1", 12, states["PayOff"])
    key = f"PayOff/{hashlib.sha256(payload).hexdigest()}.bin"
    sekiban_put_object(aws, key, payload)
    items.append(sekiban_item(s, "PayOff", "1", events=12,
                              state_data=offloaded_envelope_bytes(meta, key, "AwsS3", len(payload))))
    # 3. record offloaded (envelope in S3 under {name}/{version}/{sha}.bin, item metadata only)
    states["RecOff"] = state_json(500_000, 3)
    meta, payload = envelope_for("RecOff", "1", 13, states["RecOff"])
    env = inline_envelope_bytes(meta, payload)
    assert len(env) > RECORD_THRESHOLD_DYNAMODB
    key = f"RecOff/1/{hashlib.sha256(env).hexdigest()}.bin"
    sekiban_put_object(aws, key, env)
    items.append(sekiban_item(s, "RecOff", "1", events=13, offload_key=key))
    # 4. both: record offloaded, and its envelope's payload offloaded (prefixed keys, 10.23)
    states["Both"] = state_json(40_000, 4)
    meta, payload = envelope_for("Both", "1", 14, states["Both"])
    pkey = f"tenant/Both/{hashlib.sha256(payload).hexdigest()}.bin"
    sekiban_put_object(aws, pkey, payload)
    env = offloaded_envelope_bytes(meta, pkey, "AwsS3", len(payload))
    ekey = f"tenant/Both/1/{hashlib.sha256(env).hexdigest()}.bin"
    sekiban_put_object(aws, ekey, env)
    items.append(sekiban_item(s, "Both", "1", events=14, offload_key=ekey))
    # 5. legacy: no documentType, no control attributes, no buildHost
    states["Legacy"] = state_json(2000, 5)
    meta, payload = envelope_for("Legacy", "1", 15, states["Legacy"])
    legacy = sekiban_item(s, "Legacy", "1", events=15, state_data=inline_envelope_bytes(meta, payload),
                          document_type=None, build_host=None)
    for attr in ("generation", "revision", "lifecycle"):
        del legacy[attr]
    items.append(legacy)
    # 6. a status item of a projector (same pk), and one of a projector with no snapshot
    for name in ("Inline", "OnlyStatus"):
        items.append({"pk": {"S": f"SERVICE#{s}#PROJECTOR#{name}"}, "sk": {"S": "STATUS#cluster-a"},
                      "documentType": {"S": "projectionStatus"}, "serviceId": {"S": s},
                      "projectorName": {"S": name}, "projectorVersion": {"S": "1"}, "clusterId": {"S": "c"},
                      "activationId": {"S": "a"}, "sequence": {"N": "3"}, "phase": {"S": "Running"},
                      "isFaulted": {"BOOL": False}, "eventsProcessed": {"N": "999999"}})
    # 7. another service's rows
    other = svc()
    meta, payload = envelope_for("Inline", "1", 99, b'{"other":true}')
    items.append(sekiban_item(other, "Inline", "1", events=99, state_data=inline_envelope_bytes(meta, payload)))
    items.append(sekiban_item(other, "Foreign", "1", events=1, state_data=inline_envelope_bytes(meta, payload)))
    # 8. a tombstoned newer version of Inline (kept payload; never restored by default)
    meta, payload = envelope_for("Inline", "2", 500, b'{"tomb":true}')
    items.append(sekiban_item(s, "Inline", "2", events=500, state_data=inline_envelope_bytes(meta, payload),
                              lifecycle=1, revision=4, generation=1))
    for item in items:
        aws.ddb.put_item(TableName=aws.table, Item=item)

    state, blob = aws.state(s), aws.blob()
    for name, data in states.items():
        assert restored(state, blob, name) == data, name
    rows = [(r.projector_name, r.projector_version) for r in iter_rows(state, page_size=2)]
    assert rows == [("Both", "1"), ("Inline", "1"), ("Inline", "2"), ("Legacy", "1"), ("PayOff", "1"),
                    ("RecOff", "1")]
    assert state.latest_active("Inline").projector_version == "1"
    assert state.latest_active("OnlyStatus") is None and state.get("OnlyStatus", "1") is None
    with pytest.raises(TombstonedError):
        restored(state, blob, "Inline", "2")
    assert restored(state, blob, "Inline", "2", include_tombstoned=True) == b'{"tomb":true}'
    legacy_row = state.get("Legacy", "1")
    assert (legacy_row.generation, legacy_row.revision, legacy_row.lifecycle, legacy_row.token) == (0, 0, 0, "0")
    assert legacy_row.build_host is None and legacy_row.created_at.year == 2026
    rec = state.get("RecOff", "1")
    assert rec.is_offloaded and rec.state_length is None and rec.offload_provider == "AwsS3"
    assert sorted(state.list_service_ids()) == sorted([s, other])
    assert [r.projector_name for r in iter_rows(aws.state(other))] == ["Foreign", "Inline"]
    # a legacy item (no control attributes) can be replaced: it compares as generation/revision 0
    new = state_json(1000, 9)
    persist(state, blob, "Legacy", new, events=16)
    assert restored(state, blob, "Legacy") == new and state.get("Legacy", "1").revision == 1


def test_items_sekiops_writes_are_sekibans_layout(aws):
    s = svc()
    state, blob = aws.state(s), aws.blob()
    small = b'{"a":1}'
    persist(state, blob, "Proj", small, events=5, build_host="")
    item = aws.ddb.get_item(TableName=aws.table, Key={"pk": {"S": f"SERVICE#{s}#PROJECTOR#Proj"},
                                                      "sk": {"S": "VERSION#1"}})["Item"]
    types_ = {k: next(iter(v)) for k, v in item.items()}
    assert types_ == {
        "pk": "S", "sk": "S", "serviceId": "S", "projectorName": "S", "projectorVersion": "S", "payloadType": "S",
        "lastSortableUniqueId": "S", "eventsProcessed": "N", "isOffloaded": "BOOL", "originalSizeBytes": "N",
        "compressedSizeBytes": "N", "safeWindowThreshold": "S", "updatedAt": "S", "createdAt": "S",
        "buildSource": "S", "generation": "N", "revision": "N", "lifecycle": "N", "documentType": "S",
        "stateData": "S", "buildHost": "S"}
    assert item["documentType"]["S"] == "projectionState" and item["serviceId"]["S"] == s
    assert item["isOffloaded"]["BOOL"] is False and item["revision"]["N"] == "1" and item["lifecycle"]["N"] == "0"
    assert DOTNET_TS.match(item["createdAt"]["S"]) and DOTNET_TS.match(item["updatedAt"]["S"])
    env = base64.b64decode(item["stateData"]["S"], validate=True)
    assert json.loads(env)["inlineState"]["projectorName"] == "Proj"
    assert "offloadKey" not in item and "offloadProvider" not in item  # only when non-empty, as Sekiban
    # a replace: revision + 1 on the exact token, createdAt kept
    persist(state, blob, "Proj", b'{"a":2}', events=6)
    again = aws.ddb.get_item(TableName=aws.table, Key={"pk": item["pk"], "sk": item["sk"]})["Item"]
    assert again["revision"]["N"] == "2" and again["createdAt"] == item["createdAt"]
    # a tombstone as Sekiban's InvalidateWithTombstoneAsync: lifecycle 1, generation + 1, revision + 1
    row = state.tombstone(state.get("Proj", "1"))
    assert (row.lifecycle, row.generation, row.revision) == (1, 1, 3)
    tomb = aws.ddb.get_item(TableName=aws.table, Key={"pk": item["pk"], "sk": item["sk"]})["Item"]
    assert tomb["stateData"] == again["stateData"]  # the payload stays under the tombstone


def test_envelope_over_350000_bytes_goes_to_s3_with_aes256(aws):
    """Record-level offload above 350,000 bytes of envelope, even when the caller asks for a higher
    threshold (Sekiban: min(caller's, 350,000)); the item holds only metadata; AES256 on the object."""
    s = svc()
    state, blob = aws.state(s), aws.blob()
    data = state_json(500_000, 7)
    res = persist(state, blob, "Big", data, version="v2", payload_threshold=10**12, record_threshold=1_000_000)
    assert res.envelope_bytes > RECORD_THRESHOLD_DYNAMODB and res.envelope_location == "blob"
    assert res.payload_location == "inline"
    assert re.fullmatch(r"Big/v2/[0-9a-f]{64}\.bin", res.envelope_key)
    with blob.open_read(res.envelope_key) as f:
        assert hashlib.sha256(f.read()).hexdigest() == res.envelope_key.split("/")[-1][:-4]
    item = aws.ddb.get_item(TableName=aws.table, Key={"pk": {"S": f"SERVICE#{s}#PROJECTOR#Big"},
                                                      "sk": {"S": "VERSION#v2"}})["Item"]
    assert "stateData" not in item and item["isOffloaded"] == {"BOOL": True}
    assert item["offloadKey"]["S"] == res.envelope_key and item["offloadProvider"]["S"] == "AwsS3"
    head = aws.s3.head_object(Bucket=aws.bucket, Key=res.envelope_key)
    assert head["ServerSideEncryption"] == "AES256" and head["ContentType"] == "application/octet-stream"
    assert restored(state, blob, "Big") == data
    # ?sse=none: no server-side encryption header
    plain = aws.blob(aws.blob_url + "&sse=none")
    w = plain.write(io.BytesIO(b"unencrypted"), "Plain")
    assert "ServerSideEncryption" not in aws.s3.head_object(Bucket=aws.bucket, Key=w.key)


def test_envelope_between_inline_cap_and_350000_is_a_clear_error(aws, capsys, tmp_path):
    """Sekiban compares raw bytes with 350,000 but stores Base64 in a 400 KB item: such an envelope
    cannot be stored inline. Clear error, nothing written, never truncated."""
    s = svc()
    state, blob = aws.state(s), aws.blob()
    data = state_json(400_000, 8)  # inline payload -> envelope between INLINE_LIMIT and 350,000
    with pytest.raises(ItemTooLargeError) as ei:
        persist(state, blob, "Mid", data, payload_threshold=10**12)
    msg = str(ei.value)
    assert "Mid" in msg and "inline limit" in msg and "record threshold" in msg
    assert state.get("Mid", "1") is None
    # the store itself refuses an item over 400 KB before sending anything
    from sekiops.testing.state_stores import make_row

    with pytest.raises(ItemTooLargeError, match="409600-byte item limit"):
        state.write(make_row(s, name="Raw"), io.BytesIO(b"x" * 320_000), 320_000, None)
    assert state.get("Raw", "v1") is None
    # the CLI: exit 2, one error line naming the store
    path = tmp_path / "mid.json"
    path.write_bytes(data)
    code, out, err = run_cli(["persist", "--state", aws.state_url, "--blob", aws.blob_url, "--service-id", s,
                              "--projector", "Mid", "--version", "1", "--events-processed", "1",
                              "--last-sortable-unique-id", SLUI, "--in", str(path),
                              "--payload-threshold", str(10**12)], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "dynamodb://" in err
    # a lower record threshold stores it (record-level offload)
    res = persist(state, blob, "Mid", data, payload_threshold=10**12, record_threshold=100_000)
    assert res.envelope_location == "blob" and restored(state, blob, "Mid") == data
    assert INLINE_LIMIT < 350_000 and ITEM_LIMIT == 400 * 1024


def test_four_offload_combinations_through_the_cli(aws, capsys, tmp_path):
    s = svc()
    cases = {"Inline": ([], 2000), "PayOff": (["--payload-threshold", "1000"], 30_000),
             "RecOff": (["--record-threshold", "5000", "--payload-threshold", str(10**12)], 30_000),
             "Both": (["--payload-threshold", "1000", "--record-threshold", "100"], 30_000)}
    common = ["--state", aws.state_url, "--blob", aws.blob_url, "--service-id", s]
    for i, (name, (extra, size)) in enumerate(cases.items()):
        data = state_json(size, 20 + i)
        (tmp_path / f"{name}.json").write_bytes(data)
        code, out, err = run_cli(["persist", *common, "--projector", name, "--version", "1", "--events-processed",
                                  str(i + 1), "--last-sortable-unique-id", SLUI, "--in", str(tmp_path / f"{name}.json"),
                                  *extra], capsys)
        assert code == 0, err
        summary = json.loads(out)
        want = {"Inline": ("inline", "inline"), "PayOff": ("inline", "blob"), "RecOff": ("blob", "inline"),
                "Both": ("blob", "blob")}[name]
        assert (summary["envelope_location"], summary["payload_location"]) == want, name
        code, out, err = run_cli(["restore", *common, "--projector", name, "--out", str(tmp_path / f"{name}.out"),
                                  "--verify"], capsys)
        assert code == 0, err
        assert (tmp_path / f"{name}.out").read_bytes() == data
    code, out, err = run_cli(["inventory", *common, "--format", "json"], capsys)
    assert code == 0, err
    inv = {r["projectorName"]: r for r in json.loads(out)}
    assert set(inv) == set(cases)
    assert inv["RecOff"]["isOffloaded"] and not inv["Inline"]["isOffloaded"]
    assert inv["Inline"]["storedBytes"] > 0 and inv["PayOff"]["storedBytes"] > 0
    code, out, err = run_cli(["anatomy", *common, "--projector", "PayOff"], capsys)
    assert code == 0, err and "items" in out
    code, out, err = run_cli(["audit-blobs", *common, "--grace", "0", "--format", "json"], capsys)
    assert code == 0, err
    audit = json.loads(out)
    assert audit["certified"] and audit["orphans"] == [] and not audit.get("missingReferenced")


def test_inventory_flags_the_dynamodb_item_limit(aws, tmp_path):
    """An inline row whose Base64 would not fit a 400 KB item although it is under Sekiban's
    350,000-byte threshold (copied to DynamoDB it would fail) is flagged."""
    from sekiops.ops.inventory import inventory

    sqlite = open_state_store(f"sqlite:///{tmp_path}/i.db")
    try:
        data = state_json(400_000, 30)
        persist(sqlite, None, "Hazard", data)
        df = inventory(sqlite, None)
        assert bool(df.set_index("projectorName").loc["Hazard", "flag_dynamodb_base64_hazard"])
    finally:
        sqlite.close()
    state = aws.state(svc())
    assert state.capabilities.item_limit == 400 * 1024 and state.capabilities.eventually_consistent_listing


# --- S3 specifics -------------------------------------------------------------------------------------


def test_multipart_upload_reads_back_and_failed_upload_leaves_nothing(aws):
    blob = aws.blob(aws.blob_url + "&part_size=5MiB")
    data = os.urandom(11 * 1024 * 1024 + 17)
    w = blob.write(io.BytesIO(data), "Multi")
    head = aws.s3.head_object(Bucket=aws.bucket, Key=w.key)
    assert head["ETag"].strip('"').endswith("-3") and head["ServerSideEncryption"] == "AES256"
    with blob.open_read(w.key) as f:
        assert hashlib.sha256(f.read()).hexdigest() == w.sha256
    # a wrong hash hint: every part is sent, the upload is aborted, nothing under the key
    other = os.urandom(6 * 1024 * 1024)
    with pytest.raises(IntegrityError):
        blob.write(io.BytesIO(other), "Multi", sha256="0" * 64, size=len(other))
    assert not blob.exists("Multi/" + "0" * 64 + ".bin")
    assert not aws.s3.list_multipart_uploads(Bucket=aws.bucket).get("Uploads")
    # reading a content-addressed key whose bytes were damaged in the bucket: IntegrityError
    key = f"Bad/{hashlib.sha256(b'good').hexdigest()}.bin"
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=b"evil")
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        with blob.open_read(key) as f:
            f.read()


def test_versioned_delete_removes_the_certified_version_and_older_never_newer(aws, monkeypatch):
    blob = aws.blob()
    data = b"certified, then written again"
    w = blob.write(io.BytesIO(data), "P")
    v1 = blob.stat(w.key).version
    time.sleep(0.01)
    blob.write(io.BytesIO(data), "P")  # same bytes: a new version (the touch)
    v2 = blob.stat(w.key).version
    assert v1 != v2
    with pytest.raises(BlobChangedError):
        blob.delete(w.key, if_version=v1)
    # a write landing after the delete listed the versions survives: only v2 and older go
    real = blob._versions

    def versions_then_a_new_write(key):
        listed = real(key)
        aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=data)
        return listed

    monkeypatch.setattr(blob, "_versions", versions_then_a_new_write)
    assert blob.delete(w.key, if_version=v2) is True
    monkeypatch.undo()
    left = aws.s3.list_object_versions(Bucket=aws.bucket, Prefix=w.key).get("Versions") or []
    assert len(left) == 1 and left[0]["VersionId"] not in (v1, v2)
    with blob.open_read(w.key) as f:
        assert f.read() == data


def test_unversioned_bucket_refuses_gc_but_audits(request, aws, capsys, tmp_path):
    s = svc()
    plain_url = s3_url(request, versioned=False)
    state, blob = aws.state(s), aws.blob(plain_url)
    assert not blob.capabilities.conditional_delete
    assert "put-bucket-versioning" in blob.capabilities.conditional_delete_note
    persist(state, blob, "P", state_json(30_000, 40), payload_threshold=1000)
    orphan = blob.write(io.BytesIO(b"nobody points at me"), "P").key
    common = ["--state", aws.state_url, "--blob", plain_url, "--service-id", s]
    code, out, err = run_cli(["audit-blobs", *common, "--grace", "0", "--format", "json"], capsys)
    assert code == 0, err
    assert [o["key"] for o in json.loads(out)["orphans"]] == [orphan]
    code, out, err = run_cli(["migrate", "run", "gc-blobs", *common, "--grace", "0", "--execute", "--canary", "0",
                              "--journal", str(tmp_path / "gc.jsonl")], capsys)
    assert code == 2 and "versioning" in err and err.count("\n") == 1
    assert blob.exists(orphan)


def test_gc_blobs_on_versioned_bucket_deletes_certified_orphans(aws, capsys, tmp_path):
    s = svc()
    state, blob = aws.state(s), aws.blob()
    keep = persist(state, blob, "P", state_json(30_000, 41), payload_threshold=1000)
    orphans = [blob.write(io.BytesIO(f"orphan {i}".encode()), "P").key for i in range(3)]
    common = ["--state", aws.state_url, "--blob", aws.blob_url, "--service-id", s]
    code, out, err = run_cli(["migrate", "run", "gc-blobs", *common, "--grace", "0", "--execute", "--canary", "0",
                              "--journal", str(tmp_path / "gc.jsonl"), "--format", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["result"]["counts"]["done"] == 3
    assert not any(blob.exists(k) for k in orphans)
    for k in orphans:  # permanently: no version left behind
        assert not aws.s3.list_object_versions(Bucket=aws.bucket, Prefix=k).get("Versions")
    assert blob.exists(keep.payload_key) and restored(state, blob, "P")


def test_missing_bucket_and_wrong_endpoint_are_named(aws, capsys):
    with pytest.raises(StoreError, match="does not exist"):
        open_blob_store(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}?endpoint={aws.server.endpoint}&path_style=true")
    with pytest.raises(UsageError):
        open_blob_store(f"s3://{aws.bucket}/some/path?endpoint={aws.server.endpoint}")
    with pytest.raises(UsageError, match="unknown option"):
        open_blob_store(aws.blob_url + "&colour=blue")
    with pytest.raises(UsageError, match="sse"):
        open_blob_store(aws.blob_url + "&sse=aws:kms")


# --- DynamoDB specifics -------------------------------------------------------------------------------


def test_url_defaults_options_and_errors(aws, monkeypatch):
    assert dynamodb_target("dynamodb://") == ("SekibanProjectionStates", "dynamodb://SekibanProjectionStates")
    assert dynamodb_target("dynamodb://My.Table-1?region=eu-west-1")[0] == "My.Table-1"
    for bad in ("dynamodb://ab", "dynamodb://bad table", "dynamodb://user:pw@Table"):
        with pytest.raises(UsageError):
            dynamodb_target(bad)
    with pytest.raises(UsageError, match="unknown option"):
        open_state_store(aws.state_url + "&colour=blue")
    with pytest.raises(StoreError, match="create=false"):
        open_state_store(f"dynamodb://Missing{uuid.uuid4().hex[:6]}?endpoint={aws.server.endpoint}&create=false")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(UsageError, match="no AWS region"):
        open_state_store("dynamodb://Table")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    with pytest.raises(StoreError, match="no AWS credentials"):
        open_state_store(f"dynamodb://Table?region=us-east-1&endpoint={aws.server.endpoint}")


def test_table_with_other_keys_is_refused(aws):
    name = "foreign" + uuid.uuid4().hex[:6]
    aws.ddb.create_table(TableName=name, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
    with pytest.raises(StoreError, match="not a Sekiban"):
        open_state_store(f"dynamodb://{name}?endpoint={aws.server.endpoint}")


def test_listing_pages_across_many_projectors_and_services(aws):
    """Keyset pages over names from a paged Scan; other services and status items never leak."""
    s, other = svc(), svc()
    items = []
    for i in range(40):
        for service in (s, other):
            meta, payload = envelope_for(f"P{i:03d}", "1", 1, b"{}")
            items.append(sekiban_item(service, f"P{i:03d}", "1", events=1,
                                      state_data=inline_envelope_bytes(meta, payload)))
        items.append({"pk": {"S": f"SERVICE#{s}#PROJECTOR#P{i:03d}"}, "sk": {"S": "STATUS#x"},
                      "documentType": {"S": "projectionStatus"}, "serviceId": {"S": s}})
    for item in items:
        aws.ddb.put_item(TableName=aws.table, Item=item)
    state = aws.state(s)
    import sekiops.state.dynamodb as mod

    pages = []
    real = state._pages

    def count(what, call, **request):
        for page in real(what, call, **dict(request, Limit=7)):  # small pages: paging is exercised
            pages.append(len(page))
            yield page

    state._pages = count
    got = [r.projector_name for r in iter_rows(state, page_size=9)]
    assert got == [f"P{i:03d}" for i in range(40)]
    assert len(pages) > 10
    assert mod.PAGE_SIZE == 1000


def test_cas_race_and_settled_lost_answer(aws):
    """Eight writers on one expected row: one wins. A write whose answer is lost is settled by a
    consistent re-read (the pipeline's _settle_unknown_outcome)."""
    from concurrent.futures import ThreadPoolExecutor

    from sekiops.testing.state_stores import make_row, put

    s = svc()
    base = put(aws.state(s), make_row(s, events=0), b"r0")
    stores = [aws.state(s) for _ in range(8)]

    def attempt(i):
        try:
            put(stores[i], make_row(s, events=i + 1), f"w{i}".encode(), expected=base)
            return i
        except ConcurrencyConflictError:
            return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert len([r for r in results if r is not None]) == 1


# --- faults on the wire -------------------------------------------------------------------------------


@pytest.fixture
def proxy(aws, monkeypatch):
    import sekiops.retry as retry_mod

    p = FaultProxy("127.0.0.1", aws.server.port)
    sleeps: list[float] = []
    monkeypatch.setattr(retry_mod, "time", types.SimpleNamespace(sleep=sleeps.append, time=time.time,
                                                                  monotonic=time.monotonic))
    p.sleeps = sleeps
    p.state_url = f"dynamodb://{aws.table}?endpoint={p.endpoint}&timeout=5s"
    p.blob_url = f"s3://{aws.bucket}?endpoint={p.endpoint}&path_style=true&timeout=5s&part_size=5MiB"
    yield p
    p.stop()


def test_dynamodb_throttling_is_retried_with_backoff(aws, proxy):
    s = svc()
    state, blob = aws.state(s, url=proxy.state_url), aws.blob()
    proxy.plan = [(dynamodb_op("PutItem"), ("status", 400, "ProvisionedThroughputExceededException")),
                  (dynamodb_op("PutItem"), ("status", 400, "ThrottlingException")),
                  (dynamodb_op("GetItem"), ("status", 500, "InternalServerError"))]
    data = state_json(5000, 50)
    res = persist(state, blob, "T", data)
    assert proxy.faults == 3 and res.row_attempts == 1
    # each call backs off on its own: the read 0.1 s; the write 0.1 s, then 0.2 s (+ up to 20 % jitter)
    assert len(proxy.sleeps) == 3
    for d, base in zip(proxy.sleeps, (0.1, 0.1, 0.2), strict=True):
        assert base <= d <= base * 1.2
    assert restored(aws.state(s), blob, "T") == data


def test_dynamodb_throttling_gives_up_bounded_and_keeps_the_old_row(aws, proxy):
    s = svc()
    clean, blob = aws.state(s), aws.blob()
    old = state_json(2000, 51)
    persist(clean, blob, "T", old, events=1)
    state = aws.state(s, url=proxy.state_url)
    proxy.plan = [(dynamodb_op("PutItem"), ("status", 400, "ThrottlingException"))] * 50
    with pytest.raises(StoreUnavailableError) as ei:
        persist(state, blob, "T", state_json(2000, 52), events=2, row_attempts=1)
    assert proxy.faults == state.settings.retry_attempts
    assert sum(proxy.sleeps) <= state.settings.retry_max_wait
    assert "gave up" in str(ei.value) and "dynamodb://" in str(ei.value) and "T/1" in str(ei.value)
    assert restored(clean, blob, "T") == old


def test_dynamodb_lost_answer_is_settled_by_a_consistent_reread(aws, proxy):
    s = svc()
    clean, blob = aws.state(s), aws.blob()
    persist(clean, blob, "T", state_json(2000, 53), events=1)
    state = aws.state(s, url=proxy.state_url)
    new = state_json(2000, 54)
    proxy.plan = [(dynamodb_op("PutItem"), "lost-answer")]
    persist(state, blob, "T", new, events=2, backoff_seconds=0.01)
    assert proxy.faults == 1
    assert restored(clean, blob, "T") == new
    assert clean.get("T", "1").revision == 2  # written once, not twice


def test_dynamodb_permission_denied_is_permanent(aws, proxy):
    state = aws.state(svc(), url=proxy.state_url)
    proxy.plan = [(dynamodb_op("PutItem"), ("status", 400, "AccessDeniedException"))]
    with pytest.raises(StoreError) as ei:
        persist(state, aws.blob(), "T", b'{"x":1}')
    assert not isinstance(ei.value, StoreUnavailableError) and "permission denied" in str(ei.value)
    assert proxy.sleeps == []


def test_dynamodb_connection_reset_on_a_read_is_retried(aws, proxy):
    s = svc()
    persist(aws.state(s), aws.blob(), "T", b'{"x":1}')
    state = aws.state(s, url=proxy.state_url)
    proxy.plan = [(dynamodb_op("GetItem"), "reset"), (dynamodb_op("Query"), "reset")]
    assert restored(state, aws.blob(), "T") == b'{"x":1}'
    assert proxy.faults == 2


def test_s3_slowdown_and_reset_on_upload_are_retried(aws, proxy):
    blob = aws.blob(proxy.blob_url)
    data = os.urandom(12 * 1024 * 1024)  # incompressible: a multipart payload upload
    proxy.plan = [(s3_op("PUT", query="partNumber"), ("status", 503, "SlowDown")),
                  (s3_op("PUT", query="partNumber"), "reset"),
                  (s3_op("POST", query="uploadId"), "lost-answer")]  # CompleteMultipartUpload
    w = blob.write(io.BytesIO(data), "Up")
    assert proxy.faults == 3 and len(proxy.sleeps) >= 2
    with aws.blob().open_read(w.key) as f:
        assert f.read() == data


def test_s3_read_cut_mid_body_resumes_and_verifies(aws, proxy):
    blob = aws.blob()
    data = os.urandom(3 * 1024 * 1024)
    w = blob.write(io.BytesIO(data), "Cut")
    via = aws.blob(proxy.blob_url)
    proxy.plan = [(s3_op("GET", contains=w.key.split("/")[-1]), "cut-body")]
    with via.open_read(w.key) as f:
        assert f.read() == data
    assert proxy.faults == 1
    gets = [r for r in proxy.requests if r[0] == "GET" and w.key.split("/")[-1] in r[1]]
    assert len(gets) == 2  # the first GET, then one ranged GET from where the body was cut


def test_s3_permission_denied_is_permanent_and_secret_free(aws, proxy, monkeypatch):
    secret = "Sekret" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    blob = aws.blob(proxy.blob_url)
    proxy.plan = [(s3_op("PUT"), ("status", 403, "AccessDenied"))]
    with pytest.raises(StoreError) as ei:
        blob.write(io.BytesIO(b"x" * 100), "Denied")
    assert not isinstance(ei.value, StoreUnavailableError)
    assert "permission denied" in str(ei.value) and "Denied/" in str(ei.value)
    assert secret not in str(ei.value) and secret not in repr(blob) and secret not in blob.location
    state = aws.state(svc(), url=proxy.state_url)
    assert secret not in repr(state) and secret not in state.location


@pytest.mark.parametrize("what", ["state", "blob"])
def test_stalled_server_gives_exit_2_in_bounded_time(aws, what, tmp_path):
    """A server that accepts connections and never answers: exit 2 with one error line, bounded."""
    silent = SilentServer()
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if what == "state":
            args = ["inventory", "--state", f"dynamodb://Table?endpoint={silent.endpoint}&timeout=1s&connect_timeout=1s",
                    "--format", "json"]
        else:
            args = ["audit-blobs", "--state", aws.state_url, "--blob",
                    f"s3://bucket?endpoint={silent.endpoint}&path_style=true&timeout=1s&connect_timeout=1s"]
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "sekiops", *args], capture_output=True, text=True, env=env,
                              timeout=120, cwd=str(tmp_path))
        took = time.monotonic() - t
    finally:
        silent.stop()
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "gave up" in proc.stderr and "127.0.0.1" in proc.stderr
    assert took < 40, f"took {took:.1f} s"
    assert "testing" not in proc.stderr.replace("testing/", "")  # the secret key's value ("testing")


# --- across clouds ------------------------------------------------------------------------------------


@pytest.mark.cosmos
@pytest.mark.azurite
def test_copy_cosmos_azure_to_dynamodb_s3_and_back(aws, cosmos_env, azure_storage_env, tmp_path):
    """migrate copy: Cosmos DB + Azure Blob -> DynamoDB + S3 -> Cosmos DB + Azure Blob; every
    payload byte-identical at each hop, placements re-decided by each target's thresholds."""
    host = cosmos_env.endpoint.split("://", 1)[1].rstrip("/")
    cosmos_url = f"cosmos+https://{host}/x{uuid.uuid4().hex[:8]}/multiProjectionStates?verify=false"
    azure_url = f"azblob://x{uuid.uuid4().hex[:12]}"
    back_url = f"cosmos+https://{host}/y{uuid.uuid4().hex[:8]}/multiProjectionStates?verify=false"
    back_blob = f"azblob://y{uuid.uuid4().hex[:12]}"
    src, sblob = open_state_store(cosmos_url), open_blob_store(azure_url)
    data = {"Small": state_json(2000, 60), "PayOff": state_json(40_000, 61), "RecOff": state_json(500_000, 62),
            "Both": state_json(40_000, 63)}
    persist(src, sblob, "Small", data["Small"])
    persist(src, sblob, "PayOff", data["PayOff"], payload_threshold=1000)
    persist(src, sblob, "RecOff", data["RecOff"], payload_threshold=10**12, record_threshold=100_000)
    persist(src, sblob, "Both", data["Both"], payload_threshold=1000, record_threshold=100)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def copy(frm_state, frm_blob, to_state, to_blob, journal):
        proc = subprocess.run([sys.executable, "-m", "sekiops", "migrate", "run", "copy", "--state", frm_state,
                               "--blob", frm_blob, "--to-state", to_state, "--to-blob", to_blob, "--canary", "0",
                               "--journal", str(tmp_path / journal), "--execute", "--format", "json"],
                              capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout)["result"]
        assert result["status"] == "complete" and result["counts"]["failed"] == 0, result

    copy(cosmos_url, azure_url, aws.state_url, aws.blob_url, "to-aws.jsonl")
    dst, dblob = aws.state(), aws.blob()
    for name, want in data.items():
        assert restored(dst, dblob, name) == want, name
    rec = dst.get("RecOff", "1")
    assert rec.is_offloaded and rec.offload_provider == "AwsS3" and rec.original_size_bytes > 100_000
    copy(aws.state_url, aws.blob_url, back_url, back_blob, "back.jsonl")
    back, bblob = open_state_store(back_url), open_blob_store(back_blob)
    try:
        for name, want in data.items():
            assert restored(back, bblob, name) == want, name
        assert all(r.offload_provider in (None, "AzureBlobStorage") for r in iter_rows(back))
    finally:
        for s in (src, sblob, back, bblob):
            s.close()


def test_offload_migration_on_dynamodb(aws, capsys, tmp_path):
    """migrate offload moves inline envelopes over a threshold to S3, verified, resumable."""
    s = svc()
    state, blob = aws.state(s), aws.blob()
    data = {f"P{i}": state_json(20_000 + 1000 * i, 70 + i) for i in range(4)}
    for name, d in data.items():
        persist(state, blob, name, d)
    common = ["--state", aws.state_url, "--blob", aws.blob_url, "--service-id", s]
    code, out, err = run_cli(["migrate", "run", "offload", *common, "--threshold", "10000", "--execute",
                              "--canary", "0", "--journal", str(tmp_path / "off.jsonl"), "--format", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["result"]["counts"]["done"] == 4
    for name, d in data.items():
        row = state.get(name, "1")
        assert row.is_offloaded and row.offload_key.startswith(f"{name}/1/")
        assert restored(state, blob, name) == d


def test_cli_never_shows_the_aws_secret(aws, tmp_path):
    """Real `sekiops -v` processes with a distinctive secret key: a good endpoint, an unreachable
    one, and a refused request; the secret (or a 16-character piece) is never printed."""
    secret = "AwsSecret" + uuid.uuid4().hex + "/+="
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY=secret, AWS_SESSION_TOKEN="Tok" + uuid.uuid4().hex,
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    data = tmp_path / "s.json"
    data.write_bytes(state_json(20_000, 90))
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        runs = [
            ["-v", "persist", "--state", aws.state_url, "--blob", aws.blob_url, "--projector", "P", "--version", "1",
             "--events-processed", "1", "--last-sortable-unique-id", SLUI, "--in", str(data),
             "--payload-threshold", "1000"],
            ["-v", "inventory", "--state", aws.state_url, "--blob", aws.blob_url, "--format", "json"],
            ["-v", "inventory", "--state", f"dynamodb://T{uuid.uuid4().hex[:6]}?endpoint={dead}&retries=2"],
            ["-v", "audit-blobs", "--state", aws.state_url, "--blob", f"s3://{aws.bucket}?endpoint={dead}&retries=2"],
        ]
        for args in runs:
            proc = subprocess.run([sys.executable, "-m", "sekiops", *args], capture_output=True, text=True, env=env,
                                  timeout=120, cwd=str(tmp_path))
            text = proc.stdout + proc.stderr
            assert proc.returncode in (0, 2), proc.stderr
            for piece in {secret, env["AWS_SESSION_TOKEN"]} | {secret[i:i + 16] for i in range(0, len(secret) - 16, 8)}:
                assert piece not in text, (args, text[-2000:])
            if proc.returncode == 2:
                assert proc.stderr.count("error: ") == 1 and "connection refused" in proc.stderr


@pytest.mark.parametrize("round_", ["create", "replace"])
def test_eight_persists_race_on_dynamodb_and_s3(aws, round_):
    """Eight full persists (payloads to S3, envelopes to DynamoDB) read the same row, meet at a
    barrier in their bodies, then write: exactly one wins, the others get ConcurrencyConflictError,
    and the row restores byte for byte to the winner's state."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from sekiops.pipeline.persist import persist as persist_body

    s = svc()
    blob = aws.blob()
    if round_ == "replace":
        persist(aws.state(s), blob, "Race", state_json(5000, 99), events=1)
    barrier = threading.Barrier(8, timeout=60)
    datas = [state_json(20_000 + 500 * i, 100 + i) for i in range(8)]
    stores = [aws.state(s) for _ in range(8)]

    def writer(i):
        def body(out):
            barrier.wait()
            out.write(datas[i])
        try:
            persist_body(stores[i], blob, body, projector_name="Race", projector_version="1", events_processed=10 + i,
                         last_sortable_unique_id=SLUI, options=PersistOptions(payload_threshold=1000))
            return "win"
        except ConcurrencyConflictError:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(writer, range(8)))
    assert outcomes.count("win") == 1 and outcomes.count("conflict") == 7, outcomes
    winner = outcomes.index("win")
    state = aws.state(s)
    assert state.get("Race", "1").events_processed == 10 + winner
    assert restored(state, blob, "Race") == datas[winner]


def test_reencode_migration_on_dynamodb_and_s3(aws, capsys, tmp_path):
    """migrate reencode rewrites Sekiban's old v9 (gzipped) envelopes, inline and record-offloaded in
    S3, as v10; payloads unchanged; rollback puts the old items back."""
    s = svc()
    state, blob = aws.state(s), aws.blob()
    data = {"Inline9": state_json(3000, 80), "Rec9": state_json(3000, 81)}
    meta, payload = envelope_for("Inline9", "1", 5, data["Inline9"])
    aws.ddb.put_item(TableName=aws.table, Item=sekiban_item(
        s, "Inline9", "1", events=5, state_data=gzip.compress(inline_envelope_bytes(meta, payload), mtime=0)))
    meta, payload = envelope_for("Rec9", "1", 6, data["Rec9"])
    env9 = gzip.compress(inline_envelope_bytes(meta, payload), mtime=0)
    key = f"Rec9/1/{hashlib.sha256(env9).hexdigest()}.bin"
    sekiban_put_object(aws, key, env9)
    aws.ddb.put_item(TableName=aws.table, Item=sekiban_item(s, "Rec9", "1", events=6, offload_key=key))
    common = ["--state", aws.state_url, "--blob", aws.blob_url, "--service-id", s]
    journal = str(tmp_path / "re.jsonl")
    code, out, err = run_cli(["migrate", "run", "reencode", *common, "--execute", "--canary", "0", "--journal",
                              journal, "--format", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["result"]["counts"]["done"] == 2
    for name, want in data.items():
        assert restored(state, blob, name) == want
        res = restore(state, blob, io.BytesIO(), projector_name=name, options=RestoreOptions(verify=True))
        assert res.envelope_format == "v10", name
    code, out, err = run_cli(["migrate", "rollback", "--journal", journal, "--execute", "--format", "json"], capsys)
    assert code == 0, err
    for name, want in data.items():
        res = restore(state, blob, io.BytesIO(), projector_name=name, options=RestoreOptions(verify=True))
        assert res.envelope_format == "v9" and restored(state, blob, name) == want
