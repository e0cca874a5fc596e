"""``sekiops inventory``: one line per snapshot row, and where its bytes really are (no pandas here)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UsageError
from ..units import format_bytes, format_count
from .main import SIZE_HELP, add_store_args, open_stores, size_type

# The command's implementation (sekiops.ops, the pipelines, the stores) is imported inside its
# function: every command module loads to build the parser, and `sekiops --help` needs none of it.

#: the table: who, and where the bytes are (envelope in the row or a blob, payload inline or in
#: a blob, its stored and original size, the blob holding the bulk), then the raised flags
TABLE_COLUMNS = [("serviceId", "service"), ("projectorName", "projector"), ("projectorVersion", "version"),
                 ("eventsProcessed", "events"), ("lifecycle", "lifecycle"), ("storedLocation", "envelope"),
                 ("storedBytes", "envelope size"), ("payloadLocation", "payload"),
                 ("payloadCompressedBytes", "payload stored"), ("payloadOriginalBytes", "payload original"),
                 ("blobKey", "blob"), ("flags", "flags")]
METADATA_COLUMNS = [c for c in TABLE_COLUMNS if c[0] not in
                    ("payloadLocation", "payloadCompressedBytes", "payloadOriginalBytes", "blobKey")]
SIZE_FIELDS = {"storedBytes", "payloadCompressedBytes", "payloadOriginalBytes"}


def register(sub) -> None:
    p = sub.add_parser("inventory", help="one row per snapshot row: where its bytes are, sizes, risk flags",
                       description="List every snapshot row of the service (status documents skipped, "
                       "tombstones shown): where its envelope and payload live (row or blob, and which blob), "
                       "their sizes, and risk flags. A bounded head of each envelope (at most 64 KiB) is read "
                       "for that; no payload is ever decoded. --metadata-only reads the rows alone (faster, "
                       "but a payload offloaded from a small envelope then looks like a small inline row). "
                       "Sizes in the table are binary units (MiB = 1,048,576 bytes); csv/json give bytes.")
    add_store_args(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--metadata-only", action="store_true",
                   help="read row metadata only, no envelope heads (no payload location or sizes)")
    p.add_argument("--heads", action="store_true", help=argparse.SUPPRESS)  # the default since 0.2
    p.add_argument("--check-blobs", action="store_true", help="check that every referenced blob exists")
    p.add_argument("--container-memory", type=size_type("--container-memory"), default=4 * 1024**3,
                   metavar="SIZE", help=f"memory of the grain's container, for flag_restore_memory ({SIZE_HELP}; "
                   "default 4GiB; the restore peak is an estimate, see --help of report incident)")
    p.add_argument("--container-disk", type=size_type("--container-disk"), metavar="SIZE",
                   help=f"free temp disk of the grain's container, for flag_restore_disk ({SIZE_HELP}; Sekiban "
                   "10.23 restores an offloaded payload through a temp file of its size)")
    p.add_argument("--sekiban-version", default="10.23", metavar="X.Y",
                   help="the Sekiban the grains run (default %(default)s): from 10.23 offloaded payloads "
                   "restore streaming (disk, not memory); before, every payload is restored whole in memory")
    p.add_argument("--page-size", type=int, default=500, help="rows per store query (default %(default)s)")
    p.add_argument("--progress", action="store_true", help="count rows on stderr as they are read")
    p.set_defaults(func=run_inventory)


def run_inventory(args) -> int:
    from ..ops.inventory import COLUMNS, FLAG_COLUMNS, RestoreLimits, inventory_records

    if args.page_size < 1:
        raise UsageError("--page-size must be at least 1")
    heads = not args.metadata_only
    limits = RestoreLimits(container_memory=args.container_memory, container_disk=args.container_disk,
                           sekiban_version=args.sekiban_version)
    state, blob = open_stores(args, blob=True, create=False)
    progress = _progress_printer() if args.progress else None
    try:
        records = inventory_records(state, blob, read_envelope_heads=heads, check_blobs=args.check_blobs,
                                    page_size=args.page_size, limits=limits, progress=progress)
        if args.format == "json":
            _json(records)
        elif args.format == "csv":
            import csv  # here, not at the top: every command module loads to build the parser

            w = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            for rec in records:
                w.writerow(rec)
        else:
            rows = []
            for rec in records:
                rec["flags"] = ",".join(f[5:] for f in FLAG_COLUMNS if rec.get(f))
                rows.append(rec)
            _table(rows, TABLE_COLUMNS if heads else METADATA_COLUMNS)
    finally:
        if progress is not None:
            sys.stderr.write("\n")
        state.close()
        if blob is not None:
            blob.close()
    return 0


def _progress_printer():
    def show(done: int) -> None:
        if done % 1000 == 0:
            sys.stderr.write(f"\rinventory: {done:,} rows read")
            sys.stderr.flush()

    return show


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


def _cell(field: str, value) -> str:
    if value is None or value == "":
        return "–"
    if field in SIZE_FIELDS:
        return format_bytes(value)
    if field == "eventsProcessed":
        return format_count(value)
    if field == "storedLocation":
        return "row" if value == "inline" else value
    return str(value)


def _table(records: list[dict], cols: list[tuple[str, str]]) -> None:
    if not records:
        print("(no snapshot rows)")
        return
    cells = [[_cell(field, r.get(field)) for field, _ in cols] for r in records]
    widths = [max(len(title), *(len(row[i]) for row in cells)) for i, (_, title) in enumerate(cols)]
    right = {i for i, (field, _) in enumerate(cols) if field in SIZE_FIELDS or field == "eventsProcessed"}

    def line(values):
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True)))

    print(line([title for _, title in cols]).rstrip())
    for row in cells:
        print(line(row).rstrip())
