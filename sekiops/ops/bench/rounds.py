"""The benchmark's round loop: every size, every round, codec floor then every scenario.

Rounds interleave the codec floor and the scenarios, so both see the same background load; each
scenario keeps its fastest run and its highest peak over the rounds. A failed scenario is not
repeated.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence

from ...errors import UsageError
from ...format.payload import gzip_backend
from ...units import GiB, format_bytes, parse_size
from . import commands
from .inputs import generate_state, machine_info
from .report import codec_line, scenario_line
from .scenarios import COLUMNS, IDLE_STATE_BYTES, Outcome, Scenarios, best_of, variant_args

MB = 10**6
DEFAULT_SIZES = (10 * MB, 100 * MB, GiB)


def size_label(spec) -> str:
    """The label of a size in tables and projector names: as the user wrote it (``10MB``, ``1GiB``),
    else its binary form (``32MiB``, ``9.54MiB``)."""
    if isinstance(spec, str) and spec.strip():
        return "".join(spec.split())
    return format_bytes(parse_size(spec, what="benchmark size")).replace(" ", "")


def run_benchmark(sizes: Iterable[int | str] = DEFAULT_SIZES, modes: Sequence[str] = commands.MODES,
                  ops: Sequence[str] = commands.DEFAULT_OPS, state_url: str | None = None,
                  blob_url: str | None = None, workdir: str | None = None,
                  progress: Callable[[str], object] | None = None, *,
                  gzip: Sequence[str | None] | str | None = None, codec: bool = True, heap: bool = False,
                  verify: bool = True, repeat: int = 1, baseline_repeats: int = 3,
                  timeout: float | None = None, cleanup: bool = True, keep_states: bool | None = None,
                  python: str | None = None, memory_margin: float = 4.0, variants: Sequence[str] = ()):
    """Run ops x modes x sizes, each in a fresh process; return a DataFrame (:data:`COLUMNS`).

    ``modes``: ``streaming`` (sekiops) and ``legacy`` (Sekiban's byte[] path, modelled in Python
    from Sekiban's source, not measured on .NET: memory only). ``ops``: ``persist``, ``restore``,
    ``anatomy`` (streaming only). ``state_url``/``blob_url``: the stores (both None: the embedded
    default, a SQLite file and a local blob directory in ``workdir``). ``gzip``: backend name(s)
    the pipeline runs with (None: the fastest installed); the codec floor is measured with those
    and with ``zlib``. ``repeat``: rounds (fastest time, highest peak kept). ``timeout``: seconds
    per child (default 120 + 1 s per MB). ``progress(str)`` gets a line per step. ``keep_states``:
    keep the generated states in ``workdir/states`` (default: yes when ``workdir`` is given).
    Modelled runs are skipped when MemAvailable is below ``memory_margin`` x the state + 256 MiB.
    ``variants``: extra streaming persists of the same state in the same rounds, each changing one
    thing (``threads=1``, ``check=yajl``: see :data:`~sekiops.ops.bench.scenarios.VARIANTS`); their
    rows carry it in the ``variant`` column.

    Codec rows have ``mode == "codec"`` and ``op`` compress|decompress. ``df.attrs["machine"]``
    holds :func:`~sekiops.ops.bench.inputs.machine_info`.
    """
    import pandas as pd

    specs = list(sizes)
    byte_sizes = [parse_size(s, what="benchmark size", allow_zero=False) for s in specs]
    labels = [size_label(s) for s in specs]
    for mode in modes:
        if mode not in commands.MODES:
            raise UsageError(f"unknown benchmark mode {mode!r}; use {', '.join(commands.MODES)}")
    for op in ops:
        if op not in commands.OPS:
            raise UsageError(f"unknown benchmark op {op!r}; use {', '.join(commands.OPS)}")
    plan: list[tuple[str, ...]] = [(op, mode) for mode in modes for op in ops if commands.has_command(op, mode)]
    variants = [v for v in dict.fromkeys(variants or ()) if v]
    for v in variants:
        variant_args(v)  # refuses an unknown one before anything runs
    if variants:
        if "streaming" not in modes or "persist" not in ops:
            raise UsageError("variants are persist variants: they need --modes streaming and --ops persist")
        plan += [("persist", "streaming", v) for v in variants]
    if gzip is None or isinstance(gzip, str):
        gzip = [gzip]
    gzips = list(dict.fromkeys(gzip_backend(g).name for g in gzip))  # resolves $SEKIOPS_GZIP too
    own_workdir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="sekiops-bench-")
    keep_states = (not own_workdir) if keep_states is None else keep_states
    bench = Scenarios(workdir=workdir, state_url=state_url, blob_url=blob_url, python=python or sys.executable,
                      heap=heap, verify=verify, repeat=repeat, baseline_repeats=baseline_repeats,
                      timeout=timeout, progress=progress, memory_margin=memory_margin)
    rows: list[dict] = []
    counter = {"done": 0, "total": len(byte_sizes) * len(gzips) * len(plan)}
    state_paths = []
    try:
        for size, label in zip(byte_sizes, labels, strict=True):
            path = os.path.join(bench.states_dir, f"state-{size}.json")
            t = time.perf_counter()
            state = dict(generate_state(path, size), path=path)
            state_paths.append(path)
            bench.progress(f"state {label}: {state['bytes']} bytes ready ({time.perf_counter() - t:.1f} s)")
            codec_gzips = list(dict.fromkeys(gzips + ["zlib"])) if codec else []
            rows.extend(_rounds(bench, state, label, gzips, codec_gzips, plan, counter))
    finally:
        if cleanup:
            # Blobs written into given stores stay: their rows point at them (no broken pointers).
            shutil.rmtree(bench.run_dir, ignore_errors=True)
        if not keep_states:
            for p in state_paths + [os.path.join(bench.states_dir, f"state-idle-{IDLE_STATE_BYTES}.json")]:
                for q in (p, p + ".meta.json"):
                    try:
                        os.unlink(q)
                    except FileNotFoundError:
                        pass
        if own_workdir and cleanup and not keep_states:
            shutil.rmtree(workdir, ignore_errors=True)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["machine"] = machine_info()
    df.attrs["run_id"] = bench.run_id
    df.attrs["service_id"] = bench.service_id
    return df


def _rounds(bench: Scenarios, state: dict, label: str, gzips: list[str], codec_gzips: list[str],
            plan: list[tuple[str, ...]], counter: dict) -> list[dict]:
    rows: list[dict] = []
    best: dict[tuple, Outcome] = {}
    for rnd in range(bench.repeat):
        last = rnd == bench.repeat - 1
        if bench.repeat > 1:
            bench.progress(f"state {label}: round {rnd + 1}/{bench.repeat}")
        for g in codec_gzips:
            bench.codec.run(state, label, g)
            if last:
                codec_rows = bench.codec.rows(state, label, g, _empty_row, repeat=bench.repeat, run_id=bench.run_id)
                rows.extend(codec_rows)
                for r in codec_rows:
                    bench.progress(codec_line(r))
        for g in gzips:
            persisted: set[str] = set()
            for op, mode, *rest in plan:
                variant = rest[0] if rest else None
                key = (g, mode, op) + tuple(rest)
                if not (key in best and not best[key].ok):  # a failure is not repeated
                    if op == "persist":
                        outcome = bench.persist(state, label, mode, g, variant)
                        if outcome.ok:
                            persisted.add(mode)
                    else:
                        outcome = bench.read_back(op, state, label, mode, g, persisted=mode in persisted)
                        if outcome.measured is not None:  # the snapshot is there (a set-up persist wrote it)
                            persisted.add(mode)
                    best[key] = best_of(best.get(key), outcome)
                    if outcome.ok:
                        skey = (state["path"], g, mode, op) + tuple(rest)
                        bench.scenario_rounds.setdefault(skey, {})[rnd] = outcome.seconds
                        bench.scenario_walls.setdefault(skey, {})[rnd] = outcome.measurement.wall_s
                if last:
                    row = bench.row(op, mode, state, label, g, best[key], variant)
                    rows.append(row)
                    counter["done"] += 1
                    bench.progress(f"[{counter['done']}/{counter['total']}] " + scenario_line(row))
    return rows


def _empty_row() -> dict:
    return {c: None for c in COLUMNS}
