"""Read Sekiban's snapshot log events and container memory metrics from Azure exports.

What happened before an OOM is in two places: Sekiban's structured log lines (Application
Insights ``traces`` / Log Analytics ``AppTraces``; format reference section 7) and the container's
memory metrics (Azure Monitor). This module turns exports of both into pandas DataFrames.

Log exports understood (detected from the content, not the file name; gzip is unwrapped):

- CSV (comma, tab or semicolon; a UTF-8 BOM or UTF-16 Excel export is fine; a preamble of
  non-table lines before the header is skipped), e.g. the portal's "Export to CSV"
  (``timestamp [UTC]``, ``message``, ``customDimensions`` ...);
- a JSON array of objects, JSON lines, or the Log Analytics / Application Insights query API
  shape ``{"tables": [{"columns": [...], "rows": [...]}]}``;
- rows whose named values are in ``customDimensions`` / ``Properties`` (a JSON string or
  object, as Application Insights stores them, possibly with ``EventId``, ``EventName`` and
  ``{OriginalFormat}``), rows with only the rendered message, and Serilog CLEF / .NET JSON
  console lines (``@t``/``@m``, ``Timestamp``/``Message``/``State``).

One row per recognised event: ``time`` (UTC), ``eventId``, ``kind`` (``persist_streaming``,
``persist_legacy``, ``restore`` or the event's name in snake_case, e.g. ``state_restore_failed``),
``projectorName``, then every named value under its *placeholder* name -- the name the value has
in ``customDimensions`` -- so the columns are the same whether a row carried the rendered text or
only the dimensions. The rendered labels differ from the placeholder names in a few places:

==================  ===================  ==========================================
template            rendered label       column
==================  ===================  ==========================================
Persist (byte[])    ``Events=``          ``EventsProcessed``
Persist (byte[])    ``SafeVer=``         ``SafeVersion`` (also ``UnsafeVersion``)
Restore             ``Original=``        ``OriginalSize`` (also ``CompressedSize``)
Restore             ``PostSafeVer=``     ``PostSafeVersion`` (also ``PostUnsafeVersion``)
==================  ===================  ==========================================

Values become numbers where they are numbers; SortableUniqueIds (19+ digits) and timestamps such
as ``SafeThreshold`` stay text; ``(null)`` (what .NET logging renders for null) becomes missing.
Nothing in a file stops the parse: rows that are not Sekiban snapshot events, broken JSON lines
and unusable rows are counted in ``skipped`` with a reason. Only a file that is not a CSV or JSON
export at all (binary, no recognisable columns) raises :class:`~sekiops.errors.SekiopsError`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as _dt
import functools
import gzip
import io
import json
import re
import sys
from typing import Any, Callable, Iterable

from ..errors import SekiopsError

# --- Sekiban's events and templates --------------------------------------------------------------

#: Event ids this module charts -> (EventId name as Sekiban declares it, kind).
EVENTS: dict[int, tuple[str, str]] = {
    1002: ("StateRestoreSuccess", "state_restore_success"),
    1003: ("StateRestoreFailed", "state_restore_failed"),
    1008: ("BlobReadFailed", "blob_read_failed"),
    1012: ("StateNotFound", "state_not_found"),
    1017: ("PersistDetails", "persist"),  # persist_streaming or persist_legacy, by template
    1018: ("RestoreDetails", "restore"),
    1021: ("IntegrityGuardBlockedPersist", "integrity_guard_blocked_persist"),
    1022: ("IntegrityGuardBlockedRestore", "integrity_guard_blocked_restore"),
    1023: ("FullCatchUpInitiated", "full_catch_up_initiated"),
    1025: ("CatchUpBatchSummary", "catch_up_batch_summary"),
}
_ID_BY_NAME = {name.lower(): eid for eid, (name, _) in EVENTS.items()}

TEMPLATE_PERSIST_STREAMING = ("StreamingPersist: {ProjectorName}, BuildMs={BuildMs}, UploadMs={UploadMs}, "
                              "TempFileBytes={TempFileBytes}, PeakMemory={PeakMemory}, Events={Events}")
TEMPLATE_PERSIST_LEGACY = ("Persist: {ProjectorName}, Events={EventsProcessed}, SafeVer={SafeVersion}, "
                           "UnsafeVer={UnsafeVersion}, EnvelopeSize={EnvelopeSize}, SafeThreshold={SafeThreshold}")
TEMPLATE_RESTORE = ("Restore: {ProjectorName}, RecordEvents={RecordEvents}, StateDataLen={StateDataLen}, "
                    "Original={OriginalSize}, Compressed={CompressedSize}, PostSafeVer={PostSafeVersion}, "
                    "PostUnsafeVer={PostUnsafeVersion}")

#: (event id, kind, template). The first three are the format reference's (section 7); the others
#: are the messages Sekiban's MultiProjectionGrain logs under those ids (dcb-v10.x), used when a
#: row has only the rendered text. Rows carrying ``EventId`` or ``{OriginalFormat}`` in their
#: dimensions are recognised whatever the wording.
TEMPLATES: list[tuple[int, str, str]] = [
    (1017, "persist_streaming", TEMPLATE_PERSIST_STREAMING),
    (1017, "persist_legacy", TEMPLATE_PERSIST_LEGACY),
    (1018, "restore", TEMPLATE_RESTORE),
    (1002, "state_restore_success", "State restored: {ProjectorName}, Position: {Position}, Events: {Events}"),
    (1003, "state_restore_failed", "External store query failed: {ProjectorName}, Error: {Error}"),
    (1008, "blob_read_failed", "State data is null: {ProjectorName}, IsOffloaded: {IsOffloaded}, OffloadKey: {OffloadKey}"),
    (1008, "blob_read_failed", "State stream open failed: {ProjectorName}, IsOffloaded: {IsOffloaded}, OffloadKey: {OffloadKey}"),
    (1012, "state_not_found", "No state found in external store: {ProjectorName} v{ProjectorVersion}"),
    (1012, "state_not_found", "No state found for version: {ProjectorName}, Version: {Version}"),
    (1021, "integrity_guard_blocked_persist",
     "BLOCKED persist: {ProjectorName} - safeVersion regression detected. Current={CurrentSafeVersion}, "
     "LastGood={LastGoodSafeVersion}. State will NOT be saved."),
]
# 1025's template lists ~25 Key={Key} pairs and grows between releases: matched by its head, then
# every ``Key=value`` pair is taken.
_CATCH_UP_SUMMARY = re.compile(r"^\s*\[(?P<ProjectorName>[^\]]*)\]\s*Catch-up batch summary\.\s*(?P<rest>.*)$", re.S)

#: Named values in template order (the column order of the output).
KNOWN_VALUES = ["BuildMs", "UploadMs", "TempFileBytes", "PeakMemory", "Events", "EventsProcessed", "SafeVersion",
                "UnsafeVersion", "EnvelopeSize", "SafeThreshold", "RecordEvents", "StateDataLen", "OriginalSize",
                "CompressedSize", "PostSafeVersion", "PostUnsafeVersion"]
#: Values kept as text even when they look numeric.
TEXT_VALUES = {"SafeThreshold", "Position", "OffloadKey", "Error", "ProjectorVersion", "Version", "StartPosition",
               "CurrentPosition", "LastAppliedPosition", "TargetPosition", "EventTypeSummary"}

_META_DIMS = {"eventid", "eventname", "categoryname", "category", "originalformat", "{originalformat}",
              "loglevel", "severitylevel", "level", "exception", "scope", "scopes", "spanid", "traceid",
              "parentid", "aspnetcoreenvironment", "processid", "threadid", "message", "state",
              "developermode", "instrumentationkey", "sourcecontext", "loggername", "requestid", "requestpath",
              "connectionid", "actionid", "actionname", "spanid", "parentspanid"}


def snake_case(name: str) -> str:
    """``StateRestoreFailed`` -> ``state_restore_failed`` (the ``kind`` of an event without a template)."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return re.sub(r"[^0-9a-zA-Z]+", "_", s).strip("_").lower()


