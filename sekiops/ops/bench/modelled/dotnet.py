"""The buffers of Sekiban's byte[] path, modelled in Python (not measured on .NET).

The benchmark shows, on the same data, what the streaming path saves. So the model allocates
what Sekiban's byte[] path allocates, in the same order, at the same sizes -- for a state of S
bytes of JSON and a gzip payload of c bytes:

1. the projector's ``Serialize``: ``JsonSerializer.Serialize(dto)`` writes UTF-8 into System.Text.Json's
   pooled buffer (16 KiB, doubled with a copy when full), then transcodes it into a .NET string:
   UTF-16, two bytes per char                                    -> S + 2S held at the transcode
2. ``GzipCompression.CompressString(json)``: ``Encoding.UTF8.GetBytes`` -> 2S + S held
3. ``GzipCompression.Compress``: an ArrayPool copy of the bytes, GZipStream into a MemoryStream
   (capacity doubled with a copy when full), ``ToArray``          -> 2S + 2c held
4. ``SerializableMultiProjectionState.FromBytes``: ``Convert.ToBase64String`` -> a UTF-16 string, 8c/3
5. ``GetSerializableStateWithOffloadAsync`` measures the inline state with ``JsonSerializer.Serialize``
   -> another UTF-16 string of about 8c/3 (``+`` escaped as ``\\u002B``)
6. payload offloaded: the bytes are uploaded; else the envelope JSON string is made once more and
   ``Encoding.UTF8.GetBytes`` gives StateData.

Every buffer here is written in full (so it is resident, as the .NET one is) and freed the moment
the .NET code drops its last reference to it: a lower bound of what .NET holds, whose GC frees large
objects later and whose ArrayPool keeps returned buffers. Buffers are anonymous memory maps, so
only written pages count -- as with a fresh large .NET array -- and the Python heap peak
(tracemalloc) does not see them. The payload stored is the same gzip the streaming path writes.
"""

from __future__ import annotations

import binascii
import codecs
import io
import mmap
from collections.abc import Callable
from typing import BinaryIO

from ....format.envelope import EnvelopeMeta, inline_envelope_length, write_inline_envelope
from ....format.payload import GzipBackend
from ....streams import Writable

STEP = 1024 * 1024  # work in 1 MiB steps, so the model adds no whole-size copies of its own
JSON_BUFFER = 16 * 1024  # JsonSerializerOptions.DefaultBufferSize: the pooled writer's first size
MEMORY_STREAM_FIRST = 256  # MemoryStream's first capacity


class DotnetBuffer:
    """A .NET array or string body: ``capacity`` bytes, resident only where written."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self._map = mmap.mmap(-1, capacity) if capacity else None

    @property
    def _mem(self) -> mmap.mmap:
        assert self._map is not None, "only written bytes are read, and only a buffer with a capacity has any"
        return self._map

    def append(self, data) -> None:
        end = self.length + len(data)
        if end > self.capacity:
            raise ValueError("DotnetBuffer overflow")
        if data:
            self._mem[self.length:end] = data
        self.length = end

    def head(self, n: int) -> bytes:
        return self._mem[:min(n, self.length)] if self.length else b""

    def copy(self) -> bytes:
        return self._mem[:self.length] if self.length else b""

    def chunks(self, step: int = STEP):
        if not self.length:
            return
        mem = self._mem
        for i in range(0, self.length, step):
            yield mem[i:min(i + step, self.length)]

    def free(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self.capacity = self.length = 0


class GrowingBuffer:
    """A writable stream over a buffer that doubles with a copy when full.

    ``first`` 16 KiB is System.Text.Json's PooledByteBufferWriter; 256 B is MemoryStream.
    """

    def __init__(self, first: int):
        self.buf = DotnetBuffer(first)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = len(data)
        if self.buf.length + n > self.buf.capacity:
            grown = DotnetBuffer(max(self.buf.length + n, 2 * self.buf.capacity))
            for chunk in self.buf.chunks():
                grown.append(chunk)
            self.buf.free()
            self.buf = grown
        self.buf.append(data)
        return n

    def to_array(self) -> bytes:
        """MemoryStream.ToArray: an exact-size copy."""
        return self.buf.copy()

    def free(self) -> None:
        self.buf.free()


def utf16_string(chunks, max_units: int) -> DotnetBuffer:
    """A .NET string of UTF-8 text: UTF-16 code units. Bytes that are not UTF-8 survive the round trip."""
    out = DotnetBuffer(2 * max_units)
    dec = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    for chunk in chunks:
        out.append(dec.decode(chunk).encode("utf-16-le", "surrogatepass"))
    out.append(dec.decode(b"", final=True).encode("utf-16-le", "surrogatepass"))
    return out


def utf8_get_bytes(string: DotnetBuffer, byte_count: int) -> DotnetBuffer:
    """Encoding.UTF8.GetBytes(string): an exact-size UTF-8 array."""
    out = DotnetBuffer(byte_count)
    dec = codecs.getincrementaldecoder("utf-16-le")("surrogatepass")
    for chunk in string.chunks():
        out.append(dec.decode(chunk).encode("utf-8", "surrogateescape"))
    out.append(dec.decode(b"", final=True).encode("utf-8", "surrogateescape"))
    return out


class _Utf16Sink:
    """A stream that stores what is written to it as a .NET string (JsonSerializer.Serialize -> string)."""

    def __init__(self, capacity_units: int):
        self.string = DotnetBuffer(2 * capacity_units)

    def write(self, data) -> int:
        self.string.append(bytes(data).decode("latin-1").encode("utf-16-le"))
        return len(data)


def serialize_and_compress(write_body: Callable[[Writable], object], backend: GzipBackend,
                           compress: bool = True) -> tuple[bytes, int]:
    """Steps 1-3: the projector's Serialize. Returns (payload bytes, JSON byte count)."""
    writer = GrowingBuffer(JSON_BUFFER)
    write_body(writer)
    size = writer.buf.length
    json_string = utf16_string(writer.buf.chunks(), size)      # TranscodeHelper -> string
    writer.free()                                               # returned to the pool
    utf8 = utf8_get_bytes(json_string, size)                    # Encoding.UTF8.GetBytes(json)
    json_string.free()
    rented = DotnetBuffer(size)                                 # ArrayPool<byte>.Shared.Rent + CopyTo
    for chunk in utf8.chunks():
        rented.append(chunk)
    utf8.free()  # the caller's array is no longer referenced once Compress has its copy
    stream = GrowingBuffer(MEMORY_STREAM_FIRST)                 # new MemoryStream()
    comp = backend.compressobj() if compress else None
    for chunk in rented.chunks():
        stream.write(comp.compress(chunk) if comp else chunk)
    if comp:
        stream.write(comp.flush())
    rented.free()                                               # ArrayPool.Return
    payload = stream.to_array()                                 # ms.ToArray()
    stream.free()
    return payload, size


