"""Sekiban's byte[] path, modelled in Python (sekiops/ops/bench/modelled/): the benchmark's model.

Its memory is measured by the benchmark (and used as the memory guard's control); here: what it
computes is right (the payload is the gzip of exactly the bytes written, whatever they are), the
.NET string it models is the real UTF-16 text, every buffer it maps is unmapped again, and the
rows its persist writes are rows Sekiban (the reference reader) and its restore read back.
"""

from __future__ import annotations

import base64
import gzip
import io
import json

import pytest
from hypothesis import given, settings, strategies as st

from sekiops.format.envelope import EnvelopeMeta, inline_envelope_bytes
from sekiops.format.payload import gzip_backend
from sekiops.ops.bench.modelled import dotnet

META = EnvelopeMeta(projector_name="P", projector_version="1", last_sortable_unique_id="0" * 30,
                    last_event_id="00000000-0000-0000-0000-000000000000", version=3)


def _writer(data: bytes, step: int):
    def write_body(out) -> None:
        for i in range(0, len(data), step):
            out.write(data[i:i + step])
    return write_body


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000) | st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass")),
       step=st.integers(1, 700))
def test_payload_is_the_gzip_of_exactly_the_bytes_written(data, step):
    payload, size = dotnet.serialize_and_compress(_writer(data, step), gzip_backend())
    assert size == len(data)
    assert gzip.decompress(payload) == data


def test_large_state_crosses_growth_and_chunk_boundaries():
    data = (json.dumps({"id": 1, "name": "Zoë ✓ 𝄞", "tags": list(range(20))}) * 60000).encode()
    assert len(data) > 3 * dotnet.STEP
    payload, size = dotnet.serialize_and_compress(_writer(data, 65536 + 3), gzip_backend("zlib"))
    assert size == len(data) and gzip.decompress(payload) == data


def test_uncompressed_mode_passes_bytes_through():
    payload, size = dotnet.serialize_and_compress(_writer(b"\xff\x00abc", 2), gzip_backend(), compress=False)
    assert (payload, size) == (b"\xff\x00abc", 5)


def test_the_json_string_is_the_utf16_text_of_the_state():
    text = '{"name":"Zoë","clef":"𝄞"}'
    s = dotnet.utf16_string([text.encode()[:15], text.encode()[15:]], len(text.encode()))
    assert s.copy() == text.encode("utf-16-le")
    back = dotnet.utf8_get_bytes(s, len(text.encode()))
    assert back.copy() == text.encode()


def test_base64_and_envelope_strings_match_what_is_stored():
    payload = bytes(range(256)) * 50  # plenty of '+' in its Base64
    meta = EnvelopeMeta(**{**META.__dict__, "original_size_bytes": 99, "compressed_size_bytes": len(payload)})
    b64 = dotnet.base64_string(payload)
    assert b64.copy() == base64.b64encode(payload).decode().encode("utf-16-le")
    env16 = dotnet.envelope_string(meta, payload, b64)
    stored = inline_envelope_bytes(meta, payload)
    assert env16.copy() == stored.decode("ascii").encode("utf-16-le")
    assert env16.capacity == env16.length  # sized exactly from the Base64 string's '+' count


def test_buffers_are_unmapped(monkeypatch):
    live = []
    real_init = dotnet.DotnetBuffer.__init__

    def init(self, capacity):
        real_init(self, capacity)
        live.append(self)

    monkeypatch.setattr(dotnet.DotnetBuffer, "__init__", init)
    dotnet.serialize_and_compress(_writer(b"x" * 300000, 4096), gzip_backend())
    assert live and all(b._map is None for b in live), "a modelled buffer outlived the byte[] path"


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=4000), members=st.integers(1, 3), pad=st.integers(0, 9))
def test_decompress_to_string_holds_the_state_text(data, members, pad):
    part = len(data) // members + 1
    payload = b"".join(gzip.compress(data[i:i + part]) for i in range(0, len(data) or 1, part)) + b"\0" * pad
    buf = dotnet.DotnetBuffer(len(payload))
    buf.append(payload)
    string = dotnet.decompress_to_string(buf, gzip_backend("zlib"))
    out = io.BytesIO()
    assert dotnet.write_utf8(string, out) == len(data) and out.getvalue() == data
    raw = dotnet.DotnetBuffer(len(data))
    raw.append(data)
    assert dotnet.write_utf8(dotnet.decompress_to_string(raw, gzip_backend()), io.BytesIO()) == len(data)


