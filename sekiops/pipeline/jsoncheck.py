"""Is a byte stream exactly one complete JSON document? Checked while it streams, in bounded memory.

``persist`` refuses anything else (empty input, truncated JSON, non-JSON bytes, two documents,
trailing garbage) before a byte is uploaded, naming what is wrong and at which byte offset.

The check runs in C and builds no object; ctypes releases the GIL while it runs, so it overlaps
compression on another core. Two implementations, the first one present is used:

* ``native``: sekiops' own validator (``_jsonvalid.c``, built by ``pip install`` when a C compiler
  is there; ~1.5-2x libyajl's speed on projector JSON, measured by ``python -m sekiops.ops.bench
  stages``). RFC 8259 exactly, and strict UTF-8 (no overlong forms, no encoded surrogates).
* ``yajl``: libyajl's parser with no callbacks, from the system (Debian ``libyajl2``) or from the
  copy the ``ijson`` wheel (a dependency) ships. It lets overlong and surrogate UTF-8 through.

``SEKIOPS_JSONCHECK=yajl|native`` forces one. Without either the check refuses to run rather
than guess (a slower pure-Python parser would accept numbers such as ``+1`` that JSON does not);
``--raw`` stores bytes unchecked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.machinery
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


_NATIVE = None
_NATIVE_TRIED = False

#: error codes of _jsonvalid.c, as a person reads them
_NATIVE_ERRORS = {
    1: "expected a value (an object, array, string, number, true, false or null)",
    2: "expected a string (an object key)",
    3: "expected ':' after an object key",
    4: "expected ',' or '}' after an object member",
    5: "expected ',' or ']' after an array element",
    6: "more data after the end of the JSON document (a second document, or trailing garbage)",
    7: "invalid escape in a string",
    8: "invalid \\u escape in a string (four hex digits expected)",
    9: "control character in a string (it must be escaped)",
    10: "invalid UTF-8",
    11: "invalid number",
    12: "invalid literal (true, false or null expected)",
    13: "nesting deeper than {depth:,} levels",
    14: "the JSON document is truncated (it ends before it is complete)",
    15: "expected a value or ']'",
    16: "expected a string (an object key) or '}'",
}


def _load_native():
    """sekiops' own validator (``_jsonvalid*.so`` beside this module), or None when it was not built."""
    global _NATIVE, _NATIVE_TRIED
    with _LIB_LOCK:
        if _NATIVE_TRIED:
            return _NATIVE
        _NATIVE_TRIED = True

        here = os.path.dirname(os.path.abspath(__file__))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(here, "_jsonvalid" + suffix)
            if not os.path.exists(path):
                continue
            try:
                lib = ctypes.CDLL(path)
                lib.jv_new.restype = ctypes.c_void_p
                lib.jv_new.argtypes = []
                lib.jv_free.argtypes = [ctypes.c_void_p]
                lib.jv_feed.restype = ctypes.c_int
                lib.jv_feed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
                lib.jv_finish.restype = ctypes.c_int
                lib.jv_finish.argtypes = [ctypes.c_void_p]
                lib.jv_error.restype = ctypes.c_int
                lib.jv_error.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)]
                lib.jv_max_depth.restype = ctypes.c_uint32
                _NATIVE = lib
                break
            except (OSError, AttributeError):
                continue
        return _NATIVE


def _choose():
    """(name, library) of the validator to use: $SEKIOPS_JSONCHECK, else native, else yajl."""
    forced = os.environ.get("SEKIOPS_JSONCHECK") or None
    if forced not in (None, "native", "yajl"):
        raise UsageError(f"SEKIOPS_JSONCHECK={forced!r}: use native or yajl")
    if forced in (None, "native"):
        lib = _load_native()
        if lib is not None:
            return "native", lib
        if forced == "native":
            raise UsageError("SEKIOPS_JSONCHECK=native, but sekiops' JSON validator was not built "
                             "(pip install needs a C compiler for it)")
    lib = _load_yajl()
    return ("yajl", lib) if lib is not None else (None, None)


def backend_name() -> str | None:
    """``native``, ``yajl``, or None when neither is there."""
    return _choose()[0]


class JsonChecker:
    """Feed the bytes in order; ``finish()`` at the end. Both raise BadInputError (nothing is
    ever partly accepted) naming ``where``, what is wrong and the byte offset."""

    def __init__(self, where: str):
        self.where = where
        self.offset = 0
        self._first = b""
        name, lib = _choose()
        if lib is None:
            raise UsageError("checking that the input is one JSON document needs sekiops' JSON validator (built "
                             "by pip install with a C compiler) or libyajl, which the ijson wheel ships (pip "
                             "install ijson) or the system provides (apt install libyajl2); --raw stores the "
                             "bytes unchecked")
        self.backend = name
        self._impl = _Native(lib) if name == "native" else _Yajl(lib)

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


class _Native:
    """sekiops' validator (``_jsonvalid.c``): offsets and error codes from the C side."""

    def __init__(self, lib):
        self._lib = lib
        self._h = lib.jv_new()
        if not self._h:
            raise MemoryError("jv_new failed")

    def feed(self, data: bytes, base: int):
        if self._lib.jv_feed(self._h, data, len(data)) != 0:
            return self._problem()
        return None

    def finish(self, end: int):
        if self._lib.jv_finish(self._h) != 0:
            return self._problem()
        return None

    def _problem(self):
        at = ctypes.c_uint64()
        code = self._lib.jv_error(self._h, ctypes.byref(at))
        what = _NATIVE_ERRORS.get(code, "invalid JSON")
        if code == 13:
            what = what.format(depth=self._lib.jv_max_depth())
        return at.value, what

    def close(self) -> None:
        if self._h:
            self._lib.jv_free(self._h)
            self._h = None

    def __del__(self):
        self.close()


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
