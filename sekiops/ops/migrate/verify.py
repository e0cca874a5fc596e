"""Payload digests through the normal read path: what a migration compares before and after.

A digest is the sha256 of the decoded projector state that :func:`sekiops.pipeline.restore.restore`
produces (with ``verify=True``: content-addressed blob hashes and declared lengths checked), plus
the shape it was read from. Equal digests before and after a step mean Sekiban restores the
same state from the new row.
"""

from __future__ import annotations

import dataclasses

from ...blob.base import BlobStore
from ...format.record import SnapshotRow
from ...pipeline.restore import RestoreOptions, restore
from ...pipeline.spool import Spool
from ...state.base import StateStore
from ...streams import CountingWriter


@dataclasses.dataclass(frozen=True)
class Digest:
    sha256: str
    #: decoded state bytes
    original_size: int
    #: stored payload bytes (gzip or raw)
    compressed_size: int
    envelope_format: str
    payload_source: str
    envelope_location: str
    payload_location: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def payload_digest(state: StateStore, blob: BlobStore | None, row: SnapshotRow, spool: Spool) -> Digest:
    """Restore the row's projector state (streamed, nothing kept) and hash it."""
    out = CountingWriter(hash_it=True)
    try:
        res = restore(state, blob, out, projector_name=row.projector_name, projector_version=row.projector_version,
                      options=RestoreOptions(verify=True), spool=spool)
    finally:
        # restore() of an inline payload closes its payload temp file through the reader, so the
        # SpoolFile never unlinks it (pipeline bug, reported); such files are unlocked orphans,
        # which clean() removes. Without this, 10 restores in one process fill the spool.
        spool.clean()
    sha = out.sha256
    assert sha is not None  # a hashing CountingWriter
    return Digest(sha, out.count, res.compressed_size_bytes, res.envelope_format, res.payload_source,
                  res.envelope_location, res.payload_location)
