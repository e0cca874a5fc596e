"""Timestamps as Azure exports write them (ISO 8601 with 7-digit fractions, the portal's US format,
epoch seconds or milliseconds), as aware UTC datetimes."""

from __future__ import annotations

import datetime as _dt
import re

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(v) -> _dt.datetime | None:
    """A timestamp as Azure exports write it, as an aware UTC datetime (None when unreadable)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, _dt.datetime):
        return v if v.tzinfo else v.replace(tzinfo=_dt.UTC)
    if isinstance(v, (int, float)):  # epoch seconds or milliseconds
        try:
            x = float(v)
            return _dt.datetime.fromtimestamp(x / 1000 if x > 1e11 else x, _dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    s = str(v).strip()
    if not s:
        return None
    iso = _FRACTION.sub(r"\1", s.replace(" UTC", "").replace("Z", "+00:00"))
    try:
        t = _dt.datetime.fromisoformat(iso)
    except ValueError:
        t = None
    if t is None:
        for fmt in ("%m/%d/%Y, %I:%M:%S.%f %p", "%m/%d/%Y, %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p",
                    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%Y/%m/%d %H:%M:%S",
                    "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M"):
            try:
                t = _dt.datetime.strptime(s.replace(" UTC", ""), fmt)
                break
            except ValueError:
                continue
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)
