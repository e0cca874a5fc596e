"""Small stream helpers shared by stores and pipelines: counting, hashing, bounded reading."""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024

#: A binary file object, buffered (``open(..., "rb")``, BytesIO) or raw (``io.RawIOBase``, as the
#: counting and hashing wrappers here are): typing.BinaryIO alone is nominal and admits no RawIOBase.
BinaryFile = BinaryIO | io.RawIOBase


class Readable(Protocol):
    """What a reader needs of its source: ``read(n)``, up to n bytes, ``b""`` at the end."""

    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    """What a writer needs of its sink: ``write(data)``."""

    def write(self, data: bytes, /) -> object: ...


def iter_chunks(src: BinaryIO, chunk: int = CHUNK):
    """Yield ``src``'s bytes in chunks of up to ``chunk``, reading into one reused buffer when the
    stream has ``readinto`` (then each chunk is a view, valid until the next one)."""
    readinto = getattr(src, "readinto", None)
    if readinto is None:
        while data := src.read(chunk):
            yield data
        return
    view = memoryview(bytearray(chunk))
    while got := readinto(view):
        yield view[:got]


def copy_hashing(src: BinaryIO, dst: BinaryIO | None, chunk: int = CHUNK) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (or nowhere) in chunks; return (bytes, sha256 hex)."""
    h = hashlib.sha256()
    n = 0
    for data in iter_chunks(src, chunk):
        h.update(data)
        if dst is not None:
            dst.write(data)
        n += len(data)
    return n, h.hexdigest()


class CountingWriter(io.RawIOBase):
    """A write-only stream that counts (and optionally hashes) what passes to ``target``."""

    def __init__(self, target: BinaryIO | None = None, hash_it: bool = False):
        self.target = target
        self.count = 0
        self._h = hashlib.sha256() if hash_it else None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = len(data)
        self.count += n
        if self._h is not None:
            self._h.update(data)
        if self.target is not None:
            self.target.write(data)
        return n

    @property
    def sha256(self) -> str | None:
        return self._h.hexdigest() if self._h else None


class ChunkReader(io.RawIOBase):
    """A readable stream over a function that yields successive byte chunks (b'' at the end)."""

    def __init__(self, next_chunk: Callable[[], bytes], on_close: Callable[[], None] | None = None):
        self._next = next_chunk
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._buf):
            if self._eof:
                return 0
            self._buf = self._next()
            self._pos = 0
            if not self._buf:
                self._eof = True
                return 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            self._on_close()
        super().close()


def read_full(src: Readable, n: int) -> bytes:
    """Read exactly ``n`` bytes unless the stream ends first (sockets and pipes return less)."""
    data = src.read(n)
    if not data or len(data) == n:
        return data or b""
    parts = [data]
    got = len(data)
    while got < n:
        more = src.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class FullReader(io.RawIOBase):
    """Adapts any ``read(n)`` object for io.BufferedReader, filling each request when it can."""

    def __init__(self, src):
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = read_full(self._src, len(b))
        n = len(data)
        b[:n] = data
        return n


def buffered(src, size: int = CHUNK) -> io.BufferedReader:
    """A BufferedReader over ``src`` whose ``peek(n)`` sees n bytes whenever the stream has them."""
    if isinstance(src, io.BufferedReader):
        return src
    return io.BufferedReader(FullReader(src), size)


class HashingReader(io.RawIOBase):
    """Wraps a readable stream, counting and hashing every byte read through it."""

    def __init__(self, src: Readable):
        self._src = src
        self._h = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._src.read(len(b))
        n = len(data)
        if n:
            b[:n] = data
            self._h.update(data)
            self.count += n
        return n

    def read_chunk(self, n: int) -> bytes:
        """Read up to ``n`` bytes straight from the source (no copy into a buffer), hashing them."""
        data = self._src.read(n)
        if data:
            self._h.update(data)
            self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read_chunk(CHUNK):
            pass

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._src, "close", None)
            if close is not None:
                close()
        super().close()


class WriteBehind:
    """Hands writes to one thread, so writing the output overlaps decoding the next chunk.

    Disk writes release the GIL, and so does the gzip codec, so two cores run both at once.
    At most ``depth`` chunks wait (bounded memory). A failed write is raised by the next
    ``write`` or by ``close``, which waits for everything queued: use as a context manager.
    """

    def __init__(self, write: Callable[[bytes], object], depth: int = 3):
        self._write = write
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sekiops-write-behind", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            if self._error is None:
                try:
                    self._write(data)
                except BaseException as exc:  # handed to the producer
                    self._error = exc

    def write(self, data) -> int:
        if self._error is not None:
            raise self._error
        self._queue.put(data)
        return len(data)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._error = self._error or exc  # stop writing what is still queued
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class ReadAhead:
    """Reads ``read(size)`` chunks on one thread while the caller works on the previous ones.

    Iterate it for the chunks (the source's end ends the iteration; a failed read is raised
    there). At most ``depth`` chunks wait. Use as a context manager: leaving early stops the
    reader thread.
    """

    _END = object()

    def __init__(self, read: Callable[[int], bytes], size: int = CHUNK, depth: int = 3):
        self._read, self._size = read, size
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sekiops-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._read(self._size)
                if not data:
                    break
                if not self._put(data):
                    return
        except BaseException as exc:  # handed to the consumer
            self._put(exc)
            return
        self._put(self._END)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        # A reader blocked on a pipe (stdin) cannot be woken: it is a daemon thread, so an
        # interrupted command must not wait for it; it ends with the process.
        self._thread.join(timeout=5)

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
