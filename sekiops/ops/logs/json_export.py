"""JSON exports: an array of objects, JSON lines, and the query API's ``{"tables": [...]}`` shape.

* a JSON array (the portal's JSON export, ``az monitor ... -o json``), read element by element so
  that a truncated export still yields its rows;
* JSON lines (Serilog CLEF, .NET's JSON console formatter, ``jq -c``);
* the Log Analytics / Application Insights query API: ``{"tables": [{"columns": [...], "rows":
  [[...], ...]}]}``, and wrappers such as ``{"value": [...]}`` (the Azure Monitor REST API).

An element or line holding a raw control character (invalid in strict JSON) is skipped and
counted, never fatal for the rest.
"""

from __future__ import annotations

import json

from ...errors import SekiopsError
from .source import CONTROL_REASON, has_control

_STRICT = json.JSONDecoder()
_LENIENT = json.JSONDecoder(strict=False)


def json_rows(text: str, name: str, skipped) -> tuple[list[dict] | None, str]:
    """(rows, format) of a text starting with ``[`` or ``{``; (None, "") when it is no JSON after all."""
    if text[0] == "{":
        doc, lenient = _whole(text)
        if isinstance(doc, dict):
            tables = doc.get("tables") or doc.get("Tables")
            if isinstance(tables, list):
                return _drop_control(table_rows(tables, skipped), lenient, skipped), "log-analytics-json"
            for key in ("value", "rows", "records", "data", "items", "events"):
                if isinstance(doc.get(key), list) and all(isinstance(x, dict) for x in doc[key][:50]):
                    return _drop_control(_objects(doc[key], skipped), lenient, skipped), "json"
            return _drop_control([doc], lenient, skipped), "json"
        return json_lines(text, name, skipped)
    return _array(text, name, skipped), "json"


def _whole(text: str):
    """The document, strictly; else leniently (raw control characters inside strings), flagged."""
    try:
        return json.loads(text), False
    except ValueError:
        pass
    if not has_control(text):
        return None, False
    try:
        return _LENIENT.decode(text), True
    except ValueError:
        return None, False


def _drop_control(rows: list[dict], lenient: bool, skipped) -> list[dict]:
    """After a lenient parse, the rows whose values hold control characters are the odd ones."""
    if not lenient:
        return rows
    kept = []
    for r in rows:
        if _holds_control(r):
            skipped[CONTROL_REASON] += 1
        else:
            kept.append(r)
    return kept


def _holds_control(value) -> bool:
    if isinstance(value, str):
        return has_control(value)
    if isinstance(value, dict):
        return any(_holds_control(k) or _holds_control(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_control(v) for v in value)
    return False


def _array(text: str, name: str, skipped) -> list[dict]:
    rows: list[dict] = []
    pos, n = 1, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            skipped["JSON array not closed (truncated export?)"] += 1
            break
        if text[pos] == "]":
            break
        try:
            obj, pos = _STRICT.raw_decode(text, pos)
        except ValueError as exc:
            try:  # a raw control character inside a string: skip this element, keep the rest
                _obj, pos = _LENIENT.raw_decode(text, pos)
            except ValueError:
                if not rows:
                    raise SekiopsError(f"{name}: not a CSV or JSON export (invalid JSON: {exc})") from None
                skipped[f"invalid JSON after element {len(rows)} (truncated export?)"] += 1
                break
            skipped[CONTROL_REASON] += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            skipped["JSON element is not an object"] += 1
    return rows


def _objects(items: list, skipped) -> list[dict]:
    rows = []
    for obj in items:
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            skipped["JSON element is not an object"] += 1
    return rows


def json_lines(text: str, name: str, skipped) -> tuple[list[dict] | None, str]:
    rows: list[dict] = []
    invalid = odd = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if has_control(line):
            odd += 1
            skipped[CONTROL_REASON] += 1
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            invalid += 1
            skipped["invalid JSON line"] += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            skipped["JSON line is not an object"] += 1
    if not rows:
        if invalid:
            skipped.clear()
            return None, ""  # not JSON after all: let the other readers try, then fail clearly
        if not odd:
            raise SekiopsError(f"{name}: JSON with no objects in it")
    return rows, "json-lines"


def table_rows(tables: list, skipped) -> list[dict]:
    """Rows of the query API's tables: each row list zipped with its table's column names."""
    rows: list[dict] = []
    for table in tables:
        if not isinstance(table, dict):
            continue
        cols = table.get("columns") or table.get("Columns") or []
        names = [(c.get("name") or c.get("ColumnName") or f"col{i}") if isinstance(c, dict) else str(c)
                 for i, c in enumerate(cols)]
        for r in table.get("rows") or table.get("Rows") or []:
            if isinstance(r, list):
                rows.append(dict(zip(names, r, strict=False)))  # lenient: a short row lacks columns
            elif isinstance(r, dict):
                rows.append(r)
            else:
                skipped["Log Analytics row is not a list"] += 1
    return rows
