"""Tests of the pure format layer (sekiops/format): envelopes, payload codec, keys, records.

The oracle is tests/reference_reader.py, written from the format page alone; the hostile corpus
is tests/hostile_envelopes.py.  No servers, no network; deterministic; a few seconds.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import itertools
import json
import os
import random
import re
import signal
import time
import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import reference_reader as ref  # tests/ is on sys.path (pytest's rootdir-based import mode)
import sekiops.format.jsonstream as jsonstream
from hostile_envelopes import CASES
from sekiops.errors import CorruptSnapshotError, SekiopsError, UnsafeKeyError, UsageError
from sekiops.format import constants, keys, record
from sekiops.format.envelope import (
    EnvelopeMeta,
    dotnet_json_string,
    inline_envelope_bytes,
    inline_envelope_length,
    offloaded_envelope_bytes,
    read_envelope,
    write_inline_envelope,
)
from sekiops.format.payload import GzipDecodingReader, PayloadEncoder, backends, gzip_backend, open_payload

WHERE = "unit:where"
SLUI = "063904064000000000000000000001"
GUID = "0e5c2f4a-8c1b-4f5e-9d3a-1b2c3d4e5f60"

# The projector state used in most tests: has every character class the writer must escape.
STATE = json.dumps(
    {
        "v": 2,
        "note": 'a+b/c "quoted" back\\slash <tag> & \' ` é ß 漢字 😀 \u2028 \t\n',
        "items": [{"id": i, "name": f"item-{i}+x"} for i in range(200)],
    },
    ensure_ascii=False,
).encode("utf-8")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


stj_string = ref.stj_string
stj_dumps = ref.stj_dumps


def lib_read(data: bytes, **kw):
    """read_envelope on bytes: (Envelope, bytes written to the payload sink)."""
    sink = io.BytesIO()
    env = read_envelope(io.BytesIO(data), WHERE, payload_sink=sink, **kw)
    return env, sink.getvalue()


def lib_stored_payload(data: bytes, blobs: dict) -> bytes:
    env, inline = lib_read(data)
    return bytes(blobs[env.offload_key]) if env.is_offloaded else inline


def lib_gunzip(stored: bytes) -> bytes:
    stream, _ = open_payload(io.BytesIO(stored), WHERE)
    return stream.read()


def lib_decode(data: bytes, blobs: dict | None = None) -> bytes:
    return lib_gunzip(lib_stored_payload(data, blobs or {}))


def pascal_keys(obj):
    if isinstance(obj, dict):
        return {k[:1].upper() + k[1:]: pascal_keys(v) for k, v in obj.items()}
    return obj


def reverse_keys(obj):
    if isinstance(obj, dict):
        return {k: reverse_keys(v) for k, v in reversed(list(obj.items()))}
    return obj


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta_dict(name="OrderSummary+é😀", version="1.0.0", **over):
    d = {
        "multiProjectionPayloadType": "App.Projections.OrderSummary, App",
        "projectorName": name,
        "projectorVersion": version,
        "lastSortableUniqueId": SLUI,
        "lastEventId": GUID,
        "version": 42,
        "isCatchedUp": True,
        "isSafeState": False,
    }
    d.update(over)
    return d


class Trickle:
    """A file-like object whose read(n) returns at most ``step`` bytes (sockets, pipes, HTTP)."""

    def __init__(self, data: bytes, step: int = 1):
        self._data, self._pos, self._step = data, 0, step

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = len(self._data)
        out = self._data[self._pos:self._pos + min(n, self._step)]
        self._pos += len(out)
        return out


class _OverBudget(BaseException):
    """Raised by the CPU-time alarm (a BaseException so that no `except Exception` swallows it)."""


def _rss_peak() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024
    except (OSError, AttributeError):
        return None


def _reset_rss_peak() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux: write 5 to clear_refs); returns the new baseline."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _rss_peak()


@contextlib.contextmanager
def bounded(cpu_seconds: float, max_bytes: int):
    """Fail when the block uses more than ``cpu_seconds`` of CPU time (ITIMER_PROF, so it does
    not disturb pytest-timeout's SIGALRM) or grows the process's peak RSS by more than
    ``max_bytes`` (Linux; the memory check is skipped where the peak cannot be reset)."""
    stats = {}

    def on_alarm(signum, frame):
        raise _OverBudget(f"more than {cpu_seconds} s of CPU")

    old = signal.signal(signal.SIGPROF, on_alarm)
    baseline = _reset_rss_peak()
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    t0 = time.monotonic()
    try:
        yield stats
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
        stats["seconds"] = time.monotonic() - t0
        peak = _rss_peak()
        stats["growth"] = None if baseline is None or peak is None else peak - baseline
    if stats["growth"] is not None:
        assert stats["growth"] <= max_bytes, f"peak RSS grew by {stats['growth']:,} bytes > {max_bytes:,}"


# --------------------------------------------------------------------------------------------------
# the envelope variant matrix
# --------------------------------------------------------------------------------------------------

SOURCES = [
    "base64",  # inlineState.payloadBase64
    "json",  # legacy inlineState.payloadJson (text)
    "json-empty-base64",  # payloadBase64 "" and payloadJson text
    "both-null",  # both null -> empty payload
    "base64-empty",  # payloadBase64 "" -> empty payload
    "offloaded-content",  # offloadedState, content-addressed key
    "offloaded-guid",  # offloadedState, old prefixed GUID key
]
COMPRESSIONS = ["gzip", "raw"]
LAYOUTS = ["stj-compact", "pretty-utf8", "reordered-extra-slashes"]


def _matrix():
    for v9, casing, source, comp, layout in itertools.product(
        (False, True), ("camel", "pascal"), SOURCES, COMPRESSIONS, LAYOUTS
    ):
        if source in ("json", "json-empty-base64", "both-null", "base64-empty") and comp == "gzip":
            continue  # payloadJson holds text; an empty payload has no compression
        yield pytest.param(v9, casing, source, comp, layout,
                           id=f"{'v9' if v9 else 'v10'}-{casing}-{source}-{comp}-{layout}")


def build_envelope(v9: bool, casing: str, source: str, comp: str, layout: str, state: bytes = STATE):
    """(envelope bytes, blobs, expected decoded state, expected stored payload)."""
    stored = gzip.compress(state, compresslevel=1) if comp == "gzip" else state
    blobs: dict[str, bytes] = {}
    meta = meta_dict()
    if source.startswith("offloaded"):
        key = (f"{meta['projectorName']}/{sha(stored)}.bin" if source == "offloaded-content"
               else f"snapshots/tenant-a/{meta['projectorName']}/{'0123456789abcdef' * 2}.bin")
        blobs[key] = stored
        doc = {
            "isOffloaded": True,
            "inlineState": None,
            "offloadedState": {"offloadKey": key, "storageProvider": "AzureBlobStorage", **meta,
                               "payloadLength": len(stored), "originalSizeBytes": len(state),
                               "compressedSizeBytes": len(stored)},
        }
        expected_state, expected_stored = state, stored
    else:
        b64 = json_text = None
        expected_state = expected_stored = b""
        if source == "base64":
            b64 = base64.b64encode(stored).decode("ascii")
            expected_state, expected_stored = state, stored
        elif source in ("json", "json-empty-base64"):
            json_text = state.decode("utf-8")
            b64 = "" if source == "json-empty-base64" else None
            expected_state = expected_stored = state
        elif source == "base64-empty":
            b64 = ""
        doc = {
            "isOffloaded": False,
            "inlineState": {"payloadJson": json_text, "payloadBase64": b64, **meta,
                            "originalSizeBytes": len(expected_state),
                            "compressedSizeBytes": len(expected_stored)},
            "offloadedState": None,
        }
    if casing == "pascal":
        doc = pascal_keys(doc)
    if layout == "stj-compact":
        text = stj_dumps(doc).encode("ascii")
    elif layout == "pretty-utf8":
        text = json.dumps(doc, indent=2, ensure_ascii=False).replace("\n", "\r\n").encode("utf-8")
        text = b"\n \t" + text + b"\r\n  \n"
    else:
        doc = reverse_keys(doc)
        state_key = [k for k in doc if k.lower() in ("inlinestate", "offloadedstate") and doc[k]][0]
        doc[state_key] = {"$type": "Sekiban.Unknown", **doc[state_key],
                          "unknownObject": {"nested": [1, 2.5e3, {"a": None, "b": [True, False]}], "s": "x"},
                          "unknownNull": None, "unknownNumber": -12.5e-3}
        doc = {"schemaHint": "v10", **doc, "zzzExtra": [[], {}, "", 0]}
        text = json.dumps(doc, separators=(", ", " : ")).replace("/", "\\/").encode("ascii")
    if v9:
        text = gzip.compress(text)
    return text, blobs, expected_state, expected_stored


@pytest.mark.parametrize("v9,casing,source,comp,layout", list(_matrix()))
def test_envelope_variants(v9, casing, source, comp, layout):
    data, blobs, expected_state, expected_stored = build_envelope(v9, casing, source, comp, layout)
    # the oracle agrees with the construction
    assert ref.decode_envelope(data, blobs) == expected_state
    env, inline = lib_read(data)
    assert env.is_offloaded == source.startswith("offloaded")
    assert env.gzipped == v9
    assert env.casing == casing
    assert env.partial is False
    if env.is_offloaded:
        assert inline == b""
        assert env.payload_source == "offloaded"
        assert env.offload_key in blobs
        assert env.storage_provider == "AzureBlobStorage"
        assert env.payload_length == len(expected_stored)
        stored = blobs[env.offload_key]
        if source == "offloaded-content":
            assert keys.key_style(env.offload_key) == "content"
            assert keys.content_hash(env.offload_key) == sha(stored)
        else:
            assert keys.key_style(env.offload_key) == "guid"
            assert keys.content_hash(env.offload_key) is None
    else:
        stored = inline
        assert env.inline_length == len(inline)
        assert env.payload_source == {"base64": "base64", "json": "json", "json-empty-base64": "json",
                                      "both-null": "empty", "base64-empty": "empty"}[source]
    assert stored == expected_stored
    assert lib_gunzip(stored) == expected_state
    m = meta_dict()
    assert env.meta.projector_name == m["projectorName"]
    assert env.meta.projector_version == m["projectorVersion"]
    assert env.meta.last_sortable_unique_id == SLUI
    assert env.meta.last_event_id == GUID
    assert env.meta.version == 42
    assert env.meta.is_catched_up is True
    assert env.meta.is_safe_state is False
    assert env.meta.payload_type_name == m["multiProjectionPayloadType"]
    assert env.meta.original_size_bytes == len(expected_state)
    assert env.meta.compressed_size_bytes == len(expected_stored)


def test_envelope_defaults_when_metadata_missing():
    """isCatchedUp / isSafeState default to true; missing isOffloaded is inferred."""
    env, inline = lib_read(b'{"inlineState":{"payloadBase64":"YWJj"}}')
    assert (env.is_offloaded, inline, env.meta.is_catched_up, env.meta.is_safe_state) == (False, b"abc", True, True)
    env, _ = lib_read(b'{"offloadedState":{"offloadKey":"P/k.bin"}}')
    assert env.is_offloaded and env.offload_key == "P/k.bin"


@pytest.mark.parametrize("combo", ["row-inline/env-inline", "row-inline/env-offloaded",
                                   "row-offloaded/env-inline", "row-offloaded/env-offloaded"])
@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_four_combinations(combo, comp):
    """Section 1: a reader handles (row inline|offloaded) x (envelope inline|offloaded)."""
    row_off, env_off = (part.endswith("offloaded") for part in combo.split("/"))
    source = "offloaded-content" if env_off else "base64"
    env_bytes, blobs, expected, _ = build_envelope(False, "camel", source, comp, "stj-compact")
    name, version = meta_dict()["projectorName"], "1.0.0"
    row = {"ProjectorName": name, "ProjectorVersion": version, "IsOffloaded": row_off,
           "StateData": None if row_off else env_bytes, "OffloadKey": None}
    if row_off:
        row["OffloadKey"] = keys.record_key(name, version, sha(env_bytes))
        blobs[row["OffloadKey"]] = env_bytes
    assert ref.read_row(row, blobs) == expected
    lib_env_bytes = blobs[row["OffloadKey"]] if row_off else row["StateData"]
    assert lib_decode(lib_env_bytes, blobs) == expected


# --------------------------------------------------------------------------------------------------
# JSON string escapes
# --------------------------------------------------------------------------------------------------

ESCAPED_TEXTS = [
    ("plus", r"a\u002Bb\u002bc", "a+b+c"),
    ("slash", r"\/path\/x", "/path/x"),
    ("short", r"\"q\" \\ \b\f\n\r\t", '"q" \\ \b\f\n\r\t'),
    ("bmp", r"\u00e9\u00C9\u6F22", "éÉ漢"),
    ("surrogate-pair", r"\uD83D\uDE00 \ud83d\ude00", "😀 😀"),
    ("html", r"\u003C\u003E\u0026\u0027\u0060\u0022", "<>&'`\""),
    ("control", r"\u0000\u001F\u007F", "\x00\x1f\x7f"),
    ("backslash-before-u", r"\\u002B", "\\u002B"),
    ("raw-utf8", "é😀", "é😀"),
]


@pytest.mark.parametrize("case_id,escaped,text", ESCAPED_TEXTS, ids=[c[0] for c in ESCAPED_TEXTS])
def test_payload_json_escapes(case_id, escaped, text):
    data = ('{"isOffloaded":false,"inlineState":{"payloadJson":"' + escaped + '","payloadBase64":null},'
            '"offloadedState":null}').encode("utf-8")
    expected = text.encode("utf-8")
    assert ref.decode_envelope(data) == expected
    env, inline = lib_read(data)
    assert (env.payload_source, inline) == ("json", expected)


@pytest.mark.parametrize("case_id,escaped,text", ESCAPED_TEXTS, ids=[c[0] for c in ESCAPED_TEXTS])
def test_metadata_string_escapes(case_id, escaped, text):
    data = ('{"isOffloaded":true,"inlineState":null,"offloadedState":{"offloadKey":"P/k.bin",'
            '"projectorName":"' + escaped + '","storageProvider":"' + escaped + '"}}').encode("utf-8")
    env, _ = lib_read(data)
    assert env.meta.projector_name == text
    assert env.storage_provider == text


def test_base64_with_escaped_plus_and_slash():
    payload = bytes(range(256)) * 3  # Base64 of this has many '+' and '/'
    b64 = base64.b64encode(payload).decode("ascii")
    assert "+" in b64 and "/" in b64
    for form in (b64.replace("+", "\\u002B"), b64.replace("+", "\\u002b").replace("/", "\\/"),
                 b64.replace("+", "\\u002B").replace("A", "\\u0041")):
        data = ('{"isOffloaded":false,"inlineState":{"payloadBase64":"' + form + '"}}').encode()
        assert ref.decode_envelope(data) == payload
        assert lib_read(data)[1] == payload


def test_lone_surrogate_in_payload_json_becomes_replacement_character():
    """.NET's Encoding.UTF8.GetBytes turns a lone surrogate into U+FFFD."""
    data = b'{"inlineState":{"payloadJson":"a\\ud800b\\udc00c"}}'
    assert ref.decode_envelope(data) == "a\ufffdb\ufffdc".encode()
    assert lib_read(data)[1] == "a\ufffdb\ufffdc".encode()


@pytest.mark.parametrize("raw", [b'"\\ud800"', b'"\\udfff x"', b'"\xed\xa0\x80"'],
                         ids=["escaped-high", "escaped-low", "cesu-bytes"])
def test_metadata_strings_are_valid_unicode(raw):
    """A metadata string read from an envelope must be encodable (it ends up in messages, SQL
    parameters, file names); a lone surrogate must be refused or replaced, never kept."""
    data = b'{"isOffloaded":false,"inlineState":{"payloadBase64":"","projectorName":' + raw + b"}}"
    try:
        env, _ = lib_read(data)
    except SekiopsError:
        return
    env.meta.projector_name.encode("utf-8")  # UnicodeEncodeError -> a crash waiting to happen


def test_base64_wins_over_payload_json():
    """Format page, section 3: payload = decode(payloadBase64), else payloadJson, else empty.
    (Sekiban's GetPayloadBytes tests payloadBase64 first and ignores payloadJson then.)"""
    data = b'{"isOffloaded":false,"inlineState":{"payloadJson":"{\\"old\\":1}","payloadBase64":"YWJj"}}'
    assert ref.decode_envelope(data) == b"abc"
    env, inline = lib_read(data)
    assert (env.payload_source, inline) == ("base64", b"abc")


def test_utf8_bom_before_envelope_is_tolerated_or_refused_cleanly():
    """Sekiban never writes a BOM; a reader may accept or refuse one, but only with SekiopsError."""
    data = b"\xef\xbb\xbf" + inline_envelope_bytes(EnvelopeMeta(projector_name="P"), b"abc")
    try:
        assert lib_read(data)[1] == b"abc"
    except SekiopsError as exc:
        assert WHERE in str(exc)


# --------------------------------------------------------------------------------------------------
# streaming: tiny reads give identical results
# --------------------------------------------------------------------------------------------------


def _streaming_samples():
    samples = {}
    for v9, casing, source, comp in [(False, "camel", "base64", "gzip"), (True, "pascal", "json", "raw"),
                                     (False, "camel", "offloaded-content", "gzip"),
                                     (False, "pascal", "both-null", "raw")]:
        samples[f"{source}-{casing}-{'v9' if v9 else 'v10'}"] = build_envelope(
            v9, casing, source, comp, "reordered-extra-slashes", state=STATE[:1500])[0]
    payload = bytes(range(256)) * 8
    samples["writer-plus-heavy"] = inline_envelope_bytes(
        EnvelopeMeta(projector_name="P+ü", projector_version="v/1"), payload)
    escapes = "".join(r"\uD83D\uDE00\\\u002B\"x\/\u00e9\n" for _ in range(40))
    samples["payload-json-escapes"] = (
        '{"isOffloaded":false,"inlineState":{"payloadJson":"' + escapes + '"},"offloadedState":null}').encode()
    samples["backslash-runs"] = (
        '{"inlineState":{"payloadJson":"' + "".join("\\\\" * k + "\\u0041" for k in range(12)) + '"}}').encode()
    return samples


STREAMING = _streaming_samples()


def _snapshot(data: bytes):
    env, inline = lib_read(data)
    return env, inline


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 13])
@pytest.mark.parametrize("name", sorted(STREAMING))
def test_tiny_chunks_identical(name, chunk, monkeypatch):
    data = STREAMING[name]
    expected = _snapshot(data)
    monkeypatch.setattr(jsonstream, "CHUNK", chunk)
    assert _snapshot(data) == expected


