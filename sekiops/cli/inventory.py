"""``sekiops inventory``: one line per snapshot row, metadata only unless asked (no pandas here)."""

from __future__ import annotations

import json
import sys

from .main import add_store_args, open_stores

TABLE_COLUMNS = ["serviceId", "projectorName", "projectorVersion", "eventsProcessed", "lifecycle", "isOffloaded",
                 "storedBytes", "originalSizeBytes", "compressedSizeBytes", "updatedAt", "buildSource"]
HEAD_TABLE_COLUMNS = ["envelopeFormat", "payloadOffloaded", "payloadCompressedBytes", "keyStyle"]


def register(sub) -> None:
    p = sub.add_parser("inventory", help="one row per snapshot row: sizes, offload, lifecycle, risk flags",
                       description="List every snapshot row of the service (status documents skipped, "
                       "tombstones shown) with sizes, offload state and risk flags. Reads row metadata only; "
                       "--heads also reads a bounded head (at most 64 KiB) of each envelope for the envelope "
                       "level (v9/v10, payload offload, payload sizes); no payload is ever decoded. With "
                       "--blob, offloaded rows show the blob's real length.")
    add_store_args(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--heads", action="store_true",
                   help="read a bounded envelope head per row (<= 64 KiB): envelope format, payload offload, "
                   "payload sizes, and the flags that need them")
    p.add_argument("--check-blobs", action="store_true", help="check that every referenced blob exists")
    p.add_argument("--page-size", type=int, default=500, help="rows per store query (default %(default)s)")
    p.set_defaults(func=run_inventory)


def run_inventory(args) -> int:
    from ..errors import UsageError
    from ..ops.inventory import COLUMNS, FLAG_COLUMNS, inventory_records

    if args.page_size < 1:
        raise UsageError("--page-size must be at least 1")
    state, blob = open_stores(args, blob=True, create=False)
    try:
        records = inventory_records(state, blob, read_envelope_heads=args.heads, check_blobs=args.check_blobs,
                                    page_size=args.page_size)
        if args.format == "json":
            _json(records)
        elif args.format == "csv":
            import csv

            w = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            for rec in records:
                w.writerow(rec)
        else:
            cols = TABLE_COLUMNS + (HEAD_TABLE_COLUMNS if args.heads else []) + ["flags"]
            rows = []
            for rec in records:
                rec["flags"] = ",".join(f[5:] for f in FLAG_COLUMNS if rec.get(f))
                rows.append(rec)
            _table(rows, cols)
    finally:
        state.close()
        if blob is not None:
            blob.close()
    return 0


def _json(records) -> None:
    """A JSON array, one element per line, written as the rows arrive (bounded memory)."""
    out = sys.stdout
    out.write("[")
    first = True
    for rec in records:
        out.write("\n" if first else ",\n")
        out.write(json.dumps(rec, default=str))
        first = False
    out.write("\n]\n" if not first else "]\n")
    out.flush()


def _table(records: list[dict], cols: list[str]) -> None:
    if not records:
        print("(no snapshot rows)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
