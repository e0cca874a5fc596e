"""Names, constants and number formats shared by the incident modules (no analysis here).

Sizes and memory are shown in binary units with their names (:mod:`sekiops.units`): one
convention in findings, tables, charts and the HTML report.
"""

from __future__ import annotations

import math

from ...units import GiB, MiB, format_bytes, format_duration

PERSIST_KINDS = ("persist_legacy", "persist_streaming", "persist_details")
RESTORE_KINDS = ("restore", "state_restore_success")
FAILURE_KINDS = ("state_restore_failed", "blob_read_failed", "state_not_found",
                 "integrity_guard_blocked_persist", "integrity_guard_blocked_restore")
CATCH_UP_KINDS = ("full_catch_up_initiated", "catch_up_batch_summary")
#: Sekiban dcb-v10.23+: a projector whose registry lacks the streaming capability restores buffered
#: (``Snapshot restore buffered fallback. Projector=..., Registry=..., Format=..., Reason=...``)
FALLBACK_KINDS = ("restore_buffered_fallback",)

#: How each kind is named for a reader.
KIND_LABELS = {
    "persist_legacy": "byte[] persist", "persist_streaming": "streaming persist",
    "persist_details": "persist", "restore": "restore (RestoreDetails)",
    "state_restore_success": "restore succeeded", "state_restore_failed": "StateRestoreFailed",
    "blob_read_failed": "BlobReadFailed", "state_not_found": "StateNotFound",
    "integrity_guard_blocked_persist": "integrity guard blocked a persist",
    "integrity_guard_blocked_restore": "integrity guard blocked a restore",
    "full_catch_up_initiated": "full catch-up started", "catch_up_batch_summary": "catch-up batch",
    "restore_buffered_fallback": "restore buffered fallback",
    "restart": "container restart", "memory": "memory sample",
}

TIMELINE_COLUMNS = ["time", "source", "category", "kind", "projectorName", "envelope_bytes", "state_bytes",
                    "peak_memory_bytes", "events_processed", "working_set_bytes", "memory_percent", "restarts",
                    "memory_time", "peak_after_percent", "instance", "detail"]

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2, "ok": 3}

#: Sekiban's defaults and the seed's recommended settings (format reference 6 and 7; design seed).
PAYLOAD_OFFLOAD_THRESHOLD = 1_560_576
COSMOS_RECORD_THRESHOLD = 1_000_000
TEMP_FILES_GUARD = 500 * MiB
CATCH_UP_BATCH_RANGE = (200, 500)
HEADROOM = 0.80  # keep the predicted peak at or under this share of the limit
MAX_CAPACITY_FINDINGS = 5  # inventory rows named one by one in the findings (logs rows: all)

__all__ = ["GiB", "MiB"]


def category(kind: str | None) -> str:
    """``persist``, ``restore``, ``failure``, ``catch_up``, ``restart``, ``memory`` or ``other``."""
    if kind in PERSIST_KINDS:
        return "persist"
    if kind in RESTORE_KINDS or kind in FALLBACK_KINDS:
        return "restore"
    if kind in FAILURE_KINDS:
        return "failure"
    if kind in CATCH_UP_KINDS:
        return "catch_up"
    if kind in ("restart", "memory"):
        return kind
    return "other"


def _f(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _iso(t) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- formatting (sekiops.units: binary units with their names) --------------------------------------


def fmt_size(n) -> str:
    """A size: ``401 MiB``, ``1.32 GiB`` (binary units, named); ``?`` when unknown."""
    return format_bytes(_f(n), empty="?")


def fmt_mem(n) -> str:
    """Memory: ``4 GiB`` for whole GiB (limits), else as :func:`fmt_size`."""
    n = _f(n)
    if n is None:
        return "?"
    if n >= GiB and n % GiB == 0:
        return f"{int(n // GiB)} GiB"
    return format_bytes(n)


def fmt_time(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_clock(t) -> str:
    return t.strftime("%H:%M:%S")


def fmt_delta(d) -> str:
    """``20 s``, ``5 min``, ``1 h 30 min`` (whole seconds)."""
    import pandas as pd

    s = int(round(pd.Timedelta(d).total_seconds()))
    if s < 90:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def _md(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


__all__ += ["format_bytes", "format_duration"]