# --- message templates ------------------------------------------------------------------------

_HOLE = re.compile(r"\{\{|\}\}|\{([@$]?)([^{}:,]+?)(?:,[^{}:]*)?(?::[^{}]*)?\}")


@functools.lru_cache(maxsize=1024)
def template_names(template: str) -> tuple[str, ...]:
    """Placeholder names of a Microsoft.Extensions.Logging message template, in order."""
    return tuple(m.group(2).strip() for m in _HOLE.finditer(template) if m.group(2))


def render_template(template: str, values: dict | list | tuple) -> str:
    """Render a message template as Microsoft.Extensions.Logging does (invariant culture).

    ``values`` is a mapping by placeholder name, or a sequence in placeholder order. None renders
    as ``(null)``, booleans as ``True``/``False``.
    """
    names = template_names(template)
    if not isinstance(values, dict):
        values = dict(zip(names, values))
    out, pos = [], 0
    for m in _HOLE.finditer(template):
        out.append(template[pos:m.start()])
        if m.group(0) in ("{{", "}}"):
            out.append(m.group(0)[0])
        else:
            out.append(_render_value(values.get(m.group(2).strip())))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out)


def _render_value(v) -> str:
    if v is None:
        return "(null)"
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):
        return repr(v) if v != int(v) or abs(v) >= 1e15 else str(int(v))
    return str(v)


