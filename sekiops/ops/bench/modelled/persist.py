"""Sekiban's byte[] persist path, modelled in Python (not measured on .NET), with Sekiban's I/O.

The buffers come from :mod:`.dotnet` (``Serialize`` as a UTF-16 string, ``GetBytes``, the
gzip MemoryStream, Base64, the envelope strings). Then what Sekiban does with them: upload the
payload from its byte[] when it is above the payload threshold, build the envelope, offload it
when it is above the store's record threshold, write the row with compare-and-swap. Rows and
blobs are real (the modelled restore reads them); the row's BuildSource is ``SEKIOPS_LEGACY``.
Nothing here records product metrics, and nothing here is timed: the model's time is Python's
transcoding loops, meaningless for .NET. Its memory goes to the benchmark's child JSON only.
"""

from __future__ import annotations

import hashlib
import io
import socket
import uuid

from ....errors import ItemTooLargeError
from ....format.constants import BUILD_SOURCE_LEGACY, PAYLOAD_OFFLOAD_THRESHOLD, PAYLOAD_TYPE
from ....format.envelope import EnvelopeMeta, inline_envelope_bytes, offloaded_envelope_bytes
from ....format.payload import gzip_backend
from ....format.record import SnapshotRow, utcnow
from . import dotnet

READ = 2**20


def modelled_persist(state, blob, source_path: str, *, projector_name: str, projector_version: str,
                     events_processed: int, last_sortable_unique_id: str, gzip: str | None = None,
                     payload_threshold: int = PAYLOAD_OFFLOAD_THRESHOLD) -> dict:
    """Persist the state JSON in ``source_path`` the way the byte[] path does; a summary dict."""
    backend = gzip_backend(gzip)
    meta = EnvelopeMeta(projector_name=projector_name, projector_version=projector_version,
                        last_sortable_unique_id=last_sortable_unique_id, last_event_id=str(uuid.UUID(int=0)),
                        version=events_processed, is_catched_up=True, is_safe_state=True, payload_type_name="")
    current = state.get(projector_name, projector_version)

    def write_body(out) -> None:
        with open(source_path, "rb") as f:
            while chunk := f.read(READ):
                out.write(chunk)

    payload, size = dotnet.serialize_and_compress(write_body, backend)
    meta.original_size_bytes, meta.compressed_size_bytes = size, len(payload)
    sha = hashlib.sha256(payload).hexdigest()
    base64 = dotnet.base64_string(payload)                       # FromBytes: PayloadBase64
    dotnet.envelope_string(meta, payload, base64).free()         # the size check's JSON string
    payload_key = None
    uploaded = 0
    if blob is not None and len(payload) > payload_threshold:
        base64.free()
        written = blob.write(io.BytesIO(payload), projector_name, sha256=sha, size=len(payload))
        payload_key, uploaded = written.key, written.size
        envelope = offloaded_envelope_bytes(meta, payload_key, blob.provider, len(payload))
    else:
        json_string = dotnet.envelope_string(meta, payload, base64)  # BuildSnapshotForPersistenceAsync
        base64.free()
        envelope = inline_envelope_bytes(meta, payload)              # Encoding.UTF8.GetBytes(json)
        json_string.free()
    del payload
    envelope_key = None
    threshold = state.record_offload_threshold
    if blob is not None and threshold is not None and len(envelope) > threshold:
        written = blob.write(io.BytesIO(envelope), f"{projector_name}/{projector_version}",
                             sha256=hashlib.sha256(envelope).hexdigest(), size=len(envelope))
        envelope_key, uploaded = written.key, uploaded + written.size
    elif state.inline_limit is not None and len(envelope) > state.inline_limit:
        raise ItemTooLargeError(f"{state.location}: envelope of {len(envelope)} bytes for {projector_name} exceeds "
                                f"the store's inline limit of {state.inline_limit} bytes")
    now = utcnow()
    row = SnapshotRow(
        service_id=state.service_id, projector_name=projector_name, projector_version=projector_version,
        payload_type=PAYLOAD_TYPE, last_sortable_unique_id=last_sortable_unique_id,
        events_processed=events_processed, is_offloaded=envelope_key is not None, offload_key=envelope_key,
        offload_provider=blob.provider if envelope_key else None, original_size_bytes=len(envelope),
        compressed_size_bytes=len(envelope), safe_window_threshold=last_sortable_unique_id, created_at=now,
        updated_at=now, build_source=BUILD_SOURCE_LEGACY, build_host=socket.gethostname()[:256],
        generation=current.generation if current else 0)
    inline = None if envelope_key else io.BytesIO(envelope)
    total = uploaded + (0 if envelope_key else len(envelope))
    state.write(row, inline, 0 if envelope_key else len(envelope), current)
    return {"payload_location": "blob" if payload_key else "inline",
            "envelope_location": "blob" if envelope_key else "inline",
            "original_size_bytes": size, "compressed_size_bytes": meta.compressed_size_bytes,
            "envelope_bytes": len(envelope), "gzip_backend": backend.name, "tempfile_bytes": 0,
            "upload_bytes": uploaded, "offload_ratio": round(uploaded / total, 6)}
