"""Rows for the browser tests, written with the format API the way an older Sekiban wrote them:
an envelope kept inline in its row however large (before record offload was configured)."""

from __future__ import annotations

import gzip
import io
import os
import uuid

from sekiops.format.constants import PAYLOAD_TYPE
from sekiops.format.envelope import EnvelopeMeta, inline_envelope_bytes
from sekiops.format.record import SnapshotRow, sortable_unique_id, utcnow


def put_inline_rows(state, names, payload_bytes: int = 150_000) -> None:
    lsuid = sortable_unique_id(utcnow())
    for name in names:
        body = b'{"orders":"' + os.urandom(payload_bytes // 2).hex().encode() + b'"}'
        payload = gzip.compress(body)
        meta = EnvelopeMeta(name, "v1", lsuid, str(uuid.uuid4()), 77_000, payload_type_name=f"Demo.{name}",
                            original_size_bytes=len(body), compressed_size_bytes=len(payload))
        env = inline_envelope_bytes(meta, payload)
        row = SnapshotRow(service_id=state.service_id, projector_name=name, projector_version="v1",
                          payload_type=PAYLOAD_TYPE, last_sortable_unique_id=lsuid, events_processed=77_000,
                          original_size_bytes=len(env), compressed_size_bytes=len(env), safe_window_threshold=lsuid,
                          build_source="GRAIN", build_host="silo-0")
        state.write(row, io.BytesIO(env), len(env), None)