@pytest.mark.parametrize("step", [1, 2, 5, 4096])
@pytest.mark.parametrize("name", sorted(STREAMING))
def test_short_read_source_identical(name, step):
    """Sources that return fewer bytes than asked (pipes, sockets, HTTP bodies) decode the same,
    including v9 detection (the gzip magic is two bytes)."""
    data = STREAMING[name]
    expected = _snapshot(data)
    sink = io.BytesIO()
    env = read_envelope(Trickle(data, step), WHERE, payload_sink=sink)
    assert (env, sink.getvalue()) == expected


@pytest.mark.parametrize("step", [1, 2, 5])
@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_open_payload_short_reads(comp, step):
    stored = gzip.compress(STATE) if comp == "gzip" else STATE
    stream, was_gzip = open_payload(Trickle(stored, step), WHERE)
    assert (stream.read(), was_gzip) == (STATE, comp == "gzip")


@pytest.mark.parametrize("step,size", [(1, 10_005), (1000, 786432 * 2 + 5), (786431, 786432 * 2 + 5)])
def test_writer_accepts_short_reads(step, size):
    payload = random.Random(7).randbytes(size)
    out = io.BytesIO()
    n = write_inline_envelope(out, EnvelopeMeta(projector_name="P"), Trickle(payload, step), len(payload))
    assert n == len(out.getvalue())
    assert lib_read(out.getvalue())[1] == payload


