"""``sekiops bench``: persist/restore memory and throughput, each scenario in a fresh process."""

from __future__ import annotations

import sys

from ..units import DURATION_FORMS, SIZE_FORMS
from .main import duration_type

# The command's implementation (sekiops.ops, the pipelines, the stores) is imported inside its
# function: every command module loads to build the parser, and `sekiops --help` needs none of it.


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark persist/restore: peak RSS, wall time, throughput vs gzip alone",
        description="Run persist and restore on synthetic projector states, each in a fresh process whose "
        "peak RSS the kernel reports (wait4), minus an idle baseline (the same command on a tiny state, same "
        "stores); alongside, gzip compress/decompress alone on the same bytes (the codec floor). Two modes: "
        "streaming (sekiops) and legacy, which is Sekiban's byte[] path modelled in Python from Sekiban's "
        "source, not measured on .NET: its rows report memory only. Without --state/--blob: the embedded "
        "default (SQLite file + local blob directory in the work directory). Against real stores it writes "
        "rows under service id bench-<run id> and blobs under SekiopsBench-<run id>-*, and leaves them; it "
        "never reads SEKIOPS_STATE_URL/SEKIOPS_BLOB_URL. A progress line per scenario goes to stderr.")
    p.add_argument("--sizes", default="10MB,100MB,1GiB",
                   help=f"state sizes, comma separated: {SIZE_FORMS} (default %(default)s)")
    p.add_argument("--modes", default="legacy,streaming", help="streaming, and legacy = Sekiban's byte[] path, "
                   "modelled in Python from Sekiban's source, not measured on .NET (memory only) "
                   "(default %(default)s)")
    p.add_argument("--ops", default="persist,restore", help="persist, restore, anatomy (anatomy: streaming only, "
                   "beside restore) (default %(default)s)")
    p.add_argument("--gzip", default=None, metavar="NAMES",
                   help="gzip backend(s) for the pipeline, comma separated, e.g. isal,zlib (default: the "
                   "fastest installed); the codec floor is measured with these and with zlib")
    p.add_argument("--variants", metavar="LIST", help="extra streaming persists in the same rounds, each changing "
                   "one thing: threads=N (compression threads), check=native|yajl (the JSON check's validator); "
                   "e.g. threads=1,check=yajl")
    p.add_argument("--state", metavar="URL", help="state store URL (default: embedded SQLite in the work directory)")
    p.add_argument("--blob", metavar="URL", help="blob store URL (with --state; default: a local directory)")
    p.add_argument("--execute", action="store_true", help="required with --state: the benchmark writes rows "
                   "(service bench-<run id>) and blobs into the stores it is given, and leaves them there so "
                   "no row points at a deleted blob")
    p.add_argument("--workdir", metavar="DIR", help="where states, databases and outputs go; generated states are "
                   "kept there for the next run (default: a temp directory, removed afterwards)")
    p.add_argument("--out", metavar="FILE", help="write the results to FILE (.csv or .json)")
    p.add_argument("--append", action="store_true", help="add to the rows already in --out instead of replacing "
                   "them (e.g. one run per backend, one chart)")
    p.add_argument("--chart", metavar="PNG", help="save a chart of the results (all rows of --out with --append)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="stdout format")
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario; fastest time and highest peak kept")
    p.add_argument("--baseline-repeats", type=int, default=3, help="idle runs per baseline (median; default 3)")
    p.add_argument("--timeout", metavar="DURATION", type=duration_type("--timeout"),
                   help=f"per child process: {DURATION_FORMS} (default 120 s + 1 s per MB of state)")
    p.add_argument("--no-codec", action="store_true", help="skip the codec floor")
    p.add_argument("--no-verify", action="store_true", help="restore without --verify (output is still compared)")
    p.add_argument("--heap", action="store_true", help="children also measure their Python heap peak (slower)")
    p.add_argument("--keep", action="store_true", help="keep the run directory (databases, blobs) for inspection")
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    from ..ops.bench import render
    from ..ops.bench.job import bench_job

    def progress(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    df, failed = bench_job(sizes=args.sizes, modes=args.modes, ops=args.ops, state_url=args.state,
                           blob_url=args.blob, execute=args.execute, workdir=args.workdir, out=args.out,
                           append=args.append, chart=args.chart, gzip=args.gzip, timeout=args.timeout,
                           progress=progress, codec=not args.no_codec, heap=args.heap, verify=not args.no_verify,
                           repeat=args.repeat, baseline_repeats=args.baseline_repeats, cleanup=not args.keep,
                           variants=[v.strip() for v in (args.variants or "").split(",") if v.strip()])
    sys.stdout.write(render(df, args.format))
    if failed:
        progress(f"{failed} scenario(s) failed; see the error column")
    return 0
