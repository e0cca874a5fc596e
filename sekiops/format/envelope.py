"""The snapshot envelope (Sekiban's SerializableMultiProjectionStateEnvelope), over streams.

Reads every variant the format page lists: v10 (plain JSON) and v9 (gzip) envelopes,
camelCase or PascalCase, ``payloadBase64`` or legacy ``payloadJson``, inline or offloaded.
The inline payload is streamed to a sink and never held whole. Writes v10 envelopes the way
.NET System.Text.Json does (camelCase, nulls written, ``+`` as ``\\u002B``, non-ASCII escaped).
"""

from __future__ import annotations

import binascii
import dataclasses
import io
import math
from typing import Any

from ..errors import CorruptSnapshotError
from ..streams import BinaryFile, Readable, Writable, buffered, read_full
from .constants import GZIP_MAGIC
from .jsonstream import BudgetExceeded, JsonStreamReader, StringSink
from .payload import GzipDecodingReader

B64_CHUNK = 3 * 256 * 1024  # raw bytes per Base64 write: a multiple of 3, so no padding mid-string

_META_FIELDS = {
    # lower-cased JSON name -> (attribute, type)
    "multiprojectionpayloadtype": ("payload_type_name", str),
    "projectorname": ("projector_name", str),
    "projectorversion": ("projector_version", str),
    "lastsortableuniqueid": ("last_sortable_unique_id", str),
    "lasteventid": ("last_event_id", str),
    "version": ("version", int),
    "iscatchedup": ("is_catched_up", bool),
    "issafestate": ("is_safe_state", bool),
    "originalsizebytes": ("original_size_bytes", int),
    "compressedsizebytes": ("compressed_size_bytes", int),
    "offloadkey": ("offload_key", str),
    "storageprovider": ("storage_provider", str),
    "payloadlength": ("payload_length", int),
}


@dataclasses.dataclass
class EnvelopeMeta:
    """Metadata of the projector state, as written in inlineState / offloadedState."""

    projector_name: str = ""
    projector_version: str = ""
    last_sortable_unique_id: str = ""
    last_event_id: str = "00000000-0000-0000-0000-000000000000"
    version: int = 0
    is_catched_up: bool = True
    is_safe_state: bool = True
    payload_type_name: str = ""
    original_size_bytes: int = 0
    compressed_size_bytes: int = 0


@dataclasses.dataclass
class Envelope:
    """A decoded envelope. For inline payloads the bytes went to the sink given to the reader."""

    is_offloaded: bool
    meta: EnvelopeMeta
    offload_key: str | None = None
    storage_provider: str | None = None
    payload_length: int | None = None
    #: ``base64``, ``json`` (legacy payloadJson), ``empty`` or ``offloaded``
    payload_source: str = "empty"
    #: bytes of inline payload streamed to the sink
    inline_length: int = 0
    #: True for a v9 (gzip-compressed) envelope
    gzipped: bool = False
    #: ``camel`` or ``pascal``: how the envelope spelled its properties
    casing: str = "camel"
    #: envelope bytes read (after gunzip for v9)
    envelope_length: int = 0
    #: head-only reads: True when the byte budget ended the read before the metadata
    partial: bool = False


# --- reading -------------------------------------------------------------------------------------


class _Base64Sink:
    """Decodes streamed Base64 text in 4-character groups into ``out``."""

    def __init__(self, out: BinaryFile | None, where: str, before_first=None):
        self._out = out
        self._before_first = before_first
        self._rest = b""
        self._where = where
        self.decoded = 0
        self._padded = False

    def write(self, text: bytes) -> None:
        if self._padded and text:
            raise CorruptSnapshotError(f"{self._where}: payloadBase64 has data after its '=' padding")
        data = self._rest + text
        usable = len(data) - len(data) % 4
        self._rest = data[usable:]
        if usable:
            self._decode(data[:usable])

    def _decode(self, text: bytes) -> None:
        try:
            raw = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise CorruptSnapshotError(f"{self._where}: payloadBase64 is not valid Base64 ({exc})") from None
        if raw and not self.decoded and self._before_first is not None:
            self._before_first()
        self.decoded += len(raw)
        self._padded = text.endswith(b"=")
        if self._out is not None:
            self._out.write(raw)

    def finish(self) -> None:
        if self._rest:
            raise CorruptSnapshotError(
                f"{self._where}: payloadBase64 length is not a multiple of 4 (truncated Base64)")