class _Template:
    def __init__(self, template: str):
        parts, names, pos = [], [], 0
        for m in _HOLE.finditer(template):
            parts.append(re.escape(template[pos:m.start()]))
            if m.group(0) in ("{{", "}}"):
                parts.append(re.escape(m.group(0)[0]))
            else:
                parts.append("(.*?)")
                names.append(m.group(2).strip())
            pos = m.end()
        parts.append(re.escape(template[pos:]))
        body = "".join(parts).rstrip()
        first = _HOLE.search(template)
        self.head = (template[:first.start()] if first else template).strip()  # cheap pre-check
        self.names = names
        self.exact = re.compile(r"^\s*" + body + r"\s*$", re.S)
        self.inner = re.compile(r"(?<![A-Za-z])" + body + r"\s*$", re.S)  # message with a prefix

    def match(self, message: str) -> dict | None:
        if self.head and self.head.replace("{{", "{").replace("}}", "}") not in message:
            return None
        m = self.exact.match(message) or self.inner.search(message)
        if m is None:
            return None
        return {n: v for n, v in zip(self.names, m.groups())}


_BUILTIN = [(eid, kind, tpl, _Template(tpl)) for eid, kind, tpl in TEMPLATES]
_BY_TEXT = {" ".join(tpl.split()): (eid, kind) for eid, kind, tpl in TEMPLATES}
_COMPILED: dict[str, _Template] = {}
_PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|[^,\s]*)")


def _compiled(template: str) -> _Template:
    t = _COMPILED.get(template)
    if t is None:
        if len(_COMPILED) > 256:
            _COMPILED.clear()
        t = _COMPILED[template] = _Template(template)
    return t


# --- values -----------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def to_value(v: Any, name: str = "") -> Any:
    """A named value as logged, made a number where it is one (SortableUniqueIds stay text)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if abs(v) < 10**18 or name not in TEXT_VALUES else str(v)
    if isinstance(v, float):
        return v
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    s = str(v).strip()
    if s == "" or s == "(null)" or s.lower() == "null":
        return None
    if name in TEXT_VALUES:
        return s
    if _INT.fullmatch(s):
        return int(s) if len(s.lstrip("+-")) <= 18 else s  # 19+ digits: an id, not a quantity
    if _FLOAT.fullmatch(s):
        return float(s)
    if s in ("True", "False", "true", "false"):
        return s.lower() == "true"
    return s


def _event_id(v) -> int | None:
    if v is None:
        return None
    if isinstance(v, dict):
        for k in ("Id", "id", "ID"):
            if k in v:
                return _event_id(v[k])
        for k in ("Name", "name"):
            if k in v:
                return _ID_BY_NAME.get(str(v[k]).lower())
        return None
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return int(v)
    s = str(v).strip()
    if s.startswith("{"):
        try:
            return _event_id(json.loads(s))
        except ValueError:
            return None
    if re.fullmatch(r"\d{1,9}", s):
        return int(s)
    return _ID_BY_NAME.get(s.lower())


# --- times ------------------------------------------------------------------------------------

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(v) -> _dt.datetime | None:
    """A timestamp as Azure exports write it, as an aware UTC datetime (None when unreadable)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, _dt.datetime):
        return v if v.tzinfo else v.replace(tzinfo=_dt.timezone.utc)
    if isinstance(v, (int, float)):  # epoch seconds or milliseconds
        try:
            x = float(v)
            return _dt.datetime.fromtimestamp(x / 1000 if x > 1e11 else x, _dt.timezone.utc)
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
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


# --- reading exports --------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _norm(key) -> str:
    """Column name for matching: ``timestamp [UTC]`` -> ``timestamp``, ``Log_s`` -> ``logs``."""
    k = re.sub(r"\s*\[[^\]]*\]\s*$", "", str(key))
    return re.sub(r"[^0-9a-z{}]", "", k.lower())


@dataclasses.dataclass
class _Loaded:
    rows: list[dict]
    fmt: str
    skipped: collections.Counter


def _read_bytes(source) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "<bytes>"
    if hasattr(source, "read"):
        data = source.read()
        return (data.encode() if isinstance(data, str) else data), getattr(source, "name", "<stream>")
    path = str(source)
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    with open(path, "rb") as f:
        return f.read(), path


