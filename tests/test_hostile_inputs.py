"""Hostile inputs through the FULL restore path (state store -> envelope -> blob -> payload -> file).

Every hostile case is stored the way an attacker or a corrupted deployment would leave it -- as a
row's StateData, as a record-level envelope blob, as a row's OffloadKey, as an envelope's
offloadKey, as a symlink in the blob root, as a payload blob -- and restored with the library
(``sekiops.pipeline.restore.restore`` to a file path). Each must raise SekiopsError quickly, in
bounded memory, leaving no output file (not even a partial one). A sample goes through the CLI
(exit status 2, one ``error:`` line, no traceback, bounded child RSS).

Property tests (hypothesis): any payload round-trips through persist + restore, whatever the
offload decisions; random byte strings (and mutations of a valid envelope) stored as StateData
either restore or raise SekiopsError -- never another exception, never a partial file.

``HOSTILE_REJECTED`` counts the hostile inputs that were rejected (printed at the end).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from hostile_envelopes import CASES, SLUI, UNSAFE_KEY_ENVELOPES, good_inline, good_offloaded
from sekiops.blob import open_blob_store
from sekiops.errors import CorruptSnapshotError, IntegrityError, SekiopsError, UnsafeKeyError, VersionMismatchError
from sekiops.format.record import SnapshotRow
from sekiops.pipeline.memory import MemoryProbe
from sekiops.pipeline.persist import PersistOptions, persist_stream
from sekiops.pipeline.restore import RestoreOptions, restore
from sekiops.state import open_state_store

REPO = Path(__file__).resolve().parents[1]
NAME, VERSION = "OrderSummary", "1.0.0"  # what the corpus' envelopes declare
MAX_SECONDS = 10.0
MAX_RSS_GROWTH = 96 * 1024 * 1024

HOSTILE_REJECTED = 0


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    sys.stderr.write(f"\n[hostile inputs] rejected: {HOSTILE_REJECTED}\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One SQLite file (non-strict: offloaded rows allowed), one local blob root, one spool."""
    d = tmp_path_factory.mktemp("hostile")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEKIOPS_SPOOL_DIR", str(d / "spool"))
    outside = d / "outside"
    outside.mkdir()
    ns = type("Env", (), {})()
    ns.dir = d
    ns.db = d / "state.db"
    ns.state_url = f"sqlite:///{ns.db}?record_threshold=1000000000"
    ns.blob_root = d / "blobs"
    ns.blob = open_blob_store(str(ns.blob_root))
    ns.outside = outside
    ns.count = 0
    yield ns
    mp.undo()


def _service(env) -> str:
    env.count += 1
    return f"h-{env.count}"


def put_row(env, data: bytes | None, *, offload_key: str | None = None, service_id: str | None = None,
            name: str = NAME, version: str = VERSION, url: str | None = None):
    """Store a row (inline StateData ``data``, or offloaded at ``offload_key``) in a fresh service."""
    sid = service_id or _service(env)
    state = open_state_store(url or env.state_url, service_id=sid)
    row = SnapshotRow(service_id=sid, projector_name=name, projector_version=version,
                      last_sortable_unique_id=SLUI, events_processed=42, safe_window_threshold=SLUI,
                      build_source="HOSTILE-TEST", is_offloaded=offload_key is not None, offload_key=offload_key,
                      offload_provider="LocalFileSystem" if offload_key is not None else None,
                      original_size_bytes=len(data or b""), compressed_size_bytes=len(data or b""))
    if offload_key is None:
        state.write(row, io.BytesIO(data), len(data), None)
    else:
        state.write(row, None, 0, None)
    return state


