"""Read Sekiban's snapshot log events and container memory metrics from Azure exports.

What happened before an OOM is in two places: Sekiban's structured log lines (Application
Insights ``traces`` / Log Analytics ``AppTraces``; format reference sections 7 and 8) and the
container's memory metrics (Azure Monitor). This package turns exports of both into DataFrames.

Input shapes, detected from the content (not the file name; gzip is unwrapped):

- CSV (comma, tab or semicolon; UTF-8 with or without BOM, UTF-16 Excel text; a preamble before
  the header is skipped), e.g. the portal's "Export to CSV" -- :mod:`.csv_export`;
- a JSON array, JSON lines, the Log Analytics / Application Insights query API shape
  ``{"tables": [{"columns": [...], "rows": [...]}]}`` -- :mod:`.json_export`;
- plain console text (``kubectl logs``, ``az containerapp logs show``) -- :mod:`.text_export`.

Inside any of them a row may carry the rendered message and/or the named values in
``customDimensions`` / ``Properties``, or a Serilog CLEF / .NET JSON console line (:mod:`.rows`).
Which messages are Sekiban's, and their named values, is :mod:`.sekiban`'s job; the events frame
is :mod:`.events`'; memory metrics :mod:`.memory`.

One row per recognised event: ``time`` (UTC), ``eventId``, ``kind`` (``persist_streaming``,
``persist_legacy``, ``restore``, ``restore_buffered_fallback``, or the event's name in snake_case,
e.g. ``state_restore_failed``), ``projectorName``, then every named value under its *placeholder*
name -- the name the value has in ``customDimensions`` -- so the columns are the same whether a
row carried the rendered text or only the dimensions. The rendered labels differ from the
placeholder names in a few places:

==================  ===================  ==========================================
template            rendered label       column
==================  ===================  ==========================================
Persist (byte[])    ``Events=``          ``EventsProcessed``
Persist (byte[])    ``SafeVer=``         ``SafeVersion`` (also ``UnsafeVersion``)
Restore             ``Original=``        ``OriginalSize`` (also ``CompressedSize``)
Restore             ``PostSafeVer=``     ``PostSafeVersion`` (also ``PostUnsafeVersion``)
Buffered fallback   ``Projector=``       ``projectorName``
==================  ===================  ==========================================

``restore_buffered_fallback`` (dcb-v10.23: once per restore of a projector whose registry lacks
the streaming capability) has no event id: its ``eventId`` is missing. Values become numbers
where they are numbers; SortableUniqueIds (19+ digits) and timestamps such as ``SafeThreshold``
stay text; ``(null)`` becomes missing. Nothing in a file stops the parse: rows that are not
Sekiban snapshot events, broken JSON lines, rows holding control characters and unusable rows are
counted in ``skipped`` with a reason. Only a file that is no export at all (binary from its first
bytes, no recognisable columns) raises :class:`~sekiops.errors.SekiopsError`.
"""

from __future__ import annotations

from .events import BASE_COLUMNS, ParseResult, parse_log_file, parse_log_records, read_log_events
from .export import Loaded, load_export
from .memory import MEMORY_COLUMNS, parse_container_memory
from .sekiban import (
    EVENTS,
    EVENTS_OTHER,
    KNOWN_VALUES,
    TEMPLATE_PERSIST_LEGACY,
    TEMPLATE_PERSIST_STREAMING,
    TEMPLATE_RESTORE,
    TEMPLATE_RESTORE_BUFFERED_FALLBACK,
    TEMPLATES,
    TEXT_VALUES,
    render_template,
    snake_case,
    template_names,
    to_value,
)
from .times import parse_time

__all__ = ["BASE_COLUMNS", "EVENTS", "EVENTS_OTHER", "KNOWN_VALUES", "Loaded", "MEMORY_COLUMNS", "ParseResult",
           "TEMPLATES", "TEMPLATE_PERSIST_LEGACY", "TEMPLATE_PERSIST_STREAMING", "TEMPLATE_RESTORE",
           "TEMPLATE_RESTORE_BUFFERED_FALLBACK", "TEXT_VALUES", "load_export", "parse_container_memory",
           "parse_log_file", "parse_log_records", "parse_time", "read_log_events", "render_template", "snake_case",
           "template_names", "to_value"]
