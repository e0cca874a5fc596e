"""Block-parallel gzip: one RFC 1952 member, compressed by several threads (pigz's scheme).

The input is cut into fixed blocks (:data:`BLOCK`, 1 MiB). Each block is deflated on its own by a
worker thread, primed with the last 32 KiB of the block before it as the dictionary (so matches
still reach back across the cut), and ended with a sync flush (byte-aligned, not final). The
caller's thread writes the compressed blocks in input order, combines their CRC-32s, and ends
the stream with an empty final block and the gzip trailer. The result is one ordinary gzip
member -- one header, one deflate stream, one trailer -- that any inflater reads (zlib, .NET's
GZipStream, ``gzip -t``): pigz has produced exactly this since 2007.

The bytes depend only on the input, the backend and its level, never on the thread count or on
how the writes were sized, so ``threads=1`` and ``threads=8`` give the same content-addressed key.

Memory: at most ``threads + 2`` blocks in flight (each 1 MiB of input and its output), e.g. ~5 MiB
with 2 threads: one block per worker and two queued, so no worker waits for the next.
Every codec call releases the GIL (python-isal, zlib-ng, zlib do for inputs this size).
"""

from __future__ import annotations

import collections
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

from .payload import GzipBackend, PayloadStats, gzip_backend

#: Input bytes per independently compressed block (pigz uses 128 KiB; 1 MiB keeps the per-block
#: cost -- a fresh deflate state, a 32 KiB dictionary, a 5-byte sync marker -- under 0.1%).
BLOCK = 1024 * 1024
WINDOW = 32 * 1024
#: gzip header as zlib writes it for level 1 (mtime 0, XFL 4 = fastest, OS 3 = Unix).
HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 4, 3])


class BlockGzipEncoder:
    """A writable stream: JSON in, one gzip member to ``out.write`` out, compressed by ``threads``.

    Same interface as :class:`~sekiops.format.payload.PayloadEncoder` (``write``, ``finish()`` ->
    :class:`PayloadStats` with an empty sha256: the receiver of ``out`` hashes), plus ``close()``
    to abandon it (workers stop, nothing more is written). A compression error is raised by the
    next ``write`` or by ``finish``.
    """

    def __init__(self, out, backend: GzipBackend | None = None, threads: int = 1,
                 block_size: int = BLOCK, level: int | None = None):
        if block_size < WINDOW:
            raise ValueError(f"block size must be at least {WINDOW} bytes")
        self._out = out
        self._backend = backend or gzip_backend()
        self._level = self._backend.fast_level if level is None else level
        self.threads = max(1, int(threads))
        self._block = block_size
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sekiops-gzip")
        self._inflight: collections.deque = collections.deque()
        self._buf = bytearray()
        self._dict = b""
        self._crc = 0
        self._crc_combine = _crc_combine(self._backend)
        self.original_size = 0
        self.compressed_size = 0
        self._stats: PayloadStats | None = None
        self._closed = False
        self._emit(HEADER)

    def writable(self) -> bool:
        return True

    # -- the caller's side ---------------------------------------------------------------------

    def write(self, data) -> int:
        if self._stats is not None or self._closed:
            raise ValueError("payload already finished")
        n = len(data)
        if not n:
            return 0
        self.original_size += n
        if not self._buf and n == self._block and isinstance(data, bytes):
            self._submit(data)  # the common case: a whole block, no copy
            return n
        self._buf += data
        while len(self._buf) >= self._block:
            block = bytes(self._buf[:self._block])
            del self._buf[:self._block]
            self._submit(block)
        return n

    def finish(self) -> PayloadStats:
        if self._stats is None:
            try:
                if self._buf:
                    self._submit(bytes(self._buf))
                    self._buf = bytearray()
                while self._inflight:
                    self._collect()
                self._emit(self._backend.module.compressobj(self._level, zlib.DEFLATED, -15).flush())
                self._emit(struct.pack("<II", self._crc & 0xFFFFFFFF, self.original_size & 0xFFFFFFFF))
            finally:
                self.close()
            self._stats = PayloadStats(self.original_size, self.compressed_size, "")
        return self._stats

    def close(self) -> None:
        """Stop the workers (queued blocks are dropped); safe to call twice."""
        if not self._closed:
            self._closed = True
            for fut in self._inflight:
                fut.cancel()
            self._inflight.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BlockGzipEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _submit(self, block: bytes) -> None:
        # at most threads + 2 blocks queued or running: bounded memory, and the workers never idle
        while len(self._inflight) >= self.threads + 2:
            self._collect()
        self._inflight.append(self._pool.submit(_deflate_block, self._backend, self._level, block, self._dict))
        self._dict = block[-WINDOW:]

    def _collect(self) -> None:
        compressed, crc, length = self._inflight.popleft().result()  # a worker's error is raised here
        self._crc = self._crc_combine(self._crc, crc, length)
        self._emit(compressed)

    def _emit(self, data) -> None:
        if data:
            self._out.write(data)
            self.compressed_size += len(data)



def _deflate_block(backend: GzipBackend, level: int, block: bytes, zdict: bytes) -> tuple[bytes, int, int]:
    """Raw deflate of one block, primed with ``zdict``, ended by a sync flush; and its CRC-32."""
    mod = backend.module
    comp = (mod.compressobj(level, zlib.DEFLATED, -15, zdict=zdict) if zdict
            else mod.compressobj(level, zlib.DEFLATED, -15))
    out = comp.compress(block) + comp.flush(zlib.Z_SYNC_FLUSH)
    return out, mod.crc32(block), len(block)


def _crc_combine(backend: GzipBackend):
    combine = getattr(backend.module, "crc32_combine", None)
    return combine if combine is not None else crc32_combine


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """zlib's crc32_combine (CRC-32 of A+B from CRC(A), CRC(B), len(B)) for backends without one:
    GF(2) matrix squaring, O(log len2)."""
    if len2 <= 0:
        return crc1

    def times(mat, vec):
        s = 0
        i = 0
        while vec:
            if vec & 1:
                s ^= mat[i]
            vec >>= 1
            i += 1
        return s

    def square(mat):
        return [times(mat, mat[n]) for n in range(32)]

    mat = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
    mat = square(square(mat))  # four zero bits
    while len2:
        mat = square(mat)  # 2**k zero bytes at step k
        if len2 & 1:
            crc1 = times(mat, crc1)
        len2 >>= 1
    return (crc1 ^ crc2) & 0xFFFFFFFF


__all__ = ["BLOCK", "BlockGzipEncoder", "crc32_combine"]