def read_envelope(stream: Readable, where: str, payload_sink: BinaryFile | None = None,
                  max_bytes: int | None = None, max_envelope: int | None = None) -> Envelope:
    """Decode an envelope from ``stream``; inline payload bytes are written to ``payload_sink``.

    ``max_bytes`` bounds a head-only read (inventories): the result is ``partial`` when the
    budget ends inside the inline payload. ``max_envelope`` caps a v9 envelope's gunzipped size.
    """
    src = buffered(stream)
    head = src.peek(2)[:2]
    gzipped = head == GZIP_MAGIC
    if not head:
        raise CorruptSnapshotError(f"{where}: envelope is empty")
    if gzipped:
        src = io.BufferedReader(GzipDecodingReader(src, f"{where} (v9 gzip envelope)", limit=max_envelope), 1 << 20)

    sinks: dict[str, Any] = {}  # the Base64 sink, the JSON sink and where the JSON started

    def stream_at(path):
        # Sekiban's rule: a non-empty payloadBase64 wins over payloadJson, whatever their order.
        if len(path) != 2 or path[0] != "inlinestate" or path[1] not in ("payloadbase64", "payloadjson"):
            return None
        if path[1] == "payloadbase64":
            b64_sink = _Base64Sink(payload_sink, where, before_first=lambda: _drop_json(sinks, payload_sink, where))
            sinks["base64"] = b64_sink
            return StringSink(b64_sink.write, fast_escapes=True)
        b64 = sinks.get("base64")
        if payload_sink is None or (b64 is not None and b64.decoded):
            sink = StringSink(lambda data: None)
        else:
            sinks["json_start"] = payload_sink.tell() if _seekable(payload_sink) else None
            sink = StringSink(payload_sink.write)
        sinks["json"] = sink
        return sink

    reader = JsonStreamReader(src, where, stream_at=stream_at, max_bytes=max_bytes)
    try:
        doc = reader.parse_document()
    except BudgetExceeded:
        return _partial_head(reader, where, gzipped)
    if not isinstance(doc, dict):
        raise CorruptSnapshotError(f"{where}: envelope is not a JSON object")
    env = _interpret(doc, sinks, where)
    env.gzipped = gzipped
    env.envelope_length = reader.position
    return env


def _seekable(f) -> bool:
    try:
        return f.seekable()
    except (AttributeError, ValueError):
        return False


def _drop_json(sinks: dict, payload_sink, where: str) -> None:
    """payloadJson was streamed before a non-empty payloadBase64: Base64 wins, so drop the JSON."""
    js = sinks.get("json")
    if js is None or not js.length:
        return
    start = sinks.get("json_start")
    if start is None:
        raise CorruptSnapshotError(f"{where}: inlineState has both payloadJson and payloadBase64 "
                                   "and the JSON text cannot be discarded from this sink")
    payload_sink.flush()
    payload_sink.seek(start)
    payload_sink.truncate()
    js.length = 0


def _partial_head(reader: JsonStreamReader, where: str, gzipped: bool) -> Envelope:
    # The budget ended inside the document: only an inline payload is that long.
    return Envelope(is_offloaded=False, meta=EnvelopeMeta(), payload_source="base64",
                    gzipped=gzipped, partial=True)


def _get(obj: dict, name: str, where: str):
    """Case-insensitive property lookup (camelCase or PascalCase)."""
    for k, v in obj.items():
        if k.lower() == name:
            return v
    return None


