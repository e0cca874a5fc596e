"""The codec floor: gzip compress-alone and decompress-alone of the same state bytes.

The child (:func:`codec_child`, run as ``python -m sekiops.ops.bench codec``) streams a file to
a file in :data:`CODEC_CHUNK` reads with one backend and times the loop. :class:`CodecFloor`
runs it once per round in the parent's benchmark, keeps each direction's fastest run, and gives
the pipeline rows their ratios: the best pipeline run over the best codec run, and the median
over the rounds of the ratio within one round (codec and scenario ran seconds apart and saw the
same background load).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from ...format.payload import gzip_backend
from ...pipeline.memory import tune_malloc
from ...units import MiB
from . import commands
from .measure import Measured

#: Read size of the codec floor: 256 KiB inputs were the fastest for both isal and zlib here (1 MiB
#: inputs make each decompress call return ~4.5 MiB, whose buffer growth costs 10-30%).
CODEC_CHUNK = 256 * 1024

#: The codec direction a pipeline op is judged against.
DIRECTION = {"persist": "compress", "restore": "decompress", "anatomy": "decompress"}


def codec_child(direction: str, gzip: str | None, src: str, dst: str) -> dict:
    """Compress or decompress ``src`` to ``dst``, streamed in :data:`CODEC_CHUNK` reads; time the loop.

    fsync is timed separately (``fsync_s``) and not counted in ``seconds``: the codec floor is
    read + codec + write to the page cache.
    """
    tune_malloc()  # as sekiops persist/restore do: the codec floor gets the same allocator settings
    backend = gzip_backend(gzip)
    obj = backend.compressobj() if direction == "compress" else backend.decompressobj()
    work = obj.compress if direction == "compress" else obj.decompress
    n_in = n_out = 0
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        start = time.perf_counter()
        while True:
            data = fin.read(CODEC_CHUNK)
            if not data:
                break
            n_in += len(data)
            out = work(data)
            if out:
                fout.write(out)
                n_out += len(out)
        out = obj.flush()
        if out:
            fout.write(out)
            n_out += len(out)
        seconds = time.perf_counter() - start
        t = time.perf_counter()
        os.fsync(fout.fileno())
        fsync_s = time.perf_counter() - t
    return {"direction": direction, "gzip_backend": backend.name, "seconds": seconds, "in_bytes": n_in,
            "out_bytes": n_out, "fsync_s": round(fsync_s, 4),
            "compressed_bytes": n_out if direction == "compress" else n_in}


class CodecFloor:
    """Codec runs of one benchmark: ``run(state, ...)`` once per round, then rows and ratios."""

    def __init__(self, python: str, run_dir: str, run: Callable[[list, str, int], Measured]):
        self.python, self.run_dir, self._run = python, run_dir, run
        self._best: dict[tuple, dict] = {}
        #: (state path, gzip, direction) -> seconds per round
        self.rounds: dict[tuple, list[float]] = {}

    def run(self, state: dict, size_label: str, gzip: str) -> dict:
        """One compress-alone and one decompress-alone run of this state with ``gzip`` (a failure sticks)."""
        res = self._best.setdefault((state["path"], gzip), {})
        gz = os.path.join(self.run_dir, f"codec-{size_label}-{gzip}.gz")
        raw = os.path.join(self.run_dir, f"codec-{size_label}-{gzip}.out")
        try:
            for direction, src, dst in (("compress", state["path"], gz), ("decompress", gz, raw)):
                if res.get(direction, {}).get("ok") is False:
                    break
                m = self._run(commands.codec_argv(self.python, direction, gzip, src, dst), gzip, state["bytes"])
                summary = m.json() if m.ok else None
                if summary is None:
                    res[direction] = {"ok": False, "error": m.error_line(), "measured": m}
                    break
                self.rounds.setdefault((state["path"], gzip, direction), []).append(summary["seconds"])
                best = res.get(direction)
                if best is None or summary["seconds"] < best["seconds"]:
                    peak = max(m.peak_rss_bytes, best["measured"].peak_rss_bytes) if best else m.peak_rss_bytes
                    res[direction] = dict(summary, ok=True, measured=dataclasses.replace(m, peak_rss_bytes=peak))
        finally:
            for p in (gz, raw):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
        return res

    def rows(self, state: dict, size_label: str, gzip: str, empty_row: Callable[[], dict], **common) -> list[dict]:
        res = self._best.get((state["path"], gzip), {})
        rows = []
        for direction in ("compress", "decompress"):
            r = res.get(direction)
            if r is None:
                continue
            m: Measured = r["measured"]
            row = empty_row()
            seconds = r.get("seconds")
            row.update(op=direction, mode="codec", backend="codec", size_label=size_label,
                       size_bytes=state["bytes"], gzip_backend=gzip, ok=r["ok"], error=r.get("error"),
                       peak_rss_bytes=m.peak_rss_bytes, wall_s=round(m.wall_s, 3),
                       op_s=round(seconds, 4) if seconds else None,
                       throughput_mib_s=round(state["bytes"] / MiB / seconds, 1) if seconds else None,
                       compressed_bytes=r.get("compressed_bytes"), fsync_s=r.get("fsync_s"),
                       command=f"{commands.CODEC.name} {direction}", modelled=False, **common)
            rows.append(row)
        return rows

    def mb_s(self, state: dict, gzip: str, direction: str) -> float | None:
        r = self._best.get((state["path"], gzip), {}).get(direction)
        if not r or not r.get("ok") or not r.get("seconds"):
            return None
        return state["bytes"] / MiB / r["seconds"]

    def paired_ratio(self, state: dict, gzip: str, direction: str, scenario_rounds: dict[int, float]) -> float | None:
        """Median over rounds of (codec seconds / scenario seconds) within the same round."""
        codec = self.rounds.get((state["path"], gzip, direction), [])
        ratios = sorted(codec[r] / s for r, s in scenario_rounds.items() if r < len(codec) and s > 0)
        if not ratios:
            return None
        mid = len(ratios) // 2
        return round(ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2, 3)