def test_writer_refuses_short_payload():
    with pytest.raises(CorruptSnapshotError):
        write_inline_envelope(io.BytesIO(), EnvelopeMeta(), io.BytesIO(b"abc"), 10)


# --------------------------------------------------------------------------------------------------
# round trips through the writer
# --------------------------------------------------------------------------------------------------

ROUND_TRIP_SIZES = [0, 1, 2, 3, 4, 786431, 786432, 786433]


@pytest.mark.parametrize("size", ROUND_TRIP_SIZES)
def test_round_trip_sizes(size):
    payload = random.Random(size).randbytes(size)
    meta = EnvelopeMeta(projector_name="Orders", projector_version="2", last_sortable_unique_id=SLUI,
                        last_event_id=GUID, version=size, payload_type_name="App.Orders",
                        original_size_bytes=size, compressed_size_bytes=size)
    out = io.BytesIO()
    n = write_inline_envelope(out, meta, io.BytesIO(payload), size)
    data = out.getvalue()
    assert n == len(data)
    plus = base64.b64encode(payload).count(b"+")
    assert inline_envelope_length(meta, size, plus) == len(data)
    assert data == inline_envelope_bytes(meta, payload)
    ref.check_dotnet_json_text(data)
    assert ref.envelope_stored_payload(ref.parse_envelope(data), {}) == payload
    env, inline = lib_read(data)
    assert inline == payload
    assert env.meta == meta
    assert env.inline_length == size
    assert env.payload_source == ("base64" if size else "empty")


_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)


@settings(max_examples=300, deadline=2000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=4000), name=_names, version=_names, events=st.integers(0, 2**31 - 1),
       catched=st.booleans(), safe=st.booleans())
