"""Sekiban's snapshot log events: event ids, message templates, and matching a message to them.

The templates are the format reference's (section 7) and the messages Sekiban's grain and actor
log (dcb-v10.x), Microsoft.Extensions.Logging style (``{Name}`` placeholders). A rendered message
matches a template when its fixed text does; the placeholders' text are the event's named values.
Nothing here reads a file: :mod:`.rows` feeds it messages and dimensions from any export shape.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

#: Event ids this package charts -> (EventId name as Sekiban declares it, kind).
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
ID_BY_NAME = {name.lower(): eid for eid, (name, _) in EVENTS.items()}

#: Event ids Sekiban declares that this package does not chart (named in the skip reasons).
EVENTS_OTHER = {1001: "ActivationStarted", 1004: "CatchUpStarted", 1005: "CatchUpCompleted",
                1006: "PersistenceCompleted", 1007: "UnhealthyActivation", 1009: "DeactivationStarted",
                1010: "QueryRejected", 1011: "NoExternalStore", 1013: "StateValidationFailed",
                1014: "EmptyStatePersistBlocked", 1015: "DeactivationPersistFailed",
                1016: "DeactivationPersistCancelled"}

TEMPLATE_PERSIST_STREAMING = ("StreamingPersist: {ProjectorName}, BuildMs={BuildMs}, UploadMs={UploadMs}, "
                              "TempFileBytes={TempFileBytes}, PeakMemory={PeakMemory}, Events={Events}")
TEMPLATE_PERSIST_LEGACY = ("Persist: {ProjectorName}, Events={EventsProcessed}, SafeVer={SafeVersion}, "
                           "UnsafeVer={UnsafeVersion}, EnvelopeSize={EnvelopeSize}, SafeThreshold={SafeThreshold}")
TEMPLATE_RESTORE = ("Restore: {ProjectorName}, RecordEvents={RecordEvents}, StateDataLen={StateDataLen}, "
                    "Original={OriginalSize}, Compressed={CompressedSize}, PostSafeVer={PostSafeVersion}, "
                    "PostUnsafeVer={PostUnsafeVersion}")
#: dcb-v10.23 (format reference section 8): logged once per restore by a projector whose registry lacks
#: the streaming capability, with no event id (``LogInformation`` without one).
TEMPLATE_RESTORE_BUFFERED_FALLBACK = ("Snapshot restore buffered fallback. Projector={ProjectorName}, "
                                      "Registry={Registry}, Format={Format}, Reason={Reason}")

#: (event id or None, kind, template). The first three are the format reference's (section 7); the
#: others the messages Sekiban logs (dcb-v10.x), used when a row has only the rendered text. Rows
#: carrying ``EventId`` or ``{OriginalFormat}`` in their dimensions are recognised whatever the wording.
TEMPLATES: list[tuple[int | None, str, str]] = [
    (1017, "persist_streaming", TEMPLATE_PERSIST_STREAMING),
    (1017, "persist_legacy", TEMPLATE_PERSIST_LEGACY),
    (1018, "restore", TEMPLATE_RESTORE),
    (None, "restore_buffered_fallback", TEMPLATE_RESTORE_BUFFERED_FALLBACK),
    (1002, "state_restore_success", "State restored: {ProjectorName}, Position: {Position}, Events: {Events}"),
    (1003, "state_restore_failed", "External store query failed: {ProjectorName}, Error: {Error}"),
    (1008, "blob_read_failed",
     "State data is null: {ProjectorName}, IsOffloaded: {IsOffloaded}, OffloadKey: {OffloadKey}"),
    (1008, "blob_read_failed",
     "State stream open failed: {ProjectorName}, IsOffloaded: {IsOffloaded}, OffloadKey: {OffloadKey}"),
    (1012, "state_not_found", "No state found in external store: {ProjectorName} v{ProjectorVersion}"),
    (1012, "state_not_found", "No state found for version: {ProjectorName}, Version: {Version}"),
    (1021, "integrity_guard_blocked_persist",
     "BLOCKED persist: {ProjectorName} - safeVersion regression detected. Current={CurrentSafeVersion}, "
     "LastGood={LastGoodSafeVersion}. State will NOT be saved."),
]
#: Kinds recognised by their wording alone (no event id): a row matching them is Sekiban's.
KINDS_WITHOUT_ID = {kind for eid, kind, _t in TEMPLATES if eid is None}

# 1025's template lists ~25 Key={Key} pairs and grows between releases: matched by its head, then
# every ``Key=value`` pair is taken.
CATCH_UP_SUMMARY = re.compile(r"^\s*\[(?P<ProjectorName>[^\]]*)\]\s*Catch-up batch summary\.\s*(?P<rest>.*)$", re.S)
PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|[^,\s]*)")

#: Named values in template order (the column order of the output).
KNOWN_VALUES = ["BuildMs", "UploadMs", "TempFileBytes", "PeakMemory", "Events", "EventsProcessed", "SafeVersion",
                "UnsafeVersion", "EnvelopeSize", "SafeThreshold", "RecordEvents", "StateDataLen", "OriginalSize",
                "CompressedSize", "PostSafeVersion", "PostUnsafeVersion", "Registry", "Format", "Reason"]
#: Values kept as text even when they look numeric.
TEXT_VALUES = {"SafeThreshold", "Position", "OffloadKey", "Error", "ProjectorVersion", "Version", "StartPosition",
               "CurrentPosition", "LastAppliedPosition", "TargetPosition", "EventTypeSummary", "Registry", "Format",
               "Reason"}


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
        values = dict(zip(names, values, strict=False))  # a missing value renders as (null)
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


class Template:
    """A template compiled to a regular expression: ``match(message)`` -> named values or None."""

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
        return {n: v for n, v in zip(self.names, m.groups(), strict=True)}


_BUILTIN = [(eid, kind, Template(tpl)) for eid, kind, tpl in TEMPLATES]
#: A template's text (whitespace folded) -> (event id or None, kind): for ``{OriginalFormat}``.
BY_TEXT = {" ".join(tpl.split()): (eid, kind) for eid, kind, tpl in TEMPLATES}
_COMPILED: dict[str, Template] = {}


def compiled(template: str) -> Template:
    t = _COMPILED.get(template)
    if t is None:
        if len(_COMPILED) > 256:
            _COMPILED.clear()
        t = _COMPILED[template] = Template(template)
    return t


def match_builtin(message: str, eid: int | None):
    """(event id or None, kind, values) of the first known message ``message`` renders, else None.

    With an event id only that id's templates are tried; templates without an id always are.
    """
    for t_eid, kind, tpl in _BUILTIN:
        if eid is not None and t_eid is not None and eid != t_eid:
            continue
        got = tpl.match(message)
        if got is not None:
            return t_eid, kind, got
    return None


def persist_kind(template, values: dict) -> str:
    """1017 is logged by both persist paths: which one, from the template or the values."""
    t = str(template or "")
    if "StreamingPersist" in t or "BuildMs" in values or "TempFileBytes" in values:
        return "persist_streaming"
    if t.lstrip().startswith("Persist") or "EnvelopeSize" in values or "SafeVersion" in values:
        return "persist_legacy"
    return "persist_details"


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


def event_id(v) -> int | None:
    """An EventId as exports carry it (number, text, ``{"Id": .., "Name": ..}``, a name); 0 is none."""
    if v is None:
        return None
    if isinstance(v, dict):
        for k in ("Id", "id", "ID"):
            if k in v:
                return event_id(v[k])
        for k in ("Name", "name"):
            if k in v:
                return ID_BY_NAME.get(str(v[k]).lower())
        return None
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return int(v) or None
    s = str(v).strip()
    if s.startswith("{"):
        try:
            return event_id(json.loads(s))
        except ValueError:
            return None
    if re.fullmatch(r"\d{1,9}", s):
        return int(s) or None
    return ID_BY_NAME.get(s.lower())
