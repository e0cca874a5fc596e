"""Benchmark persist and restore: kernel-measured peak memory, wall time, throughput vs the codec.

Every scenario runs in a fresh process -- ``python -m sekiops persist|restore|anatomy ...``
against the stores given as URLs -- and its peak RSS is the kernel's high-water mark for that
process, collected with ``os.wait4`` (``ru_maxrss``) when it exits. The same command on a tiny
state, against the same stores, is the *idle baseline*; ``overhead_bytes = peak - baseline`` is
what the state itself costs. The child's own JSON summary supplies the time spent inside the
operation (``total_ms``: no interpreter start-up, no imports), its in-process peak, and with
``heap=True`` its Python-heap peak (tracemalloc; slows the run).

Alongside, the *codec floor*: gzip compress-alone and decompress-alone of the same state bytes,
streamed file to file in a fresh process, with the backend the pipeline uses and with plain zlib
(:mod:`.codec`). ``ratio_to_codec`` = pipeline throughput / codec throughput.

Beside sekiops' streaming path the benchmark runs **Sekiban's byte[] path, modelled** (mode
``legacy``): a model, in Python, of the buffers Sekiban's .NET code allocates, written from
Sekiban's source and not measured on .NET (:mod:`.modelled`). It runs only in the benchmark's
own child processes (``python -m sekiops.ops.bench modelled-persist|modelled-restore``), never in
the product; its rows carry memory only (``modelled`` column True, time columns empty).

The package, one job a module:

==================  ===================================================================
``commands``        the programs each (op, mode) runs, and their argv
``measure``         one fresh process: launcher, ``wait4`` peak RSS, timeout
``inputs``          generated states, machine info, store labels
``scenarios``       one scenario and its idle baseline; outcome -> frame row
``codec``           the codec floor (child and bookkeeping)
``rounds``          :func:`run_benchmark`: the round loop over sizes
``report``          progress lines, table, chart, results files
``timeline``        RSS over time of one persist per mode (notebook 03)
``anatomy``         anatomy's own benchmark: the scanner vs ijson
``modelled/``       Sekiban's byte[] path, modelled (benchmark children only)
``__main__``        the children: codec, modelled-persist, modelled-restore
==================  ===================================================================

Library::

    from sekiops.ops.bench import run_benchmark, plot_benchmark
    df = run_benchmark(sizes=["10MB", "100MB"], progress=print)   # embedded SQLite + local dir
    plot_benchmark(df).savefig("bench.png")

CLI: ``sekiops bench --sizes 10MB,100MB,1GiB --out results.csv --chart chart.png``. The benchmark
never reads ``SEKIOPS_STATE_URL``/``SEKIOPS_BLOB_URL``: it writes rows (service id
``bench-<run id>``) and blobs (projectors ``SekiopsBench-<run id>-...``) only into stores it is
explicitly given; its blobs stay there afterwards so that no row points at a deleted blob.
"""

from __future__ import annotations

from ...units import parse_size, parse_sizes
from .commands import (
    DEFAULT_OPS,
    EVENTS_PROCESSED,
    LAST_SORTABLE_UNIQUE_ID,
    MODE_LABELS,
    MODELLED,
    MODELLED_NOTE,
    MODES,
    OPS,
)
from .inputs import backend_label, file_digest, generate_state, machine_info
from .measure import Measured, run_measured
from .report import load_results, plot_benchmark, render, save_results, table_frame
from .rounds import DEFAULT_SIZES, run_benchmark, size_label
from .scenarios import COLUMNS, TIME_COLUMNS, Scenarios
from .timeline import measure_persist_memory

MB = 10**6
MiB = 2**20
GiB = 2**30


__all__ = ["COLUMNS", "DEFAULT_OPS", "DEFAULT_SIZES", "EVENTS_PROCESSED", "GiB", "LAST_SORTABLE_UNIQUE_ID", "MB",
           "MODELLED", "MODELLED_NOTE", "MODES", "MODE_LABELS", "Measured", "MiB", "OPS", "Scenarios",
           "TIME_COLUMNS", "backend_label", "file_digest", "generate_state", "load_results", "machine_info",
           "measure_persist_memory", "parse_size", "parse_sizes", "plot_benchmark", "render", "run_benchmark",
           "run_measured", "save_results", "size_label", "table_frame"]
