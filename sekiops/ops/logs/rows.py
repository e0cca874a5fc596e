"""One export row -> one Sekiban event (or a counted skip), whatever the row carries.

A row may carry the rendered message, the named values in ``customDimensions`` / ``Properties``
(a JSON string or an object, as Application Insights and Log Analytics store them, possibly with
``EventId``, ``EventName``, ``CategoryName`` and ``{OriginalFormat}``), values projected into
columns of their own, a Serilog CLEF or .NET JSON console line inside a log column, or a .NET
console header line whose event id belongs to the next line. Dimensions are authoritative; the
rendered text fills what they lack. :mod:`.sekiban` says which events and wordings are Sekiban's.
"""

from __future__ import annotations

import collections
import json
from typing import Any

from . import sekiban as S
from .source import norm
from .text_export import CONSOLE_HEADER
from .times import parse_time

MESSAGE_COLS = ["message", "renderedmessage", "formattedmessage", "m", "body", "msg", "log", "logs",
                "logmessage", "logmessages"]
DIMS_COLS = ["customdimensions", "properties", "state", "attributes", "customdimensionss", "propertiess"]
TIME_COLS = ["timestamp", "timegenerated", "time", "t", "timeutc", "eventtime", "datetime", "date",
             "timestamps", "timegenerateds"]
INSTANCE_COLS = ["cloudroleinstance", "approleinstance", "roleinstance", "replicaname", "replicanames",
                 "podname", "containergroupname", "containergroupnames"]
EVENT_COLS = ["eventid", "eventids", "eventname"]
TEMPLATE_COLS = ["{originalformat}", "originalformat", "mt", "messagetemplate"]
META_DIMS = {"eventid", "eventname", "categoryname", "category", "originalformat", "{originalformat}",
             "loglevel", "severitylevel", "level", "exception", "scope", "scopes", "spanid", "traceid",
             "parentid", "aspnetcoreenvironment", "processid", "threadid", "message", "state",
             "developermode", "instrumentationkey", "sourcecontext", "loggername", "requestid", "requestpath",
             "connectionid", "actionid", "actionname", "parentspanid"}
KNOWN_NAMES = set(S.KNOWN_VALUES) | {"ProjectorName"}
for _e, _k, _t in S.TEMPLATES:
    KNOWN_NAMES.update(S.template_names(_t))
_KNOWN_NORM = {norm(n): n for n in KNOWN_NAMES}


def recognise_logs(cols) -> bool:
    """Column names (normalised) that a log export has: a message, dimensions, a template or an id."""
    cols = set(cols)
    return bool(cols & set(MESSAGE_COLS + DIMS_COLS + TEMPLATE_COLS + EVENT_COLS)) or "projectorname" in cols


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


