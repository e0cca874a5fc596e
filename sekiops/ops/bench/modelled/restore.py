"""Sekiban's byte[] restore path, modelled buffer by buffer in Python (not measured on .NET).

What the grain does (GeneralMultiProjectionActor.SetSnapshotAsync and the projector's
Deserialize), for a payload of c gzip bytes and a state of S bytes of JSON: the whole envelope as
a byte[] (StateData, or the record-level blob) parsed into objects, its Base64 payload a UTF-16
string (8c/3) -- or, offloaded, the whole payload blob read as a byte[] and turned into that
string by ``FromBytes`` -- then ``GetPayloadBytes`` (c), ``GzipCompression.DecompressToString``
(ArrayPool copy, MemoryStream growth, ``ToArray`` S, ``GetString`` 2S: 3S held at once). The
object graph the projector then builds is not modelled (it depends on the projector), so this is
a lower bound. The buffers are those of :mod:`.dotnet`. Keys are still confined.
"""

from __future__ import annotations

import dataclasses
import json
from typing import BinaryIO

from ....errors import CorruptSnapshotError
from ....format import keys
from ....format.constants import GZIP_MAGIC
from ....format.payload import gzip_backend
from ....pipeline.restore import find_row
from . import dotnet


@dataclasses.dataclass
class ModelledRestore:
    #: The restored state JSON as the .NET string holding it (UTF-16); write it with write_json().
    state_string: dotnet.DotnetBuffer
    envelope_location: str
    payload_location: str
    envelope_bytes: int
    compressed_size_bytes: int

    def write_json(self, out: BinaryIO) -> int:
        """Write the state JSON (its UTF-8 bytes) to ``out``, then free the string; the byte count."""
        try:
            return dotnet.write_utf8(self.state_string, out)
        finally:
            self.state_string.free()


def _field(obj: dict | None, name: str):
    if not obj:
        return None
    return obj.get(name) or obj.get(name[:1].upper() + name[1:])


def _string(text: str) -> dotnet.DotnetBuffer:
    return dotnet.utf16_string([text.encode("utf-8", "surrogatepass")], len(text.encode("utf-8", "surrogatepass")))


def modelled_restore(state, blob, projector_name: str, projector_version: str | None = None) -> ModelledRestore:
    backend = gzip_backend()
    row = find_row(state, projector_name, projector_version)
    where = f"{state.location}: {row.service_id}/{row.projector_name}/{row.projector_version}"
    if row.is_offloaded:
        if not row.offload_key:
            raise CorruptSnapshotError(f"{where}: row is offloaded but has no OffloadKey")
        with blob.open_read(keys.check_key_scope(row.offload_key, projector_name)) as f:
            env_bytes = f.read()
    else:
        with state.open_state_stream(row) as f:
            env_bytes = f.read()
    envelope_bytes = len(env_bytes)
    try:
        if env_bytes[:2] == GZIP_MAGIC:
            env_bytes = backend.module.decompress(env_bytes, 31)
        doc = json.loads(env_bytes)
    except (ValueError, OSError) as exc:
        raise CorruptSnapshotError(f"{where}: the envelope does not parse ({exc})") from None
    del env_bytes
    inline, offloaded = _field(doc, "inlineState"), _field(doc, "offloadedState")
    payload_location = "inline"
    if _field(inline, "payloadBase64"):
        base64 = _string(_field(inline, "payloadBase64"))            # the envelope's PayloadBase64 string
    elif _field(inline, "payloadJson"):
        base64 = None
        text = _field(inline, "payloadJson").encode("utf-8", "surrogatepass")
        payload = dotnet.DotnetBuffer(len(text))
        payload.append(text)
    elif offloaded:
        payload_location = "blob"
        with blob.open_read(keys.check_key_scope(_field(offloaded, "offloadKey"), projector_name)) as f:
            blob_bytes = f.read()                                         # SnapshotAccessor.ReadAsync -> byte[]
        base64 = dotnet.base64_string(blob_bytes)                         # FromBytes: PayloadBase64
        del blob_bytes
    else:
        base64 = None
        payload = dotnet.DotnetBuffer(0)
    declared = _field(inline, "originalSizeBytes") or _field(offloaded, "originalSizeBytes")
    limit = declared if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0 else None
    del doc, inline, offloaded
    if base64 is not None:
        payload = dotnet.from_base64_string(base64)                       # GetPayloadBytes()
        base64.free()
    compressed = payload.length
    try:
        string = dotnet.decompress_to_string(payload, backend, limit)     # the projector's Deserialize
    except (ValueError, OSError) as exc:
        raise CorruptSnapshotError(f"{where}: the payload does not decompress ({exc})") from None
    finally:
        payload.free()
    return ModelledRestore(string, "blob" if row.is_offloaded else "inline", payload_location,
                         envelope_bytes, compressed)
