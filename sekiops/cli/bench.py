"""``sekiops bench``: persist/restore memory and throughput, each scenario in a fresh process."""

from __future__ import annotations

import sys

TABLE_COLUMNS = ["op", "mode", "backend", "size_label", "gzip_backend", "ok", "peak_rss_mb", "baseline_rss_mb",
                 "overhead_mb", "overhead_ratio", "wall_s", "op_s", "throughput_mb_s", "codec_mb_s",
                 "ratio_to_codec", "paired_ratio_to_codec", "codec_zlib_mb_s", "ratio_to_zlib_codec", "payload_location",
                 "envelope_location", "error"]


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark persist/restore: peak RSS, wall time, throughput vs gzip alone",
        description="Run persist and restore (legacy and streaming) on synthetic projector states, each in "
        "a fresh process whose peak RSS the kernel reports (wait4), minus an idle baseline (the same command "
        "on a tiny state, same stores); alongside, gzip compress/decompress alone on the same bytes (the "
        "codec floor). Without --state/--blob: the embedded default (SQLite file + local blob directory "
        "in the work directory). Against real stores it writes rows under service id bench-<run id> and "
        "blobs under SekiopsBench-<run id>-*, deleting those blobs afterwards; it never reads "
        "SEKIOPS_STATE_URL/SEKIOPS_BLOB_URL. A progress line per scenario goes to stderr.")
    p.add_argument("--sizes", default="10MB,100MB,1GiB",
                   help="state sizes, comma separated: kB/MB/GB = 10^3.., KiB/MiB/GiB = 2^10.. (default %(default)s)")
    p.add_argument("--modes", default="legacy,streaming", help="persist modes (default %(default)s)")
    p.add_argument("--ops", default="persist,restore", help="operations (default %(default)s)")
    p.add_argument("--gzip", default=None, metavar="NAMES",
                   help="gzip backend(s) for the pipeline, comma separated, e.g. isal,zlib (default: the "
                   "fastest installed); the codec floor is measured with these and with zlib")
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
    p.add_argument("--timeout", type=float, help="seconds per child process (default 120 + 1 s per MB)")
    p.add_argument("--no-codec", action="store_true", help="skip the codec floor")
    p.add_argument("--no-verify", action="store_true", help="restore without --verify (output is still compared)")
    p.add_argument("--heap", action="store_true", help="children also measure their Python heap peak (slower)")
    p.add_argument("--keep", action="store_true", help="keep the run directory (databases, blobs) for inspection")
    p.set_defaults(func=run_bench)


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def run_bench(args) -> int:
    import os

    from ..errors import UsageError
    from ..ops import bench

    try:
        sizes = bench.parse_sizes(args.sizes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    modes, ops = _list(args.modes), _list(args.ops)
    bad = [m for m in modes if m not in bench.MODES] + [o for o in ops if o not in bench.OPS]
    if bad or not sizes or not modes or not ops:
        raise UsageError(f"bad --sizes/--modes/--ops ({', '.join(bad) or 'empty'}): modes are "
                         f"{', '.join(bench.MODES)}, ops are {', '.join(bench.OPS)}")
    if bool(args.state) != bool(args.blob) and not args.state:
        raise UsageError("--blob needs --state (or give neither for the embedded default)")
    if args.state and not args.execute:
        from ..errors import GuardRefusedError

        raise GuardRefusedError("sekiops bench writes rows and blobs into the stores given with --state/--blob; "
                                "add --execute to run it there (nothing was written)")
    workdir = os.path.abspath(args.workdir) if args.workdir else None
    for path in (args.out, args.chart):
        parent = os.path.dirname(os.path.abspath(path)) if path else None
        if path and not os.path.isdir(parent) and parent != workdir:  # --workdir is created below
            raise UsageError(f"output directory of {path!r} does not exist")
    if args.out and not args.out.endswith((".csv", ".json")):
        raise UsageError("--out must end in .csv or .json")
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    gzips = _list(args.gzip) if args.gzip else [None]
    from ..format.payload import backends

    for g in gzips:
        if g is not None and g not in backends():
            raise UsageError(f"gzip backend {g!r} is not installed; available: {', '.join(backends())}")

    def progress(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    df = bench.run_benchmark(sizes=sizes, modes=modes, ops=ops, state_url=args.state, blob_url=args.blob,
                             workdir=args.workdir, progress=progress, gzip=gzips, codec=not args.no_codec,
                             heap=args.heap, verify=not args.no_verify, repeat=args.repeat,
                             baseline_repeats=args.baseline_repeats, timeout=args.timeout,
                             cleanup=not args.keep)
    if args.out:
        import pandas as pd

        combined = df
        if args.append and os.path.exists(args.out):
            old = bench.load_results(args.out)
            combined = pd.concat([old, df], ignore_index=True)
            combined.attrs.update(df.attrs)
        bench.save_results(combined, args.out)
        chart_df = combined
    else:
        chart_df = df
    if args.chart:
        bench.plot_benchmark(chart_df).savefig(args.chart, dpi=110)
    _print(df, args.format)
    failed = int((df["ok"] != True).sum())  # noqa: E712
    if failed:
        progress(f"{failed} scenario(s) failed; see the error column")
    return 0


def table_frame(df):
    """The benchmark frame with sizes in MB, for humans."""
    out = df.copy()
    for col in ("peak_rss", "baseline_rss", "overhead"):
        out[f"{col}_mb"] = (out[f"{col}_bytes"].astype("float64") / 1e6).round(1)
    return out[[c for c in TABLE_COLUMNS if c in out.columns]]


def _print(df, fmt: str) -> None:
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(json.loads(df.to_json(orient="records")), indent=2) + "\n")
    elif fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    else:
        t = table_frame(df).astype(object).where(lambda x: x.notna(), "")
        sys.stdout.write(t.to_string(index=False) + "\n")
