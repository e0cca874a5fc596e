"""Which blob an envelope references, decided exactly as Sekiban's ``OffloadKeyEnumerator`` does.

Garbage collection may delete a blob only when no row references it, so the reference reader
must never be more lenient than Sekiban's own definition (dcb-v10.23). An envelope is
*undecodable* — and then a GC deletes nothing at all — when it:

* is not exactly one JSON object (empty, ``null``, an array, truncated, trailing content);
* holds invalid UTF-8 in a string or property name, or is not valid JSON at all;
* has no ``isOffloaded``, a non-boolean one, or the property twice (names are matched
  case-insensitively: ``IsOffloaded`` and ``isOffloaded`` are one property; the same for
  ``offloadedState``, ``offloadKey`` and ``storageProvider``);
* says ``isOffloaded: true`` without an object ``offloadedState`` holding a non-empty string
  ``offloadKey``.

The walk is forward-only over a token stream with bounded memory: an inline state of any size
(a 100 MB Base64 string, a million small objects) is read and dropped, never materialised, so
a key that follows it is still found. A v9 envelope (gzip, recognised by ``1f 8b``) is walked
through a streaming gunzip.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from typing import BinaryIO, NoReturn

from ..errors import CorruptSnapshotError

CHUNK = 256 * 1024
#: Deepest nesting accepted (System.Text.Json's default maximum depth).
MAX_DEPTH = 64
#: Longest string kept (property names we compare, the key, the provider); longer ones are
#: walked; a longer offloadKey cannot be a real key and makes the envelope undecodable.
MAX_KEPT = 64 * 1024

_WS = re.compile(rb"[ \t\r\n]*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
#: a valid escape, or (group 1) a backslash that starts none: scanned left to right, so an
#: escaped backslash is consumed whole and never mistaken for the start of the next escape
_ESCAPES = re.compile(rb'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})|(\\)')
_CONTROL = re.compile(rb"[\x00-\x1f]")
_NAMES = {"isoffloaded": "flag", "offloadedstate": "state"}
_NESTED = {"offloadkey": "key", "storageprovider": "provider"}


@dataclasses.dataclass(frozen=True)
class EnvelopeReference:
    """What an envelope says about its payload: offloaded or not, and where."""

    is_offloaded: bool
    key: str | None = None
    provider: str | None = None


class _Gunzip:
    """A streaming gunzip reader (v9 envelopes) whose output is bounded per read."""

    def __init__(self, src: BinaryIO, first: bytes, where: str):
        self._src, self._pending, self._where = src, first, where
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def read(self, n: int) -> bytes:
        while True:
            data = self._d.decompress(self._d.unconsumed_tail, n) if self._d.unconsumed_tail else b""
            if data:
                return data
            if self._d.eof:
                if self._d.unused_data.strip(b"\x00") or self._src.read(1):
                    raise CorruptSnapshotError(f"{self._where}: data after the gzip stream of a v9 envelope")
                return b""
            chunk, self._pending = (self._pending or self._src.read(CHUNK)), b""
            if not chunk:
                raise CorruptSnapshotError(f"{self._where}: the gzip stream of a v9 envelope is truncated")
            try:
                data = self._d.decompress(chunk, n)
            except zlib.error as exc:
                raise CorruptSnapshotError(f"{self._where}: the v9 envelope's gzip is corrupt ({exc})") from None
            if data:
                return data


class _Tokens:
    """A forward-only JSON tokenizer over a byte stream; only kept strings are decoded."""

    def __init__(self, src, where: str):
        self._src, self._where = src, where
        self._buf = b""
        self._pos = 0
        self._offset = 0
        self._eof = False

    def fail(self, what: str) -> NoReturn:
        raise CorruptSnapshotError(f"{self._where}: undecodable envelope at byte {self._offset + self._pos}: {what}")

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._src.read(CHUNK)
        if not data:
            self._eof = True
            return False
        self._offset += self._pos
        self._buf = self._buf[self._pos:] + data
        self._pos = 0
        return True

    def peek(self) -> int | None:
        """The next non-whitespace byte (not consumed), or None at the end."""
        while True:
            ws = _WS.match(self._buf, self._pos)
            assert ws is not None  # the pattern matches the empty string
            self._pos = ws.end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return None

    def take(self) -> int:
        c = self.peek()
        if c is None:
            self.fail("unexpected end of data")
        self._pos += 1
        return c

    def literal_or_number(self) -> object:
        while len(self._buf) - self._pos < 64 and self._fill():
            pass
        buf, pos = self._buf, self._pos
        for word, value in ((b"true", True), (b"false", False), (b"null", None)):
            if buf.startswith(word, pos):
                end = pos + len(word)
                if end < len(buf) and buf[end:end + 1].isalnum():
                    self.fail("invalid literal")
                self._pos = end
                return value
        m = _NUMBER.match(buf, pos)
        if not m or m.end() == pos:
            self.fail(f"unexpected character {chr(buf[pos])!r}")
        if m.end() < len(buf) and buf[m.end():m.end() + 1] not in (b",", b"}", b"]", b" ", b"\t", b"\r", b"\n"):
            self.fail("invalid number")
        self._pos = m.end()
        return _NUMBER_VALUE

    def string(self, keep: bool) -> str | None:
        """The string at the cursor (opening quote consumed): its text when ``keep`` and short
        enough, else None (walked and dropped). Escapes, control characters and UTF-8 are
        checked either way."""
        kept: list[bytes] | None = [] if keep else None
        size = 0
        carry = b""  # an incomplete UTF-8 sequence at a chunk's end
        while True:
            buf, pos = self._buf, self._pos
            q = buf.find(b'"', pos)
            while q != -1:
                k = q - 1
                while k >= pos and buf[k] == 0x5C:
                    k -= 1
                if (q - 1 - k) % 2 == 0:
                    break
                q = buf.find(b'"', q + 1)
            if q != -1:
                seg, self._pos = buf[pos:q], q + 1
            else:
                cut = len(buf)
                last = buf.rfind(b"\\", max(pos, cut - 6))
                if last != -1:  # never split an escape: cut before the backslash run near the end
                    cut = last
                    while cut > pos and buf[cut - 1] == 0x5C:
                        cut -= 1
                seg, self._pos = buf[pos:cut], cut
            if _CONTROL.search(seg):
                self.fail("control character in a string")
            if b"\\" in seg and any(m.group(1) for m in _ESCAPES.finditer(seg)):
                self.fail("invalid escape in a string")
            carry = self._check_utf8(carry + seg, final=q != -1)
            size += len(seg)
            if kept is not None:
                if size > MAX_KEPT:
                    kept = None
                else:
                    kept.append(seg)
            if q != -1:
                if kept is None:
                    return None
                raw = b"".join(kept)
                if b"\\" not in raw:
                    return raw.decode("utf-8")

                return json.loads(b'"' + raw + b'"')
            if not self._fill():
                self.fail("unterminated string")

    def _check_utf8(self, data: bytes, final: bool) -> bytes:
        if data.isascii():
            return b""
        tail = b""
        if not final:  # keep a possibly incomplete sequence for the next segment
            i = len(data) - 1
            while i >= 0 and len(data) - i <= 4 and (data[i] & 0xC0) == 0x80:
                i -= 1
            if i >= 0 and data[i] >= 0xC0:
                need = 2 if data[i] < 0xE0 else 3 if data[i] < 0xF0 else 4
                if len(data) - i < need:
                    data, tail = data[:i], data[i:]
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("invalid UTF-8")
        return tail


_NUMBER_VALUE = object()

_KEY_OR_CLOSE, _VALUE_OR_CLOSE, _VALUE, _AFTER_VALUE = range(4)


class _Walk:
    """Sekiban's decoder as a state machine over :class:`_Tokens`: it remembers only the
    depth-1 ``isOffloaded``/``offloadedState`` and, inside an ``offloadedState`` object, the
    depth-2 ``offloadKey``/``storageProvider``."""

    def __init__(self, t: _Tokens):
        self.t = t
        self.stack: list[int] = []
        self.names: dict[int, str | None] = {}
        self.in_state = False
        self.flag: bool | None = None
        self.flag_seen = self.state_seen = self.key_seen = self.provider_seen = False
        self.state_is_object = False
        self.key: str | None = None
        self.provider: str | None = None

    def run(self) -> EnvelopeReference:
        t = self.t
        first = t.peek()
        if first is None:
            t.fail("empty envelope")
        if first != 0x7B:
            t.fail("the envelope is not a JSON object")
        t.take()
        self._open(0x7B)
        state = _KEY_OR_CLOSE
        while self.stack:
            if state == _KEY_OR_CLOSE:
                c = t.take()
                if c == 0x7D:
                    self._close()
                    state = _AFTER_VALUE
                elif c == 0x22:
                    self._property()
                    state = _VALUE
                else:
                    t.fail("expected a property name")
            elif state == _VALUE_OR_CLOSE:
                if t.peek() == 0x5D:
                    t.take()
                    self._close()
                    state = _AFTER_VALUE
                else:
                    state = _VALUE
            elif state == _VALUE:
                c = t.take()
                if c in (0x7B, 0x5B):
                    self._container_value(c)
                    self._open(c)
                    state = _KEY_OR_CLOSE if c == 0x7B else _VALUE_OR_CLOSE
                    continue
                value: object
                if c == 0x22:
                    value = t.string(keep=self._keeps_value())
                    if self._keeps_value() and value is None:
                        t.fail(f"an offloadedState string is longer than {MAX_KEPT} bytes")
                else:
                    t._pos -= 1
                    value = t.literal_or_number()
                self._scalar_value(value)
                state = _AFTER_VALUE
            else:  # _AFTER_VALUE: ',' or the end of the open container
                c = t.take()
                top = self.stack[-1]
                if c == 0x2C:
                    if top == 0x7B:
                        if t.take() != 0x22:
                            t.fail("expected a property name")
                        self._property()
                    state = _VALUE
                elif (c == 0x7D and top == 0x7B) or (c == 0x5D and top == 0x5B):
                    self._close()
                else:
                    t.fail("expected ',' or the end of an object or array")
        if t.peek() is not None:
            t.fail("content after the envelope's closing brace")
        if not self.flag_seen:
            t.fail("isOffloaded is missing")
        if self.flag and (not self.state_is_object or not self.key):
            t.fail("isOffloaded is true but offloadedState is not an object with a non-empty string offloadKey")
        return EnvelopeReference(bool(self.flag), self.key if self.flag else None,
                                 self.provider if self.flag else None)

    # --- events ------------------------------------------------------------------------------

    def _open(self, kind: int) -> None:
        self.stack.append(kind)
        if len(self.stack) > MAX_DEPTH:
            self.t.fail(f"nesting deeper than {MAX_DEPTH}")

    def _close(self) -> None:
        self.stack.pop()
        if len(self.stack) == 1:
            self.in_state = False  # the value of a top-level property ended

    def _property(self) -> None:
        t, depth = self.t, len(self.stack)
        name = t.string(keep=depth <= 2)
        if t.take() != 0x3A:
            t.fail("expected ':'")
        folded = name.lower() if name is not None else None
        if depth == 1:
            which = _NAMES.get(folded) if folded is not None else None
            self.names[1] = which
            if which == "flag":
                if self.flag_seen:
                    t.fail("isOffloaded appears twice (property names match case-insensitively)")
                self.flag_seen = True
            elif which == "state":
                if self.state_seen:
                    t.fail("offloadedState appears twice (property names match case-insensitively)")
                self.state_seen = True
        elif depth == 2 and self.in_state:
            which = _NESTED.get(folded) if folded is not None else None
            self.names[2] = which
            if which == "key":
                if self.key_seen:
                    t.fail("offloadKey appears twice (property names match case-insensitively)")
                self.key_seen = True
            elif which == "provider":
                if self.provider_seen:
                    t.fail("storageProvider appears twice (property names match case-insensitively)")
                self.provider_seen = True

    def _keeps_value(self) -> bool:
        return len(self.stack) == 2 and self.in_state and self.names.get(2) in ("key", "provider")

    def _container_value(self, kind: int) -> None:
        depth = len(self.stack)
        if depth == 1:
            which = self.names.get(1)
            if which == "flag":
                self.t.fail("isOffloaded must be a boolean")
            if which == "state":
                self.state_is_object = kind == 0x7B
                self.in_state = self.state_is_object
            self.names[1] = None
        elif depth == 2 and self.in_state:
            which = self.names.get(2)
            if which == "key":
                self.key = None
            elif which == "provider":
                self.provider = None
            self.names[2] = None

    def _scalar_value(self, value: object) -> None:
        depth = len(self.stack)
        if depth == 1:
            which = self.names.get(1)
            if which == "flag":
                if not isinstance(value, bool):
                    self.t.fail("isOffloaded must be a boolean")
                self.flag = value
            elif which == "state":
                self.state_is_object = False
            self.names[1] = None
        elif depth == 2 and self.in_state:
            which = self.names.get(2)
            if which == "key":
                self.key = value if isinstance(value, str) else None
            elif which == "provider":
                self.provider = value if isinstance(value, str) else None
            self.names[2] = None


def read_envelope_reference(stream: BinaryIO, where: str) -> EnvelopeReference:
    """Decode an envelope the way Sekiban's OffloadKeyEnumerator does (see the module docstring).

    Raises CorruptSnapshotError (the row is *undecodable*) on anything Sekiban's would refuse.
    """
    head = stream.read(2)
    src = _Gunzip(stream, head, where) if head == b"\x1f\x8b" else _Prefixed(head, stream)
    return _Walk(_Tokens(src, where)).run()


class _Prefixed:
    """The two bytes already read, then the rest of the stream."""

    def __init__(self, head: bytes, src: BinaryIO):
        self._head, self._src = head, src

    def read(self, n: int) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head + self._src.read(max(0, n - len(head)))
        return self._src.read(n)


__all__ = ["EnvelopeReference", "read_envelope_reference"]
