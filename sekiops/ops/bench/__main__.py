"""``python -m sekiops.ops.bench``: the benchmark's child processes (run by ``sekiops bench``).

* ``codec compress|decompress``: gzip alone, file to file, timed (the codec floor);
* ``audit-setup``: a container of N blobs and its rows, for the audit benchmark (:mod:`.audit_bench`);
* ``migrate-setup``: N small inline snapshots for the migration benchmark (:mod:`.migrate_bench`);
* ``stages``: CPU per MB of every persist/restore stage alone, and the bounds they model (:mod:`.stages`);
* ``modelled-persist`` / ``modelled-restore``: Sekiban's byte[] path, modelled in Python from
  Sekiban's source (not measured on .NET), on the benchmark's stores. They take the options of
  ``sekiops persist`` / ``sekiops restore`` that the benchmark passes, and print one JSON summary:
  where things went and peak memory, no time (the model's time is Python's, not .NET's).

This is the only place that imports :mod:`sekiops.ops.bench.modelled`: the model runs in a
process of its own, never inside the product's persist or restore, and records no metrics.

Each child imports what its scenario runs inside its own function, nothing more: a child's
memory is what the benchmark measures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ...errors import SekiopsError
from ...urls import redact
from .codec import codec_child


def _stores(args, create: bool):
    from ...blob import open_blob_store
    from ...state import open_state_store

    return (open_state_store(args.state, service_id=args.service_id, create=create),
            open_blob_store(args.blob, create=create))


def modelled_persist_child(args) -> dict:
    from ...format.constants import PAYLOAD_OFFLOAD_THRESHOLD
    from ...pipeline.memory import MemoryProbe
    from .modelled.persist import modelled_persist

    state, blob = _stores(args, create=True)
    try:
        with MemoryProbe(heap=args.heap) as probe:
            summary = modelled_persist(
                state, blob, args.input, projector_name=args.projector, projector_version=args.projector_version,
                events_processed=args.events_processed, last_sortable_unique_id=args.last_sortable_unique_id,
                gzip=args.gzip, payload_threshold=PAYLOAD_OFFLOAD_THRESHOLD if args.payload_threshold is None
                else args.payload_threshold)
    finally:
        state.close()
        if blob is not None:
            blob.close()
    return {"model": "Sekiban byte[] path, modelled in Python from Sekiban's source, not measured on .NET",
            **summary, "peak_rss_bytes": probe.peak_rss, "start_rss_bytes": probe.start_rss,
            "peak_heap_bytes": probe.peak_heap}


def modelled_restore_child(args) -> dict:
    from ...pipeline.memory import MemoryProbe
    from .modelled.restore import modelled_restore

    state, blob = _stores(args, create=False)
    try:
        with MemoryProbe(heap=args.heap) as probe:
            modelled = modelled_restore(state, blob, args.projector, args.projector_version)
            with open(args.out, "wb") as f:
                n = modelled.write_json(f)
                f.flush()
                os.fsync(f.fileno())
    finally:
        state.close()
        if blob is not None:
            blob.close()
    return {"model": "Sekiban byte[] path, modelled in Python from Sekiban's source, not measured on .NET",
            "envelope_location": modelled.envelope_location, "payload_location": modelled.payload_location,
            "envelope_bytes": modelled.envelope_bytes, "compressed_size_bytes": modelled.compressed_size_bytes,
            "original_size_bytes": n, "peak_rss_bytes": probe.peak_rss,
            "start_rss_bytes": probe.start_rss, "peak_heap_bytes": probe.peak_heap, "output": args.out}


def _store_options(p) -> None:
    p.add_argument("--state", help="default: $SEKIOPS_STATE_URL")
    p.add_argument("--blob", help="default: $SEKIOPS_BLOB_URL")
    p.add_argument("--service-id", default="default")
    p.add_argument("--projector", required=True)
    p.add_argument("--version", dest="projector_version", required=True)
    p.add_argument("--heap", action="store_true", help="also measure the Python heap peak")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sekiops.ops.bench",
                                description="benchmark children (run by sekiops bench)")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("codec", help="gzip compress/decompress alone, file to file, timed")
    c.add_argument("direction", choices=["compress", "decompress"])
    c.add_argument("--gzip", default=None)
    c.add_argument("--in", dest="src", required=True)
    c.add_argument("--out", dest="dst", required=True)
    sg = sub.add_parser("stages", help="CPU ms per MB of each persist/restore stage alone (measured), and the "
                        "throughput bounds they imply on this machine's cores (modelled)")
    sg.add_argument("--in", dest="src", required=True)
    sg.add_argument("--gzip", default=None)
    sg.add_argument("--sample", default="128MiB", help="bytes of the state held in memory (default 128MiB)")
    sg.add_argument("--rounds", type=int, default=3)
    au = sub.add_parser("audit-setup", help="fill a blob container and a state store for the audit benchmark")
    au.add_argument("--state", required=True)
    au.add_argument("--blob", required=True)
    au.add_argument("--blobs", type=int, required=True)
    au.add_argument("--referenced", type=int, required=True)
    au.add_argument("--projectors", type=int, default=100)
    au.add_argument("--blobs-exist", action="store_true", help="the blobs are there: write the rows only")
    ms = sub.add_parser("migrate-setup", help="persist N small inline snapshots for the migration benchmark")
    ms.add_argument("--state", required=True)
    ms.add_argument("--blob")
    ms.add_argument("--service-id", required=True)
    ms.add_argument("--rows", type=int, required=True)
    ms.add_argument("--row-bytes", type=int, default=4096)
    mp = sub.add_parser("modelled-persist", help="persist through Sekiban's byte[] path, modelled "
                        "(in Python from Sekiban's source, not measured on .NET)")
    _store_options(mp)
    mp.add_argument("--events-processed", type=int, required=True)
    mp.add_argument("--last-sortable-unique-id", required=True)
    mp.add_argument("--gzip", default=None)
    mp.add_argument("--in", dest="input", required=True)
    mp.add_argument("--payload-threshold", type=int)
    mr = sub.add_parser("modelled-restore", help="restore through Sekiban's byte[] path, modelled "
                        "(in Python from Sekiban's source, not measured on .NET)")
    _store_options(mr)
    mr.add_argument("--out", required=True)
    mr.add_argument("--verify", action="store_true", help="accepted for symmetry; the byte[] path checks nothing")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.cmd == "codec":
            result = codec_child(args.direction, args.gzip, args.src, args.dst)
        elif args.cmd == "audit-setup":
            from .audit_bench import setup_child

            result = setup_child(args.state, args.blob, args.blobs, args.referenced, args.projectors,
                                 progress=lambda m: print(m, file=sys.stderr, flush=True),
                                 blobs_exist=args.blobs_exist)
        elif args.cmd == "migrate-setup":
            from .migrate_bench import setup_child as migrate_setup

            result = migrate_setup(args.state, args.blob, args.service_id, args.rows, args.row_bytes)
        elif args.cmd == "stages":
            from ...units import parse_size
            from .stages import bounds, stage_child

            result = stage_child(args.src, args.gzip, parse_size(args.sample, what="--sample"), args.rounds)
            result["bounds"] = bounds(result)
        elif args.cmd == "modelled-persist":
            result = modelled_persist_child(args)
        else:
            result = modelled_restore_child(args)
    except (SekiopsError, OSError) as exc:
        sys.stderr.write("error: " + redact(" ".join(str(exc).split())) + "\n")
        return 2
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
