"""Sizes and durations: the one parser and the one formatter every option, table and chart uses.

Input, in every option that takes one:

* sizes: a byte count (``1560576``), or a number with a unit named as people write them:
  decimal ``kB``/``MB``/``GB``/``TB`` (powers of 1000) or binary ``KiB``/``MiB``/``GiB``/``TiB``
  (powers of 1024); ``_`` and ``,`` may group digits (``1_000_000``);
* durations: seconds (``3600``, ``0.5``), or a number with ``s``, ``m``, ``h``, ``d`` or ``w``
  (``90s``, ``30m``, ``24h``, ``7d``).

Output: binary units with their names (``1.46 MiB``, ``3.95 GiB``), thousands separators on
byte counts (``1,560,576 B``), durations as ``1 h 30 min``. One convention everywhere: a table
that says MiB means 1,048,576 bytes.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from .errors import UsageError

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

SIZE_FORMS = "a byte count, or e.g. 500MB, 1.5MiB, 4GiB (kB/MB/GB = 1000s, KiB/MiB/GiB = 1024s)"
DURATION_FORMS = "seconds, or e.g. 90s, 30m, 24h, 7d"

_SIZE_RE = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1, "byte": 1, "bytes": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": KiB, "kib": KiB, "mi": MiB, "mib": MiB, "gi": GiB, "gib": GiB, "ti": TiB, "tib": TiB,
}
_DURATION_RE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_DURATION_UNITS = {
    "": 1, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "ms": 0.001,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "wk": 604800, "week": 604800, "weeks": 604800,
}


def parse_size(text: str | int | float, *, what: str = "size", allow_zero: bool = True) -> int:
    """Bytes from ``500MB``, ``4GiB``, ``1_000_000`` or an int; UsageError naming ``what`` otherwise."""
    if isinstance(text, bool):
        raise UsageError(f"{what} {text!r} is not a size ({SIZE_FORMS})")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _SIZE_RE.match(str(text))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _SIZE_UNITS:
            raise UsageError(f"{what} {text!r} is not a size ({SIZE_FORMS})")
        value = float(m.group(1).replace("_", "").replace(",", "")) * _SIZE_UNITS[unit]
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{what} {text!r} must be {'' if allow_zero else 'more than zero and '}not negative")
    return int(round(value))


def parse_sizes(text: str, *, what: str = "sizes") -> list[int]:
    """A comma-separated list of sizes (``10MB,100MB,1GiB``); digit grouping commas are not allowed here."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"{what} {text!r} names no size ({SIZE_FORMS})")
    return [parse_size(p, what=what, allow_zero=False) for p in parts]


def parse_duration(text: str | int | float | timedelta, *, what: str = "duration") -> timedelta:
    """A timedelta from ``90s``, ``30m``, ``24h``, ``7d``, ``2w`` or seconds (``3600``, ``0``)."""
    if isinstance(text, timedelta):
        seconds = text.total_seconds()
    elif isinstance(text, bool):
        raise UsageError(f"{what} {text!r} is not a duration ({DURATION_FORMS})")
    elif isinstance(text, (int, float)):
        seconds = float(text)
    else:
        m = _DURATION_RE.match(str(text))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _DURATION_UNITS:
            raise UsageError(f"{what} {text!r} is not a duration ({DURATION_FORMS})")
        seconds = float(m.group(1).replace("_", "")) * _DURATION_UNITS[unit]
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"{what} {text!r} must not be negative")
    return timedelta(seconds=seconds)


def parse_seconds(text: str | int | float | timedelta, *, what: str = "duration") -> float:
    return parse_duration(text, what=what).total_seconds()


# --- output ---------------------------------------------------------------------------------------


def _number(value) -> float | None:
    """A finite float, or None for None/NaN/pandas NA/strings that are not numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def format_bytes(n, *, empty: str = "–") -> str:
    """``1.46 MiB``, ``3.95 GiB``, ``512 B``; ``empty`` for missing values (never NaN/None)."""
    f = _number(n)
    if f is None:
        return empty
    sign = "-" if f < 0 else ""
    f = abs(f)
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if f >= size:
            v = f / size
            text = f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"
            return f"{sign}{text} {unit}"
    return f"{sign}{f:,.0f} B"


def format_count(n, *, empty: str = "–") -> str:
    """Thousands separators: ``1,250,000``; ``empty`` for missing values."""
    f = _number(n)
    if f is None:
        return empty
    return f"{f:,.0f}" if f == int(f) else f"{f:,.2f}"


def format_exact_bytes(n, *, empty: str = "–") -> str:
    """``1,560,576 B (1.49 MiB)``: for thresholds and limits, where the exact count matters."""
    f = _number(n)
    if f is None:
        return empty
    return f"{f:,.0f} B" if abs(f) < KiB else f"{f:,.0f} B ({format_bytes(f)})"


def format_rate(bytes_per_second, *, empty: str = "–") -> str:
    """``412 MiB/s``."""
    f = _number(bytes_per_second)
    return empty if f is None else f"{format_bytes(f)}/s"


def format_duration(seconds, *, empty: str = "–") -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``, ``1 h 30 min``, ``2 d 4 h``."""
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    f = _number(seconds)
    if f is None:
        return empty
    sign = "-" if f < 0 else ""
    f = abs(f)
    if f < 1:
        return f"{sign}{f * 1000:.0f} ms"
    if f < 60:
        return f"{sign}{f:.1f} s"
    if f < 3600:
        m, s = divmod(int(round(f)), 60)
        return f"{sign}{m} min {s:02d} s"
    if f < 86400:
        h, rest = divmod(int(round(f)), 3600)
        return f"{sign}{h} h {rest // 60:02d} min"
    d, rest = divmod(int(round(f)), 86400)
    return f"{sign}{d} d {rest // 3600} h"


def mib(n) -> float | None:
    """Bytes as MiB (a float for tables whose column header names the unit)."""
    f = _number(n)
    return None if f is None else f / MiB


__all__ = ["KiB", "MiB", "GiB", "TiB", "SIZE_FORMS", "DURATION_FORMS", "parse_size", "parse_sizes",
           "parse_duration", "parse_seconds", "format_bytes", "format_count", "format_exact_bytes",
           "format_rate", "format_duration", "mib"]
