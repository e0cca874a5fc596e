"""``sekiops demo``."""

from __future__ import annotations

import os
import sys

from ..units import format_duration, parse_size

# The command's implementation (sekiops.ops, the pipelines, the stores) is imported inside its
# function: every command module loads to build the parser, and `sekiops --help` needs none of it.


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
    from ..ops.demo import headline_table, memory_lines, next_steps, run_demo as demo

    result = demo(args.dir, size=parse_size(args.size, what="--size", allow_zero=False),
                  notebooks=not args.no_notebooks, progress=lambda m: print(m, file=sys.stderr, flush=True))
    dep = result.deployment
    print(f"\nsekiops demo: done in {format_duration(result.seconds)}")
    print(f"deployment : {dep.state_url}  blobs: {dep.blob_url}")
    print(f"benchmark  : {result.bench_csv}  chart: {result.chart}")
    for html in result.reports.values():
        print(f"report     : {html}")
    print()
    cells = headline_table(result.table)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print("(sizes in binary units: 1 MiB = 1,048,576 bytes; the modelled path is not timed: its time would be "
          "Python's, not .NET's)")
    for line in memory_lines(result.table):
        print(line)
    print("\nTry it next: point the CLI at the demo deployment, then list its snapshots, look inside the large one,")
    print("and audit its blobs (dry run; the demo planted one orphan):")
    activate, command = _how_to_call()
    if activate:
        print(f"  {activate}")
    for line in next_steps(dep, command):
        print(f"  {line}")
    return 0


def _how_to_call() -> tuple[str | None, str]:
    """(a line that puts ``sekiops`` on PATH or None, the command to type): ``source .venv/bin/activate``
    when this interpreter is a virtual environment whose ``sekiops`` is not the one on PATH."""
    import shlex  # here, not at the top: every command module loads to build the parser
    import shutil

    mine = os.path.join(sys.prefix, "bin", "sekiops")
    found = shutil.which("sekiops")
    if found and os.path.realpath(found) == os.path.realpath(mine):
        return None, "sekiops"
    if sys.prefix != sys.base_prefix and os.path.exists(mine):
        rel = os.path.relpath(sys.prefix)
        return f"source {shlex.quote(os.path.join(sys.prefix if rel.startswith('..') else rel, 'bin', 'activate'))}", \
            "sekiops"
    return None, f"{shlex.quote(sys.executable)} -m sekiops"
