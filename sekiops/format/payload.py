"""The payload codec: gzip (one RFC 1952 member) of the projector state JSON, over streams.

Compression and decompression use the fastest standard-gzip backend that is installed
(python-isal, then zlib-ng, then zlib); every backend emits plain gzip that Sekiban reads.
``SEKIOPS_GZIP=zlib|zlib-ng|isal`` forces one. Readers accept raw (uncompressed) JSON too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import types
import zlib
from typing import BinaryIO

from ..errors import CorruptSnapshotError, UsageError
from ..streams import Readable, Writable, buffered
from .constants import GZIP_MAGIC

CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class GzipBackend:
    name: str
    module: types.ModuleType  # zlib, or a zlib-compatible module (isal_zlib, zlib_ng)
    #: The backend's level that matches .NET's CompressionLevel.Fastest in spirit.
    fast_level: int

    def compressobj(self, level: int | None = None):
        return self.module.compressobj(self.fast_level if level is None else level, zlib.DEFLATED, 31)

    def decompressobj(self):
        return self.module.decompressobj(31)


def _candidates():
    try:
        from isal import isal_zlib

        yield GzipBackend("isal", isal_zlib, 1)
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng

        yield GzipBackend("zlib-ng", zlib_ng, 1)
    except ImportError:
        pass
    yield GzipBackend("zlib", zlib, 1)


_BACKENDS: dict[str, GzipBackend] | None = None


def backends() -> dict[str, GzipBackend]:
    global _BACKENDS
    if _BACKENDS is None:
        _BACKENDS = {b.name: b for b in _candidates()}
    return _BACKENDS


def gzip_backend(name: str | None = None) -> GzipBackend:
    """The named backend, else $SEKIOPS_GZIP, else the fastest installed one (importing only it)."""
    name = name or os.environ.get("SEKIOPS_GZIP") or None
    if name is None:
        return next(iter(_BACKENDS.values())) if _BACKENDS else next(_candidates())
    available = backends()
    if name not in available:
        raise UsageError(f"gzip backend {name!r} is not installed; available: {', '.join(available)}")
    return available[name]


def is_gzip(head: bytes) -> bool:
    return head[:2] == GZIP_MAGIC


@dataclasses.dataclass(frozen=True)
class PayloadStats:
    original_size: int
    compressed_size: int
    sha256: str


class PayloadEncoder(io.RawIOBase):
    """A writable stream: the projector state JSON goes in, gzip goes to ``out``.

    Counts uncompressed and compressed bytes and hashes the compressed bytes on the way (unless
    ``hash_output=False``: then ``sha256`` is empty and whoever receives ``out`` hashes, e.g. on
    another thread). ``finish()`` flushes the gzip trailer and returns the stats.
    """

    def __init__(self, out: Writable, backend: GzipBackend | None = None, level: int | None = None,
                 compress: bool = True, hash_output: bool = True):
        self._out = out
        self._comp = (backend or gzip_backend()).compressobj(level) if compress else None
        self._sha = hashlib.sha256() if hash_output else None
        self.original_size = 0
        self.compressed_size = 0
        self._stats: PayloadStats | None = None

    def writable(self) -> bool:
        return True

    def _emit(self, data) -> None:
        if data:
            if self._sha is not None:
                self._sha.update(data)
            self._out.write(data)
            self.compressed_size += len(data)

    def write(self, data) -> int:
        if self._stats is not None:
            raise ValueError("payload already finished")
        n = len(data)
        self.original_size += n
        self._emit(self._comp.compress(data) if self._comp else bytes(data))
        return n

    def finish(self) -> PayloadStats:
        if self._stats is None:
            if self._comp is not None:
                self._emit(self._comp.flush())
            self._stats = PayloadStats(self.original_size, self.compressed_size,
                                       self._sha.hexdigest() if self._sha is not None else "")
        return self._stats


class GzipDecodingReader(io.RawIOBase):
    """Decompress a gzip stream (one or more members) in bounded memory.

    ``limit`` caps the decompressed bytes (gzip-bomb guard); ``where`` names the source in
    errors. Truncated or corrupt input raises CorruptSnapshotError.
    """

    def __init__(self, src: BinaryIO, where: str, limit: int | None = None,
                 backend: GzipBackend | None = None, chunk: int = CHUNK):
        self._src = src
        self._where = where
        self._limit = limit
        self._backend = backend or gzip_backend()
        self._d = self._backend.decompressobj()
        self._chunk = chunk
        self._pending = b""
        self._member_started = False
        self._src_eof = False
        self.output_size = 0
        self.input_size = 0

    def readable(self) -> bool:
        return True

    def _fail(self, what: str):
        raise CorruptSnapshotError(f"{self._where}: {what}")

    def readinto(self, b) -> int:
        want = len(b)
        if want == 0:
            return 0
        while True:
            if self._d.unconsumed_tail:
                data = self._d.unconsumed_tail
            elif self._d.eof:
                rest = self._d.unused_data
                if not rest:
                    rest = self._src.read(self._chunk)
                    self.input_size += len(rest)
                if not rest:
                    return 0
                if rest[:1] == b"\x00":  # zero padding after the last member (as gzip(1) allows)
                    while rest:
                        if rest.strip(b"\x00"):
                            self._fail("trailing garbage after the gzip data")
                        rest = self._src.read(self._chunk)
                    return 0
                self._d = self._backend.decompressobj()
                data = rest
            else:
                data = self._src.read(self._chunk)
                self.input_size += len(data)
                if not data:
                    self._fail(f"gzip data is truncated after {self.input_size} bytes")
            try:
                out = self._d.decompress(data, want)
            except Exception as exc:  # zlib.error, isal error
                self._fail(f"gzip data is corrupt ({exc})")
            if out:
                self.output_size += len(out)
                if self._limit is not None and self.output_size > self._limit:
                    self._fail(f"decompressed data exceeds {self._limit} bytes (declared size or limit)"
                               " — corrupt size field or gzip bomb")
                n = len(out)
                b[:n] = out
                return n

    def read_all_bounded(self) -> bytes:  # pragma: no cover - helper for small payloads
        return self.read()


def open_payload(src: Readable, where: str, limit: int | None = None,
                 backend: GzipBackend | None = None) -> tuple[BinaryIO, bool]:
    """The stored payload as a stream of JSON bytes, and whether it was gzip.

    Gzip is detected by its magic bytes; anything else is passed through unchanged (raw JSON,
    or a custom serializer's opaque bytes).
    """
    src = buffered(src)
    head = src.peek(2)[:2]
    if is_gzip(head):
        return io.BufferedReader(GzipDecodingReader(src, where, limit, backend), CHUNK), True
    if limit is not None:
        return io.BufferedReader(_Limited(src, limit, where), CHUNK), False
    return src, False


class _Limited(io.RawIOBase):
    def __init__(self, f, limit: int, where: str):
        self._f, self._left, self._where, self._limit = f, limit, where, limit

    def readable(self):
        return True

    def readinto(self, b):
        data = self._f.read(len(b))
        if len(data) > self._left:
            raise CorruptSnapshotError(f"{self._where}: payload exceeds {self._limit} bytes")
        self._left -= len(data)
        b[:len(data)] = data
        return len(data)


def decode_payload_to(read_chunk, write, where: str, limit: int | None = None,
                      backend: GzipBackend | None = None, chunk: int = 256 * 1024,
                      max_step: int = 4 * 1024 * 1024) -> tuple[int, bool]:
    """Decode a stored payload from ``read_chunk(n)`` into ``write(bytes)``: the restore hot path.

    One loop, no stream layers: gunzip (every member; zero padding allowed at the end) when the
    data starts with the gzip magic, else copy. Each decompress step yields at most ``max_step``
    bytes and the total is capped by ``limit`` (gzip bombs stop there). Returns (bytes written,
    was gzip). Truncated or corrupt data raises CorruptSnapshotError naming ``where``.
    """
    first = b""
    while len(first) < 2:
        more = read_chunk(chunk)
        if not more:
            break
        first += more
    total = 0

    def emit(data) -> None:
        nonlocal total
        if data:
            total += len(data)
            if limit is not None and total > limit:
                raise CorruptSnapshotError(f"{where}: decoded payload exceeds {limit} bytes (declared size or "
                                           "limit) — corrupt size field or gzip bomb")
            write(data)

    if not is_gzip(first):
        data = first
        while data:
            emit(data)
            data = read_chunk(chunk)
        return total, False
    backend = backend or gzip_backend()
    d = backend.decompressobj()
    data = first
    consumed = len(first)
    while True:
        if not data:
            data = read_chunk(chunk)
            if not data:
                raise CorruptSnapshotError(f"{where}: gzip data is truncated after {consumed} bytes")
            consumed += len(data)
        try:
            out = d.decompress(data, max_step)
        except Exception as exc:  # zlib.error / isal error
            raise CorruptSnapshotError(f"{where}: gzip data is corrupt ({exc})") from None
        emit(out)
        if not d.eof:
            data = d.unconsumed_tail
            continue
        rest = d.unused_data or read_chunk(chunk)
        if not rest:
            return total, True
        if rest[:1] == b"\x00":  # zero padding after the last member, up to the end
            while rest:
                if rest.strip(b"\x00"):
                    raise CorruptSnapshotError(f"{where}: trailing garbage after the gzip data")
                rest = read_chunk(chunk)
            return total, True
        d = backend.decompressobj()  # another member
        data = rest