def test_truncated_gzip_is_refused():
    payload = gzip.compress(b"x" * 10000)[:-12]
    buf = dotnet.DotnetBuffer(len(payload))
    buf.append(payload)
    with pytest.raises(ValueError, match="truncated"):
        dotnet.decompress_to_string(buf, gzip_backend())


def test_from_base64_string_inverts_to_base64_string():
    payload = bytes(range(256)) * 3 + b"\x01"
    assert dotnet.from_base64_string(dotnet.base64_string(payload)).copy() == payload


def test_a_gzip_bomb_stops_at_the_declared_size():
    bomb = gzip.compress(b"\0" * (20 * 2**20))  # 20 MiB of zeros in ~20 KB
    buf = dotnet.DotnetBuffer(len(bomb))
    buf.append(bomb)
    with pytest.raises(ValueError, match="exceeds 1000"):
        dotnet.decompress_to_string(buf, gzip_backend(), max_bytes=1000)


# --- the modelled persist and restore on a real store ---------------------------------------------


@pytest.mark.parametrize("row_level,payload_level", [("inline", "inline"), ("inline", "blob"), ("blob", "blob"),
                                                     ("blob", "inline")])
def test_modelled_rows_are_sekiban_rows_and_read_back(tmp_path, row_level, payload_level):
    import reference_reader as ref
    from sekiops.blob.local import LocalBlobStore
    from sekiops.ops.bench.modelled.persist import modelled_persist
    from sekiops.ops.bench.modelled.restore import modelled_restore
    from sekiops.state import open_state_store
    from test_pipeline import STATE, dir_blobs, raw_sqlite_row

    db = tmp_path / "ext.db"
    state = open_state_store(f"sqlite:///{db}?record_threshold={200 if row_level == 'blob' else 10**9}")
    blob = LocalBlobStore(str(tmp_path / "blobs"))
    data = STATE * 40
    src = tmp_path / "state.json"
    src.write_bytes(data)
    threshold = 100 if payload_level == "blob" else 1_560_576
    summary = modelled_persist(state, blob, str(src), projector_name="Orders", projector_version="1",
                               events_processed=7, last_sortable_unique_id="0" * 29 + "1", gzip="zlib",
                               payload_threshold=threshold)
    assert (summary["envelope_location"], summary["payload_location"]) == (row_level, payload_level)
    assert summary["original_size_bytes"] == len(data) and "peak_rss_bytes" not in summary  # the child adds it
    row = raw_sqlite_row(db, "Orders", "1")
    assert row["BuildSource"] == "SEKIOPS_LEGACY"
    ref.check_written_row(row, dir_blobs(tmp_path / "blobs"), payload_threshold=threshold,
                          record_threshold=200 if row_level == "blob" else 10**9, expected_state=data)
    back = modelled_restore(state, blob, "Orders", "1")
    out = io.BytesIO()
    assert back.write_json(out) == len(data) and out.getvalue() == data
    state.close()


def test_modelled_persist_records_no_product_metrics(tmp_path):
    """The model's numbers never go out as the product's persist metrics."""
    from sekiops import metrics
    from sekiops.blob.local import LocalBlobStore
    from sekiops.ops.bench.modelled.persist import modelled_persist
    from sekiops.state import open_state_store

    before = len(metrics.default_recorder().collected())
    state = open_state_store(f"sqlite:///{tmp_path / 'm.db'}")
    src = tmp_path / "s.json"
    src.write_bytes(b'{"a": 1}')
    modelled_persist(state, LocalBlobStore(str(tmp_path / "b")), str(src), projector_name="P", projector_version="1",
                     events_processed=1, last_sortable_unique_id="0" * 30)
    state.close()
    assert len(metrics.default_recorder().collected()) == before


def test_the_model_reports_no_time(tmp_path):
    """Its time would be Python's transcoding loops: nothing to compare with .NET, so nothing is reported."""
    from sekiops.blob.local import LocalBlobStore
    from sekiops.ops.bench.modelled.persist import modelled_persist
    from sekiops.state import open_state_store

    state = open_state_store(f"sqlite:///{tmp_path / 't.db'}")
    src = tmp_path / "s.json"
    src.write_bytes(b'{"a": 1}')
    summary = modelled_persist(state, LocalBlobStore(str(tmp_path / "b")), str(src), projector_name="P",
                               projector_version="1", events_processed=1, last_sortable_unique_id="0" * 30)
    state.close()
    assert not [k for k in summary if k.endswith(("_ms", "_s", "seconds"))], summary