def expect_rejected(state, blob, tmp_dir: Path, *, errors=SekiopsError, options: RestoreOptions | None = None,
                    projector: str = NAME) -> SekiopsError:
    """Full restore to a file: SekiopsError, bounded time and memory, no output file at all."""
    global HOSTILE_REJECTED
    tmp_dir.mkdir(parents=True, exist_ok=True)
    out = tmp_dir / "restored.json"
    start = time.monotonic()
    with MemoryProbe() as probe:
        with pytest.raises(SekiopsError) as ei:
            restore(state, blob, str(out), projector_name=projector, options=options)
    elapsed = time.monotonic() - start
    assert isinstance(ei.value, errors), f"expected {errors}, got {type(ei.value).__name__}: {ei.value}"
    assert elapsed < MAX_SECONDS, f"took {elapsed:.1f} s"
    if probe.reset_ok:
        assert probe.peak_rss - probe.start_rss < MAX_RSS_GROWTH, (
            f"peak RSS grew by {(probe.peak_rss - probe.start_rss) >> 20} MiB")
    assert list(tmp_dir.iterdir()) == [], f"output left behind: {list(tmp_dir.iterdir())}"
    assert str(ei.value).strip() and "\n" not in str(ei.value).strip()
    HOSTILE_REJECTED += 1
    return ei.value


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _dump(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


ALL_ENVELOPE_CASES = CASES + UNSAFE_KEY_ENVELOPES
ENVELOPE_IDS = [c[0] for c in ALL_ENVELOPE_CASES]


# --- 1. the hostile envelope corpus, as StateData and as a record-level blob ----------------------


@pytest.mark.parametrize("case_id", ENVELOPE_IDS)
def test_hostile_statedata(env, tmp_path, case_id):
    data = dict((c[0], c[1]) for c in ALL_ENVELOPE_CASES)[case_id]
    state = put_row(env, data)
    try:
        expect_rejected(state, env.blob, tmp_path / "out")
    finally:
        state.close()


@pytest.mark.parametrize("case_id", ENVELOPE_IDS)
def test_hostile_envelope_blob(env, tmp_path, case_id):
    """The same bytes as a record-level blob the row points at (row offloaded)."""
    data = dict((c[0], c[1]) for c in ALL_ENVELOPE_CASES)[case_id]
    key = f"{NAME}/{VERSION}/{_sha(data)}.bin"
    env.blob.put_raw(key, data)
    state = put_row(env, None, offload_key=key)
    try:
        expect_rejected(state, env.blob, tmp_path / "out", options=RestoreOptions(verify=True))
    finally:
        state.close()


# a sample through the real servers' StateData paths (bytea slices, Cosmos Base64 documents)
SERVER_SAMPLE = ["empty", "top-array", "truncated-in-base64", "base64-urlsafe", "type-inlineState-array",
                 "offloaded-without-state", "dup-top", "dup-base64-case", "deep-objects-10000", "huge-payload-length",
                 "nul-first", "non-utf8-in-key", "trailing-second-doc", "v9-bad-crc", "v9-bomb-zeros",
                 "v9-bomb-base64", "big-string-offload-key", "dotdot", "absolute", "other-projector"]


@pytest.mark.parametrize("kind", ["postgres", "cosmos"])
def test_hostile_statedata_on_servers(kind, env, tmp_path, request):
    by_id = dict((c[0], c[1]) for c in ALL_ENVELOPE_CASES)
    if kind == "postgres":
        url = request.getfixturevalue("postgres_server").url
    else:
        server = request.getfixturevalue("cosmos_env")
        host = server.endpoint.split("://", 1)[1].rstrip("/")
        url = f"cosmos+https://{host}/hostiledb/multiProjectionStates?verify=false"
    for case_id in SERVER_SAMPLE:
        data = by_id[case_id]
        if kind == "cosmos" and len(data) > 1_500_000:
            continue  # over Cosmos DB's inline cap: such a row cannot exist there
        state = put_row(env, data, url=url, service_id=f"h{uuid.uuid4().hex[:12]}")
        try:
            expect_rejected(state, env.blob, tmp_path / case_id)
        finally:
            state.close()


# --- 2. hostile keys ---------------------------------------------------------------------------

SHA = "ab" * 32
HOSTILE_KEYS = [
    ("dotdot", ".."),
    ("dotdot-file", "../x.bin"),
    ("dotdot-deep", "../../../../../../etc/passwd"),
    ("dotdot-inner", f"{NAME}/../../outside/{SHA}.bin"),
    ("dot-segment", f"{NAME}/./{VERSION}/{SHA}.bin"),
    ("empty-segment", f"{NAME}//{SHA}.bin"),
    ("absolute", "/etc/passwd"),
    ("absolute-under-name", f"/{NAME}/{VERSION}/{SHA}.bin"),
    ("backslash", f"{NAME}\\..\\..\\x.bin"),
    ("drive-letter", "C:/Windows/win.ini"),
    ("nul", f"{NAME}/{VERSION}/\x00{SHA}.bin"),
    ("control", f"{NAME}/{VERSION}/\x1b[2J.bin"),
    ("newline", f"{NAME}/{VERSION}/x\n.bin"),
    ("very-long", f"{NAME}/" + "a" * 5000 + ".bin"),
    ("incoming-folder", f".sekiops-incoming/{NAME}/x.bin"),
    ("other-projector", f"OtherProjector/{VERSION}/{SHA}.bin"),
    ("other-projector-guid", f"OtherProjector/{'0' * 32}.bin"),
    ("name-as-suffix", f"XX{NAME}/{VERSION}/{SHA}.bin"),
    ("missing", f"{NAME}/{VERSION}/{SHA}.bin"),
    ("empty", ""),
]


@pytest.mark.parametrize("case_id,key", HOSTILE_KEYS, ids=[k[0] for k in HOSTILE_KEYS])
def test_hostile_row_offload_key(env, tmp_path, case_id, key):
    """The row's OffloadKey (record level)."""
    if case_id == "empty":
        state = put_row(env, None, offload_key="placeholder/x.bin")
        state._conn().execute("UPDATE dcb_multi_projection_states SET OffloadKey='' WHERE ServiceId=?",
                              (state.service_id,))
    else:
        state = put_row(env, None, offload_key=key)
    expect_rejected(state, env.blob, tmp_path / "out")


@pytest.mark.parametrize("case_id,key", HOSTILE_KEYS, ids=[k[0] for k in HOSTILE_KEYS])
def test_hostile_envelope_offload_key(env, tmp_path, case_id, key):
    """The envelope's offloadedState.offloadKey (payload level), in an inline envelope."""
    state = put_row(env, _dump(good_offloaded(offloadKey=key, storageProvider="LocalFileSystem")))
    expect_rejected(state, env.blob, tmp_path / "out")


def test_non_utf8_offload_key(env, tmp_path):
    """OffloadKey bytes that are not UTF-8 (written behind the store's back)."""
    state = put_row(env, None, offload_key="placeholder/x.bin")
    state._conn().execute("UPDATE dcb_multi_projection_states SET OffloadKey=? WHERE ServiceId=?",
                          (b"OrderSummary/\xff\xfe\x80.bin", state.service_id))
    expect_rejected(state, env.blob, tmp_path / "out")


def _valid_envelope_for(name: str = NAME, version: str = VERSION) -> bytes:
    env = good_inline()
    env["inlineState"]["projectorName"] = name
    env["inlineState"]["projectorVersion"] = version
    return _dump(env)


def test_another_projectors_real_blob(env, tmp_path):
    """A row (and an envelope) pointing at another projector's existing, valid blobs."""
    other = open_state_store(env.state_url, service_id=_service(env))
    body = json.dumps({"secret": "other projector's state", "pad": "x" * 5000}).encode()
    res = persist_stream(other, env.blob, io.BytesIO(body), projector_name="OtherProjector", projector_version=VERSION,
                         events_processed=1, last_sortable_unique_id=SLUI,
                         options=PersistOptions(payload_threshold=10, record_threshold=10))
    assert res.envelope_key and res.payload_key
    state = put_row(env, None, offload_key=res.envelope_key)
    expect_rejected(state, env.blob, tmp_path / "a", errors=UnsafeKeyError)
    state = put_row(env, _dump(good_offloaded(offloadKey=res.payload_key)))
    expect_rejected(state, env.blob, tmp_path / "b", errors=UnsafeKeyError)


def test_symlinked_blob_file_pointing_outside(env, tmp_path):
    """A blob file inside the root that is a symlink to a (valid!) envelope outside the root."""
    data = _valid_envelope_for()
    target = env.outside / "envelope.bin"
    target.write_bytes(data)
    key = f"{NAME}/{VERSION}/{_sha(data)}.bin"
    path = env.blob_root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)
    state = put_row(env, None, offload_key=key)
    try:
        expect_rejected(state, env.blob, tmp_path / "out", errors=UnsafeKeyError)
    finally:
        path.unlink()


