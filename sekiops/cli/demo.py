"""``sekiops demo``."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job: demo deployment, legacy vs streaming benchmark, reports",
                       description="Build a demo Sekiban deployment on the embedded default (SQLite + a local "
                       "blob directory) with a large projection, v9 rows, inline and offloaded rows at both "
                       "levels, an orphan blob and a tombstone; persist and restore the large state in both "
                       "modes, each in a fresh process, and print memory and time side by side; render the "
                       "notebooks to HTML in DIR/reports.")
    p.add_argument("--dir", default="sekiops-demo", help="where to build it (default: ./%(default)s)")
    p.add_argument("--size", default="150MB", help="size of the large projector state (default %(default)s)")
    p.add_argument("--no-notebooks", action="store_true", help="skip rendering the notebooks")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from ..ops.bench import parse_size
    from ..ops.demo import run_demo as demo

    result = demo(args.dir, size=parse_size(args.size), notebooks=not args.no_notebooks,
                  progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"\nsekiops demo: done in {result.seconds:.0f} s")
    print(f"deployment : {result.deployment.state_url}  blobs: {result.deployment.blob_url}")
    print(f"benchmark  : {result.bench_csv}  chart: {result.chart}")
    for name, html in result.reports.items():
        print(f"report     : {html}")
    print()
    cols = ["op", "mode", "state_mb", "peak_rss_mb", "over_idle_mb", "seconds", "mb_per_s", "ok"]
    widths = [max(len(c), *(len(str(r[c])) for r in result.table)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in result.table:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
    legacy = {r["op"]: r for r in result.table if r["mode"] == "legacy"}
    stream = {r["op"]: r for r in result.table if r["mode"] == "streaming"}
    for op in ("persist", "restore"):
        if op in legacy and op in stream and stream[op]["over_idle_mb"]:
            ratio = legacy[op]["over_idle_mb"] / max(stream[op]["over_idle_mb"], 1.0)
            print(f"{op}: legacy needs {legacy[op]['over_idle_mb']} MB over the idle CLI, streaming "
                  f"{stream[op]['over_idle_mb']} MB ({ratio:.0f}x less)")
    return 0
