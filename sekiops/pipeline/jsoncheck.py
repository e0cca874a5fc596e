"""Is a byte stream exactly one complete JSON document? Checked while it streams, in bounded memory.

``persist`` refuses anything else (empty input, truncated JSON, non-JSON bytes, two documents,
trailing garbage) before a byte is uploaded, naming what is wrong and at which byte offset.

The check runs in C at a few hundred MB/s: libyajl's parser with no callbacks validates
grammar, escapes and UTF-8 without building a single object, and ctypes releases the GIL while
it runs, so the check overlaps compression on another core. libyajl comes from the system
(Debian ``libyajl2``) or from the copy the ``ijson`` wheel (a dependency) ships. Without it
the check refuses to run rather than guess (a slower pure-Python parser would accept numbers
such as ``+1`` that JSON does not); ``--raw`` stores bytes unchecked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
import threading

from ..errors import BadInputError, UsageError

#: yajl_status values
_OK, _CLIENT_CANCELED, _ERROR = 0, 1, 2

_LIB = None
_LIB_LOCK = threading.Lock()
_LIB_TRIED = False


def _load_yajl():
    """The libyajl shared library, or None (then the Python checker is used)."""
    global _LIB, _LIB_TRIED
    with _LIB_LOCK:
        if _LIB_TRIED:
            return _LIB
        _LIB_TRIED = True
        candidates = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libyajl.so*")))  # conda's yajl
        found = ctypes.util.find_library("yajl")
        if found:
            candidates.append(found)
        try:
            import ijson

            base = os.path.dirname(os.path.dirname(ijson.__file__))
            candidates += sorted(glob.glob(os.path.join(base, "ijson.libs", "libyajl*.so*")))
            candidates += sorted(glob.glob(os.path.join(os.path.dirname(ijson.__file__), ".dylibs", "libyajl*")))
        except ImportError:
            pass
        for path in candidates:
            try:
                lib = ctypes.CDLL(path)
                lib.yajl_alloc.restype = ctypes.c_void_p
                lib.yajl_alloc.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
                lib.yajl_parse.restype = ctypes.c_int
                lib.yajl_parse.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
                lib.yajl_complete_parse.restype = ctypes.c_int
                lib.yajl_complete_parse.argtypes = [ctypes.c_void_p]
                lib.yajl_get_bytes_consumed.restype = ctypes.c_size_t
                lib.yajl_get_bytes_consumed.argtypes = [ctypes.c_void_p]
                lib.yajl_get_error.restype = ctypes.c_void_p
                lib.yajl_get_error.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
                lib.yajl_free_error.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
                lib.yajl_free.argtypes = [ctypes.c_void_p]
                _LIB = lib
                break
            except (OSError, AttributeError):
                continue
        return _LIB


def backend_name() -> str | None:
    return "yajl" if _load_yajl() is not None else None


class JsonChecker:
    """Feed the bytes in order; ``finish()`` at the end. Both raise BadInputError (nothing is
    ever partly accepted) naming ``where``, what is wrong and the byte offset."""

    def __init__(self, where: str):
        self.where = where
        self.offset = 0
        self._first = b""
        lib = _load_yajl()
        if lib is None:
            raise UsageError("checking that the input is one JSON document needs libyajl, which the ijson wheel "
                             "ships (pip install ijson) or the system provides (apt install libyajl2); "
                             "--raw stores the bytes unchecked")
        self._impl = _Yajl(lib)

    def feed(self, data) -> None:
        if not data:
            return
        data = bytes(data)
        if len(self._first) < 3:
            self._first += data[:3 - len(self._first)]
            if self._first.startswith(b"\xef\xbb\xbf"):
                self._fail(0, "it starts with a UTF-8 byte order mark, which JSON text must not")
        problem = self._impl.feed(data, self.offset)
        if problem is not None:
            self._fail(*problem)
        self.offset += len(data)

    def finish(self) -> None:
        if self.offset == 0:
            self._fail(0, "the input is empty")
        problem = self._impl.finish(self.offset)
        if problem is not None:
            self._fail(*problem)
        self._impl.close()

    def _fail(self, at: int, what: str):
        self._impl.close()
        raise BadInputError(f"{self.where} is not one complete JSON document: {what} (at byte {at:,}); "
                            "nothing was stored")

    def close(self) -> None:
        self._impl.close()


class _Yajl:
    """libyajl with no callbacks: a validating parser that builds nothing."""

    def __init__(self, lib):
        self._lib = lib
        self._h = lib.yajl_alloc(None, None, None)
        if not self._h:
            raise MemoryError("yajl_alloc failed")

    def feed(self, data: bytes, base: int):
        if self._lib.yajl_parse(self._h, data, len(data)) != _OK:
            # yajl counts the offending byte as consumed
            return base + max(0, self._lib.yajl_get_bytes_consumed(self._h) - 1), self._message(data)
        return None

    def finish(self, end: int):
        if self._lib.yajl_complete_parse(self._h) != _OK:
            return end, self._message(b"")
        return None

    def _message(self, data: bytes) -> str:
        ptr = self._lib.yajl_get_error(self._h, 0, data, len(data))
        text = ctypes.string_at(ptr).decode("utf-8", "replace") if ptr else "invalid JSON"
        if ptr:
            self._lib.yajl_free_error(self._h, ptr)
        return _explain(text)

    def close(self) -> None:
        if self._h:
            self._lib.yajl_free(self._h)
            self._h = None

    def __del__(self):
        self.close()


def _explain(text: str) -> str:
    """yajl's and ijson's terse messages as a person reads them."""
    text = " ".join(text.split()).rstrip(".")
    low = text.lower()
    if "trailing garbage" in low:
        return "more data after the end of the JSON document (a second document, or trailing garbage)"
    if "premature eof" in low:
        return "the JSON document is truncated (it ends before it is complete)"
    if "utf8" in low or "utf-8" in low:
        return "invalid UTF-8"
    return (text[0].lower() + text[1:]) if text else "invalid JSON"


__all__ = ["JsonChecker", "backend_name"]