def test_symlinked_directory_pointing_outside(env, tmp_path):
    """A directory inside the root that is a symlink to a tree outside it."""
    data = _valid_envelope_for("SymProj")
    (env.outside / "tree" / VERSION).mkdir(parents=True)
    (env.outside / "tree" / VERSION / f"{_sha(data)}.bin").write_bytes(data)
    (env.blob_root / "SymProj").symlink_to(env.outside / "tree", target_is_directory=True)
    state = put_row(env, None, offload_key=f"SymProj/{VERSION}/{_sha(data)}.bin", name="SymProj")
    try:
        expect_rejected(state, env.blob, tmp_path / "out", errors=UnsafeKeyError, projector="SymProj")
    finally:
        (env.blob_root / "SymProj").unlink()


def test_symlinked_payload_blob(env, tmp_path):
    """The payload blob (payload level) is a symlink to a file outside the root."""
    payload = _gz(b'{"secret":1}')
    (env.outside / "payload.bin").write_bytes(payload)
    key = f"{NAME}/{_sha(payload)}.bin"
    link = env.blob_root / key
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(env.outside / "payload.bin")
    state = put_row(env, _dump(good_offloaded(offloadKey=key, payloadLength=len(payload),
                                              compressedSizeBytes=len(payload), originalSizeBytes=12)))
    try:
        expect_rejected(state, env.blob, tmp_path / "out", errors=UnsafeKeyError)
    finally:
        link.unlink()