def test_round_trip_property(payload, name, version, events, catched, safe):
    meta = EnvelopeMeta(projector_name=name, projector_version=version, last_sortable_unique_id=SLUI,
                        version=events, is_catched_up=catched, is_safe_state=safe,
                        original_size_bytes=len(payload), compressed_size_bytes=len(payload))
    data = inline_envelope_bytes(meta, payload)
    ref.check_dotnet_json_text(data)
    assert ref.envelope_stored_payload(ref.parse_envelope(data), {}) == payload
    env, inline = lib_read(data)
    assert inline == payload and env.meta == meta
    # also as a v9 envelope
    env9, inline9 = lib_read(gzip.compress(data))
    assert inline9 == payload and env9.meta == meta and env9.gzipped


# --------------------------------------------------------------------------------------------------
# fuzzing: read_envelope decodes or raises SekiopsError, nothing else
# --------------------------------------------------------------------------------------------------

_SEEDS = [
    inline_envelope_bytes(EnvelopeMeta(projector_name="P", projector_version="v"), b"\xfb\xffpayload"),
    offloaded_envelope_bytes(EnvelopeMeta(projector_name="P"), "P/" + "a" * 64 + ".bin", "AzureBlobStorage", 9),
    b'{"IsOffloaded":false,"InlineState":{"PayloadJson":"{\\"a\\":\\"\\u00e9\\"}","PayloadBase64":null}}',
]
_TOKENS = [b"{", b"}", b"[", b"]", b'"', b":", b",", b" ", b"\\", b'"isOffloaded"', b'"inlineState"',
           b'"offloadedState"', b'"payloadBase64"', b'"payloadJson"', b'"offloadKey"', b'"version"',
           b'"originalSizeBytes"', b"true", b"false", b"null", b"0", b"-1", b"1e999", b"-1e999", b"1.5",
           b"99999999999999999999", b'"YQ=="', b'"AA==AAAA"', b'"\\u002B/8="', b'"\\ud800"', b"\\u",
           b"\x00", b"\xff", b"\xc3", b"\x1f\x8b"]


def _splice(seed_and_edits):
    seed, edits = seed_and_edits
    data = bytearray(seed)
    for pos, cut, insert in edits:
        pos = min(pos, len(data))
        data[pos:pos + cut] = insert
    return bytes(data)


_mutated = st.sampled_from(_SEEDS).flatmap(lambda s: st.tuples(
    st.just(s),
    st.lists(st.tuples(st.integers(0, len(s)), st.integers(0, 6),
                       st.one_of(st.binary(max_size=6), st.sampled_from(_TOKENS))), min_size=1, max_size=4),
)).map(_splice)
_soup = st.lists(st.sampled_from(_TOKENS), max_size=40).map(b"".join)
_fuzz_input = st.tuples(st.one_of(st.binary(max_size=300), _mutated, _soup), st.booleans()).map(
    lambda t: gzip.compress(t[0], mtime=0) if t[1] else t[0])


@settings(max_examples=300, deadline=2000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=_fuzz_input)
def test_fuzz_only_sekiops_errors(data):
    try:
        lib_read(data)
    except SekiopsError as exc:
        assert WHERE in str(exc)


# --------------------------------------------------------------------------------------------------
# hostile corpus
# --------------------------------------------------------------------------------------------------


def test_hostile_corpus_size():
    assert len(CASES) >= 40
    for case_id, data, description in CASES:
        assert isinstance(case_id, str) and isinstance(data, bytes) and description


def _expect_refusal(case_id: str, data: bytes):
    where = f"hostile:{case_id}"
    try:
        # the sink discards (a seekable /dev/null): the memory bound is the reader's, not the test's
        with open(os.devnull, "wb") as sink:
            env = read_envelope(io.BytesIO(data), where, payload_sink=sink)
    except SekiopsError as exc:
        assert where in str(exc), f"message does not name where: {exc}"
        return
    except _OverBudget:
        raise
    except Exception as exc:  # noqa: BLE001 - this is the point of the test
        pytest.fail(f"{case_id}: raised {type(exc).__name__} ({exc}) instead of SekiopsError")
    pytest.fail(f"{case_id}: accepted as {env!r:.200}")


@pytest.mark.parametrize("case_id,data,description", CASES, ids=[c[0] for c in CASES])
def test_hostile_envelope_refused(case_id, data, description):
    try:
        with bounded(cpu_seconds=3, max_bytes=64 << 20):
            _expect_refusal(case_id, data)
    except _OverBudget as exc:
        pytest.fail(f"{case_id} ({description}): {exc}")


def _small(data: bytes) -> bool:
    """Small enough to parse byte by byte: at most 8 KB, and at most 64 KB once gunzipped."""
    if len(data) > 8192:
        return False
    if data[:2] == b"\x1f\x8b":
        d = zlib.decompressobj(wbits=47)
        try:
            return len(d.decompress(data, 65537)) <= 65536
        except zlib.error:
            return True
    return True


_SMALL_CASES = [c for c in CASES if _small(c[1])]


@pytest.mark.parametrize("chunk", [1, 7])
@pytest.mark.parametrize("case_id,data,description", _SMALL_CASES, ids=[c[0] for c in _SMALL_CASES])
def test_hostile_envelope_refused_tiny_chunks(case_id, data, description, chunk, monkeypatch):
    monkeypatch.setattr(jsonstream, "CHUNK", chunk)
    _expect_refusal(case_id, data)


def test_v9_envelope_limit_stops_bomb_quickly():
    bomb = next(data for case_id, data, _ in CASES if case_id == "v9-bomb-whitespace")
    with bounded(cpu_seconds=5, max_bytes=32 << 20):
        with pytest.raises(CorruptSnapshotError, match="exceeds"):
            read_envelope(io.BytesIO(bomb), WHERE, max_envelope=10_000_000)


def test_head_only_read():
    big = inline_envelope_bytes(EnvelopeMeta(projector_name="P"), bytes(300_000))
    env = read_envelope(io.BytesIO(big), WHERE, max_bytes=4096)
    assert env.partial and not env.is_offloaded
    small = offloaded_envelope_bytes(EnvelopeMeta(projector_name="P", version=3), "P/x.bin", "AwsS3", 5)
    env = read_envelope(io.BytesIO(small), WHERE, max_bytes=1 << 20)
    assert not env.partial and env.is_offloaded and env.meta.version == 3


# --------------------------------------------------------------------------------------------------
# what the writer emits: System.Text.Json's bytes, and the writer rules
# --------------------------------------------------------------------------------------------------

STJ_STRINGS = [
    ("plain", "OrderSummary", '"OrderSummary"'),
    ("plus", "a+b", '"a\\u002Bb"'),
    ("quote", 'say "hi"', '"say \\u0022hi\\u0022"'),
    ("backslash", "a\\b", '"a\\\\b"'),
    ("html", "<a href='x'>&`</a>", '"\\u003Ca href=\\u0027x\\u0027\\u003E\\u0026\\u0060\\u003C/a\\u003E"'),
    ("latin1", "é", '"\\u00E9"'),
    ("cjk", "漢", '"\\u6F22"'),
    ("astral", "😀", '"\\uD83D\\uDE00"'),
    ("controls", "\n\r\t\b\f\x00\x1f\x7f", '"\\n\\r\\t\\b\\f\\u0000\\u001F\\u007F"'),
    ("slash", "a/b", '"a/b"'),
    ("line-separator", "\u2028", '"\\u2028"'),
    ("empty", "", '""'),
]


