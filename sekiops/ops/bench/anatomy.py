"""Anatomy's own benchmark: the numpy scanner against the cheapest ijson-based walks of the same file.

Its memory beside a streaming restore's is ``sekiops bench --ops restore,anatomy`` (fresh
processes, kernel peak RSS): this module times the scanner alone, in this process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..anatomy import DEFAULT_DEPTH, walk


def benchmark_backends(path: str, depth: int = DEFAULT_DEPTH) -> dict:
    """Seconds to walk a JSON file with this scanner vs. the cheapest ijson-based alternatives.

    ``ijson_basic_parse_seconds``: merely iterating ``ijson.basic_parse`` events (fastest backend,
    yajl2_c when built) -- a floor, with no attribution at all. ``ijson_parse_count_seconds``:
    ``ijson.parse`` (prefixes computed in C) plus the least an ijson anatomy must do per event
    (count events and string lengths per prefix, down to ``depth``); it still cannot measure raw
    bytes (escapes, whitespace, number spelling), so its byte totals would be estimates.
    """
    out: dict[str, Any] = {"bytes": os.path.getsize(path), "depth": depth}
    with open(path, "rb") as f:
        t = time.perf_counter()
        rep = walk(f, depth=depth)
        out["scanner_seconds"] = round(time.perf_counter() - t, 3)
    out["scanner_mib_s"] = round(out["bytes"] / 2**20 / out["scanner_seconds"], 1)
    out["scanner_exact_total"] = rep.total_bytes == out["bytes"]
    try:
        import ijson
    except ImportError:
        out["ijson"] = "not installed"
        return out
    out["ijson_backend"] = ijson.backend
    with open(path, "rb") as f:
        t = time.perf_counter()
        for _ev in ijson.basic_parse(f, use_float=True):
            pass
        out["ijson_basic_parse_seconds"] = round(time.perf_counter() - t, 3)
    counts: dict = {}
    sizes: dict = {}
    with open(path, "rb") as f:
        t = time.perf_counter()
        for prefix, event, value in ijson.parse(f, use_float=True):
            if prefix.count(".") < depth:
                counts[prefix] = counts.get(prefix, 0) + 1
                if event == "string":
                    sizes[prefix] = sizes.get(prefix, 0) + len(value) + 2
        out["ijson_parse_count_seconds"] = round(time.perf_counter() - t, 3)
    return out