def _decode(data: bytes, name: str) -> str:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SekiopsError(f"{name}: gzip file cannot be read ({exc})") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise SekiopsError(f"{name}: not a CSV or JSON export (bad UTF-16 text)") from None
    if b"\x00" in data[:65536]:
        raise SekiopsError(f"{name}: not a CSV or JSON export (binary data)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")  # an Excel "CSV" in the Windows code page
        except UnicodeDecodeError:
            raise SekiopsError(f"{name}: not a CSV or JSON export (not UTF-8 text)") from None


def load_export(source, recognise: Callable[[Iterable[str]], bool], what: str) -> _Loaded:
    """Rows (dicts) of a CSV / JSON / JSON lines / Log Analytics export.

    ``recognise(normalised column names)`` says whether a header or an object's keys look like the
    export asked for; CSV lines before the first recognised header are a preamble and skipped.
    """
    data, name = _read_bytes(source)
    text = _decode(data, name)
    stripped = text.lstrip()
    if not stripped:
        raise SekiopsError(f"{name}: empty file; expected a CSV or JSON export of {what}")
    skipped: collections.Counter = collections.Counter()
    if stripped[0] in "[{":
        rows, fmt = _json_rows(stripped, name, skipped)
        if rows is not None:
            keys = set()
            for r in rows[:200]:
                keys.update(_norm(k) for k in r)
            if not recognise(keys):
                raise SekiopsError(f"{name}: JSON without {what} columns (found {', '.join(sorted(keys)[:8]) or 'none'})")
            return _Loaded(rows, fmt, skipped)
    return _csv_rows(text, name, recognise, what, skipped)


def _json_rows(text: str, name: str, skipped) -> tuple[list[dict] | None, str]:
    dec = json.JSONDecoder()
    if text[0] == "{":
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            tables = doc.get("tables") or doc.get("Tables")
            if isinstance(tables, list):
                return _table_rows(tables, skipped), "log-analytics-json"
            for key in ("value", "rows", "records", "data", "items", "events"):
                if isinstance(doc.get(key), list) and all(isinstance(x, dict) for x in doc[key][:50]):
                    return _objects(doc[key], skipped), "json"
            return [doc], "json"
        return _json_lines(text, name, skipped)
    # a JSON array, element by element so that a truncated export still yields its rows
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
            obj, pos = dec.raw_decode(text, pos)
        except ValueError as exc:
            if not rows:
                raise SekiopsError(f"{name}: not a CSV or JSON export (invalid JSON: {exc})") from None
            skipped["invalid JSON after element %d (truncated export?)" % len(rows)] += 1
            break
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            skipped["JSON element is not an object"] += 1
    return rows, "json"


def _objects(items: list, skipped) -> list[dict]:
    rows = []
    for obj in items:
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            skipped["JSON element is not an object"] += 1
    return rows


def _json_lines(text: str, name: str, skipped) -> tuple[list[dict] | None, str]:
    rows: list[dict] = []
    bad = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad += 1
            skipped["invalid JSON line"] += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            skipped["JSON line is not an object"] += 1
    if not rows:
        if bad:
            skipped.clear()
            return None, ""  # not JSON after all: let the CSV reader try, then fail clearly
        raise SekiopsError(f"{name}: JSON with no objects in it")
    return rows, "json-lines"


def _table_rows(tables: list, skipped) -> list[dict]:
    rows: list[dict] = []
    for table in tables:
        if not isinstance(table, dict):
            continue
        cols = table.get("columns") or table.get("Columns") or []
        names = [(c.get("name") or c.get("ColumnName") or f"col{i}") if isinstance(c, dict) else str(c)
                 for i, c in enumerate(cols)]
        for r in table.get("rows") or table.get("Rows") or []:
            if isinstance(r, list):
                rows.append(dict(zip(names, r)))
            elif isinstance(r, dict):
                rows.append(r)
            else:
                skipped["Log Analytics row is not a list"] += 1
    return rows


def _csv_rows(text: str, name: str, recognise, what: str, skipped) -> _Loaded:
    lines = text.splitlines(keepends=True)
    head_at = None
    dialect = None
    for i, line in enumerate(lines[:50]):
        if not line.strip():
            continue
        delim = max(",\t;", key=lambda d: _count_outside_quotes(line, d))
        if _count_outside_quotes(line, delim) == 0 and not recognise([_norm(line.strip())]):
            continue
        try:
            cells = next(csv.reader([line], delimiter=delim))
        except csv.Error:
            continue
        if recognise([_norm(c) for c in cells]):
            head_at, dialect = i, delim
            break
    if head_at is None:
        raise SekiopsError(f"{name}: not a CSV or JSON export of {what} (no recognised header in the first lines)")
    if head_at:
        skipped["preamble line before the CSV header"] += sum(1 for ln in lines[:head_at] if ln.strip())
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
        rows.append(dict(zip(header, cells)))
    return _Loaded(rows, "csv", skipped)


