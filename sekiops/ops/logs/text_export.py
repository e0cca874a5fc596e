"""Plain-text logs: the .NET console logger's output as ``kubectl logs`` / ``az containerapp logs``
/ ``docker logs`` print it, optionally with a timestamp before each line::

    2026-02-25T10:00:00.1234567Z info: Sekiban.Dcb.Orleans.Grains.MultiProjectionGrain[1018]
    2026-02-25T10:00:00.1234567Z       Restore: OrdersProjector, RecordEvents=52000, ...

Each non-empty line becomes a row with its message (and its timestamp, else the last one seen);
the console header line carries its event id to the next line (:mod:`.rows`). A file is taken as
plain text only when one of its first lines is a console header or a Sekiban message, so any other
text is still refused as "not an export".
"""

from __future__ import annotations

import re

from .sekiban import CATCH_UP_SUMMARY, TEMPLATES
from .source import CONTROL_REASON, has_nul

CONSOLE_HEADER = re.compile(r"^\s*(trce|dbug|info|warn|fail|crit):\s*([\w.`+<>]+)\[(\d+)\]\s*$")
_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2}| UTC)?)\s+(.*)$")
_HEADS = [tpl.split("{", 1)[0].strip() for _e, _k, tpl in TEMPLATES]
LOOK_AT = 500


def _split(line: str) -> tuple[str | None, str]:
    m = _STAMP.match(line)
    return (m.group(1).replace(",", "."), m.group(2)) if m else (None, line)


def is_sekiban_text(text: str) -> bool:
    """True when one of the first :data:`LOOK_AT` lines is a console header or a known Sekiban message."""
    for line in text.splitlines()[:LOOK_AT]:
        _t, rest = _split(line.strip())
        if CONSOLE_HEADER.match(rest) or CATCH_UP_SUMMARY.match(rest) or any(h and rest.startswith(h) for h in _HEADS):
            return True
    return False


def text_rows(text: str, skipped) -> tuple[list[dict], str]:
    rows: list[dict] = []
    last_time = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if has_nul(line):
            skipped[CONTROL_REASON] += 1
            continue
        stamp, message = _split(line.rstrip())
        last_time = stamp or last_time
        rows.append({"timestamp": last_time, "message": message})
    return rows, "text"
