"""An independent, in-memory reference reader for Sekiban multi-projection snapshots.

Written only from the format reference (docs/sekiban-format.md), never from
sekiops/format, so that it can serve as a test oracle for the library.  It loads everything
into memory and favours being obviously correct over being fast.

    read_row(row, blobs)            -> decoded projector state bytes (the payload, gunzipped
                                       when it starts with 1f 8b, else the raw payload bytes)
    stored_payload(row, blobs)      -> the payload bytes exactly as stored (before gunzip)
    envelope_bytes(row, blobs)      -> the envelope bytes (StateData, or the record-level blob)
    parse_envelope(data)            -> the envelope as a dict (v9 gzip unwrapped), keys as written
    check_written_row(row, blobs)   -> asserts every rule the format page states for writers

``row`` is a dict of the logical fields of section 2 (``StateData`` bytes or None, ``IsOffloaded``,
``OffloadKey``, ``OffloadProvider``, ``PayloadType``, ``EventsProcessed``, ...).  PascalCase
(``StateData``), camelCase (``stateData``) and snake_case (``state_data``) field names are all
accepted.  ``blobs`` maps blob keys to bytes.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

# ---------------------------------------------------------------------------------------------
# Constants, copied from the format page
# ---------------------------------------------------------------------------------------------

PAYLOAD_TYPE = "Sekiban.Dcb.Snapshots.SerializableMultiProjectionStateEnvelope"  # section 2
GZIP_MAGIC = b"\x1f\x8b"  # sections 3 and 4
UTF8_BOM = b"\xef\xbb\xbf"
PAYLOAD_OFFLOAD_THRESHOLD = (2_097_152 - 16_384) * 3 // 4  # section 6: 1,560,576
RECORD_THRESHOLD_COSMOS = 1_000_000
RECORD_THRESHOLD_POSTGRES = 2_097_152
RECORD_THRESHOLD_DYNAMODB = 350_000
BUILD_SOURCE_MAX = 32
SERVICE_ID_RE = re.compile(r"^[a-z0-9-]{1,64}$")
SORTABLE_UNIQUE_ID_RE = re.compile(r"^[0-9]{30}$")
SHA256_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

#: Metadata fields shared by inlineState and offloadedState (section 3).
METADATA_FIELDS = (
    "multiProjectionPayloadType",
    "projectorName",
    "projectorVersion",
    "lastSortableUniqueId",
    "lastEventId",
    "version",
    "isCatchedUp",
    "isSafeState",
    "originalSizeBytes",
    "compressedSizeBytes",
)
INLINE_FIELDS = ("payloadJson", "payloadBase64") + METADATA_FIELDS
OFFLOADED_FIELDS = ("offloadKey", "storageProvider", "payloadLength") + METADATA_FIELDS
TOP_FIELDS = ("isOffloaded", "inlineState", "offloadedState")


class ReferenceDecodeError(Exception):
    """The reference reader could not decode the input."""


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_MISSING = object()


def row_field(row: Mapping[str, Any], name: str, default: Any = _MISSING) -> Any:
    """A logical row field by its PascalCase name; camelCase and snake_case keys also accepted."""
    for candidate in (name, _camel(name), _snake(name)):
        if candidate in row:
            return row[candidate]
    if default is _MISSING:
        raise KeyError(name)
    return default


def prop(obj: Mapping[str, Any], camel_name: str, default: Any = None) -> Any:
    """An envelope property in camelCase or PascalCase (section 3: read both casings)."""
    if camel_name in obj:
        return obj[camel_name]
    pascal = _pascal(camel_name)
    if pascal in obj:
        return obj[pascal]
    return default


def gunzip_if_gzip(data: bytes) -> bytes:
    """Section 4: payload is gzip when it starts with 1f 8b, else raw bytes."""
    if data[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ReferenceDecodeError(f"bad gzip: {exc}") from exc
    return data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blob(blobs: Mapping[str, bytes], key: Any) -> bytes:
    if not isinstance(key, str) or not key:
        raise ReferenceDecodeError(f"bad blob key {key!r}")
    if key not in blobs:
        raise ReferenceDecodeError(f"missing blob {key!r}")
    return bytes(blobs[key])


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def parse_envelope(data: bytes) -> dict:
    """Envelope bytes -> dict.  v9 (gzip, 1f 8b) and v10 (plain UTF-8 JSON) are both read."""
    data = bytes(data)
    if data[:2] == GZIP_MAGIC:  # v9
        data = gunzip_if_gzip(data)
    if data.startswith(UTF8_BOM):  # liberal: tolerate a BOM on read
        data = data[len(UTF8_BOM):]
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ReferenceDecodeError(f"envelope is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ReferenceDecodeError("envelope is not a JSON object")
    return obj


def envelope_bytes(row: Mapping[str, Any], blobs: Mapping[str, bytes]) -> bytes:
    """Section 1, first layer: StateData inline, or the record-level blob at OffloadKey."""
    if row_field(row, "IsOffloaded", False):
        return _blob(blobs, row_field(row, "OffloadKey", None))
    state = row_field(row, "StateData", None)
    if state is None:
        raise ReferenceDecodeError("row is not offloaded but has no StateData")
    return bytes(state)


def envelope_stored_payload(env: Mapping[str, Any], blobs: Mapping[str, bytes]) -> bytes:
    """Section 1, second layer: the payload bytes exactly as stored."""
    offloaded = prop(env, "isOffloaded", False)
    if offloaded:
        state = prop(env, "offloadedState")
        if not isinstance(state, dict):
            raise ReferenceDecodeError("isOffloaded but no offloadedState")
        return _blob(blobs, prop(state, "offloadKey"))
    state = prop(env, "inlineState")
    if not isinstance(state, dict):
        raise ReferenceDecodeError("not offloaded but no inlineState")
    # "Payload = decode(payloadBase64), else UTF-8 of payloadJson, else empty" -- a null or
    # empty string counts as absent (Sekiban tests string.IsNullOrEmpty).
    b64 = prop(state, "payloadBase64")
    if b64 is not None and not isinstance(b64, str):
        raise ReferenceDecodeError("payloadBase64 is not a string")
    legacy = prop(state, "payloadJson")
    if legacy is not None and not isinstance(legacy, str):
        raise ReferenceDecodeError("payloadJson is not a string")
    if b64:
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ReferenceDecodeError(f"bad Base64: {exc}") from exc
    if legacy:
        # .NET's Encoding.UTF8 replaces lone surrogates by U+FFFD
        return re.sub("[\ud800-\udfff]", "\ufffd", legacy).encode("utf-8")
    return b""


def decode_envelope(data: bytes, blobs: Mapping[str, bytes] | None = None) -> bytes:
    """Envelope bytes (+ blobs for payload-level offload) -> decoded projector state bytes."""
    return gunzip_if_gzip(envelope_stored_payload(parse_envelope(data), blobs or {}))


def stored_payload(row: Mapping[str, Any], blobs: Mapping[str, bytes]) -> bytes:
    return envelope_stored_payload(parse_envelope(envelope_bytes(row, blobs)), blobs)


def read_row(row: Mapping[str, Any], blobs: Mapping[str, bytes]) -> bytes:
    """Row + blobs -> decoded projector state JSON bytes (all four combinations of section 1)."""
    return gunzip_if_gzip(stored_payload(row, blobs))


# ---------------------------------------------------------------------------------------------
# What a writer must produce
# ---------------------------------------------------------------------------------------------


def content_key(name: str, data: bytes, prefix: str | None = None) -> str:
    """Section 5: ``{name}/{sha256 lowercase hex of the exact bytes}.bin``, the name with ``\\``
    turned into ``/`` and ``/`` trimmed; since dcb-v10.23 ``{prefix minus trailing '/'}/`` in
    front when a prefix is configured (written independently of sekiops.format.keys)."""
    folder = name.replace("\\", "/").strip("/")
    key = f"{folder}/{sha256_hex(data)}.bin"
    return f"{prefix.rstrip('/')}/{key}" if prefix else key


def _walk_keys(obj: Any):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from _walk_keys(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _walk_keys(value)


def _no_duplicate_pairs(pairs):
    seen = set()
    for key, _ in pairs:
        assert key not in seen, f"duplicate property {key!r} in the envelope"
        seen.add(key)
    return dict(pairs)


def check_dotnet_json_text(text: bytes, what: str = "envelope") -> None:
    """Rules for JSON text written the way .NET System.Text.Json writes it (section 3)."""
    assert not text.startswith(UTF8_BOM), f"{what}: starts with a BOM"
    assert text[:2] != GZIP_MAGIC, f"{what}: v10 envelopes have no outer gzip"
    text.decode("utf-8")  # must be valid UTF-8
    assert all(b < 0x80 for b in text), f"{what}: non-ASCII must be escaped as \\uXXXX"
    assert b"+" not in text, f"{what}: '+' must be escaped as \\u002B"
    assert not re.search(rb'(?<!\\)(?:\\\\)*\\"', text), f"{what}: '\"' is escaped as \\u0022 by System.Text.Json"
    for match in re.finditer(rb"\\u([0-9A-Fa-f]{4})", text):
        assert match.group(1) == match.group(1).upper(), f"{what}: \\u escapes use upper-case hex"
    for ch in (b"<", b">", b"&", b"'", b"`"):
        # JavaScriptEncoder.Default escapes the HTML-sensitive characters too
        assert ch not in text, f"{what}: {ch!r} must be escaped"


def _check_metadata(state: Mapping[str, Any], where: str) -> None:
    assert isinstance(state.get("projectorName"), str) and state["projectorName"], where
    assert isinstance(state.get("projectorVersion"), str) and state["projectorVersion"], where
    assert isinstance(state.get("version"), int) and not isinstance(state["version"], bool), where
    assert state["version"] >= 0, f"{where}: negative version"
    assert isinstance(state.get("isCatchedUp"), bool), f"{where}: isCatchedUp must be a bool"
    assert isinstance(state.get("isSafeState"), bool), f"{where}: isSafeState must be a bool"
    last = state.get("lastSortableUniqueId")
    assert isinstance(last, str) and SORTABLE_UNIQUE_ID_RE.match(last), (
        f"{where}: lastSortableUniqueId must be 30 digits, got {last!r}"
    )
    event_id = state.get("lastEventId")
    assert event_id is None or (isinstance(event_id, str) and GUID_RE.match(event_id)), (
        f"{where}: lastEventId must be a lower-case GUID, got {event_id!r}"
    )
    payload_type = state.get("multiProjectionPayloadType")
    assert payload_type is None or isinstance(payload_type, str), where
    for size_field in ("originalSizeBytes", "compressedSizeBytes"):
        value = state.get(size_field)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (
            f"{where}: {size_field} must be a non-negative integer, got {value!r}"
        )


def _check_payload_sizes(state: Mapping[str, Any], payload: bytes, where: str) -> None:
    decoded = gunzip_if_gzip(payload)
    assert state["compressedSizeBytes"] == len(payload), (
        f"{where}: compressedSizeBytes {state['compressedSizeBytes']} != stored payload {len(payload)}"
    )
    assert state["originalSizeBytes"] == len(decoded), (
        f"{where}: originalSizeBytes {state['originalSizeBytes']} != decoded payload {len(decoded)}"
    )
    if payload[:2] == GZIP_MAGIC:
        # section 4: one RFC 1952 member
        d = zlib.decompressobj(wbits=31)
        d.decompress(payload)
        assert d.eof and d.unused_data == b"", f"{where}: the gzip payload must be one member"


def check_written_envelope(
    data: bytes,
    blobs: Mapping[str, bytes],
    *,
    payload_threshold: int | None = PAYLOAD_OFFLOAD_THRESHOLD,
    has_blob_store: bool = True,
    prefix: str | None = None,
) -> dict:
    """Assert the rules for an envelope a writer produces; returns the parsed envelope."""
    data = bytes(data)
    check_dotnet_json_text(data)
    env = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_pairs)
    assert isinstance(env, dict), "envelope must be a JSON object"
    for key in _walk_keys(env):
        assert key[:1] == key[:1].lower(), f"property {key!r} is not camelCase"
    for field in TOP_FIELDS:
        assert field in env, f"envelope: {field} missing (nulls are written)"
    assert isinstance(env["isOffloaded"], bool)

    if env["isOffloaded"]:
        assert env["inlineState"] is None, "offloaded envelope must have inlineState null"
        state = env["offloadedState"]
        assert isinstance(state, dict), "offloaded envelope must have an offloadedState"
        for field in OFFLOADED_FIELDS:
            assert field in state, f"offloadedState.{field} missing"
        _check_metadata(state, "offloadedState")
        key = state["offloadKey"]
        assert isinstance(key, str) and key in blobs, f"offloadedState.offloadKey {key!r} not in blobs"
        payload = bytes(blobs[key])
        assert key == content_key(state["projectorName"], payload, prefix), (
            f"payload-level key must be {{prefix}}/{{ProjectorName}}/{{sha256}}.bin, got {key!r}"
        )
        assert isinstance(state["storageProvider"], str) and state["storageProvider"], (
            "offloadedState.storageProvider must be set"
        )
        assert state["payloadLength"] == len(payload), (
            f"payloadLength {state['payloadLength']} != blob length {len(payload)}"
        )
        _check_payload_sizes(state, payload, "offloadedState")
        assert has_blob_store, "nothing is offloaded without a blob store"
        if payload_threshold is not None:
            assert len(payload) > payload_threshold, (
                f"payload of {len(payload)} bytes offloaded at or below the threshold {payload_threshold}"
            )
    else:
        assert env["offloadedState"] is None, "inline envelope must have offloadedState null"
        state = env["inlineState"]
        assert isinstance(state, dict), "inline envelope must have an inlineState"
        for field in INLINE_FIELDS:
            assert field in state, f"inlineState.{field} missing (nulls are written)"
        _check_metadata(state, "inlineState")
        assert state["payloadJson"] is None, "writers use payloadBase64, payloadJson is legacy"
        b64 = state["payloadBase64"]
        assert isinstance(b64, str), "inlineState.payloadBase64 must be a string"
        payload = base64.b64decode(b64, validate=True)
        assert base64.b64encode(payload).decode("ascii") == b64, "payloadBase64 must be standard padded Base64"
        _check_payload_sizes(state, payload, "inlineState")
        if payload_threshold is not None and has_blob_store:
            assert len(payload) <= payload_threshold, (
                f"payload of {len(payload)} bytes kept inline above the threshold {payload_threshold}"
            )
    return env


def _check_timestamp(value: Any, where: str) -> None:
    if value is None:
        return
    if isinstance(value, datetime):
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0), f"{where}: not UTC"
    elif isinstance(value, str):
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$", value), (
            f"{where}: not a UTC ISO-8601 timestamp: {value!r}"
        )


def check_written_row(
    row: Mapping[str, Any],
    blobs: Mapping[str, bytes],
    *,
    record_threshold: int | None = None,
    payload_threshold: int | None = PAYLOAD_OFFLOAD_THRESHOLD,
    has_blob_store: bool = True,
    expected_state: bytes | None = None,
    prefix: str | None = None,
) -> dict:
    """Assert every rule the format page states for a row (and its envelope and blobs) a writer
    produces.  ``record_threshold`` is the store's record-level threshold (None: not checked;
    ``float('inf')`` for "never", as on SQLite).  Returns the parsed envelope."""
    assert row_field(row, "PayloadType") == PAYLOAD_TYPE, "PayloadType must be the Sekiban constant"
    name = row_field(row, "ProjectorName")
    version = row_field(row, "ProjectorVersion")
    assert isinstance(name, str) and name and isinstance(version, str) and version

    service_id = row_field(row, "ServiceId", "default")
    assert isinstance(service_id, str) and SERVICE_ID_RE.match(service_id), f"bad ServiceId {service_id!r}"

    build_source = row_field(row, "BuildSource", None)
    assert isinstance(build_source, str) and 0 < len(build_source) <= BUILD_SOURCE_MAX, (
        f"BuildSource must be 1..{BUILD_SOURCE_MAX} characters, got {build_source!r}"
    )
    lifecycle = row_field(row, "Lifecycle", 0)
    assert lifecycle in (0, 1), f"Lifecycle must be 0 or 1, got {lifecycle!r}"
    for ts in ("CreatedAt", "UpdatedAt"):
        _check_timestamp(row_field(row, ts, None), ts)

    offloaded = row_field(row, "IsOffloaded")
    assert isinstance(offloaded, bool) or offloaded in (0, 1)
    if offloaded:
        assert has_blob_store, "nothing is offloaded without a blob store"
        assert row_field(row, "StateData", None) is None, "offloaded row must not carry StateData"
        key = row_field(row, "OffloadKey")
        assert isinstance(key, str) and key in blobs, f"OffloadKey {key!r} not in blobs"
        env_bytes = bytes(blobs[key])
        assert key == content_key(f"{name}/{version}", env_bytes, prefix), (
            f"record-level key must be {{prefix}}/{{ProjectorName}}/{{ProjectorVersion}}/{{sha256}}.bin, got {key!r}"
        )
        provider = row_field(row, "OffloadProvider", None)
        assert isinstance(provider, str) and provider, "offloaded row must name its OffloadProvider"
        if record_threshold is not None:
            assert len(env_bytes) > record_threshold, (
                f"envelope of {len(env_bytes)} bytes offloaded at or below the threshold {record_threshold}"
            )
    else:
        env_bytes = row_field(row, "StateData")
        assert env_bytes is not None, "inline row must carry StateData (empty is b'', never None)"
        env_bytes = bytes(env_bytes)
        assert row_field(row, "OffloadKey", None) is None, "inline row must not carry an OffloadKey"
        if record_threshold is not None and has_blob_store:
            assert len(env_bytes) <= record_threshold, (
                f"envelope of {len(env_bytes)} bytes kept inline above the threshold {record_threshold}"
            )

    assert row_field(row, "OriginalSizeBytes") == len(env_bytes), "OriginalSizeBytes != envelope length"
    assert row_field(row, "CompressedSizeBytes") == len(env_bytes), "CompressedSizeBytes != envelope length"

    env = check_written_envelope(
        env_bytes, blobs, payload_threshold=payload_threshold, has_blob_store=has_blob_store, prefix=prefix
    )
    state = env["offloadedState"] if env["isOffloaded"] else env["inlineState"]
    assert row_field(row, "EventsProcessed") == state["version"], (
        f"EventsProcessed {row_field(row, 'EventsProcessed')} != envelope version {state['version']}"
    )
    assert state["projectorName"] == name, "envelope projectorName != row ProjectorName"
    assert state["projectorVersion"] == version, "envelope projectorVersion != row ProjectorVersion"
    last = row_field(row, "LastSortableUniqueId")
    assert isinstance(last, str) and SORTABLE_UNIQUE_ID_RE.match(last), f"bad LastSortableUniqueId {last!r}"
    assert state["lastSortableUniqueId"] == last, "envelope lastSortableUniqueId != row's"

    decoded = read_row(row, blobs)
    if expected_state is not None:
        assert decoded == expected_state, "decoded state differs from what was written"
    return env


# --- System.Text.Json, as the format page describes its output (for building rows by hand) ---

_STJ_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def stj_string(s: str) -> str:
    """A JSON string the way System.Text.Json's default encoder writes it: ASCII only, '+', '"' and
    the HTML-sensitive characters as \\uXXXX (upper-case hex), astral characters as surrogate pairs."""
    out = ['"']
    for ch in s:
        if ch in _STJ_SHORT:
            out.append(_STJ_SHORT[ch])
        elif ord(ch) < 0x20 or ord(ch) > 0x7E or ch in "\"+<>&'`":
            units = ch.encode("utf-16-be")
            for i in range(0, len(units), 2):
                out.append(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def stj_dumps(obj) -> str:
    """Compact JSON as System.Text.Json writes it (nulls written, escapes as stj_string)."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, str):
        return stj_string(obj)
    if isinstance(obj, list):
        return "[" + ",".join(stj_dumps(v) for v in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(stj_string(k) + ":" + stj_dumps(v) for k, v in obj.items()) + "}"
    raise TypeError(type(obj))
