"""CSV exports: comma, tab or semicolon; a preamble of non-table lines before the header is skipped.

The portal's "Export to CSV" (``timestamp [UTC]``, ``message``, ``customDimensions`` ...), Log
Analytics' CSV, Excel's tab-separated UTF-16 text. The header is the first of the first 50 lines
whose cells the caller recognises. A row with more cells than the header, an unreadable line or a
cell holding a NUL is skipped and counted.
"""

from __future__ import annotations

import csv
import io

from ...errors import SekiopsError
from .source import CONTROL_REASON, has_nul, norm


def csv_rows(text: str, name: str, recognise, skipped) -> tuple[list[dict], str] | None:
    """(rows, "csv"), or None when none of the first lines is a recognised header."""
    lines = text.splitlines(keepends=True)
    head_at = None
    dialect = None
    for i, line in enumerate(lines[:50]):
        if not line.strip():
            continue
        delim = max(",\t;", key=lambda d: count_outside_quotes(line, d))
        if count_outside_quotes(line, delim) == 0 and not recognise([norm(line.strip())]):
            continue
        try:
            cells = next(csv.reader([line], delimiter=delim))
        except csv.Error:
            continue
        if recognise([norm(c) for c in cells]):
            head_at, dialect = i, delim
            break
    if head_at is None:
        return None
    if head_at:
        skipped["preamble line before the CSV header"] += sum(1 for ln in lines[:head_at] if ln.strip())
    assert dialect is not None  # found with the header line
    body = "".join(lines[head_at:])
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=dialect)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise SekiopsError(f"{name}: unreadable CSV header ({exc})") from None
    rows: list[dict] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error:
            skipped["unreadable CSV line"] += 1
            continue
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            skipped["CSV row with more cells than the header"] += 1
            continue
        if any(has_nul(c) for c in cells):
            skipped[CONTROL_REASON] += 1
            continue
        rows.append(dict(zip(header, cells, strict=False)))  # a short row lacks the last columns
    return rows, "csv"


def count_outside_quotes(line: str, ch: str) -> int:
    n, quoted = 0, False
    for c in line:
        if c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            n += 1
    return n
