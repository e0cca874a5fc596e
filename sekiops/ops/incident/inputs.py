"""Reading the evidence: the window bounds, the memory limit, the two exports, names and filters.

Each export is optional: :func:`load_events` / :func:`load_memory` of ``None`` give an empty frame
(and ``info["given"] = False``), so a report can run on logs alone, metrics alone or an inventory alone.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re

from ...errors import SekiopsError, UsageError
from ...units import parse_size
from ..logs import ParseResult, parse_container_memory, parse_log_file, parse_time
from .base import MiB


def parse_when(value, name: str = "time"):
    """A window bound as a UTC ``pandas.Timestamp`` (None for None/empty). Naive times are UTC."""
    import pandas as pd

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (pd.Timestamp, _dt.datetime)):
        t = pd.Timestamp(value)
    else:
        parsed = parse_time(value)
        if parsed is None:
            try:
                parsed = pd.Timestamp(str(value).strip())
            except (ValueError, TypeError):
                raise UsageError(f"{name} {value!r} is not a time (use e.g. 2026-03-10T02:00:00Z)") from None
        t = pd.Timestamp(parsed)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def parse_limit(value) -> int | None:
    """``"4GiB"``, ``"4096MiB"``, ``4294967296`` -> bytes; None, ``""`` or ``"auto"`` -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto", "none")):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None

    try:
        n = parse_size(value, what="memory limit")
    except ValueError as exc:
        raise UsageError(f"memory limit {value!r}: {exc}") from None
    if n < 16 * MiB:
        raise UsageError(f"memory limit {value!r} is implausibly small (bytes? use e.g. 4GiB)")
    return n


EMPTY_COLUMNS = {"logs": ["time", "kind", "projectorName", "eventId"],
                 "metrics": ["time", "working_set_bytes", "memory_percent", "restarts"]}


def _load(source, parser, what: str):
    import pandas as pd

    if source is None or (isinstance(source, str) and not source.strip()):
        frame = pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]" if c == "time" else
                                           "float64" if c not in ("kind", "projectorName") else object)
                              for c in EMPTY_COLUMNS[what]})
        return frame, {"skipped": 0, "skippedReasons": {}, "sourceFormat": None, "rows": 0, "notes": [],
                       "given": False}
    if isinstance(source, pd.DataFrame):
        return source.copy(), {"skipped": source.attrs.get("skipped", 0),
                               "skippedReasons": source.attrs.get("skippedReasons", {}),
                               "sourceFormat": source.attrs.get("sourceFormat", "DataFrame"),
                               "rows": len(source), "notes": list(source.attrs.get("notes", [])), "given": True}
    if isinstance(source, ParseResult):
        result = source
    else:
        path = os.fspath(source) if not isinstance(source, (bytes, bytearray)) and not hasattr(source, "read") \
            else source
        if isinstance(path, str) and path != "-":
            if not os.path.exists(path):
                raise UsageError(f"{what} file {path!r} not found")
            if os.path.isdir(path):
                raise UsageError(f"{what} file {path!r} is a directory")
        try:
            result = parser(path)
        except SekiopsError as exc:
            name = path if isinstance(path, str) else "<data>"
            msg = str(exc)
            if msg.startswith(f"{name}: "):
                msg = msg[len(name) + 2:]
            raise SekiopsError(f"{what} file {name!r}: {msg}") from None
        except UnicodeDecodeError as exc:
            raise SekiopsError(f"{what} file {path!r}: not text ({exc.reason})") from None
    frame = result.frame
    return frame, {"skipped": result.skipped, "skippedReasons": dict(result.skipped_reasons),
                   "sourceFormat": result.source_format, "rows": result.rows, "notes": list(result.notes or []),
                   "given": True}


def load_events(source):
    """Sekiban events (None: no logs export, an empty frame) (DataFrame as
    :func:`~sekiops.ops.logs.parse_log_file` gives) and load info."""
    return _load(source, parse_log_file, "logs")


def load_memory(source):
    """Container memory samples (None: no metrics export, an empty frame) (as
    :func:`~sekiops.ops.logs.parse_container_memory`) and load info."""
    return _load(source, parse_container_memory, "metrics")


# --- names and filters ----------------------------------------------------------------------------


def projector_key(name) -> str:
    """``CustomerDirectoryProjector`` and ``customer-directory`` -> ``customerdirectory``."""
    s = re.sub(r"[^0-9a-z]", "", str(name or "").lower())
    return s[:-len("projector")] if s.endswith("projector") and len(s) > len("projector") else s


def _projector_list(projectors) -> list[str] | None:
    if projectors is None:
        return None
    if isinstance(projectors, str):
        projectors = [p for p in re.split(r"[,\s]+", projectors) if p]
    names = [str(p) for p in projectors if str(p).strip()]
    return names or None


def _service_column(frame) -> str | None:
    for c in ("ServiceId", "serviceId", "service_id", "Service", "ServiceName"):
        if c in frame.columns:
            return c
    return None


def filter_events(events, time_from=None, time_to=None, service_id: str | None = None, projectors=None):
    """Events inside the window, of the service (when events say theirs) and of the projectors."""
    frame = events
    if len(frame) and time_from is not None:
        frame = frame[frame["time"] >= time_from]
    if len(frame) and time_to is not None:
        frame = frame[frame["time"] <= time_to]
    col = _service_column(frame)
    if service_id and col is not None and len(frame):
        values = frame[col]
        frame = frame[values.isna() | (values.astype(str) == str(service_id))]
    names = _projector_list(projectors)
    if names and len(frame):
        keys = {projector_key(n) for n in names}
        frame = frame[frame["projectorName"].map(lambda n: projector_key(n) in keys)]
    return frame.reset_index(drop=True)


