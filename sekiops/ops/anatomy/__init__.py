"""Payload anatomy: where the bytes of one snapshot's projector state are, by JSON path.

The payload (the decoded projector state JSON, possibly gigabytes) is walked as a stream and
never held: :func:`sekiops.pipeline.restore.open_payload_stream` gunzips it chunk by chunk and a
vectorised scanner (numpy, :mod:`.tokenizer`) tokenises each chunk (512 KiB); :mod:`.walk`
attributes raw byte spans to JSON paths (``$``, ``$.customers``, ``$.customers[]``,
``$.customers[].orders`` ...) down to ``depth`` in a path tree (:mod:`.tree`), the deepest level
with numpy (:mod:`.leaves`), and keeps the ``top`` biggest strings (:mod:`.strings`) and arrays.
Memory is bounded by the chunk size and by ``max_paths``, never by the payload.

Attribution is by raw JSON bytes measured as stream offsets: a value's bytes are the span from
its first to its last byte (escapes and whitespace inside included), a member's key bytes the span
from its key's opening quote to the value. So the root's bytes plus the whitespace around it equal
the payload size exactly (``total_bytes``), and a container's bytes are its children's plus its
own punctuation and keys (``overhead``).

An anatomy shows structure, not data (:mod:`.report`): stored string values are listed by path,
length and offset, and their first characters only with ``show_values=True`` (``--show-values``).

Why not ijson: ijson (even its yajl2 C backend) yields decoded events without stream offsets, so
its byte attribution could only be an estimate, and Python has to touch every event
(:mod:`sekiops.ops.bench.anatomy` measures both on any file).

Library::

    from sekiops.ops.anatomy import anatomy, walk
    report = anatomy(state, blob, projector_name="CustomerDirectory", depth=3, top=20,
                     progress=lambda done, total: ...)
    report.to_frame()        # one row per path
    report.to_dict()         # JSON-able

``walk(stream, ...)`` does the same for any readable binary stream of JSON.
"""

from __future__ import annotations

from collections.abc import Callable

from .report import Anatomy
from .tokenizer import CHUNK, DEFAULT_DEPTH, DEFAULT_MAX_KEYS, DEFAULT_MAX_PATHS, DEFAULT_TOP, Tokenizer
from .walk import check_limits, walk


def anatomy(state, blob, *, projector_name: str, projector_version: str | None = None,
            depth: int = DEFAULT_DEPTH, top: int = DEFAULT_TOP, max_keys: int = DEFAULT_MAX_KEYS,
            max_paths: int = DEFAULT_MAX_PATHS, show_values: bool = False, include_tombstoned: bool = True,
            progress: Callable[[int, int | None], object] | None = None, row=None) -> Anatomy:
    """Walk one snapshot's payload (the newest active version unless ``projector_version``/``row``).

    ``show_values``: also report the first characters of the biggest string values (stored
    business data; off by default).
    """
    # the store side loads only here: walk() over a file needs none of it
    from ...pipeline.restore import RestoreOptions, find_row, open_payload_stream

    check_limits(depth, top, max_keys, max_paths)
    if row is None:
        row = find_row(state, projector_name, projector_version, include_tombstoned=include_tombstoned)
    with open_payload_stream(state, blob, row, RestoreOptions(include_tombstoned=True)) as (stream, info):
        total = info.get("declared_original_size") or None
        source = dict(info)
        source["where"] = f"{state.location} {row.where}"
        source["events_processed"] = row.events_processed
        result = walk(stream, depth=depth, top=top, max_keys=max_keys, max_paths=max_paths, total=total,
                      progress=progress, source=source, show_values=show_values)
    if total and total != result.total_bytes:
        result.source.setdefault("warnings", []).append(
            f"payload has {result.total_bytes} bytes, envelope declares originalSizeBytes {total}")
    return result


__all__ = ["Anatomy", "CHUNK", "DEFAULT_DEPTH", "DEFAULT_MAX_KEYS", "DEFAULT_MAX_PATHS", "DEFAULT_TOP", "Tokenizer",
           "anatomy", "walk"]