def base64_string(payload: bytes) -> DotnetBuffer:
    """Step 4: Convert.ToBase64String(payload) -> a UTF-16 string."""
    out = DotnetBuffer(2 * 4 * ((len(payload) + 2) // 3))
    view = memoryview(payload)
    step = 3 * (STEP // 4)
    for i in range(0, len(payload), step):
        out.append(binascii.b2a_base64(view[i:i + step], newline=False).decode("ascii").encode("utf-16-le"))
    return out


def envelope_string(meta: EnvelopeMeta, payload: bytes, base64: DotnetBuffer) -> DotnetBuffer:
    """Steps 5-6: JsonSerializer.Serialize of the inline state -> a UTF-16 string.

    Sized from the Base64 string of step 4: each '+' in it becomes ``\\u002B`` (5 chars more).
    """
    plus = sum(chunk.count(b"+\x00") for chunk in base64.chunks())  # UTF-16LE of ASCII: no false hits
    sink = _Utf16Sink(inline_envelope_length(meta, len(payload), plus))
    write_inline_envelope(sink, meta, io.BytesIO(payload), len(payload))
    return sink.string


# --- restore ---------------------------------------------------------------------------------------


def from_base64_string(string: DotnetBuffer) -> DotnetBuffer:
    """Convert.FromBase64String(string): the bytes (Base64 text of ASCII chars, 2 bytes each)."""
    out = DotnetBuffer(3 * (string.length // 8) + 3)
    for chunk in string.chunks(8 * (STEP // 8)):  # whole 4-char groups per step
        out.append(binascii.a2b_base64(chunk.decode("utf-16-le")))
    return out


def decompress_to_string(payload: DotnetBuffer, backend: GzipBackend, max_bytes: int | None = None) -> DotnetBuffer:
    """GzipCompression.DecompressToString: ArrayPool copy, GZipStream into a MemoryStream, ToArray,
    Encoding.UTF8.GetString -> a UTF-16 string. Raw (not gzip) payloads are taken as the JSON bytes.

    .NET sets no limit; ``max_bytes`` (the declared size) keeps a gzip bomb from taking the machine.
    """
    rented = DotnetBuffer(payload.length)                        # ArrayPool<byte>.Shared.Rent + CopyTo
    for chunk in payload.chunks():
        rented.append(chunk)
    stream = GrowingBuffer(MEMORY_STREAM_FIRST)                  # gz.CopyTo(new MemoryStream())
    if rented.head(2) == b"\x1f\x8b":
        _gunzip(rented.chunks(256 * 1024), stream, backend, max_bytes)
    else:
        for chunk in rented.chunks():
            stream.write(chunk)
    array = DotnetBuffer(stream.buf.length)                      # outMs.ToArray()
    for chunk in stream.buf.chunks():
        array.append(chunk)
    stream.free()
    rented.free()                                                # ArrayPool.Return
    string = utf16_string(array.chunks(), array.length)          # Encoding.UTF8.GetString(bytes)
    array.free()
    return string


def _gunzip(chunks, stream: GrowingBuffer, backend: GzipBackend, max_bytes: int | None) -> None:
    """Every gzip member in turn (zero padding allowed after the last), into ``stream``."""
    d = backend.decompressobj()
    for chunk in chunks:
        data = chunk
        while data:
            if d.eof:
                if not data.strip(b"\x00"):
                    break
                d = backend.decompressobj()
            stream.write(d.decompress(data, STEP))
            if max_bytes is not None and stream.buf.length > max_bytes:
                raise ValueError(f"the decompressed payload exceeds {max_bytes} bytes")
            data = d.unconsumed_tail or (d.unused_data if d.eof else b"")
    if not d.eof:
        raise ValueError("the gzip payload is truncated")


def write_utf8(string: DotnetBuffer, out: BinaryIO) -> int:
    """Write a modelled .NET string as UTF-8 (its original bytes), a step at a time; the byte count."""
    n = 0
    dec = codecs.getincrementaldecoder("utf-16-le")("surrogatepass")
    for chunk in string.chunks():
        data = dec.decode(chunk).encode("utf-8", "surrogateescape")
        out.write(data)
        n += len(data)
    tail = dec.decode(b"", final=True).encode("utf-8", "surrogateescape")
    out.write(tail)
    return n + len(tail)
