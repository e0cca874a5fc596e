"""persist takes exactly one complete JSON document, checked while it streams.

Empty input, truncated JSON, non-JSON bytes, two documents, trailing garbage: exit 2, one
``error:`` line naming what is wrong and the byte offset, nothing uploaded, the stored snapshot
untouched. ``--raw`` (opaque payload bytes) skips the check but still refuses empty input
unless ``--allow-empty``. The library refuses the same by default.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from peak_rss import run_measured
from sekiops.blob import open_blob_store
from sekiops.errors import BadInputError, UsageError
from sekiops.pipeline import jsoncheck
from sekiops.pipeline.persist import PersistOptions, persist_stream
from sekiops.pipeline.restore import restore
from sekiops.state import open_state_store

SLUI = "0" * 30
GOOD = json.dumps({"customers": [{"id": i, "email": f"c{i}@example.com"} for i in range(2000)]}).encode()

#: (case, input, expected words in the message, byte offset)
BAD = [
    ("empty", b"", "empty", 0),
    ("whitespace-only", b"   \n", "truncated", 4),
    ("truncated", GOOD[:-7], "truncated", len(GOOD) - 7),
    ("non-json", b"\x89PNG\r\n\x1a\n" + bytes(100), "", 0),
    ("two-documents", GOOD + b"\n" + GOOD, "second document", len(GOOD) + 1),
    ("trailing-garbage", GOOD + b" garbage", "trailing garbage", len(GOOD) + 1),
    ("byte-order-mark", b"\xef\xbb\xbf" + GOOD, "byte order mark", 0),
    ("nan", b'{"a": NaN}', "", 6),
    ("bad-utf8", b'{"a": "caf\xe9"}', "", None),
    ("control-char", b'{"a": "x\x01y"}', "", None),
]


@pytest.fixture
def stores(tmp_path):
    db, blob_dir = f"sqlite:///{tmp_path}/s.db", tmp_path / "blobs"
    state, blob = open_state_store(db), open_blob_store(str(blob_dir))
    first = persist_stream(state, blob, io.BytesIO(GOOD), projector_name="P", projector_version="1",
                           events_processed=1, last_sortable_unique_id=SLUI,
                           options=PersistOptions(payload_threshold=100))
    yield state, blob, db, blob_dir, first
    state.close()


def blob_files(blob_dir) -> set[str]:
    return {str(p.relative_to(blob_dir)) for p in blob_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case,data,words,offset", BAD, ids=[c[0] for c in BAD])
def test_library_refuses_and_writes_nothing(stores, case, data, words, offset):
    state, blob, db, blob_dir, first = stores
    before_blobs, before_row = blob_files(blob_dir), state.get("P", "1")
    with pytest.raises(BadInputError) as err:
        persist_stream(state, blob, io.BytesIO(data), projector_name="P", projector_version="1",
                       events_processed=2, last_sortable_unique_id=SLUI, options=PersistOptions(payload_threshold=100),
                       input_name="state.json")
    msg = str(err.value)
    assert "state.json" in msg and "not one complete JSON document" in msg and words in msg
    assert "at byte " in msg
    if offset is not None:
        assert f"at byte {offset:,}" in msg, msg
    assert blob_files(blob_dir) == before_blobs, "something was uploaded"
    assert state.get("P", "1") == before_row, "the stored snapshot changed"
    out = io.BytesIO()
    restore(state, blob, out, projector_name="P", projector_version="1")
    assert out.getvalue() == GOOD


def cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "sekiops", *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize("case,data,words,offset", [b for b in BAD if b[0] in
                         ("empty", "truncated", "two-documents", "trailing-garbage", "non-json")],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_cli_exits_2_with_one_error_line(stores, tmp_path, case, data, words, offset):
    state, blob, db, blob_dir, first = stores
    src = tmp_path / "in.json"
    src.write_bytes(data)
    before_blobs = blob_files(blob_dir)
    p = cli(["persist", "--state", db, "--blob", str(blob_dir), "--projector", "P", "--version", "1",
             "--events-processed", "2", "--last-sortable-unique-id", SLUI, "--in", str(src),
             "--payload-threshold", "100"], env={**os.environ, "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool")})
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr
    assert "in.json" in lines[0] and f"at byte {offset:,}" in lines[0] and words in lines[0]
    assert blob_files(blob_dir) == before_blobs
    assert state.get("P", "1").events_processed == 1


def test_cli_stdin_is_named(stores, tmp_path):
    state, blob, db, blob_dir, first = stores
    p = cli(["persist", "--state", db, "--blob", str(blob_dir), "--projector", "P", "--version", "1",
             "--events-processed", "2", "--last-sortable-unique-id", SLUI, "--in", "-"], input="{\"a\": 1",
            env={**os.environ, "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool")})
    assert p.returncode == 2 and p.stderr.startswith("error: stdin is not one complete JSON document")


def test_raw_skips_the_check_but_refuses_empty_unless_allowed(stores, tmp_path):
    state, blob, db, blob_dir, first = stores
    opaque = b"\x00\x01 not json at all \xff" * 100
    src, empty = tmp_path / "opaque.bin", tmp_path / "empty.bin"
    src.write_bytes(opaque)
    empty.write_bytes(b"")
    base = ["persist", "--state", db, "--blob", str(blob_dir), "--projector", "Raw", "--last-sortable-unique-id",
            SLUI, "--raw"]
    env = {**os.environ, "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool")}
    p = cli(base + ["--version", "1", "--events-processed", "1", "--in", str(src)], env=env)
    assert p.returncode == 0, p.stderr
    out = io.BytesIO()
    restore(state, blob, out, projector_name="Raw", projector_version="1")
    assert out.getvalue() == opaque  # stored exactly as given
    p = cli(base + ["--version", "2", "--events-processed", "1", "--in", str(empty)], env=env)
    assert p.returncode == 2 and "empty" in p.stderr and "--allow-empty" in p.stderr
    assert state.get("Raw", "2") is None
    p = cli(base + ["--version", "2", "--events-processed", "1", "--in", str(empty), "--allow-empty"], env=env)
    assert p.returncode == 0, p.stderr
    assert state.get("Raw", "2").events_processed == 1


def test_the_check_agrees_with_json_on_a_corpus():
    """Every verdict equals Python's strict json parser's (plus: no BOM, no NaN), whatever the
    chunking (7-byte pieces split every token and escape)."""
    docs = [GOOD, b"[]", b"{}", b'"x"', b"0", b"-1.5e-3", b"true", b"null", b'{"a":[{"b":[1,{"c":null}]}]}',
            b'"\\u00e9\\ud83d\\ude00"', b"[" * 500 + b"]" * 500, b" \t\n[1]\n ", *[c[1] for c in BAD],
            b"[1,]", b"{,}", b'{"a"}', b'{"a":}', b"01", b"1.", b".5", b"+1", b"[1 2]", b"tru", b"nul",
            b'"\\x"', b'"\\u12"', b"{'a':1}", b"[1]]", b"]", b"Infinity", b"-", b"1e", b'"a\tb"']
    for doc in docs:
        for step in (1, 7, 1 << 20):
            c = jsoncheck.JsonChecker("doc")
            try:
                for k in range(0, len(doc), step):
                    c.feed(doc[k:k + step])
                c.finish()
                ok = True
            except BadInputError:
                ok = False
            try:
                json.loads(doc.decode("utf-8"), parse_constant=lambda name: 1 / 0)
                expected = not doc.startswith(b"\xef\xbb\xbf")
            except (ValueError, UnicodeDecodeError, ZeroDivisionError):
                expected = False
            assert ok == expected, (step, doc[:40])


def test_without_a_validator_the_check_refuses_to_guess(stores, monkeypatch):
    state, blob, db, blob_dir, first = stores
    monkeypatch.setattr(jsoncheck, "_load_yajl", lambda: None)
    monkeypatch.setattr(jsoncheck, "_load_native", lambda: None)
    with pytest.raises(UsageError, match="libyajl.*--raw"):
        persist_stream(state, blob, io.BytesIO(GOOD), projector_name="P", projector_version="9",
                       events_processed=1, last_sortable_unique_id=SLUI)
    assert state.get("P", "9") is None


def test_the_check_streams_in_bounded_memory(tmp_path):
    """A 96 MB document with garbage at its end: refused at that offset by a CLI process whose
    peak RSS stays far below the input (no second pass, nothing held whole)."""
    big = tmp_path / "big.json"
    subprocess.run([sys.executable, "-c", "import sys\nfrom sekiops.ops.synth import write_state\n"
                    f"f = open({str(big)!r}, 'wb'); write_state(f, 96_000_000); f.write(b'x'); f.close()"],
                   check=True, timeout=300)
    size = big.stat().st_size
    code, _, err, peak = run_measured([sys.executable, "-m", "sekiops", "persist", "--state", f"sqlite:///{tmp_path}/s.db",
                                       "--blob", str(tmp_path / "blobs"), "--projector", "Big", "--version", "1",
                                       "--events-processed", "1", "--last-sortable-unique-id", SLUI, "--in", str(big)],
                                      env={**os.environ, "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool")})
    err = err.decode()
    assert code == 2, err
    assert f"at byte {size - 1:,}" in err and "trailing garbage" in err
    assert peak < 200 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB input"
    assert not (tmp_path / "blobs").exists() or not any((tmp_path / "blobs").rglob("*.bin"))
