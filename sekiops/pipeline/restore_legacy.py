"""Sekiban's byte[] restore path, kept for comparison: everything in memory at once.

The whole envelope (StateData or blob) is read and parsed with ``json.loads``, the inline
payload Base64-decoded (or the whole payload blob read), and the payload gunzipped in one call:
memory grows with the snapshot, as in Sekiban (its issue #1145). Benchmarks and the capacity
model measure it beside the streaming restore; keys are still confined as everywhere else.
"""

from __future__ import annotations

import base64
import dataclasses
import json

from ..format import keys
from ..format.constants import GZIP_MAGIC
from ..format.payload import gzip_backend
from .restore import find_row


@dataclasses.dataclass
class LegacyRestore:
    state_json: bytes
    envelope_location: str
    payload_location: str
    envelope_bytes: int
    compressed_size_bytes: int


def _field(obj: dict | None, name: str):
    if not obj:
        return None
    return obj.get(name) or obj.get(name[:1].upper() + name[1:])


def legacy_restore(state, blob, projector_name: str, projector_version: str | None = None) -> LegacyRestore:
    backend = gzip_backend()
    row = find_row(state, projector_name, projector_version)
    if row.is_offloaded:
        with blob.open_read(keys.check_key_scope(row.offload_key, projector_name)) as f:
            env_bytes = f.read()
    else:
        with state.open_state_stream(row) as f:
            env_bytes = f.read()
    envelope_bytes = len(env_bytes)
    if env_bytes[:2] == GZIP_MAGIC:
        env_bytes = backend.module.decompress(env_bytes, 31)
    doc = json.loads(env_bytes)
    del env_bytes
    inline, offloaded = _field(doc, "inlineState"), _field(doc, "offloadedState")
    payload_location = "inline"
    if _field(inline, "payloadBase64"):
        payload = base64.b64decode(_field(inline, "payloadBase64"))
    elif _field(inline, "payloadJson"):
        payload = _field(inline, "payloadJson").encode()
    elif offloaded:
        payload_location = "blob"
        with blob.open_read(keys.check_key_scope(_field(offloaded, "offloadKey"), projector_name)) as f:
            payload = f.read()
    else:
        payload = b""
    del doc
    state_json = backend.module.decompress(payload, 31) if payload[:2] == GZIP_MAGIC else payload
    return LegacyRestore(state_json, "blob" if row.is_offloaded else "inline", payload_location,
                         envelope_bytes, len(payload))
