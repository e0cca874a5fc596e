"""Rows (dicts) of an export, whatever its shape: detected from the content, never the file name.

JSON when the text starts with ``[`` or ``{`` (:mod:`.json_export`), else CSV (:mod:`.csv_export`),
else -- for logs -- plain console text (:mod:`.text_export`). What is left out is counted in
``skipped`` by reason; only a file that is no export at all raises
:class:`~sekiops.errors.SekiopsError`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable

from ...errors import SekiopsError
from .csv_export import csv_rows
from .json_export import json_rows
from .source import CONTROL_REASON, decode, norm, read_bytes
from .text_export import is_sekiban_text, text_rows


@dataclasses.dataclass
class Loaded:
    rows: list[dict]
    fmt: str
    skipped: collections.Counter


def load_export(source, recognise: Callable[[Iterable[str]], bool], what: str, *, plain_text: bool = False) -> Loaded:
    """Rows of a CSV / JSON / JSON lines / Log Analytics export (``plain_text``: console logs too).

    ``recognise(normalised column names)`` says whether a header or an object's keys look like the
    export asked for; CSV lines before the first recognised header are a preamble and skipped.
    """
    data, name = read_bytes(source)
    text = decode(data, name)
    stripped = text.lstrip()
    if not stripped:
        raise SekiopsError(f"{name}: empty file; expected a CSV or JSON export of {what}")
    skipped: collections.Counter = collections.Counter()
    if stripped[0] in "[{":
        rows, fmt = json_rows(stripped, name, skipped)
        if rows is not None:
            keys: set[str] = set()
            for r in rows[:200]:
                keys.update(norm(k) for k in r)
            if (rows or CONTROL_REASON not in skipped) and not recognise(keys):  # all rows odd: nothing to judge
                columns = ", ".join(sorted(keys)[:8]) or "none"
                raise SekiopsError(f"{name}: JSON without {what} columns (found {columns})")
            return Loaded(rows, fmt, skipped)
    found = csv_rows(text, name, recognise, skipped)
    if found is not None:
        return Loaded(found[0], found[1], skipped)
    if plain_text and is_sekiban_text(text):
        rows, fmt = text_rows(text, skipped)
        return Loaded(rows, fmt, skipped)
    raise SekiopsError(f"{name}: not a CSV or JSON export of {what} (no recognised header in the first lines)")
