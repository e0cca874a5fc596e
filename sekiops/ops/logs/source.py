"""An export file as text: gzip unwrapped, encoding found, text told from binary by the file's start;
and column names normalised for matching (:func:`norm`).

Whether a file is text is decided once, on its first :data:`SAMPLE` bytes: a binary file (an
image, an archive, a core dump, UTF-16 without its BOM) is full of control bytes from the start;
a log export is not, even when one logged message carries a NUL. So one odd message never refuses
a whole export. A row is odd, skipped and counted (the summary says how many), when it holds a NUL
(:func:`has_nul`: CSV and text rows), or when its JSON is invalid because of a raw control
character (:func:`has_control`: JSON lines, arrays, documents); other control characters in CSV
or text pass through as the characters they are.
"""

from __future__ import annotations

import functools
import gzip
import re
import sys

from ...errors import SekiopsError

SAMPLE = 8192
#: C0 control characters other than tab, line feed, carriage return (and form feed, escape: seen in
#: console logs); DEL.
_CONTROL_BYTES = bytes(c for c in range(32) if c not in (9, 10, 12, 13, 27)) + b"\x7f"
_CONTROL = re.compile("[" + re.escape(_CONTROL_BYTES.decode("latin-1")) + "]")
CONTROL_REASON = "row holds a NUL or raw control character"


def read_bytes(source) -> tuple[bytes, str]:
    """The bytes of a path, ``-`` (stdin), bytes, or a binary/text stream; and a name for messages."""
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


def looks_binary(start: bytes) -> bool:
    """True when the file's first bytes are not text: it starts with NUL, or control bytes are more
    than a handful (at most 4, or 1% of the sample, are taken as odd characters in messages)."""
    if not start:
        return False
    if start[0] == 0:
        return True
    controls = sum(start.count(b) for b in _CONTROL_BYTES)
    return controls > max(4, len(start) // 100)


def decode(data: bytes, name: str) -> str:
    """Text of an export: gzip unwrapped, UTF-16 by BOM, else UTF-8 (BOM allowed), else cp1252 (Excel)."""
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
    if looks_binary(data[:SAMPLE]):
        raise SekiopsError(f"{name}: not a CSV or JSON export (binary data from its first bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")  # an Excel "CSV" in the Windows code page
        except UnicodeDecodeError:
            raise SekiopsError(f"{name}: not a CSV or JSON export (not UTF-8 text)") from None


def has_control(text: str) -> bool:
    """True when ``text`` (a raw JSON line or value) holds a control character JSON forbids raw."""
    return _CONTROL.search(text) is not None


def has_nul(text: str) -> bool:
    """True when ``text`` (a CSV cell, a text line) holds a NUL: a corrupted row, not a message."""
    return "\x00" in text


@functools.lru_cache(maxsize=8192)
def norm(key) -> str:
    """Column name for matching: ``timestamp [UTC]`` -> ``timestamp``, ``Log_s`` -> ``logs``."""
    k = re.sub(r"\s*\[[^\]]*\]\s*$", "", str(key))
    return re.sub(r"[^0-9a-z{}]", "", k.lower())
