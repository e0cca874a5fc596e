"""Sekiban events as a DataFrame: parse an export (any shape) or already-loaded rows.

One row per recognised event: ``time`` (UTC), ``eventId`` (missing for events Sekiban logs without
one), ``kind``, ``projectorName``, then every named value under its placeholder name. Values
become Int64 / float64 / boolean columns where every present value is one, else text.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from typing import Any

from .export import load_export
from .rows import LogParser, recognise_logs
from .sekiban import KNOWN_VALUES, TEXT_VALUES


@dataclasses.dataclass
class ParseResult:
    """A parsed export: the DataFrame, and what was left out and why."""

    frame: Any
    rows: int
    skipped: int
    skipped_reasons: dict
    source_format: str
    notes: list = dataclasses.field(default_factory=list)

    @property
    def events(self):
        return self.frame

    def summary_line(self, noun: str = "events") -> str:
        n = len(self.frame)
        reasons = ", ".join(f"{r} ({c})" for r, c in sorted(self.skipped_reasons.items(), key=lambda x: -x[1]))
        return f"# parsed {n} {noun}, skipped {self.skipped} lines" + (f": {reasons}" if reasons else "")


BASE_COLUMNS = ["time", "eventId", "kind", "projectorName"]


def _events_frame(events: list[dict], include_message: bool):
    import pandas as pd

    keys: list[str] = []
    seen = set(BASE_COLUMNS) | {"message", "instance"}
    for name in KNOWN_VALUES:
        if any(name in e for e in events):
            keys.append(name)
            seen.add(name)
    extra = sorted({k for e in events for k in e if k not in seen})
    cols = BASE_COLUMNS + keys + extra
    if any("instance" in e for e in events):
        cols.append("instance")
    if include_message:
        cols.append("message")
    data = {c: [e.get(c) for e in events] for c in cols}
    frame = pd.DataFrame({c: _typed_column(c, data[c]) for c in cols}, columns=cols)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["eventId"] = frame["eventId"].astype("Int64")
    if len(frame):
        frame = frame.sort_values("time", kind="stable", na_position="last").reset_index(drop=True)
    return frame


def _typed_column(name: str, values: list):
    """Int64 for whole numbers, float64 for other numbers, boolean, else text (None for missing)."""
    import pandas as pd

    if name in ("time", "eventId"):
        return values
    present = [v for v in values if v is not None]
    if name in BASE_COLUMNS or name in ("instance", "message"):
        return pd.array(values, dtype=object)
    if not present:
        return pd.array(values, dtype="Int64" if name in KNOWN_VALUES and name not in TEXT_VALUES else object)
    if all(isinstance(v, bool) for v in present):
        return pd.array(values, dtype="boolean")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.array(values, dtype="Int64")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pd.array([float("nan") if v is None else float(v) for v in values], dtype="float64")
    return pd.array([v if v is None or isinstance(v, str) else str(v) for v in values], dtype=object)


def parse_log_records(records: Iterable[dict], include_message: bool = False, source_format: str = "records",
                      load_skipped: dict | None = None) -> ParseResult:
    """Events from already-loaded rows (dicts with message / customDimensions / timestamp ...)."""
    parser = LogParser()
    n = 0
    for row in records:
        n += 1
        if not isinstance(row, dict):
            parser.skip("row is not an object")
            continue
        parser.feed(row)
    reasons = collections.Counter(load_skipped or {})
    reasons.update(parser.reasons)
    frame = _events_frame(parser.events, include_message)
    return ParseResult(frame=frame, rows=n, skipped=sum(reasons.values()), skipped_reasons=dict(reasons),
                       source_format=source_format)


def parse_log_file(source, include_message: bool = False) -> ParseResult:
    """Parse an Application Insights / Log Analytics export or a console log (path, ``-``, bytes or stream)."""
    loaded = load_export(source, recognise_logs, "log rows (message / customDimensions)", plain_text=True)
    return parse_log_records(loaded.rows, include_message, loaded.fmt, loaded.skipped)


def read_log_events(source, include_message: bool = False):
    """The events DataFrame alone; ``frame.attrs`` carries ``skipped`` and ``skippedReasons``."""
    result = parse_log_file(source, include_message)
    result.frame.attrs.update({"skipped": result.skipped, "skippedReasons": result.skipped_reasons,
                               "sourceFormat": result.source_format})
    return result.frame