def _count_outside_quotes(line: str, ch: str) -> int:
    n, quoted = 0, False
    for c in line:
        if c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            n += 1
    return n


# --- log rows -> events -----------------------------------------------------------------------

_MESSAGE_COLS = ["message", "renderedmessage", "formattedmessage", "m", "body", "msg", "log", "logs",
                 "logmessage", "logmessages"]
_DIMS_COLS = ["customdimensions", "properties", "state", "attributes", "customdimensionss", "propertiess"]
_TIME_COLS = ["timestamp", "timegenerated", "time", "t", "timeutc", "eventtime", "datetime", "date",
              "timestamps", "timegenerateds"]
_INSTANCE_COLS = ["cloudroleinstance", "approleinstance", "roleinstance", "replicaname", "replicanames",
                  "podname", "containergroupname", "containergroupnames"]
_EVENT_COLS = ["eventid", "eventids", "eventname"]
_TEMPLATE_COLS = ["{originalformat}", "originalformat", "mt", "messagetemplate"]
_CONSOLE_HEADER = re.compile(r"^\s*(trce|dbug|info|warn|fail|crit):\s*([\w.`+<>]+)\[(\d+)\]\s*$")
_KNOWN_NAMES = set(KNOWN_VALUES) | {"ProjectorName"}
for _e, _k, _t in TEMPLATES:
    _KNOWN_NAMES.update(template_names(_t))
_KNOWN_NORM = {_norm(n): n for n in _KNOWN_NAMES}


def _recognise_logs(cols: Iterable[str]) -> bool:
    cols = set(cols)
    return bool(cols & set(_MESSAGE_COLS + _DIMS_COLS + _TEMPLATE_COLS + _EVENT_COLS)) or "projectorname" in cols


def _pick(row: dict, index: dict, candidates: list[str]):
    for c in candidates:
        k = index.get(c)
        if k is not None:
            v = row.get(k)
            if v is not None and v != "":
                return v
    return None


def _dims_of(value, reasons) -> dict:
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("{"):
            try:
                obj = json.loads(s)
            except ValueError:
                reasons.append("customDimensions is not valid JSON")
                return {}
            if isinstance(obj, dict):
                return obj
    reasons.append("customDimensions is not a JSON object")
    return {}


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


