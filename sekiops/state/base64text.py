"""StateData as Base64 text, encoded and decoded in slices (Cosmos DB and DynamoDB store it so).

Both stores keep the envelope bytes as one standard padded Base64 string inside an item of at most
2 MB / 400 KB. The text itself must be held once (the SDKs send and parse whole items), but the
bytes on either side of it need not be: encoding reads the state stream in multiple-of-3 slices and
decoding yields the bytes a slice at a time, so a read or write costs about one copy of the text.
"""

from __future__ import annotations

import binascii
import io
from typing import BinaryIO

from ..errors import CorruptSnapshotError

#: Base64 is built from slices of this many input bytes (a multiple of 3).
ENCODE_CHUNK = 3 * 256 * 1024
#: Base64 characters decoded per slice (a multiple of 4).
DECODE_CHUNK = 4 * 64 * 1024


def base64_length(n: int) -> int:
    """Characters of padded Base64 for ``n`` bytes."""
    return 4 * ((n + 2) // 3)


def decoded_length(chars: int | None, tail: str | None) -> int | None:
    """Bytes behind ``chars`` Base64 characters whose last two characters are ``tail``."""
    if chars is None:
        return None
    pad = (tail or "").count("=")
    return max(0, chars // 4 * 3 - pad)


def encode_stream(state: BinaryIO, state_length: int, location: str, where: str) -> str:
    """Base64 of exactly ``state_length`` bytes of ``state``, read in multiple-of-3 slices."""
    parts: list[str] = []
    left = state_length
    carry = b""
    while left > 0:
        chunk = state.read(min(ENCODE_CHUNK, left))
        if not chunk:
            raise CorruptSnapshotError(f"{location}: StateData stream for {where} ended {left} bytes early")
        left -= len(chunk)
        if carry:
            chunk, carry = carry + chunk, b""
        cut = len(chunk) - len(chunk) % 3 if left > 0 else len(chunk)
        if cut < len(chunk):
            carry = bytes(chunk[cut:])
        parts.append(binascii.b2a_base64(memoryview(chunk)[:cut], newline=False).decode("ascii"))
        del chunk
    return "".join(parts)


class Base64Reader(io.RawIOBase):
    """Decodes a Base64 string slice by slice (strictly: bad text is CorruptSnapshotError)."""

    def __init__(self, text: str, location: str, where: str):
        self._text = text
        self._pos = 0
        self._buf = b""
        self._bpos = 0
        self._location = location
        self._where = where

    def readable(self) -> bool:
        return True

    def _refill(self) -> bool:
        if self._pos >= len(self._text):
            return False
        piece = self._text[self._pos:self._pos + DECODE_CHUNK]
        try:
            self._buf = binascii.a2b_base64(piece, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise CorruptSnapshotError(f"{self._location}: {self._where}: StateData is not valid Base64 "
                                       f"near character {self._pos} ({exc})") from None
        self._bpos = 0
        self._pos += len(piece)
        if self._pos >= len(self._text):
            self._text = ""  # release the text as soon as it is consumed
            self._pos = 0
        return True

    def readinto(self, b) -> int:
        while self._bpos >= len(self._buf):
            if not self._refill():
                return 0
        n = min(len(b), len(self._buf) - self._bpos)
        b[:n] = self._buf[self._bpos:self._bpos + n]
        self._bpos += n
        return n

    def close(self) -> None:
        self._text = ""
        self._buf = b""
        super().close()


def open_base64(text: str, location: str, where: str) -> BinaryIO:
    """A buffered stream of the bytes behind ``text`` (padded Base64), decoded a slice at a time."""
    return io.BufferedReader(Base64Reader(text, location, where), buffer_size=DECODE_CHUNK * 3 // 4)


__all__ = ["ENCODE_CHUNK", "DECODE_CHUNK", "base64_length", "decoded_length", "encode_stream", "Base64Reader",
           "open_base64"]
