"""A small streaming JSON reader for envelopes whose one big string must never be held whole.

Sekiban writes the payload inline as a Base64 (or JSON text) string that can be 100+ MB. This
reader parses the surrounding JSON normally, but hands chosen string values to a sink chunk by
chunk, unescaping on the way. Everything else is bounded: small strings, nesting depth and
duplicate keys are checked, so hostile input fails fast with CorruptSnapshotError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import BinaryIO, NoReturn

from ..errors import CorruptSnapshotError

CHUNK = 1024 * 1024
MAX_SMALL_STRING = 1024 * 1024
MAX_DEPTH = 32

_WS = b" \t\r\n"
_WS_RUN = re.compile(rb"[ \t\r\n]*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ESCAPE = re.compile(rb"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|(.))", re.S)
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(rb"[\x00-\x1f]")
_TRAILING_HIGH = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}$")
_SIMPLE = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f", b"n": b"\n",
           b"r": b"\r", b"t": b"\t"}


def _unescape(seg: bytes, where: str) -> bytes:
    """Replace JSON escapes in raw string bytes by their UTF-8 bytes (segment holds whole escapes)."""

    def sub(m: re.Match) -> bytes:
        hi, lo, single, simple = m.groups()
        if hi is not None:
            cp = 0x10000 + ((int(hi, 16) - 0xD800) << 10) + (int(lo, 16) - 0xDC00)
            return chr(cp).encode("utf-8")
        if single is not None:
            cp = int(single, 16)
            if 0xD800 <= cp <= 0xDFFF:
                return "\ufffd".encode("utf-8")  # lone surrogate, as a lenient reader would
            return chr(cp).encode("utf-8")
        out = _SIMPLE.get(simple)
        if out is None:
            raise CorruptSnapshotError(f"{where}: invalid escape \\{simple!r} in a JSON string")
        return out

    return _ESCAPE.sub(sub, seg)


class StringSink:
    """Where a streamed string's unescaped bytes go. ``fast_escapes`` allows the Base64 fast path."""

    def __init__(self, write: Callable[[bytes], object], fast_escapes: bool = False):
        self.write = write
        self.fast_escapes = fast_escapes
        self.length = 0