@pytest.mark.parametrize("case_id,value,expected", STJ_STRINGS, ids=[c[0] for c in STJ_STRINGS])
def test_dotnet_json_string_known(case_id, value, expected):
    assert dotnet_json_string(value) == expected
    assert stj_string(value) == expected


def test_dotnet_json_string_null():
    assert dotnet_json_string(None) == "null"


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text())
def test_dotnet_json_string_property(value):
    text = dotnet_json_string(value)
    assert text == stj_string(value)
    assert text.isascii() and "+" not in text
    assert json.loads(text) == value


def test_inline_envelope_is_what_stj_writes():
    meta = EnvelopeMeta(projector_name="Proj+é", projector_version='v"1', last_sortable_unique_id=SLUI,
                        last_event_id=GUID, version=7, is_catched_up=True, is_safe_state=False,
                        payload_type_name="App.P+Q<T>", original_size_bytes=2, compressed_size_bytes=2)
    expected = (
        '{"isOffloaded":false,"inlineState":{"payloadJson":null,"payloadBase64":"\\u002B/8=",'
        '"multiProjectionPayloadType":"App.P\\u002BQ\\u003CT\\u003E","projectorName":"Proj\\u002B\\u00E9",'
        '"projectorVersion":"v\\u00221","lastSortableUniqueId":"' + SLUI + '","lastEventId":"' + GUID + '",'
        '"version":7,"isCatchedUp":true,"isSafeState":false,"originalSizeBytes":2,"compressedSizeBytes":2},'
        '"offloadedState":null}'
    ).encode("ascii")
    data = inline_envelope_bytes(meta, b"\xfb\xff")
    assert data == expected
    doc = {"isOffloaded": False,
           "inlineState": {"payloadJson": None, "payloadBase64": "+/8=",
                           "multiProjectionPayloadType": "App.P+Q<T>", "projectorName": "Proj+é",
                           "projectorVersion": 'v"1', "lastSortableUniqueId": SLUI, "lastEventId": GUID,
                           "version": 7, "isCatchedUp": True, "isSafeState": False,
                           "originalSizeBytes": 2, "compressedSizeBytes": 2},
           "offloadedState": None}
    assert data == stj_dumps(doc).encode("ascii")
    assert ref.decode_envelope(data) == b"\xfb\xff"
    assert lib_read(data)[1] == b"\xfb\xff"


def test_offloaded_envelope_is_what_stj_writes():
    key = "Proj+é/" + "c" * 64 + ".bin"
    meta = EnvelopeMeta(projector_name="Proj+é", projector_version="1", last_sortable_unique_id=SLUI,
                        last_event_id=GUID, version=9, payload_type_name="T",
                        original_size_bytes=100, compressed_size_bytes=40)
    data = offloaded_envelope_bytes(meta, key, "AzureBlobStorage", 40)
    ref.check_dotnet_json_text(data)
    doc = json.loads(data)
    assert list(doc) == ["isOffloaded", "inlineState", "offloadedState"]
    assert doc["isOffloaded"] is True and doc["inlineState"] is None
    off = doc["offloadedState"]
    assert list(off)[:2] == ["offloadKey", "storageProvider"]
    assert off == {"offloadKey": key, "storageProvider": "AzureBlobStorage", "multiProjectionPayloadType": "T",
                   "projectorName": "Proj+é", "projectorVersion": "1", "lastSortableUniqueId": SLUI,
                   "lastEventId": GUID, "version": 9, "isCatchedUp": True, "isSafeState": True,
                   "payloadLength": 40, "originalSizeBytes": 100, "compressedSizeBytes": 40}
    assert data == stj_dumps(doc).encode("ascii")
    env, inline = lib_read(data)
    assert (env.is_offloaded, env.offload_key, env.payload_length, env.meta, inline) == (True, key, 40, meta, b"")


def _writer_meta(name, version, state, stored, events=42):
    return EnvelopeMeta(projector_name=name, projector_version=version, last_sortable_unique_id=SLUI,
                        last_event_id=GUID, version=events, payload_type_name="App.State",
                        original_size_bytes=len(state), compressed_size_bytes=len(stored))


def _encode_payload(state: bytes, backend=None) -> bytes:
    out = io.BytesIO()
    enc = PayloadEncoder(out, backend=backend)
    for i in range(0, len(state), 1000):
        enc.write(state[i:i + 1000])
    stats = enc.finish()
    assert (stats.original_size, stats.compressed_size, stats.sha256) == (
        len(state), len(out.getvalue()), sha(out.getvalue()))
    return out.getvalue()


def test_writer_envelopes_follow_the_rules():
    state = STATE
    stored = _encode_payload(state)
    meta = _writer_meta("Orders", "1.0", state, stored)
    inline = inline_envelope_bytes(meta, stored)
    env = ref.check_written_envelope(inline, {})
    assert env["inlineState"]["version"] == 42
    key = keys.payload_key("Orders", sha(stored))
    offloaded = offloaded_envelope_bytes(meta, key, constants.PROVIDER_AZURE, len(stored))
    ref.check_written_envelope(offloaded, {key: stored}, payload_threshold=None)


def _format_layer_row(name, version, state, *, record_threshold, payload_threshold, provider="AzureBlobStorage"):
    """A row + blobs assembled from the format layer's pieces the way the spec says a writer does."""
    stored = _encode_payload(state)
    meta = _writer_meta(name, version, state, stored)
    blobs = {}
    if len(stored) > payload_threshold:
        pkey = keys.payload_key(name, sha(stored))
        blobs[pkey] = stored
        env = offloaded_envelope_bytes(meta, pkey, provider, len(stored))
    else:
        env = inline_envelope_bytes(meta, stored)
    row = {"ServiceId": "default", "ProjectorName": name, "ProjectorVersion": version,
           "PayloadType": constants.PAYLOAD_TYPE, "LastSortableUniqueId": SLUI, "EventsProcessed": meta.version,
           "OriginalSizeBytes": len(env), "CompressedSizeBytes": len(env), "BuildSource": constants.BUILD_SOURCE_STREAM,
           "CreatedAt": record.format_dotnet_timestamp(datetime(2026, 2, 25, 10, tzinfo=UTC)),
           "UpdatedAt": datetime(2026, 2, 25, 10, tzinfo=UTC), "Lifecycle": 0,
           "IsOffloaded": False, "StateData": env, "OffloadKey": None, "OffloadProvider": None}
    if record_threshold is not None and len(env) > record_threshold:
        rkey = keys.record_key(name, version, sha(env))
        blobs[rkey] = env
        row.update(IsOffloaded=True, StateData=None, OffloadKey=rkey, OffloadProvider=provider)
    return row, blobs


@pytest.mark.parametrize("kind", ["small", "record-offload-cosmos", "payload-offload", "sqlite-never"])
def test_format_layer_rows_follow_the_rules(kind):
    rnd = random.Random(kind)
    if kind == "small":
        state, rt = STATE, constants.RECORD_THRESHOLD_COSMOS
    elif kind == "record-offload-cosmos":
        state, rt = rnd.randbytes(800_000), constants.RECORD_THRESHOLD_COSMOS  # ~1.07 MB of Base64
    elif kind == "payload-offload":
        state, rt = rnd.randbytes(constants.PAYLOAD_OFFLOAD_THRESHOLD + 10), constants.RECORD_THRESHOLD_POSTGRES
    else:
        state, rt = rnd.randbytes(800_000), None
    row, blobs = _format_layer_row("Orders", "1.0", state, record_threshold=rt,
                                   payload_threshold=constants.PAYLOAD_OFFLOAD_THRESHOLD)
    assert row["IsOffloaded"] == (kind == "record-offload-cosmos")
    ref.check_written_row(row, blobs, record_threshold=rt if rt is not None else float("inf"),
                          expected_state=state)
    env_bytes = blobs[row["OffloadKey"]] if row["IsOffloaded"] else row["StateData"]
    assert lib_decode(env_bytes, blobs) == state


