"""``sekiops inventory``."""

from __future__ import annotations

import sys

from .main import add_store_args, open_stores, print_json


def register(sub) -> None:
    p = sub.add_parser("inventory", help="one row per snapshot row: sizes, offload, lifecycle",
                       description="List every snapshot row of the service (status documents skipped, "
                       "tombstones shown). Reads no payload bytes.")
    add_store_args(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--page-size", type=int, default=500, help="rows per store query (default %(default)s)")
    p.set_defaults(func=run_inventory)


def run_inventory(args) -> int:
    from ..ops.inventory import CONTRACT_COLUMNS, inventory_records

    state, _ = open_stores(args, blob=False, create=False)
    try:
        records = list(inventory_records(state, page_size=args.page_size))
    finally:
        state.close()
    if args.format == "json":
        print_json(records)
    elif args.format == "csv":
        import csv

        cols = list(records[0]) if records else CONTRACT_COLUMNS
        w = csv.DictWriter(sys.stdout, fieldnames=cols)
        w.writeheader()
        w.writerows(records)
    else:
        _table(records, CONTRACT_COLUMNS)
    return 0


def _table(records: list[dict], cols: list[str]) -> None:
    if not records:
        print("(no snapshot rows)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
