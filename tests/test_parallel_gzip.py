"""Threaded compression in persist: still one RFC 1952 member that independent decoders read.

The payload persist writes with several threads must be one gzip member (zlib reads it to its
end with nothing left over; ``gzip -t`` accepts it; Python's gzip module decodes it), its sha256
must be the blob key's, and the bytes must not depend on the thread count or on how the input
was chunked (same state, same key). A worker's failure reaches the caller; memory stays bounded.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zlib

import pytest

from sekiops.blob import open_blob_store
from sekiops.errors import BadInputError
from sekiops.format.payload import backends, gzip_backend
from sekiops.format.pgzip import BLOCK, BlockGzipEncoder, crc32_combine
from sekiops.pipeline.persist import PersistOptions, persist_stream
from sekiops.pipeline.restore import restore
from sekiops.state import open_state_store

SLUI = "0" * 30
GZIP = shutil.which("gzip")


def state_json(n_bytes: int) -> bytes:
    items, size, i = [], 2, 0
    while size < n_bytes:
        item = json.dumps({"id": i, "name": f"customer {i} 東京", "balance": i * 1.25, "tags": ["a", "b"][: i % 3]},
                          ensure_ascii=False).encode()
        items.append(item)
        size += len(item) + 1
        i += 1
    return b"[" + b",".join(items) + b"]"


DATA = state_json(3 * BLOCK + 12345)


def one_member(gz: bytes) -> bytes:
    """Decode with zlib as a single gzip member; fail if anything follows it."""
    d = zlib.decompressobj(31)
    out = d.decompress(gz)
    assert d.eof, "the gzip member does not end"
    assert d.unused_data == b"", f"{len(d.unused_data)} bytes after the first gzip member"
    return out


def gzip_t(tmp_path, gz: bytes) -> None:
    if GZIP is None:
        pytest.skip("no gzip(1) on this machine")
    p = tmp_path / "payload.gz"
    p.write_bytes(gz)
    r = subprocess.run([GZIP, "-t", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def encode(data: bytes, threads: int, step: int, backend=None, block: int = BLOCK) -> bytes:
    out = io.BytesIO()
    enc = BlockGzipEncoder(out, backend or gzip_backend(), threads=threads, block_size=block)
    for k in range(0, len(data), step):
        enc.write(data[k:k + step])
    stats = enc.finish()
    assert stats.original_size == len(data) and stats.compressed_size == len(out.getvalue())
    return out.getvalue()


@pytest.mark.parametrize("backend", sorted(backends()))
def test_one_member_same_bytes_whatever_the_threads_and_chunking(backend, tmp_path):
    be = backends()[backend]
    outputs = {encode(DATA, threads, step, be) for threads, step in
               [(1, BLOCK), (2, BLOCK), (3, 65536 + 7), (4, 5 * BLOCK), (2, len(DATA))]}
    assert len(outputs) == 1, "the bytes depend on the thread count or the write sizes"
    gz = outputs.pop()
    assert one_member(gz) == DATA
    assert gzip.decompress(gz) == DATA
    gzip_t(tmp_path, gz)
    assert gz[:3] == b"\x1f\x8b\x08" and gz[3] == 0  # no FNAME/FEXTRA/FCOMMENT: a plain member


@pytest.mark.parametrize("data", [b"", b"0", b"x" * BLOCK, DATA[:2 * BLOCK], DATA[:BLOCK + 1]],
                         ids=["empty", "one-byte", "exactly-one-block", "exactly-two-blocks", "one-block-and-a-byte"])
def test_edges(data, tmp_path):
    gz = encode(data, 2, max(1, len(data)))
    assert one_member(gz) == data
    gzip_t(tmp_path, gz)


def test_crc32_combine_matches_zlib():
    rnd = __import__("random").Random(7)
    for _ in range(300):
        a, b = rnd.randbytes(rnd.randint(0, 200)), rnd.randbytes(rnd.randint(0, 5000))
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_compresses_as_well_as_one_stream():
    """1 MiB blocks with a 32 KiB dictionary cost at most 0.5% over one stream at the same level."""
    be = gzip_backend()
    c = be.compressobj()
    single = len(c.compress(DATA) + c.flush())
    assert len(encode(DATA, 2, BLOCK)) <= single * 1.005


def test_a_worker_failure_reaches_the_caller_and_stops_the_pool():
    class Boom:
        def compressobj(self, *a, **k):
            raise MemoryError("no memory for a deflate state")

        crc32 = staticmethod(zlib.crc32)

    from sekiops.format.payload import GzipBackend

    enc = BlockGzipEncoder(io.BytesIO(), GzipBackend("boom", Boom(), 1), threads=2, block_size=65536)
    with pytest.raises(MemoryError):
        for _ in range(20):
            enc.write(b" " * 65536)
        enc.finish()
    enc.close()
    assert enc._pool._shutdown


@pytest.fixture
def stores(tmp_path):
    state = open_state_store(f"sqlite:///{tmp_path}/s.db")
    blob = open_blob_store(str(tmp_path / "blobs"))
    yield state, blob, tmp_path / "blobs"
    state.close()


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_threaded_persist_writes_one_member_whose_hash_is_its_key(stores, tmp_path, threads):
    state, blob, blob_dir = stores
    r = persist_stream(state, blob, io.BytesIO(DATA), projector_name="P", projector_version=str(threads),
                       events_processed=1, last_sortable_unique_id=SLUI,
                       options=PersistOptions(payload_threshold=100, threads=threads))
    assert r.threads == threads and r.payload_location == "blob"
    stored = (blob_dir / r.payload_key).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == r.payload_sha256
    assert r.payload_key.endswith(r.payload_sha256 + ".bin")
    assert len(stored) == r.compressed_size_bytes
    assert one_member(stored) == DATA
    gzip_t(tmp_path, stored)
    out = io.BytesIO()
    restore(state, blob, out, projector_name="P", projector_version=str(threads))
    assert out.getvalue() == DATA


def test_same_state_same_key_for_any_thread_count(stores):
    state, blob, _ = stores
    keys = set()
    for threads in (1, 2, 3):
        r = persist_stream(state, blob, io.BytesIO(DATA), projector_name="Same", projector_version=str(threads),
                           events_processed=1, last_sortable_unique_id=SLUI,
                           options=PersistOptions(payload_threshold=100, threads=threads))
        keys.add(r.payload_key.split("/", 1)[1])
    assert len(keys) == 1


def test_threaded_persist_still_refuses_bad_json_and_writes_nothing(stores):
    state, blob, blob_dir = stores
    with pytest.raises(BadInputError, match="truncated"):
        persist_stream(state, blob, io.BytesIO(DATA[:-1]), projector_name="Bad", projector_version="1",
                       events_processed=1, last_sortable_unique_id=SLUI,
                       options=PersistOptions(payload_threshold=100, threads=2))
    assert state.get("Bad", "1") is None
    assert not list(blob_dir.rglob("*.bin")) if blob_dir.exists() else True


@pytest.mark.parametrize("bad", [0, -1, 257, True, 1.5])
def test_threads_option_is_checked(stores, bad):
    from sekiops.errors import UsageError

    state, blob, _ = stores
    with pytest.raises(UsageError, match="threads"):
        persist_stream(state, blob, io.BytesIO(b"{}"), projector_name="T", projector_version="1",
                       events_processed=1, last_sortable_unique_id=SLUI, options=PersistOptions(threads=bad))


def test_cli_threads_flag(tmp_path):
    src = tmp_path / "s.json"
    src.write_bytes(DATA)
    base = [sys.executable, "-m", "sekiops", "persist", "--state", f"sqlite:///{tmp_path}/c.db", "--blob",
            str(tmp_path / "b"), "--projector", "C", "--events-processed", "1", "--last-sortable-unique-id", SLUI,
            "--in", str(src), "--payload-threshold", "100"]
    env = {**os.environ, "SEKIOPS_SPOOL_DIR": str(tmp_path / "spool")}
    bad = subprocess.run(base + ["--version", "1", "--threads", "0"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "--threads" in bad.stderr
    ok = subprocess.run(base + ["--version", "1", "--threads", "3"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["threads"] == 3 and summary["json_check"] in ("native", "yajl")
    helptext = subprocess.run([sys.executable, "-m", "sekiops", "persist", "--help"], capture_output=True, text=True)
    flat = " ".join(helptext.stdout.split())
    assert "--threads N" in flat and "one gzip member" in flat and "at most 8" in flat


@pytest.mark.parametrize("setting,expected", [("1", "True"), ("0", "False")])
def test_restore_allocator_setting_applies_and_can_be_turned_off(setting, expected):
    """sekiops restore (and the codec floor) keep freed gunzip buffers for reuse (glibc mallopt);
    SEKIOPS_MALLOC_TUNE=0 leaves the allocator alone. Run in a child: it changes the process."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    code = "from sekiops.pipeline.memory import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, env={**os.environ, "SEKIOPS_MALLOC_TUNE": setting}, timeout=60)
    assert out.stdout.strip() == expected, out.stderr


def test_blocks_in_flight_stay_bounded():
    """At most threads + 2 blocks are queued or running, however fast the writes come."""
    enc = BlockGzipEncoder(io.BytesIO(), gzip_backend(), threads=3, block_size=65536)
    peak = 0
    for _ in range(200):
        enc.write(b"x" * 65536)
        peak = max(peak, len(enc._inflight))
    enc.finish()
    assert peak <= 3 + 2


def test_default_threads_is_the_cpu_count_capped():
    from sekiops.pipeline.persist import MAX_DEFAULT_THREADS, default_threads

    n = default_threads()
    assert 1 <= n <= MAX_DEFAULT_THREADS and n <= len(os.sched_getaffinity(0))
