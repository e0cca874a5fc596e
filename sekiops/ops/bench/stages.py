"""Where persist's and restore's CPU goes: every stage alone, on one thread, in one process.

``python -m sekiops.ops.bench stages --in STATE`` holds a sample of the state in memory (default
up to 128 MiB) and runs each stage over it in interleaved rounds, measuring the thread's CPU
time (``time.thread_time``): CPU milliseconds per MiB (2^20 bytes) of state JSON, best of the
rounds. These are measured numbers. From them, :func:`bounds` *models* what the pipeline could
reach on ``cores`` cores: the stages run on separate threads, so a persist can go no faster than
its busiest serial stage (the JSON check, or the compression divided over its threads) nor than
its total CPU divided by the cores. The report labels those bounds as modelled.

Stages of a persist: read (1 MiB reads from the page cache), the JSON check (each validator
installed), gzip as one stream (the codec floor's work), gzip in 1 MiB blocks (the threaded
path's work per block, CRC-32 included), sha256 of the gzip output, the temp-file write. Of a
restore: gunzip, sha256 of the gzip input, the output write.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time

from ...format.payload import gzip_backend
from ...format.pgzip import WINDOW, _deflate_block
from ...pipeline import jsoncheck
from ...units import MiB


def _load(path: str, sample: int) -> list[bytes]:
    chunks, n = [], 0
    with open(path, "rb", buffering=0) as f:
        while n < sample:
            data = f.read(min(MiB, sample - n))
            if not data:
                break
            chunks.append(data)
            n += len(data)
    return chunks


def stage_child(path: str, gzip: str | None = None, sample: int = 128 * MiB, rounds: int = 3,
                tmpdir: str | None = None) -> dict:
    backend = gzip_backend(gzip)
    chunks = _load(path, sample)
    size = sum(map(len, chunks))
    if not size:
        raise ValueError(f"{path} is empty")
    comp = backend.compressobj()
    gz = [comp.compress(c) for c in chunks] + [comp.flush()]
    gz = [g for g in gz if g]
    tmpdir = tmpdir or tempfile.gettempdir()

    def read():
        with open(path, "rb", buffering=0) as f:
            left = size
            while left > 0:
                data = f.read(min(MiB, left))
                if not data:
                    break
                left -= len(data)

    def check(name):
        def run():
            lib = jsoncheck._load_native() if name == "native" else jsoncheck._load_yajl()
            impl = jsoncheck._Native(lib) if name == "native" else jsoncheck._Yajl(lib)
            try:
                for c in chunks:
                    if impl.feed(c, 0) is not None:
                        raise ValueError(f"{path}: not JSON (the {name} check refused it)")
            finally:
                impl.close()
        return run

    def compress_stream():
        c = backend.compressobj()
        for data in chunks:
            c.compress(data)
        c.flush()

    def compress_blocks():
        prev = b""
        for data in chunks:
            _deflate_block(backend, backend.fast_level, data, prev)
            prev = data[-WINDOW:]

    def sha_gz():
        h = hashlib.sha256()
        for g in gz:
            h.update(g)

    def write(parts):
        def run():
            fd, p = tempfile.mkstemp(dir=tmpdir, prefix="sekiops-stages-")
            try:
                with os.fdopen(fd, "wb", buffering=MiB) as f:
                    for part in parts:
                        f.write(part)
            finally:
                os.unlink(p)
        return run

    def gunzip():
        d = backend.decompressobj()
        for g in gz:
            d.decompress(g)

    stages = {"read": ("persist", read)}
    for name, loaded in (("native", jsoncheck._load_native()), ("yajl", jsoncheck._load_yajl())):
        if loaded is not None:
            stages[f"json check ({name})"] = ("persist", check(name))
    stages.update({
        "gzip, one stream (codec floor)": ("codec", compress_stream),
        "gzip, 1 MiB blocks (threaded path, per thread)": ("persist", compress_blocks),
        "sha256 of the gzip output": ("persist", sha_gz),
        "temp-file write of the gzip output": ("persist", write(gz)),
        "gunzip": ("restore", gunzip),
        "sha256 of the gzip input (restore --verify)": ("restore", sha_gz),
        "output write": ("restore", write(chunks)),
    })
    best: dict[str, float] = {}
    for _ in range(max(1, rounds)):
        for name, (_, fn) in stages.items():
            t = time.thread_time()
            fn()
            cpu = time.thread_time() - t
            best[name] = min(best.get(name, cpu), cpu)
    mib = size / MiB
    rows = [{"stage": name, "side": side, "cpu_ms_per_mib": round(best[name] * 1000 / mib, 3),
             "mib_s_one_thread": round(mib / best[name], 1) if best[name] > 0 else None}
            for name, (side, _) in stages.items()]
    return {"state": path, "sample_bytes": size, "gzip_backend": backend.name, "rounds": rounds,
            "compressed_bytes": sum(map(len, gz)), "stages": rows,
            "checker": jsoncheck.backend_name(), "cores": _cores()}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def bounds(result: dict, cores: int | None = None, threads: int | None = None) -> dict:
    """Modelled (not measured): the persist throughput the measured stage costs allow on ``cores``.

    Each stage runs on its own thread; compression is split over ``threads``. The pipeline's
    time per MiB is at least its busiest serial stage's and at least its total CPU / cores.
    Returns per checker: total CPU ms/MiB, the bound in MiB/s and as a ratio to the codec floor.
    """
    cores = cores or result["cores"]
    threads = threads or cores
    cost = {r["stage"]: r["cpu_ms_per_mib"] for r in result["stages"]}
    floor = cost["gzip, one stream (codec floor)"]
    blocks = cost["gzip, 1 MiB blocks (threaded path, per thread)"]
    rest = cost["read"] + cost["sha256 of the gzip output"] + cost["temp-file write of the gzip output"]
    out = {}
    for name in ("native", "yajl"):
        check = cost.get(f"json check ({name})")
        if check is None:
            continue
        total = check + blocks + rest
        serial = max(check, blocks / threads, rest)
        per_mb = max(serial, total / cores)
        out[name] = {"cpu_ms_per_mib": round(total, 3), "bound_ms_per_mib": round(per_mb, 3),
                     "bound_mib_s": round(1000 / per_mb, 1), "bound_ratio_to_codec": round(floor / per_mb, 3),
                     "limited_by": "the JSON check" if serial >= total / cores and serial == check
                     else ("compression" if serial >= total / cores and serial == blocks / threads else "the cores")}
    out["no check (for comparison)"] = {
        "cpu_ms_per_mib": round(blocks + rest, 3),
        "bound_ms_per_mib": round(max(blocks / threads, rest, (blocks + rest) / cores), 3)}
    nb = out["no check (for comparison)"]
    nb["bound_mib_s"] = round(1000 / nb["bound_ms_per_mib"], 1)
    nb["bound_ratio_to_codec"] = round(floor / nb["bound_ms_per_mib"], 3)
    return {"cores": cores, "threads": threads, "codec_floor_ms_per_mib": floor, "modelled": True, "by_checker": out}
