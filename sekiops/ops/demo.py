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
import shlex
import time
from collections.abc import Callable

from ..errors import SekiopsError
from ..units import MiB, format_bytes, format_duration, format_rate
from . import report
from .bench import plot_benchmark, run_benchmark, save_results
from .bench.commands import MODE_LABELS, MODELLED
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
    """Side-by-side rows: op, path, state size, peak RSS, memory over the idle CLI (bytes), and time and
    throughput for sekiops only (the modelled byte[] path's time is Python's, not .NET's: not shown)."""
    rows = []
    scen = df[df["mode"].isin([MODELLED, "streaming"])]
    for _, r in scen.iterrows():
        modelled = r["mode"] == MODELLED
        rows.append({"op": r["op"], "mode": r["mode"], "modelled": modelled, "path": MODE_LABELS[r["mode"]],
                     "state_bytes": _int(r["size_bytes"]), "peak_rss_bytes": _int(r["peak_rss_bytes"]),
                     "over_idle_bytes": _int(r["overhead_bytes"]),
                     "seconds": None if modelled or _missing(r["op_s"]) else float(r["op_s"]),
                     "bytes_per_second": None if modelled or _missing(r["throughput_mib_s"])
                     else float(r["throughput_mib_s"]) * MiB,
                     "ok": bool(r["ok"])})
    return rows


def headline_table(rows: list[dict]) -> list[list[str]]:
    """:func:`headline` as text cells in binary units (header first)."""
    out = [["op", "path", "state", "peak RSS", "over idle", "time", "throughput", "ok"]]
    for r in rows:
        out.append([r["op"], r["path"], format_bytes(r["state_bytes"]), format_bytes(r["peak_rss_bytes"]),
                    format_bytes(r["over_idle_bytes"]),
                    "not timed" if r["modelled"] else format_duration(r["seconds"]),
                    "not timed" if r["modelled"] else format_rate(r["bytes_per_second"]),
                    "yes" if r["ok"] else "FAILED"])
    return out


def memory_lines(rows: list[dict]) -> list[str]:
    """One line per op: the modelled byte[] path's memory beside streaming's (memory only, labelled)."""
    modelled = {r["op"]: r for r in rows if r["modelled"]}
    stream = {r["op"]: r for r in rows if r["mode"] == "streaming"}
    lines = []
    for op in ("persist", "restore"):
        if op in modelled and op in stream and stream[op]["over_idle_bytes"] and modelled[op]["over_idle_bytes"]:
            ratio = modelled[op]["over_idle_bytes"] / max(stream[op]["over_idle_bytes"], MiB)
            lines.append(f"{op}: Sekiban's byte[] path, modelled in Python from Sekiban's source (not measured on "
                         f".NET), needs {format_bytes(modelled[op]['over_idle_bytes'])} over the idle CLI; sekiops "
                         f"streaming {format_bytes(stream[op]['over_idle_bytes'])} ({ratio:.0f}x less)")
    return lines


def next_steps(dep: DemoDeployment, sekiops: str = "sekiops") -> list[str]:
    """The shell lines that point the CLI at the demo deployment, then three commands to try on it."""
    return [f"export SEKIOPS_STATE_URL={shlex.quote(dep.state_url)}",
            f"export SEKIOPS_BLOB_URL={shlex.quote(dep.blob_url)}",
            f"{sekiops} inventory",
            f"{sekiops} anatomy --projector {shlex.quote(dep.big_projector)} --depth 2",
            f"{sekiops} audit-blobs --format table"]


def _missing(v) -> bool:
    return v is None or v != v  # None or NaN


def _int(v):
    return None if _missing(v) else int(v)


def render_notebooks(dep: DemoDeployment, bench_csv: str, reports: str, progress) -> dict:
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
