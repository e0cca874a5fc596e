"""``sekiops demo``: the main job on the embedded default, end to end, in a few minutes.

1. build a demo deployment (SQLite + local blob dir) with every row variant and a large state;
2. benchmark persist and restore of the large state, sekiops streaming beside Sekiban's byte[] path
   modelled in Python (from Sekiban's source, not measured on .NET: memory only), each in a fresh process;
3. render the notebooks (inventory, memory metrics, post-incident report) to HTML;
4. print where everything is and the headline numbers.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

from .demo_deployment import DemoDeployment, build_demo_deployment

#: (notebook, stem) rendered by the demo when present; parameters come from _notebook_parameters
NOTEBOOKS = [
    ("01_inventory_and_offload.ipynb", "01_inventory"),
    ("03_memory_and_upload_metrics.ipynb", "03_memory_metrics"),
    ("04_post_incident_report.ipynb", "04_post_incident_report"),
]


@dataclasses.dataclass
class DemoResult:
    deployment: DemoDeployment
    bench_csv: str
    chart: str
    reports: dict
    table: list
    seconds: float


def run_demo(directory: str = "sekiops-demo", size: int = 150_000_000, notebooks: bool = True,
             progress: Callable[[str], None] = print) -> DemoResult:
    from .bench import plot_benchmark, run_benchmark, save_results

    start = time.perf_counter()
    directory = os.path.abspath(directory)
    reports = os.path.join(directory, "reports")
    os.makedirs(reports, exist_ok=True)
    progress(f"[1/3] building the demo deployment in {directory}")
    dep = build_demo_deployment(os.path.join(directory, "deployment"), big_bytes=size,
                                progress=lambda m: progress("      " + m))
    progress("[2/3] benchmark: persist and restore, streaming beside the modelled byte[] path, each in a fresh "
             "process")
    df = run_benchmark(sizes=[size], workdir=os.path.join(directory, "bench"),
                       progress=lambda m: progress("      " + m), keep_states=False)
    bench_csv = os.path.join(reports, "benchmark.csv")
    save_results(df, bench_csv)
    chart = os.path.join(reports, "benchmark.png")
    fig = plot_benchmark(df)
    fig.savefig(chart, dpi=110, bbox_inches="tight")
    table = headline(df)
    rendered: dict = {}
    if notebooks:
        progress("[3/3] rendering notebooks to HTML")
        rendered = render_notebooks(dep, bench_csv, reports, progress)
    return DemoResult(dep, bench_csv, chart, rendered, table, time.perf_counter() - start)


def headline(df) -> list[dict]:
    """Side-by-side rows: op, mode, peak RSS, overhead over the idle CLI, time, throughput (streaming only:
    the modelled byte[] path's time is Python's, not .NET's)."""
    rows = []
    scen = df[df["mode"].isin(["legacy", "streaming"])]
    for _, r in scen.iterrows():
        mode = f"{r['mode']} (modelled)" if r["mode"] == "legacy" else r["mode"]
        rows.append({"op": r["op"], "mode": mode, "state_mb": round(r["size_bytes"] / 1e6),
                     "peak_rss_mb": _mb(r["peak_rss_bytes"]), "over_idle_mb": _mb(r["overhead_bytes"]),
                     "seconds": None if _missing(r["op_s"]) else round(float(r["op_s"]), 2),
                     "mb_per_s": None if _missing(r["throughput_mb_s"]) else round(float(r["throughput_mb_s"]), 1),
                     "ok": bool(r["ok"])})
    return rows


def memory_lines(table: list[dict]) -> list[str]:
    """One line per op: the modelled byte[] path's memory beside streaming's (memory only, labelled)."""
    modelled = {r["op"]: r for r in table if r["mode"] == "legacy (modelled)"}
    stream = {r["op"]: r for r in table if r["mode"] == "streaming"}
    lines = []
    for op in ("persist", "restore"):
        if op in modelled and op in stream and stream[op]["over_idle_mb"]:
            ratio = modelled[op]["over_idle_mb"] / max(stream[op]["over_idle_mb"], 1.0)
            lines.append(f"{op}: Sekiban's byte[] path, modelled in Python from Sekiban's source (not measured on "
                         f".NET), needs {modelled[op]['over_idle_mb']} MiB over the idle CLI; sekiops streaming "
                         f"{stream[op]['over_idle_mb']} MiB ({ratio:.0f}x less)")
    return lines


def _missing(v) -> bool:
    return v is None or v != v  # None or NaN


def _mb(v):
    return None if _missing(v) else round(float(v) / 2**20, 1)


def render_notebooks(dep: DemoDeployment, bench_csv: str, reports: str, progress) -> dict:
    from ..errors import SekiopsError
    from . import report

    out = {}
    for name, stem in NOTEBOOKS:
        try:
            report.notebook(name)
        except SekiopsError:
            progress(f"      {name}: not present, skipped")
            continue
        params = _notebook_parameters(name, dep, bench_csv)
        t = time.perf_counter()
        _, html = report.render(name, params, reports, stem)
        progress(f"      {name} -> {html} ({time.perf_counter() - t:.0f} s)")
        out[name] = html
    return out


def _notebook_parameters(name: str, dep: DemoDeployment, bench_csv: str) -> dict:
    base = {"state_url": dep.state_url, "blob_url": dep.blob_url}
    if name.startswith("01"):
        return base
    if name.startswith("03"):
        return {**base, "bench_results": bench_csv, "run_benchmark": False}
    evidence = getattr(dep, "evidence", {}) or {}
    return {**base, **evidence, "bench_results": bench_csv}