class LogParser:
    """Feed rows in export order (``feed``); ``events`` and ``reasons`` (skip counts) accumulate."""

    def __init__(self):
        self.reasons: collections.Counter = collections.Counter()
        self.events: list[dict] = []
        self.pending_console: int | None = None  # event id of a console header line, for the next line
        self._console_pending = False

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
        index: dict[str, str] = {}
        for k in row:
            index.setdefault(norm(k), k)
        notes: list[str] = []
        message = _pick(row, index, MESSAGE_COLS)
        if isinstance(message, dict):  # a JSON console line already parsed
            return self._event(message, outer_time)
        message = None if message is None else str(message)
        dims = {}
        for c in DIMS_COLS:
            if c in index:
                dims.update(_dims_of(row[index[c]], notes))
        time = parse_time(_pick(row, index, TIME_COLS)) or outer_time
        # a .NET JSON console / CLEF line inside a log column
        if message and message.lstrip().startswith("{") and message.rstrip().endswith("}"):
            try:
                inner = json.loads(message)
            except ValueError:
                inner = None
            if isinstance(inner, dict) and recognise_logs(norm(k) for k in inner):
                return self._event(inner, time)
        clef = any(str(k).startswith("@") for k in row)
        for k, v in row.items():  # named values projected into their own columns (or CLEF properties)
            nk = norm(k)
            if nk in _KNOWN_NORM and _KNOWN_NORM[nk] not in dims:
                dims[_KNOWN_NORM[nk]] = v
            elif clef and not str(k).startswith("@") and k not in dims:
                dims[k] = v
        dindex = {norm(k): k for k in dims}
        eid = S.event_id(_pick(row, index, EVENT_COLS))
        if eid is None:
            eid = S.event_id(_pick(dims, dindex, ["eventid", "eventname"]))
        template = _pick(dims, dindex, TEMPLATE_COLS) or _pick(row, index, TEMPLATE_COLS)
        if not message and not dims:
            self.skip(notes[0] if notes else "no message or customDimensions")
            return None
        if message and eid is None:
            m = CONSOLE_HEADER.match(message)
            if m:
                self.pending_console, self._console_pending = int(m.group(3)) or None, True
                self.skip("console header line (event id carried to the next line)")
                return None
        if eid is None and self._console_pending:
            eid = self.pending_console
        self.pending_console, self._console_pending = None, False
        return self._recognised(row, index, message, dims, dindex, eid, template, time, notes)

    def _recognised(self, row, index, message, dims, dindex, eid, template, time, notes) -> dict | None:
        kind = None
        values: dict[str, Any] = {}
        matched = S.match_builtin(message, eid) if message else None
        if matched is not None:
            t_eid, kind, values = matched
            if eid is None:
                eid = t_eid
        elif template is not None:
            tkey = " ".join(str(template).split())
            if tkey in S.BY_TEXT:
                t_eid, kind = S.BY_TEXT[tkey]
                eid = eid if eid is not None else t_eid
            if message:
                got = S.compiled(str(template)).match(message)
                if got is not None:
                    values = got
        if eid is None and kind is None and message:
            m = S.CATCH_UP_SUMMARY.match(message)
            if m:
                eid, kind = 1025, "catch_up_batch_summary"
        if eid is None and kind is None:
            self.skip(notes[0] if notes else "not a Sekiban snapshot event")
            return None
        # event ids are per category, not global: 1003 from another library is not Sekiban's
        category = _pick(dims, dindex, ["categoryname", "category", "sourcecontext"]) or \
            _pick(row, index, ["categoryname", "category", "sourcecontext"])
        if category and "sekiban" not in str(category).lower() and kind is None:
            self.skip("not a Sekiban snapshot event")
            return None
        if eid not in S.EVENTS and kind not in S.KINDS_WITHOUT_ID:
            self.skip(f"other event id {eid}" + (f" ({S.EVENTS_OTHER[eid]})" if eid in S.EVENTS_OTHER else ""))
            return None
        if eid == 1025 and message:
            m = S.CATCH_UP_SUMMARY.match(message)
            if m:
                values.setdefault("ProjectorName", m.group("ProjectorName"))
                for k, v in S.PAIR.findall(m.group("rest")):
                    values.setdefault(k, v.strip('"'))
        merged = self._merge(dims, values, template, matched, message)
        if kind is None or kind == "persist":
            kind = S.persist_kind(template, merged) if eid == 1017 else S.EVENTS[eid][1]
        projector = merged.pop("ProjectorName", None)
        if projector is None:
            projector = _pick(row, index, ["projectorname", "projector"])
        event = {"time": time, "eventId": eid, "kind": kind,
                 "projectorName": None if projector in (None, "", "(null)") else str(projector).strip()}
        for k, v in merged.items():
            event[k] = S.to_value(v, k)
        instance = _pick(row, index, INSTANCE_COLS)
        if instance is not None:
            event["instance"] = str(instance)
        if message:
            event["message"] = message
        return event

    @staticmethod
    def _merge(dims: dict, values: dict, template, matched, message) -> dict:
        """Dimensions first (minus metadata); with a known template only its placeholders are named
        values (scopes and enrichers are not); the rendered text fills what the dimensions lack."""
        allowed = set(S.template_names(str(template))) if template else None
        if matched is not None:
            allowed = (allowed or set()) | set(values)
        merged: dict[str, Any] = {}
        for k, v in dims.items():
            if norm(k) in META_DIMS or str(k).startswith("@") or norm(k) in TEMPLATE_COLS:
                continue
            if allowed is not None and str(k) not in allowed and str(k) not in KNOWN_NAMES:
                continue
            merged[str(k)] = v
        for k, v in values.items():
            if merged.get(k) in (None, ""):
                merged[k] = v
        if not values and not dims and message:
            for k, v in S.PAIR.findall(message):  # a known event in unknown wording: take Key=value pairs
                merged.setdefault(k, v.strip('"'))
        return merged