class _LogParser:
    def __init__(self):
        self.reasons: collections.Counter = collections.Counter()
        self.events: list[dict] = []
        self.pending_console: tuple[int, str] | None = None

    def skip(self, reason: str) -> None:
        self.reasons[reason] += 1

    def feed(self, row: dict) -> None:
        try:
            event = self._event(row)
        except Exception as exc:  # noqa: BLE001 - a row must never stop the parse; it is counted
            self.skip(f"unusable row ({type(exc).__name__})")
            return
        if event is not None:
            self.events.append(event)

    def _event(self, row: dict, outer_time=None) -> dict | None:
        index = {}
        for k in row:
            index.setdefault(_norm(k), k)
        notes: list[str] = []
        message = _pick(row, index, _MESSAGE_COLS)
        if isinstance(message, dict):  # a JSON console line already parsed
            return self._event(message, outer_time)
        message = None if message is None else str(message)
        dims = {}
        for c in _DIMS_COLS:
            if c in index:
                dims.update(_dims_of(row[index[c]], notes))
        time = parse_time(_pick(row, index, _TIME_COLS)) or outer_time
        # a .NET JSON console / CLEF line inside a log column
        if message and message.lstrip().startswith("{") and message.rstrip().endswith("}"):
            try:
                inner = json.loads(message)
            except ValueError:
                inner = None
            if isinstance(inner, dict) and _recognise_logs(_norm(k) for k in inner):
                return self._event(inner, time)
        clef = any(str(k).startswith("@") for k in row)
        for k, v in row.items():  # named values projected into their own columns (or CLEF properties)
            nk = _norm(k)
            if nk in _KNOWN_NORM and _KNOWN_NORM[nk] not in dims:
                dims[_KNOWN_NORM[nk]] = v
            elif clef and not str(k).startswith("@") and k not in dims:
                dims[k] = v
        dindex = {_norm(k): k for k in dims}
        eid = _event_id(_pick(row, index, _EVENT_COLS))
        if eid is None:
            eid = _event_id(_pick(dims, dindex, ["eventid", "eventname"]))
        template = _pick(dims, dindex, _TEMPLATE_COLS) or _pick(row, index, _TEMPLATE_COLS)
        if not message and not dims:
            self.skip(notes[0] if notes else "no message or customDimensions")
            return None
        if message and eid is None:
            m = _CONSOLE_HEADER.match(message)
            if m:
                self.pending_console = (int(m.group(3)), m.group(2))
                self.skip("console header line (event id carried to the next line)")
                return None
        if eid is None and self.pending_console is not None:
            eid = self.pending_console[0]
        self.pending_console = None

        kind = None
        values: dict[str, Any] = {}
        matched = None
        if message:
            matched = self._match_builtin(message, eid)
        if matched is not None:
            t_eid, kind, values = matched
            if eid is None:
                eid = t_eid
        elif template is not None:
            tkey = " ".join(str(template).split())
            if tkey in _BY_TEXT:
                t_eid, kind = _BY_TEXT[tkey]
                eid = eid if eid is not None else t_eid
            if message:
                got = _compiled(str(template)).match(message)
                if got is not None:
                    values = got
        if eid is None and message:
            m = _CATCH_UP_SUMMARY.match(message)
            if m:
                eid, kind = 1025, "catch_up_batch_summary"
        if eid is None:
            self.skip(notes[0] if notes else "not a Sekiban snapshot event")
            return None
        # event ids are per category, not global: 1003 from another library is not Sekiban's
        category = _pick(dims, dindex, ["categoryname", "category", "sourcecontext"]) or \
            _pick(row, index, ["categoryname", "category", "sourcecontext"])
        if (category and "sekiban" not in str(category).lower() and matched is None and kind is None
                and not (template is not None and " ".join(str(template).split()) in _BY_TEXT)):
            self.skip("not a Sekiban snapshot event")
            return None
        if eid not in EVENTS:
            self.skip(f"other event id {eid}" + (f" ({EVENTS_OTHER.get(eid)})" if eid in EVENTS_OTHER else ""))
            return None
        if eid == 1025 and message:
            m = _CATCH_UP_SUMMARY.match(message)
            if m:
                values.setdefault("ProjectorName", m.group("ProjectorName"))
                for k, v in _PAIR.findall(m.group("rest")):
                    values.setdefault(k, v.strip('"'))
        # dimensions are authoritative; the rendered text fills what they lack
        # with a known template only its placeholders are named values (scopes and enrichers are not)
        allowed = set(template_names(str(template))) if template else None
        if matched is not None:
            allowed = (allowed or set()) | set(values)
        merged: dict[str, Any] = {}
        for k, v in dims.items():
            if _norm(k) in _META_DIMS or str(k).startswith("@") or _norm(k) in _TEMPLATE_COLS:
                continue
            if allowed is not None and str(k) not in allowed and str(k) not in _KNOWN_NAMES:
                continue
            merged[str(k)] = v
        for k, v in values.items():
            if merged.get(k) in (None, ""):
                merged[k] = v
        if not values and not dims and message and eid is not None:
            for k, v in _PAIR.findall(message):  # a known event in unknown wording: take Key=value pairs
                merged.setdefault(k, v.strip('"'))
        if kind is None or kind == "persist":
            kind = self._kind(eid, template, merged)
        projector = merged.pop("ProjectorName", None)
        if projector is None:
            projector = _pick(row, index, ["projectorname", "projector"])
        event = {"time": time, "eventId": eid, "kind": kind,
                 "projectorName": None if projector in (None, "", "(null)") else str(projector).strip()}
        for k, v in merged.items():
            event[k] = to_value(v, k)
        instance = _pick(row, index, _INSTANCE_COLS)
        if instance is not None:
            event["instance"] = str(instance)
        if message:
            event["message"] = message
        return event

    def _match_builtin(self, message: str, eid: int | None):
        for t_eid, kind, _tpl, tpl in _BUILTIN:
            if eid is not None and eid != t_eid:
                continue
            got = tpl.match(message)
            if got is not None:
                return t_eid, kind, got
        return None

    @staticmethod
    def _kind(eid: int, template, values: dict) -> str:
        if eid == 1017:
            t = str(template or "")
            if "StreamingPersist" in t or "BuildMs" in values or "TempFileBytes" in values:
                return "persist_streaming"
            if t.lstrip().startswith("Persist") or "EnvelopeSize" in values or "SafeVersion" in values:
                return "persist_legacy"
            return "persist_details"
        return EVENTS[eid][1]