def test_check_written_row_catches_violations():
    """The oracle itself: each rule it enforces is actually checked."""
    row, blobs = _format_layer_row("Orders", "1.0", STATE, record_threshold=None, payload_threshold=10**9)
    ref.check_written_row(row, blobs)

    def resized(r):
        n = len(r["StateData"])
        return dict(r, OriginalSizeBytes=n, CompressedSizeBytes=n)

    env = row["StateData"]
    wrong_key = "Orders/1.0/" + "0" * 64 + ".bin"
    bad_rows = {
        "payload-type": (dict(row, PayloadType="Other"), blobs),
        "events": (dict(row, EventsProcessed=43), blobs),
        "sizes": (dict(row, OriginalSizeBytes=1), blobs),
        "build-source": (dict(row, BuildSource="X" * 33), blobs),
        "service-id": (dict(row, ServiceId="Default"), blobs),
        "gzip-envelope": (resized(dict(row, StateData=gzip.compress(env))), blobs),
        "plus": (resized(dict(row, StateData=env.replace(b"\\u002B", b"+"))), blobs),
        "bom": (resized(dict(row, StateData=b"\xef\xbb\xbf" + env)), blobs),
        "pascal": (resized(dict(row, StateData=env.replace(b'"version"', b'"Version"'))), blobs),
        "wrong-record-key": (dict(row, IsOffloaded=True, StateData=None, OffloadKey=wrong_key,
                                  OffloadProvider="AzureBlobStorage"), {**blobs, wrong_key: env}),
        "no-provider": (dict(row, IsOffloaded=True, StateData=None,
                             OffloadKey=keys.record_key("Orders", "1.0", sha(env)),
                             OffloadProvider=None), {**blobs, keys.record_key("Orders", "1.0", sha(env)): env}),
    }
    assert b"\\u002B" in env  # the Base64 of ~4 KB of gzip has '+' in it (so "plus" is a real violation)
    for bad, bad_blobs in bad_rows.values():
        with pytest.raises(AssertionError):
            ref.check_written_row(bad, bad_blobs)
    # thresholds are strictly greater-than: inline above the threshold is wrong, at equality right
    env_len = len(row["StateData"])
    with pytest.raises(AssertionError):
        ref.check_written_row(row, blobs, record_threshold=env_len - 1)
    ref.check_written_row(row, blobs, record_threshold=env_len)


def test_constants_match_the_format_page():
    assert constants.PAYLOAD_TYPE == "Sekiban.Dcb.Snapshots.SerializableMultiProjectionStateEnvelope"
    assert constants.PAYLOAD_OFFLOAD_THRESHOLD == 1_560_576 == ref.PAYLOAD_OFFLOAD_THRESHOLD
    assert constants.RECORD_THRESHOLD_COSMOS == 1_000_000
    assert constants.RECORD_THRESHOLD_POSTGRES == 2_097_152
    assert constants.RECORD_THRESHOLD_DYNAMODB == 350_000
    assert constants.BUILD_SOURCE_MAX == 32
    assert constants.PROVIDER_AZURE == "AzureBlobStorage" and constants.PROVIDER_S3 == "AwsS3"
    for source in (constants.BUILD_SOURCE_STREAM, constants.BUILD_SOURCE_LEGACY, constants.BUILD_SOURCE_MIGRATE):
        assert 0 < len(source) <= 32
    assert (constants.LIFECYCLE_ACTIVE, constants.LIFECYCLE_TOMBSTONED) == (0, 1)


# --------------------------------------------------------------------------------------------------
# gzip codec
# --------------------------------------------------------------------------------------------------

BACKENDS = sorted(backends())


def test_backend_selection(monkeypatch):
    assert "zlib" in BACKENDS
    for name in BACKENDS:
        assert gzip_backend(name).name == name
        monkeypatch.setenv("SEKIOPS_GZIP", name)
        assert gzip_backend().name == name
    monkeypatch.setenv("SEKIOPS_GZIP", "no-such-backend")
    with pytest.raises(UsageError):
        gzip_backend()
    monkeypatch.delenv("SEKIOPS_GZIP")
    with pytest.raises(UsageError):
        gzip_backend("no-such-backend")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("state", [b"", b"x", STATE, STATE * 200, bytes(3 << 20)],
                         ids=["empty", "1", "small", "big", "zeros"])