# --- 3. hostile payloads and rows ---------------------------------------------------------------


def _inline_payload_envelope(payload: bytes, **over) -> bytes:
    return _dump(good_inline(payloadBase64=base64.b64encode(payload).decode(), **over))


BOMB_1G = gzip.compress(b"\0" * (1 << 20), compresslevel=9, mtime=0) * 1024  # 1 GiB of zeros in ~1 MB


def _payload_cases():
    half = _gz(b'{"a":"' + b"x" * 5000 + b'"}')
    return [
        ("inline-bomb-declared-small", _inline_payload_envelope(_gz(b"\0" * (64 << 20)), originalSizeBytes=100,
                                                                compressedSizeBytes=0)),
        ("inline-truncated-gzip", _inline_payload_envelope(half[: len(half) // 2])),
        ("inline-corrupt-gzip", _inline_payload_envelope(half[:20] + b"\xff" * 30 + half[50:])),
        ("inline-bad-gzip-crc", _inline_payload_envelope(half[:-8] + b"\0\0\0\0" + half[-4:])),
        ("inline-gzip-trailing-garbage", _inline_payload_envelope(half + b"garbage")),
        ("inline-version-mismatch", _inline_payload_envelope(half, projectorVersion="9.9.9")),
        ("inline-other-projector", _inline_payload_envelope(half, projectorName="SomebodyElse")),
        ("inline-payloadjson-deep", _dump(good_inline(payloadBase64=None, payloadJson="[" * 10_000 + "]" * 9_999))),
    ]


@pytest.mark.parametrize("case_id", [c[0] for c in _payload_cases()])
def test_hostile_inline_payload(env, tmp_path, case_id):
    data = dict(_payload_cases())[case_id]
    state = put_row(env, data)
    expect_rejected(state, env.blob, tmp_path / "out", options=RestoreOptions(verify=True))


def test_payload_blob_bomb_with_small_declared_size(env, tmp_path):
    """1 GiB of zeros in a ~1 MB payload blob, envelope declaring 1,000 bytes: stopped at 1,000."""
    key = f"{NAME}/{_sha(BOMB_1G)}.bin"
    env.blob.put_raw(key, BOMB_1G)
    state = put_row(env, _dump(good_offloaded(offloadKey=key, payloadLength=len(BOMB_1G),
                                              compressedSizeBytes=len(BOMB_1G), originalSizeBytes=1000)))
    expect_rejected(state, env.blob, tmp_path / "out", errors=CorruptSnapshotError)


def test_payload_blob_bomb_without_declared_size_is_capped(env, tmp_path):
    """No declared original size: the library cap (max_output_bytes) stops the bomb.

    (Known limit, see docs/security.md: the CLI's cap is the 64 GiB default.)
    """
    key = f"{NAME}/{_sha(BOMB_1G)}.bin"
    env.blob.put_raw(key, BOMB_1G)
    state = put_row(env, _dump(good_offloaded(offloadKey=key, payloadLength=len(BOMB_1G),
                                              compressedSizeBytes=0, originalSizeBytes=0)))
    expect_rejected(state, env.blob, tmp_path / "out", errors=CorruptSnapshotError,
                    options=RestoreOptions(max_output_bytes=8 << 20))


@pytest.mark.parametrize("case_id", ["payload-length-lies", "hash-lies", "huge-declared-lengths"])
def test_payload_blob_lies(env, tmp_path, case_id):
    body = json.dumps({"n": list(range(1000))}).encode()
    payload = _gz(body)
    real_key = f"{NAME}/{_sha(payload)}.bin"
    over = dict(payloadLength=len(payload), compressedSizeBytes=len(payload), originalSizeBytes=len(body))
    key = real_key
    if case_id == "hash-lies":  # the key promises other bytes than the blob holds
        key = f"{NAME}/{_sha(b'something else')}.bin"
    elif case_id == "payload-length-lies":
        over["payloadLength"] = len(payload) + 1
    else:  # declared sizes far beyond the real ones
        over.update(compressedSizeBytes=2**62, originalSizeBytes=2**62)
    env.blob.put_raw(key, payload)
    state = put_row(env, _dump(good_offloaded(offloadKey=key, **over)))
    expect_rejected(state, env.blob, tmp_path / "out", errors=IntegrityError, options=RestoreOptions(verify=True))


def test_statedata_null_on_inline_row(env, tmp_path):
    """IsOffloaded 0 with NULL StateData (SQLite has no CHECK constraint to stop it)."""
    state = put_row(env, b"{}")
    state._conn().execute("UPDATE dcb_multi_projection_states SET StateData=NULL WHERE ServiceId=?",
                          (state.service_id,))
    expect_rejected(state, env.blob, tmp_path / "out")


def test_offloaded_row_without_key(env, tmp_path):
    state = put_row(env, None, offload_key="placeholder/x.bin")
    state._conn().execute("UPDATE dcb_multi_projection_states SET OffloadKey=NULL WHERE ServiceId=?",
                          (state.service_id,))
    expect_rejected(state, env.blob, tmp_path / "out")


def test_envelope_for_another_version(env, tmp_path):
    state = put_row(env, _valid_envelope_for(NAME, "2.0.0"))
    expect_rejected(state, env.blob, tmp_path / "out", errors=VersionMismatchError)


# --- 4. a CLI sample: exit 2, one error line, bounded child memory -------------------------------

CLI_SAMPLE = ["empty", "deep-objects-10000", "dup-top", "nul-in-key", "non-utf8-in-key", "v9-bomb-zeros",
              "huge-payload-length", "dotdot", "absolute", "other-projector"]


def test_cli_sample_exit_2(env, tmp_path):
    """Each case in a fresh CLI process started by bench's tiny launcher, so ru_maxrss is the
    child's own peak (a child forked straight from pytest inherits pytest's high-water mark)."""
    from sekiops.ops.bench import run_measured

    global HOSTILE_REJECTED
    by_id = dict((c[0], c[1]) for c in ALL_ENVELOPE_CASES)
    cli_env = dict(os.environ, SEKIOPS_SPOOL_DIR=str(tmp_path / "spool"),
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for case_id in CLI_SAMPLE:
        state = put_row(env, by_id[case_id])
        out_dir = tmp_path / case_id
        out_dir.mkdir()
        cmd = [sys.executable, "-m", "sekiops", "restore", "--state", env.state_url, "--blob", str(env.blob_root),
               "--service-id", state.service_id, "--projector", NAME, "--out", str(out_dir / "out.json"), "--verify"]
        state.close()
        m = run_measured(cmd, env=cli_env, cwd=str(REPO), timeout=60)
        err = m.stderr
        assert m.returncode == 2, f"{case_id}: exit {m.returncode}: {err}"
        assert err.startswith("error: ") and err.count("\n") == 1, f"{case_id}: {err!r}"
        assert "Traceback" not in err and m.stdout == ""
        assert m.peak_rss_bytes < 256 * 1024 * 1024, f"{case_id}: child peak RSS {m.peak_rss_bytes >> 20} MiB"
        assert m.wall_s < 30
        assert list(out_dir.iterdir()) == []
        HOSTILE_REJECTED += 1


# --- 5. property tests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prop_stores(env):
    state = open_state_store(env.state_url, service_id="prop")
    return state, env.blob


THRESHOLDS = st.sampled_from([0, 1, 64, 10_000, 10**12])
RECORD_THRESHOLDS = st.sampled_from([None, 0, 100, 10**12])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(payload=st.binary(max_size=100_000), payload_threshold=THRESHOLDS, record_threshold=RECORD_THRESHOLDS)
def test_any_payload_round_trips(prop_stores, payload, payload_threshold, record_threshold):
    state, blob = prop_stores
    version = uuid.uuid4().hex[:16]
    opts = PersistOptions(payload_threshold=payload_threshold, record_threshold=record_threshold,
                          input_format="raw", allow_empty=True)  # any bytes: an opaque payload
    res = persist_stream(state, blob, io.BytesIO(payload), projector_name="Prop", projector_version=version,
                         events_processed=7, last_sortable_unique_id=SLUI, options=opts)
    assert res.payload_location == ("blob" if res.compressed_size_bytes > payload_threshold else "inline")
    out = io.BytesIO()
    r = restore(state, blob, out, projector_name="Prop", projector_version=version,
                options=RestoreOptions(verify=True))
    assert out.getvalue() == payload
    assert r.original_size_bytes == len(payload)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                         | st.text(),
                         lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                         max_leaves=40),
       payload_threshold=THRESHOLDS)
def test_raw_json_payload_round_trips(prop_stores, text, payload_threshold):
    """Uncompressed payloads: any JSON document comes back byte for byte (JSON has no Infinity)."""
    state, blob = prop_stores
    payload = json.dumps(text).encode()
    version = uuid.uuid4().hex[:16]
    persist_stream(state, blob, io.BytesIO(payload), projector_name="Prop", projector_version=version,
                   events_processed=7, last_sortable_unique_id=SLUI,
                   options=PersistOptions(compress=False, payload_threshold=payload_threshold))
    out = io.BytesIO()
    restore(state, blob, out, projector_name="Prop", projector_version=version)
    assert out.getvalue() == payload


def _valid_envelope_bytes() -> bytes:
    return _inline_payload_envelope(_gz(b'{"orders":[1,2,3],"name":"x"}'))


def _mutations():
    base = _valid_envelope_bytes()

    @st.composite
    def mutate(draw):
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
            pos = draw(st.integers(0, max(0, len(data) - 1)))
            if op == "flip" and data:
                data[pos] ^= draw(st.integers(1, 255))
            elif op == "cut":
                del data[pos:]
            elif op == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            elif op == "delete" and data:
                del data[pos:pos + draw(st.integers(1, 8))]
        return bytes(data)
    return mutate()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=2048), _mutations()), record_level=st.booleans())
def test_random_statedata_restores_or_raises_sekiops_error(env, tmp_path_factory, data, record_level):
    if record_level:
        assume(data)
        key = f"{NAME}/{VERSION}/{_sha(data)}.bin"
        env.blob.put_raw(key, data)
        state = put_row(env, None, offload_key=key)
    else:
        state = put_row(env, data)
    out_dir = tmp_path_factory.mktemp("prop-out")
    out = out_dir / "restored.json"
    try:
        restore(state, env.blob, str(out), projector_name=NAME)
    except SekiopsError as exc:
        assert str(exc).strip()
        assert list(out_dir.iterdir()) == []
    else:
        assert [p.name for p in out_dir.iterdir()] == ["restored.json"]
    finally:
        state.close()