#: Event ids Sekiban declares that this module does not chart (named in the skip reasons).
EVENTS_OTHER = {1001: "ActivationStarted", 1004: "CatchUpStarted", 1005: "CatchUpCompleted",
                1006: "PersistenceCompleted", 1007: "UnhealthyActivation", 1009: "DeactivationStarted",
                1010: "QueryRejected", 1011: "NoExternalStore", 1013: "StateValidationFailed",
                1014: "EmptyStatePersistBlocked", 1015: "DeactivationPersistFailed",
                1016: "DeactivationPersistCancelled"}

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
    parser = _LogParser()
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
    """Parse an Application Insights / Log Analytics export (path, ``-``, bytes or binary stream)."""
    loaded = load_export(source, _recognise_logs, "log rows (message / customDimensions)")
    return parse_log_records(loaded.rows, include_message, loaded.fmt, loaded.skipped)


def read_log_events(source, include_message: bool = False):
    """The events DataFrame alone; ``frame.attrs`` carries ``skipped`` and ``skippedReasons``."""
    result = parse_log_file(source, include_message)
    result.frame.attrs.update({"skipped": result.skipped, "skippedReasons": result.skipped_reasons,
                               "sourceFormat": result.source_format})
    return result.frame


# --- container memory metrics -----------------------------------------------------------------

MEMORY_COLUMNS = ["time", "working_set_bytes", "memory_percent", "restarts"]
_VALUE_COLS = ["maximum", "max", "average", "avg", "mean", "value", "val", "total", "sum", "countervalue",
               "minimum", "min", "last"]
_METRIC_NAME_COLS = ["metricname", "metric", "name", "countername", "metricnames", "metricid"]
_REPLICA_COLS = ["replica", "replicaname", "replicanames", "podname", "instance", "roleinstance",
                 "cloudroleinstance", "revisionname", "revisionnames", "computer"]
_TIME_MEM_COLS = ["timegenerated", "timestamp", "time", "timeutc", "t", "datetime", "date", "timegenerateds",
                  "timestamps", "timegeneratedutc", "startofinterval"]
_UNIT = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "bytes": 1, "b": 1}


def _metric_kind(name: str) -> str | None:
    n = _norm(name)
    if "restart" in n:
        return "restarts"
    if "workingset" in n or n in ("rss", "rssbytes", "memoryrss", "memoryrssbytes", "memorybytes", "memoryused",
                                  "memoryusedbytes", "memoryusage", "memoryusagebytes"):
        return "working_set_bytes"
    if "memory" in n and ("percent" in n or "utilization" in n or "utilisation" in n):
        return "memory_percent"
    if n in ("memorypercentage", "memorypercent", "mempercent"):
        return "memory_percent"
    return None


def _unit_scale(name: str) -> float:
    """Bytes per unit named in a column: ``Memory (MiB)``, ``WorkingSetMB``, ``memory_gb`` ..."""
    text = str(name)
    m = re.search(r"(?:^|[^a-z])(kib|mib|gib|kb|mb|gb)(?:[^a-z]|$)", text.lower())
    if m is None:
        m = re.search(r"(KiB|MiB|GiB|KB|kB|MB|GB)$", text.strip())
    return _UNIT[m.group(1).lower()] if m else 1.0