def test_backend_writes_plain_gzip(backend, state):
    stored = _encode_payload(state, gzip_backend(backend))
    assert stored[:3] == b"\x1f\x8b\x08"  # magic, CM = deflate
    assert stored[3] & 0xE0 == 0  # reserved FLG bits clear
    assert gzip.decompress(stored) == state
    d = zlib.decompressobj(wbits=31)
    assert d.decompress(stored) == state and d.eof and d.unused_data == b""  # one member
    assert int.from_bytes(stored[-4:], "little") == len(state) % 2**32
    assert int.from_bytes(stored[-8:-4], "little") == zlib.crc32(state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_payload_encoder_raw_mode(backend):
    out = io.BytesIO()
    enc = PayloadEncoder(out, backend=gzip_backend(backend), compress=False)
    enc.write(STATE[:10])
    enc.write(memoryview(STATE[10:]))
    stats = enc.finish()
    assert out.getvalue() == STATE
    assert (stats.original_size, stats.compressed_size, stats.sha256) == (len(STATE), len(STATE), sha(STATE))
    assert enc.finish() is stats
    with pytest.raises(ValueError):
        enc.write(b"more")


def _gunzip_lib(data: bytes, backend: str, chunk: int = 1 << 20, limit=None, read_size=65536) -> bytes:
    reader = GzipDecodingReader(io.BytesIO(data), WHERE, limit=limit, backend=gzip_backend(backend), chunk=chunk)
    parts = []
    buf = bytearray(read_size)
    while True:
        n = reader.readinto(buf)
        if not n:
            return b"".join(parts)
        parts.append(bytes(buf[:n]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunk,read_size", [(1, 1), (7, 3), (1 << 20, 65536)])
def test_gzip_reader_multi_member(backend, chunk, read_size):
    parts = [STATE[:100], b"", STATE, b"tail"]
    data = b"".join(gzip.compress(p) for p in parts)
    assert gzip.decompress(data) == b"".join(parts)
    assert _gunzip_lib(data, backend, chunk, read_size=read_size) == b"".join(parts)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunk,padding", [(1 << 20, 16), (1, 16), (7, 16), (4096, 5000)])
def test_gzip_reader_zero_padding(backend, chunk, padding):
    """Zero padding after the last member (as gzip(1) allows) is accepted whatever the read size."""
    data = gzip.compress(STATE) + b"\x00" * padding
    assert gzip.decompress(data) == STATE
    assert _gunzip_lib(data, backend, chunk) == STATE


@pytest.mark.parametrize("backend", BACKENDS)
def test_gzip_reader_rejects_truncation(backend):
    data = gzip.compress(STATE[:300]) + gzip.compress(b"second member")
    for cut in range(0, len(data)):
        if cut == len(gzip.compress(STATE[:300])):
            continue  # a complete first member is a complete gzip file
        with pytest.raises(CorruptSnapshotError, match=re.escape(WHERE)):
            _gunzip_lib(data[:cut], backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gzip_reader_corruption_matches_python(backend):
    """Flip each byte: when Python's gzip refuses, so does the reader; when Python accepts, the
    reader returns the same bytes or refuses (stricter is fine), never something else."""
    original = STATE[:400]
    data = gzip.compress(original, mtime=0)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x41
        bad = bytes(bad)
        try:
            expected = gzip.decompress(bad)
        except (OSError, EOFError, zlib.error):
            expected = None
        try:
            got = _gunzip_lib(bad, backend)
        except CorruptSnapshotError:
            continue
        assert expected is not None, f"byte {i}: corrupt gzip accepted"
        assert got == expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tail", [b"garbage", b"\x00\x00garbage", b"\x1f", b"\x1f\x8b\x08", b"\x00" * 3 + b"\x01"],
                         ids=["text", "zeros-then-text", "half-magic", "header-start", "zeros-then-byte"])
def test_gzip_reader_rejects_trailing_garbage(backend, tail):
    with pytest.raises(CorruptSnapshotError, match=re.escape(WHERE)):
        _gunzip_lib(gzip.compress(STATE) + tail, backend)


@pytest.fixture(scope="module")
def gib_of_zeros_gzip():
    comp = gzip_backend().compressobj()
    block = bytes(1 << 20)
    data = b"".join(comp.compress(block) for _ in range(1024)) + comp.flush()
    assert len(data) < 8 << 20
    return data


@pytest.mark.parametrize("backend", BACKENDS)
def test_gzip_bomb_stops_at_limit(backend, gib_of_zeros_gzip):
    with bounded(cpu_seconds=5, max_bytes=40 << 20) as stats:
        with pytest.raises(CorruptSnapshotError, match="exceeds 10000000"):
            reader = GzipDecodingReader(io.BytesIO(gib_of_zeros_gzip), WHERE, limit=10_000_000,
                                        backend=gzip_backend(backend))
            buf = bytearray(1 << 20)
            while reader.readinto(buf):
                pass
    assert stats["seconds"] < 5


def test_open_payload_limits(gib_of_zeros_gzip):
    with bounded(cpu_seconds=5, max_bytes=40 << 20):
        stream, was_gzip = open_payload(io.BytesIO(gib_of_zeros_gzip), WHERE, limit=10_000_000)
        assert was_gzip
        with pytest.raises(CorruptSnapshotError):
            while stream.read(1 << 20):
                pass
    stream, was_gzip = open_payload(io.BytesIO(STATE), WHERE, limit=len(STATE))
    assert (stream.read(), was_gzip) == (STATE, False)
    stream, _ = open_payload(io.BytesIO(STATE), WHERE, limit=len(STATE) - 1)
    with pytest.raises(CorruptSnapshotError, match=re.escape(WHERE)):
        stream.read()
    stream, was_gzip = open_payload(io.BytesIO(gzip.compress(STATE)), WHERE, limit=len(STATE))
    assert (stream.read(), was_gzip) == (STATE, True)
    stream, _ = open_payload(io.BytesIO(gzip.compress(STATE)), WHERE, limit=len(STATE) - 1)
    with pytest.raises(CorruptSnapshotError):
        stream.read()


@pytest.mark.parametrize("stored,expected,was_gzip", [
    (b"", b"", False),
    (b"{}", b"{}", False),
    (b"\x1f", b"\x1f", False),
    (b"\x89PNG opaque custom bytes", b"\x89PNG opaque custom bytes", False),
    (gzip.compress(b""), b"", True),
    (gzip.compress(STATE), STATE, True),
], ids=["empty", "json", "one-magic-byte", "opaque", "gzip-empty", "gzip"])
def test_open_payload_detection(stored, expected, was_gzip):
    stream, detected = open_payload(io.BytesIO(stored), WHERE)
    assert (stream.read(), detected) == (expected, was_gzip)
    assert ref.gunzip_if_gzip(stored) == expected


# --------------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------------

SHA_HEX = "0123456789abcdef" * 4
GUID_HEX = "0123456789ABCDEF0123456789abcdef"

BAD_KEYS = [
    ("empty", ""),
    ("dotdot", "../x.bin"),
    ("dotdot-inner", "a/../b.bin"),
    ("dotdot-end", "a/.."),
    ("dot", "a/./b.bin"),
    ("backslash-dotdot", "..\\x"),
    ("backslash-dotdot-inner", "a\\..\\b.bin"),
    ("nul", "a/\x00.bin"),
    ("newline", "a/b.bin\n"),
    ("tab", "a/\tb"),
    ("del", "a/\x7f"),
    ("trailing-slash", "a/b/"),
    ("only-slash", "/"),
    ("overlong", "a/" + "x" * 1023),
]


#: Sekiban 10.23 keys with a literal prefix: a leading '/', backslashes, spaces, empty segments,
#: drive-like names. Valid keys: each store maps them to exactly one place inside its root.
PREFIXED_KEYS = ["/etc/passwd", "a\\b.bin", "C:/x.bin", "c:x.bin", "a//b.bin", " /x.bin", "///x.bin"]


@pytest.mark.parametrize("key", PREFIXED_KEYS)
def test_check_key_accepts_sekiban_prefixed_shapes(key):
    assert keys.check_key(key) == key


@pytest.mark.parametrize("case_id,key", BAD_KEYS, ids=[c[0] for c in BAD_KEYS])
def test_check_key_refuses(case_id, key):
    with pytest.raises(UnsafeKeyError):
        keys.check_key(key)


@pytest.mark.parametrize("key", [
    "a", "Orders/" + SHA_HEX + ".bin", "Orders/1.0.0/" + SHA_HEX + ".bin", "prefix/Orders/" + GUID_HEX + ".bin",
    "Orders+é/x.bin", "a/" + "x" * 1022, "ab:c/d", "..a/b..",
])
def test_check_key_accepts(key):
    assert keys.check_key(key) == key


def test_check_key_non_string():
    with pytest.raises(UnsafeKeyError):
        keys.check_key(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("key,style,digest", [
    ("Orders/" + SHA_HEX + ".bin", "content", SHA_HEX),
    ("Orders/1.0/" + SHA_HEX + ".bin", "content", SHA_HEX),
    ("prefix/Orders/" + GUID_HEX + ".bin", "guid", None),
    ("Orders/1.0/" + GUID_HEX.lower() + ".bin", "guid", None),
    ("Orders/" + SHA_HEX.upper() + ".bin", "other", None),
    ("Orders/" + SHA_HEX[:-1] + ".bin", "other", None),
    ("Orders/" + SHA_HEX + ".json", "other", None),
    (SHA_HEX + ".bin", "other", None),
    ("Orders/snapshot.bin", "other", None),
    ("", "none", None),
    (None, "none", None),
])
def test_key_style_and_content_hash(key, style, digest):
    assert keys.key_style(key) == style
    assert keys.content_hash(key) == digest


def test_key_builders():
    assert keys.payload_key("Orders", SHA_HEX) == f"Orders/{SHA_HEX}.bin"
    assert keys.record_key("Orders", "1.0", SHA_HEX) == f"Orders/1.0/{SHA_HEX}.bin"
    assert ref.content_key("Orders", b"abc") == keys.payload_key("Orders", sha(b"abc"))
    for bad in ("ABC", SHA_HEX.upper(), SHA_HEX[:-1], SHA_HEX + "0"):
        with pytest.raises(ValueError):
            keys.payload_key("Orders", bad)
    with pytest.raises(UnsafeKeyError):
        keys.payload_key("..", SHA_HEX)


@pytest.mark.parametrize("key", [
    "Orders/" + SHA_HEX + ".bin",
    "Orders/1.0/" + SHA_HEX + ".bin",
    "prefix/Orders/" + GUID_HEX + ".bin",
    "a/b/Orders/1.0/" + GUID_HEX + ".bin",
    # Sekiban 10.23: a literal prefix before {name}/ (its own test prefixes)
    "/Orders/" + SHA_HEX + ".bin",
    "tenant/Orders/" + SHA_HEX + ".bin",
    "/tenant\\nested/Orders/" + SHA_HEX + ".bin",
    " /Orders/1.0/" + SHA_HEX + ".bin",
    "Other/Orders/" + SHA_HEX + ".bin",
])
def test_check_key_scope_accepts_own_keys(key):
    assert keys.check_key_scope(key, "Orders") == key


@pytest.mark.parametrize("key", [
    "Other/" + SHA_HEX + ".bin",
    "Other/1.0/" + SHA_HEX + ".bin",
    "OrdersX/" + SHA_HEX + ".bin",
    "Orders.bin",
    SHA_HEX + ".bin",
    "../Orders/" + SHA_HEX + ".bin",
    "Orders/../Other/" + SHA_HEX + ".bin",
    "/Other/" + SHA_HEX + ".bin",
    "tenant/XOrders/" + SHA_HEX + ".bin",
])
def test_check_key_scope_refuses_foreign_keys(key):
    with pytest.raises(UnsafeKeyError):
        keys.check_key_scope(key, "Orders")


@pytest.mark.parametrize("key", [
    "Orders/x/y/z/" + SHA_HEX + ".bin",  # no Sekiban key for Orders has this shape
    "Orders/1.0/x/" + SHA_HEX + ".bin",
])
def test_check_key_scope_is_positional(key):
    with pytest.raises(UnsafeKeyError):
        keys.check_key_scope(key, "Orders")


# --------------------------------------------------------------------------------------------------
# record: timestamps, SortableUniqueIds, service ids
# --------------------------------------------------------------------------------------------------

UTC = UTC


@pytest.mark.parametrize("when,text", [
    (datetime(2026, 2, 25, 10, 0, 0, tzinfo=UTC), "2026-02-25T10:00:00.0000000Z"),
    (datetime(2026, 2, 25, 10, 0, 0, 123456, tzinfo=UTC), "2026-02-25T10:00:00.1234560Z"),
    (datetime(2026, 2, 25, 19, 0, 0, 1, tzinfo=timezone(timedelta(hours=9))), "2026-02-25T10:00:00.0000010Z"),
    (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "9999-12-31T23:59:59.9999990Z"),
    (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.0000000Z"),
    (datetime(999, 1, 1, tzinfo=UTC), "0999-01-01T00:00:00.0000000Z"),
], ids=["whole", "micro", "offset", "max", "min", "year-999"])
def test_format_dotnet_timestamp(when, text):
    formatted = record.format_dotnet_timestamp(when)
    assert formatted == text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", formatted)
    assert record.parse_timestamp(formatted) == when


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)))
def test_timestamp_round_trip_property(when):
    text = record.format_dotnet_timestamp(when)
    assert len(text) == 28 and text.endswith("Z")
    assert record.parse_timestamp(text) == when


@pytest.mark.parametrize("text,expected", [
    ("2026-02-25T10:00:00.0000000Z", datetime(2026, 2, 25, 10, tzinfo=UTC)),
    ("2026-02-25T10:00:00.1234567Z", datetime(2026, 2, 25, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2026-02-25T10:00:00Z", datetime(2026, 2, 25, 10, tzinfo=UTC)),
    ("2026-02-25T10:00:00.5+09:00", datetime(2026, 2, 25, 1, 0, 0, 500000, tzinfo=UTC)),
    ("2026-02-25 10:00:00.000000+0000", datetime(2026, 2, 25, 10, tzinfo=UTC)),
    ("2026-02-25T10:00:00", datetime(2026, 2, 25, 10, tzinfo=UTC)),
    (None, None),
    ("", None),
])
def test_parse_timestamp(text, expected):
    got = record.parse_timestamp(text)
    assert got == expected
    if got is not None:
        assert got.utcoffset() == timedelta(0)


def test_parse_timestamp_datetime_passthrough():
    naive = datetime(2026, 1, 1, 12)
    assert record.parse_timestamp(naive) == datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "2026-02-25", "2026-02-25T10:00", "2026-13-01T00:00:00Z"])
def test_parse_timestamp_rejects(text):
    with pytest.raises((ValueError, SekiopsError)):
        record.parse_timestamp(text)


@pytest.mark.parametrize("when,ticks", [
    (datetime(1, 1, 1, tzinfo=UTC), 0),
    (datetime(1970, 1, 1, tzinfo=UTC), 621_355_968_000_000_000),  # .NET DateTime.UnixEpoch.Ticks
    (datetime(2000, 1, 1, tzinfo=UTC), 630_822_816_000_000_000),
    (datetime(2026, 2, 25, 10, 0, 0, 123456, tzinfo=UTC), None),
    (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 3_155_378_975_999_999_990),
])
def test_sortable_unique_id(when, ticks):
    if ticks is None:
        ticks = (when - datetime(1, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 10
    sid = record.sortable_unique_id(when, suffix=123)
    assert re.fullmatch(r"\d{30}", sid)
    assert sid == f"{ticks:019d}{123:011d}"
    assert record.sortable_unique_id(when) == f"{ticks:019d}" + "0" * 11
    assert record.sortable_unique_id(when, suffix=10**11 + 5).endswith("00000000005")
    assert record.sortable_unique_id_time(sid) == when


def test_sortable_unique_ids_sort_as_strings():
    rnd = random.Random(3)
    times = sorted(datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=rnd.randrange(10**16))
                   for _ in range(200))
    ids = [record.sortable_unique_id(t, suffix=rnd.randrange(10**11)) for t in times]
    assert sorted(ids) == ids


@pytest.mark.parametrize("value", ["", "123", "x" * 30, "1" * 29, "1" * 31, None, 10**29,
                                   "12345678901234567890123456789 "])
def test_sortable_unique_id_time_not_an_id(value):
    assert record.sortable_unique_id_time(value) is None


@pytest.mark.parametrize("value", ["9" * 30, "3155378976000000000" + "0" * 11])
def test_sortable_unique_id_time_out_of_range_is_none(value):
    """30 digits whose ticks are beyond DateTime.MaxValue: "not one", not a crash."""
    assert record.sortable_unique_id_time(value) is None


@pytest.mark.parametrize("value", ["default", "a", "tenant-01", "0", "-", "x" * 64])
def test_check_service_id_accepts(value):
    assert record.check_service_id(value) == value


@pytest.mark.parametrize("value", ["", "Default", "a_b", "a b", "a.b", "x" * 65, "ａ", "é", None, 5,
                                   "default\n", "default\r\n", "\ndefault"])
def test_check_service_id_refuses(value):
    with pytest.raises(UsageError):
        record.check_service_id(value)
