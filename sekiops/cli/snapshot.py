"""``sekiops persist`` and ``sekiops restore``."""

from __future__ import annotations

import argparse
import sys

from ..format.constants import PAYLOAD_OFFLOAD_THRESHOLD
from .main import SIZE_HELP, add_store_args, open_stores, print_json, size_type

# The command's implementation (sekiops.ops, the pipelines, the stores) is imported inside its
# function: every command module loads to build the parser, and `sekiops --help` needs none of it.


def register(sub) -> None:
    p = sub.add_parser("persist", help="store a projector state as a Sekiban snapshot (streamed)",
                       description="Read the projector state JSON (streamed) and store a Sekiban-compatible "
                       "snapshot row (and blobs when large). Prints a JSON summary: where the envelope and "
                       "payload went, keys, sizes, timings and peak memory.")
    add_store_args(p)
    p.add_argument("--projector", required=True, help="ProjectorName")
    p.add_argument("--version", required=True, dest="projector_version", help="ProjectorVersion")
    p.add_argument("--events-processed", required=True, type=int, help="EventsProcessed (= envelope version)")
    p.add_argument("--last-sortable-unique-id", required=True, help="LastSortableUniqueId (30 digits)")
    p.add_argument("--last-event-id", help="envelope lastEventId (GUID)")
    p.add_argument("--payload-type-name", default="", help="envelope multiProjectionPayloadType (informational)")
    p.add_argument("--in", dest="input", required=True, metavar="FILE|-", help="state JSON file, or - for stdin")
    p.add_argument("--payload-threshold", type=size_type("--payload-threshold"), metavar="SIZE",
                   help=f"offload the payload when compressed bytes exceed this ({SIZE_HELP}) "
                   "(default 1,560,576)")
    p.add_argument("--record-threshold", type=size_type("--record-threshold"), metavar="SIZE",
                   help=f"offload the envelope when its bytes exceed this ({SIZE_HELP}) "
                   "(default: the state store's Sekiban default)")
    p.add_argument("--allow-regress", action="store_true", help="write even if the stored row has more EventsProcessed")
    p.add_argument("--raw", action="store_true", help="the input is opaque payload bytes (a projector with its own "
                   "serializer): stored exactly as given, not checked as JSON, not gzipped. Default: the input "
                   "must be exactly one complete JSON document (refused with the byte offset otherwise) and is "
                   "gzipped as Sekiban does")
    p.add_argument("--allow-empty", action="store_true", help="with --raw: accept an empty payload")
    p.add_argument("--gzip", choices=["isal", "zlib-ng", "zlib"], help="gzip backend (default: fastest installed)")
    p.add_argument("--threads", type=_threads, metavar="N",
                   help="threads compressing the payload, 1 MiB blocks each, about N + 2 MiB in flight (default: "
                   "the CPUs this process may use, at most 8). The output is one gzip member either way, "
                   "byte-identical for any N, so the blob key does not depend on it; the JSON check, hashing and "
                   "temp-file writes run on threads of their own")
    p.add_argument("--build-source", help="BuildSource column (default SEKIOPS_STREAM)")
    p.add_argument("--heap", action="store_true", help="also measure the Python heap peak (tracemalloc; slower)")
    p.add_argument("--mode", type=_persist_mode, choices=["streaming"], default="streaming",
                   help="streaming, the only way sekiops persists (default)")
    p.set_defaults(func=run_persist)

    r = sub.add_parser("restore", help="write a snapshot's projector state to a file (streamed)",
                       description="Write the decoded projector state (uncompressed payload bytes, exactly as "
                       "stored) to FILE, streamed; the file appears only when every check passed. Without "
                       "--version the newest active version by EventsProcessed.")
    add_store_args(r)
    r.add_argument("--projector", required=True, help="ProjectorName")
    r.add_argument("--version", dest="projector_version", help="ProjectorVersion (default: newest active)")
    r.add_argument("--out", required=True, metavar="FILE|-", help="output file, or - for stdout")
    r.add_argument("--verify", action="store_true", help="check content-addressed blob hashes and declared lengths")
    r.add_argument("--include-tombstoned", action="store_true", help="allow restoring a tombstoned row")
    r.add_argument("--heap", action="store_true", help="also measure the Python heap peak (tracemalloc; slower)")
    r.set_defaults(func=run_restore)


def _persist_mode(text: str) -> str:
    """``--mode``: the contract's option, with streaming its only value; 'legacy' says where it went."""
    if text == "legacy":
        raise argparse.ArgumentTypeError(
            "'legacy' is not a persist mode: sekiops persists only by streaming; Sekiban's byte[] path is "
            "modelled in Python by the benchmark alone (sekiops bench --modes legacy,streaming), never written "
            "to a store")
    return text


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 256, not {text!r}")
    return n


def run_persist(args) -> int:
    from ..pipeline.persist import PersistOptions, persist_stream

    source = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    state, blob = open_stores(args)
    opts = PersistOptions(record_threshold=args.record_threshold,
                          payload_threshold=args.payload_threshold if args.payload_threshold is not None
                          else PAYLOAD_OFFLOAD_THRESHOLD,
                          allow_regress=args.allow_regress, gzip=args.gzip, compress=not args.raw,
                          input_format="raw" if args.raw else "json", allow_empty=args.allow_empty,
                          build_source=args.build_source, measure_heap=args.heap, threads=args.threads)
    try:
        result = persist_stream(state, blob, source, projector_name=args.projector,
                                projector_version=args.projector_version,
                                events_processed=args.events_processed,
                                last_sortable_unique_id=args.last_sortable_unique_id,
                                last_event_id=args.last_event_id, payload_type_name=args.payload_type_name,
                                options=opts, input_name="stdin" if args.input == "-" else repr(args.input))
    finally:
        if source is not sys.stdin.buffer:
            source.close()
        state.close()
    print_json(result.to_dict())
    return 0


def run_restore(args) -> int:
    from ..pipeline.memory import tune_malloc

    tune_malloc()  # a fresh process's gunzip buffers reuse their pages (1.5x faster at 300 MB, measured)
    from ..pipeline.restore import RestoreOptions, restore

    state, blob = open_stores(args, create=False)
    opts = RestoreOptions(verify=args.verify, include_tombstoned=args.include_tombstoned, measure_heap=args.heap)
    to_stdout = args.out == "-"
    try:
        result = restore(state, blob, sys.stdout.buffer if to_stdout else args.out,
                         projector_name=args.projector, projector_version=args.projector_version, options=opts)
    finally:
        state.close()
    print_json(result.to_dict(), sys.stderr if to_stdout else sys.stdout)
    return 0