def _number(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    s = str(v).strip().replace("\u00a0", "")
    if not s or s.lower() in ("null", "(null)", "nan", "-"):
        return None
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = s.rstrip("%").strip()
    try:
        return float(s)
    except ValueError:
        return None


def _recognise_memory(cols: Iterable[str]) -> bool:
    cols = set(cols)
    has_time = bool(cols & set(_TIME_MEM_COLS)) or any(c.startswith("time") for c in cols)
    has_value = any(_metric_kind(c) for c in cols) or bool(cols & set(_VALUE_COLS)) \
        or bool(cols & set(_METRIC_NAME_COLS)) or "timeseries" in cols
    return (has_time and has_value) or "timeseries" in cols


def _rest_metric_rows(rows: list[dict]) -> list[dict] | None:
    """Azure Monitor REST ``metrics`` response: value[].name.value + timeseries[].data[]."""
    out = []
    found = False
    for item in rows:
        if not isinstance(item.get("timeseries"), list):
            continue
        found = True
        name = item.get("name")
        name = name.get("value") if isinstance(name, dict) else name
        for ts in item["timeseries"]:
            for point in (ts or {}).get("data") or []:
                rec = {"time": point.get("timeStamp") or point.get("timestamp"), "metric": name}
                for agg in ("maximum", "average", "total", "minimum", "count"):
                    if agg in point:
                        rec[agg] = point[agg]
                out.append(rec)
    return out if found else None


def parse_container_memory(source) -> ParseResult:
    """Container memory over time from an Azure Monitor / Log Analytics export.

    Wide exports (a time column plus ``WorkingSetBytes`` / ``MemoryPercentage`` / ``RestartCount``
    columns, any spelling) and long ones (``MetricName`` + ``Average``/``Maximum``..., as the
    ``AzureMetrics`` table or the metrics REST API give them) both work. When the only value is an
    unnamed ``Average``/``Maximum``/``Value`` column, values above 100 are taken as bytes and the
    rest as percent (said in ``notes``). Units in a column name (``(MB)``, ``GiB``) are applied:
    kB/MB/GB are decimal, KiB/MiB/GiB binary. For memory, ``Maximum`` is preferred over
    ``Average`` when a long export has both (the peak is what the OOM killer sees); for restarts
    ``Total``. Frame columns: ``time``, ``working_set_bytes``, ``memory_percent``, ``restarts``
    (and ``replica`` when the export has a replica/instance dimension).
    """
    import pandas as pd

    loaded = load_export(source, _recognise_memory, "container memory metrics (time + working set / percent)")
    rows, skipped, notes = loaded.rows, loaded.skipped, []
    rest = _rest_metric_rows(rows)
    if rest is not None:
        rows = rest
    keys: list[str] = []
    for r in rows[:500]:
        for k in r:
            if k not in keys:
                keys.append(k)
    index = {}
    for k in keys:
        index.setdefault(_norm(k), k)
    time_key = next((index[c] for c in _TIME_MEM_COLS if c in index), None) or \
        next((k for k in keys if _norm(k).startswith("time")), None)
    if time_key is None:
        raise SekiopsError("container memory export has no time column (TimeGenerated, timestamp, time ...)")
    metric_key = next((index[c] for c in _METRIC_NAME_COLS if c in index), None)
    replica_key = next((index[c] for c in _REPLICA_COLS if c in index), None)
    value_keys = [index[c] for c in _VALUE_COLS if c in index]
    wide = {k: _metric_kind(k) for k in keys if _metric_kind(k)}
    samples: dict[tuple, dict] = {}
    order: list[tuple] = []
    guessed = False

    def slot(t, rep) -> dict:
        key = (t, rep)
        if key not in samples:
            samples[key] = {"time": t, "working_set_bytes": None, "memory_percent": None, "restarts": None}
            if replica_key is not None:
                samples[key]["replica"] = rep
            order.append(key)
        return samples[key]

    for r in rows:
        t = parse_time(r.get(time_key))
        if t is None:
            skipped["row without a readable time"] += 1
            continue
        rep = r.get(replica_key) if replica_key else None
        got = False
        if metric_key is not None and value_keys and not wide:
            kind = _metric_kind(str(r.get(metric_key) or ""))
            if kind is None:
                skipped["other metric"] += 1
                continue
            prefer = ["total", "sum", "maximum", "max", "average", "avg"] if kind == "restarts" else value_keys
            for vk in [index[c] for c in prefer if c in index] + value_keys:
                v = _number(r.get(vk))
                if v is not None:
                    slot(t, rep)[kind] = v * (_unit_scale(r.get(metric_key)) if kind == "working_set_bytes" else 1)
                    got = True
                    break
        elif wide:
            for k, kind in wide.items():
                v = _number(r.get(k))
                if v is not None:
                    slot(t, rep)[kind] = v * (_unit_scale(k) if kind == "working_set_bytes" else 1)
                    got = True
        elif value_keys:
            v = _number(r.get(value_keys[0]))
            if v is not None:
                guessed = True
                kind = "working_set_bytes" if v > 100 else "memory_percent"
                slot(t, rep)[kind] = v * _unit_scale(value_keys[0])
                got = True
        if not got:
            skipped["row without a memory value"] += 1
    if guessed:
        notes.append(f"column {value_keys[0]!r} has no metric name: values > 100 taken as bytes, others as percent")
    cols = MEMORY_COLUMNS + (["replica"] if replica_key is not None else [])
    frame = pd.DataFrame.from_records([samples[k] for k in order], columns=cols)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    for c in ("working_set_bytes", "memory_percent", "restarts"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    frame.attrs.update({"skipped": sum(skipped.values()), "skippedReasons": dict(skipped), "notes": notes})
    return ParseResult(frame=frame, rows=len(loaded.rows), skipped=sum(skipped.values()),
                       skipped_reasons=dict(skipped), source_format=loaded.fmt, notes=notes)