def _typed(value, typ, field: str, where: str):
    if value is None:
        return None
    if typ is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**63:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise CorruptSnapshotError(f"{where}: envelope field {field!r} must be an integer, got {value!r}"[:300])
        if value < 0 or value > 2**63 - 1:
            raise CorruptSnapshotError(f"{where}: envelope field {field!r} is out of range: {value}")
        return int(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise CorruptSnapshotError(f"{where}: envelope field {field!r} must be true/false, got {value!r}"[:300])
        return value
    if not isinstance(value, str):
        raise CorruptSnapshotError(f"{where}: envelope field {field!r} must be a string, got {type(value).__name__}")
    return value


def _meta_from(obj: dict, where: str) -> tuple[EnvelopeMeta, dict]:
    meta = EnvelopeMeta()
    extra: dict = {}
    for key, value in obj.items():
        spec = _META_FIELDS.get(key.lower())
        if spec is None:
            continue
        attr, typ = spec
        value = _typed(value, typ, key, where)
        if value is None:
            continue
        if hasattr(meta, attr):
            setattr(meta, attr, value)
        else:
            extra[attr] = value
    return meta, extra


def _interpret(doc: dict, sinks: dict, where: str) -> Envelope:
    casing = "pascal" if any(k[:1].isupper() for k in doc) else "camel"
    flag = _typed(_get(doc, "isoffloaded", where), bool, "isOffloaded", where)
    inline = _get(doc, "inlinestate", where)
    offloaded = _get(doc, "offloadedstate", where)
    for name, value in (("inlineState", inline), ("offloadedState", offloaded)):
        if value is not None and not isinstance(value, dict):
            raise CorruptSnapshotError(f"{where}: envelope {name} must be an object or null")
    if flag is None:
        flag = offloaded is not None and inline is None
    if flag:
        if offloaded is None:
            raise CorruptSnapshotError(f"{where}: envelope says isOffloaded but has no offloadedState")
        meta, extra = _meta_from(offloaded, where)
        key = extra.get("offload_key")
        if not key:
            raise CorruptSnapshotError(f"{where}: offloadedState has no offloadKey")
        return Envelope(is_offloaded=True, meta=meta, offload_key=key,
                        storage_provider=extra.get("storage_provider"),
                        payload_length=extra.get("payload_length"), payload_source="offloaded",
                        casing=casing)
    if inline is None:
        raise CorruptSnapshotError(f"{where}: envelope has neither inlineState nor offloadedState")
    meta, _ = _meta_from(inline, where)
    b64 = sinks.get("base64")
    js = sinks.get("json")
    b64_value = _get(inline, "payloadbase64", where)
    js_value = _get(inline, "payloadjson", where)
    for name, value in (("payloadBase64", b64_value), ("payloadJson", js_value)):
        if value is not None and not isinstance(value, StringSink):
            raise CorruptSnapshotError(f"{where}: inlineState.{name} must be a string or null")
    if b64 is not None and b64_value is not None:
        b64.finish()
        if b64.decoded or js is None or not js.length:
            return Envelope(False, meta, payload_source="base64" if b64.decoded else "empty",
                            inline_length=b64.decoded, casing=casing)
    if js is not None and js_value is not None:
        return Envelope(False, meta, payload_source="json" if js.length else "empty",
                        inline_length=js.length, casing=casing)
    return Envelope(False, meta, payload_source="empty", casing=casing)


# --- writing -------------------------------------------------------------------------------------

_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_ESCAPED = set('"+<>&\'`')


def dotnet_json_string(value: str | None) -> str:
    """A JSON string as System.Text.Json's default encoder writes it (or ``null``).

    ASCII printable characters stay, except the HTML-sensitive ones and '"' which become
    ``\\uXXXX`` (upper-case hex); everything else non-ASCII is escaped as UTF-16 units.
    """
    if value is None:
        return "null"
    out = ['"']
    for ch in value:
        o = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif o < 0x20 or o > 0x7E or ch in _ESCAPED:
            if o > 0xFFFF:
                o -= 0x10000
                out.append(f"\\u{0xD800 + (o >> 10):04X}\\u{0xDC00 + (o & 0x3FF):04X}")
            else:
                out.append(f"\\u{o:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _meta_json(meta: EnvelopeMeta) -> str:
    return (f'"multiProjectionPayloadType":{dotnet_json_string(meta.payload_type_name)},'
            f'"projectorName":{dotnet_json_string(meta.projector_name)},'
            f'"projectorVersion":{dotnet_json_string(meta.projector_version)},'
            f'"lastSortableUniqueId":{dotnet_json_string(meta.last_sortable_unique_id)},'
            f'"lastEventId":{dotnet_json_string(meta.last_event_id)},'
            f'"version":{int(meta.version)},'
            f'"isCatchedUp":{"true" if meta.is_catched_up else "false"},'
            f'"isSafeState":{"true" if meta.is_safe_state else "false"}')


def write_inline_envelope(out: Writable, meta: EnvelopeMeta, payload: Readable, payload_length: int) -> int:
    """Write a v10 inline envelope, Base64-encoding ``payload_length`` bytes of ``payload`` in chunks.

    Returns the number of envelope bytes written.
    """
    n = 0

    def w(data: bytes) -> None:
        nonlocal n
        out.write(data)
        n += len(data)

    w(b'{"isOffloaded":false,"inlineState":{"payloadJson":null,"payloadBase64":"')
    left = payload_length
    while left:
        chunk = read_full(payload, min(B64_CHUNK, left))
        if len(chunk) < min(B64_CHUNK, left):
            raise CorruptSnapshotError(f"payload ended {left - len(chunk)} bytes early while writing the envelope")
        left -= len(chunk)
        w(binascii.b2a_base64(chunk, newline=False).replace(b"+", b"\\u002B"))
    w(("\"," + _meta_json(meta) + f',"originalSizeBytes":{int(meta.original_size_bytes)},'
       f'"compressedSizeBytes":{int(meta.compressed_size_bytes)}}},"offloadedState":null}}').encode("ascii"))
    return n


def inline_envelope_length(meta: EnvelopeMeta, payload_length: int, plus_count: int | None = None) -> int:
    """Envelope length for an inline payload; exact when the Base64 '+' count is known."""
    b64 = 4 * ((payload_length + 2) // 3)
    return len(inline_envelope_bytes(meta, b"")) + b64 + 5 * (plus_count or 0)


def inline_envelope_bytes(meta: EnvelopeMeta, payload: bytes) -> bytes:
    buf = io.BytesIO()
    write_inline_envelope(buf, meta, io.BytesIO(payload), len(payload))
    return buf.getvalue()


def offloaded_envelope_bytes(meta: EnvelopeMeta, offload_key: str, storage_provider: str,
                             payload_length: int) -> bytes:
    """A v10 envelope whose payload lives in a blob (small: no payload bytes inside)."""
    return ('{"isOffloaded":true,"inlineState":null,"offloadedState":{'
            f'"offloadKey":{dotnet_json_string(offload_key)},'
            f'"storageProvider":{dotnet_json_string(storage_provider)},'
            + _meta_json(meta) +
            f',"payloadLength":{int(payload_length)},'
            f'"originalSizeBytes":{int(meta.original_size_bytes)},'
            f'"compressedSizeBytes":{int(meta.compressed_size_bytes)}}}}}').encode("ascii")