class JsonStreamReader:
    """Recursive-descent JSON over a byte stream, with streamed strings at chosen paths.

    ``stream_at(path)`` is asked for every string value; it returns a StringSink to stream the
    value, or None to read it as a (bounded) small string. Paths are tuples of lower-cased keys.
    ``skip_at(path)`` may return True to consume a string value without keeping it.
    """

    def __init__(self, fp: BinaryIO, where: str, stream_at=None, skip_at=None,
                 max_bytes: int | None = None):
        self._fp = fp
        self._where = where
        self._buf = b""
        self._pos = 0
        self._offset = 0  # bytes consumed before self._buf
        self._stream_at = stream_at or (lambda path: None)
        self._skip_at = skip_at or (lambda path: False)
        self._max_bytes = max_bytes
        self._eof = False

    # --- buffer ------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        return self._offset + self._pos

    def _fill(self) -> bool:
        """Read more input, keeping unconsumed bytes. False at end of input."""
        if self._eof:
            return False
        if self._max_bytes is not None and self._offset + len(self._buf) >= self._max_bytes:
            raise BudgetExceeded()
        data = self._fp.read(CHUNK)
        if not data:
            self._eof = True
            return False
        if self._pos:
            self._offset += self._pos
            self._buf = self._buf[self._pos:] + data
            self._pos = 0
        else:
            self._buf += data
        return True

    def _fail(self, what: str) -> NoReturn:
        raise CorruptSnapshotError(f"{self._where}: invalid JSON at byte {self.position}: {what}")

    def _peek(self) -> int:
        while True:
            buf = self._buf
            pos = self._pos
            if pos < len(buf) and buf[pos] in _WS:
                ws = _WS_RUN.match(buf, pos)
                assert ws is not None  # the pattern matches the empty string
                pos = ws.end()
                self._pos = pos
            if pos < len(buf):
                return buf[pos]
            if not self._fill():
                self._fail("unexpected end of data")

    def _expect(self, ch: bytes) -> None:
        if self._peek() != ch[0]:
            self._fail(f"expected {ch.decode()!r}, found {chr(self._buf[self._pos])!r}")
        self._pos += 1

    # --- values ------------------------------------------------------------------------------

    def parse_document(self):
        value = self._value((), 0)
        while True:  # only whitespace may follow; errors of the source (truncated gzip) propagate
            ws = _WS_RUN.match(self._buf, self._pos)
            assert ws is not None  # the pattern matches the empty string
            self._pos = ws.end()
            if self._pos < len(self._buf):
                self._fail("unexpected data after the JSON document")
            if not self._fill():
                return value

    def _value(self, path: tuple, depth: int):
        c = self._peek()
        if c == 0x7B:  # {
            return self._object(path, depth + 1)
        if c == 0x5B:  # [
            return self._array(path, depth + 1)
        if c == 0x22:  # "
            self._pos += 1
            sink = self._stream_at(path)
            if sink is not None:
                self._stream_string(sink)
                return sink
            if self._skip_at(path):
                self._stream_string(StringSink(lambda b: None, fast_escapes=True))
                return None
            return self._small_string()
        return self._scalar()

    def _object(self, path: tuple, depth: int) -> dict:
        if depth > MAX_DEPTH:
            self._fail(f"nesting deeper than {MAX_DEPTH}")
        self._pos += 1
        out: dict = {}
        seen: set = set()
        if self._peek() == 0x7D:
            self._pos += 1
            return out
        while True:
            if self._peek() != 0x22:
                self._fail("expected a property name")
            self._pos += 1
            key = self._small_string()
            folded = key.lower()
            if folded in seen:
                self._fail(f"duplicate property {key!r}")
            seen.add(folded)
            self._expect(b":")
            out[key] = self._value(path + (folded,), depth)
            c = self._peek()
            self._pos += 1
            if c == 0x7D:
                return out
            if c != 0x2C:
                self._fail("expected ',' or '}'")

    def _array(self, path: tuple, depth: int) -> list:
        if depth > MAX_DEPTH:
            self._fail(f"nesting deeper than {MAX_DEPTH}")
        self._pos += 1
        out: list = []
        if self._peek() == 0x5D:
            self._pos += 1
            return out
        while True:
            out.append(self._value(path + ("[]",), depth))
            if len(out) > 100_000:
                self._fail("array too long for an envelope")
            c = self._peek()
            self._pos += 1
            if c == 0x5D:
                return out
            if c != 0x2C:
                self._fail("expected ',' or ']'")

    def _scalar(self):
        while len(self._buf) - self._pos < 64 and self._fill():
            pass
        buf, pos = self._buf, self._pos
        for word, value in ((b"true", True), (b"false", False), (b"null", None)):
            if buf.startswith(word, pos):
                self._pos += len(word)
                return value
        m = _NUMBER.match(buf, pos)
        if not m or m.end() == pos:
            self._fail(f"unexpected character {chr(buf[pos])!r}")
        self._pos = m.end()
        text = m.group(0)
        if len(text) > 40:
            self._fail("number too long")
        return json.loads(text)

    # --- strings -----------------------------------------------------------------------------

    def _find_close(self, start: int, carry_backslashes: int) -> int:
        """Index of the closing quote in the buffer from ``start``, or -1."""
        buf = self._buf
        q = buf.find(b'"', start)
        while q != -1:
            k = q - 1
            while k >= start and buf[k] == 0x5C:
                k -= 1
            run = q - 1 - k
            if k < start:
                run += carry_backslashes
            if run % 2 == 0:
                return q
            q = buf.find(b'"', q + 1)
        return -1

    def _small_string(self) -> str:
        start = self._pos
        while True:
            q = self._find_close(start, 0)
            if q != -1:
                raw = self._buf[start:q]
                self._pos = q + 1
                break
            if len(self._buf) - start > MAX_SMALL_STRING:
                self._fail(f"string longer than {MAX_SMALL_STRING} bytes where a short value belongs")
            rel = start - self._pos
            if not self._fill():
                self._fail("unterminated string")
            start = self._pos + rel
        if b"\\" not in raw and raw.isascii():
            if _CONTROL.search(raw):
                self._fail("control character in a string")
            return raw.decode("ascii")
        try:
            text = json.loads(b'"' + raw.decode("utf-8").encode("utf-8") + b'"')
        except (ValueError, UnicodeDecodeError) as exc:
            self._fail(f"bad string ({exc})")
        if _SURROGATE.search(text):
            self._fail("lone UTF-16 surrogate in a string")
        return text

    def _stream_string(self, sink: StringSink) -> None:
        """Stream the string at the cursor (after its opening quote) into ``sink``.

        Each write holds whole escapes only: a trailing backslash run that may start an
        escape (and a trailing high surrogate) stays in the buffer for the next round.
        """
        while True:
            buf, pos = self._buf, self._pos
            q = self._find_close(pos, 0)
            if q != -1:
                self._emit(sink, buf[pos:q])
                self._pos = q + 1
                return
            end = len(buf)
            cut = end
            last_bs = buf.rfind(b"\\", max(pos, end - 12))
            if last_bs != -1:
                run_start = last_bs
                while run_start > pos and buf[run_start - 1] == 0x5C:
                    run_start -= 1
                cut = last_bs if (last_bs - run_start + 1) % 2 else last_bs + 1
            m = _TRAILING_HIGH.search(buf, pos, cut)
            if m is not None:
                k = m.start()
                while k > pos and buf[k - 1] == 0x5C:
                    k -= 1
                if (m.start() - k) % 2 == 0:  # an escape, not the tail of an escaped backslash
                    cut = m.start()
            self._emit(sink, buf[pos:cut])
            self._pos = cut
            if not self._fill():
                self._fail("unterminated string")

    def _emit(self, sink: StringSink, seg: bytes) -> None:
        if not seg:
            return
        if b"\\" in seg:
            if sink.fast_escapes:
                seg = seg.replace(b"\\u002B", b"+").replace(b"\\u002b", b"+").replace(b"\\/", b"/")
            if b"\\" in seg:
                seg = _unescape(seg, self._where)
        sink.length += len(seg)
        sink.write(seg)


class BudgetExceeded(Exception):
    """Raised inside the reader when a head-only read reaches its byte budget."""
