"""``sekiops bench`` as one call: check the request, run it, write the results file and the chart.

Everything the command decides lives here (the CLI only parses arguments and prints), so a
notebook or a script gets the same guards: the benchmark writes into stores given with
``state_url`` only with ``execute=True``, outputs go to existing directories (or into the work
directory it creates), gzip backends must be installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ...errors import GuardRefusedError, UsageError
from ...format.payload import backends
from ...units import parse_seconds, parse_sizes
from . import commands
from .report import load_results, plot_benchmark, save_results
from .rounds import run_benchmark


def split_list(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return []
    if isinstance(text, str):
        return [part.strip() for part in text.split(",") if part.strip()]
    return [str(part).strip() for part in text if str(part).strip()]


def bench_job(*, sizes: str | Sequence, modes: str | Sequence[str] = commands.MODES,
              ops: str | Sequence[str] = commands.DEFAULT_OPS, state_url: str | None = None,
              blob_url: str | None = None, execute: bool = False, workdir: str | None = None,
              out: str | None = None, append: bool = False, chart: str | None = None,
              gzip: str | Sequence[str] | None = None, timeout=None, progress: Callable[[str], object] | None = None,
              **options):
    """Run a benchmark as ``sekiops bench`` does; returns ``(this run's frame, failed scenario count)``.

    ``sizes``: ``"10MB,100MB,1GiB"`` or a list; ``timeout``: seconds or ``"90s"``/``"30m"`` per
    child. With ``out`` the rows are written there (``append``: added to the rows already there);
    ``chart`` draws every row of ``out`` when appending, else this run's. Other ``options`` go to
    :func:`~sekiops.ops.bench.run_benchmark` (``repeat``, ``baseline_repeats``, ``codec``,
    ``verify``, ``heap``, ``cleanup``).
    """
    if isinstance(sizes, str):
        parse_sizes(sizes, what="--sizes")  # refuses a bad one before anything runs
        size_list = split_list(sizes)      # as written: they label the rows (10MB, 1GiB)
    else:
        size_list = list(sizes)
    mode_list, op_list = split_list(modes), split_list(ops)
    bad = [m for m in mode_list if m not in commands.MODES] + [o for o in op_list if o not in commands.OPS]
    if bad or not size_list or not mode_list or not op_list:
        raise UsageError(f"bad --sizes/--modes/--ops ({', '.join(bad) or 'empty'}): modes are "
                         f"{', '.join(commands.MODES)}, ops are {', '.join(commands.OPS)}")
    if blob_url and not state_url:
        raise UsageError("--blob needs --state (or give neither for the embedded default)")
    if state_url and not execute:
        raise GuardRefusedError("sekiops bench writes rows and blobs into the stores given with --state/--blob; "
                                "add --execute to run it there (nothing was written)")
    workdir = os.path.abspath(workdir) if workdir else None
    for path in (out, chart):
        if not path:
            continue
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent) and parent != workdir:  # the workdir is created below
            raise UsageError(f"output directory of {path!r} does not exist")
    if out and not out.endswith((".csv", ".json")):
        raise UsageError("--out must end in .csv or .json")
    gzips: list[str | None] = [*split_list(gzip)] or [None]

    for g in gzips:
        if g is not None and g not in backends():
            raise UsageError(f"gzip backend {g!r} is not installed; available: {', '.join(backends())}")
    if workdir:
        os.makedirs(workdir, exist_ok=True)
    seconds = None if timeout is None else parse_seconds(timeout, what="--timeout")
    df = run_benchmark(sizes=size_list, modes=mode_list, ops=op_list, state_url=state_url, blob_url=blob_url,
                       workdir=workdir, progress=progress, gzip=gzips, timeout=seconds, **options)
    chart_df = df
    if out:
        if append and os.path.exists(out):
            import pandas as pd

            old = load_results(out)
            chart_df = pd.concat([old, df], ignore_index=True)
            chart_df.attrs.update(df.attrs)
        save_results(chart_df, out)
    if chart:
        plot_benchmark(chart_df).savefig(chart, dpi=110)
    return df, int((df["ok"] != True).sum())  # noqa: E712 - pandas mask
