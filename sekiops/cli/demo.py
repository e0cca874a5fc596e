"""``sekiops demo``."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job: demo deployment, benchmark (streaming beside the "
                       "modelled byte[] path), reports",
                       description="Build a demo Sekiban deployment on the embedded default (SQLite + a local "
                       "blob directory) with a large projection, v9 rows, inline and offloaded rows at both "
                       "levels, an orphan blob and a tombstone; persist and restore the large state with sekiops' "
                       "streaming path and with Sekiban's byte[] path modelled in Python (from Sekiban's source, "
                       "not measured on .NET), each in a fresh process, and print their memory side by side; "
                       "render the notebooks to HTML in DIR/reports.")
    p.add_argument("--dir", default="sekiops-demo", help="where to build it (default: ./%(default)s)")
    p.add_argument("--size", default="150MB", help="size of the large projector state: a byte count or e.g. "
                   "150MB, 1GiB (default %(default)s)")
    p.add_argument("--no-notebooks", action="store_true", help="skip rendering the notebooks")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from ..ops.demo import memory_lines, run_demo as demo
    from ..units import parse_size

    result = demo(args.dir, size=parse_size(args.size, what="--size", allow_zero=False), notebooks=not args.no_notebooks,
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
    for line in memory_lines(result.table):
        print(line)
    return 0
