"""``sekiops anatomy`` (where a payload's bytes are) and ``sekiops audit-blobs`` (orphan report)."""

from __future__ import annotations

import sys

from ..errors import UsageError
from ..urls import STATE_URL_ENV, resolve
from .main import DURATION_HELP, add_store_args, duration_type, open_stores, print_json

# The command's implementation (sekiops.ops, the pipelines, the stores) is imported inside its
# function: every command module loads to build the parser, and `sekiops --help` needs none of it.


def register(sub) -> None:
    p = sub.add_parser("anatomy", help="where the bytes of one snapshot's payload are, by JSON path",
                       description="Walk one snapshot's projector state JSON as a stream (never loaded whole) "
                       "and report bytes and counts by JSON path down to --depth, the maximum depth, the "
                       "biggest strings and the largest arrays. Bytes are raw JSON bytes; the total equals the "
                       "payload size. Structure, not data: the biggest string values are listed by path and "
                       "length, their first characters only with --show-values. Without --version the newest "
                       "active version by EventsProcessed.")
    add_store_args(p)
    p.add_argument("--projector", required=True, help="ProjectorName")
    p.add_argument("--version", dest="projector_version", help="ProjectorVersion (default: newest active)")
    p.add_argument("--depth", type=int, default=3, help="deepest JSON path level reported ($.a is 1, $.a[] 2; "
                   "default %(default)s)")
    p.add_argument("--top", type=int, default=20, help="how many biggest strings / arrays (default %(default)s)")
    p.add_argument("--max-keys", type=int, default=200, help="fold an object's members into '*' beyond this many "
                   "distinct keys (dictionaries keyed by ids; default %(default)s)")
    p.add_argument("--max-paths", type=int, default=5000, help="paths reported at most; beyond, new keys fold into "
                   "'*' (default %(default)s)")
    p.add_argument("--show-values", action="store_true", help="also show the first 60 characters of the biggest "
                   "string values (stored business data: off by default)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--progress", action="store_true", help="report progress on stderr")
    p.set_defaults(func=run_anatomy)

    a = sub.add_parser("audit-blobs", help="report blobs no snapshot row of any service references (no deletes)",
                       description="Orphan-blob audit, report only. Referenced keys are every row's OffloadKey and "
                       "every envelope's payload key, over every row (tombstoned included) of every service in "
                       "the state store (or --services). An orphan is unreferenced and older than --grace. If any "
                       "row cannot be decoded, or the services cannot be enumerated, nothing is certified "
                       "(orphans empty, certified false).")
    add_store_args(a)
    a.add_argument("--grace", type=duration_type("--grace"), default=24 * 3600.0, metavar="DURATION",
                   help=f"grace window: a blob younger than this is never an orphan ({DURATION_HELP}; default 24h)")
    a.add_argument("--services", help="comma-separated service ids whose rows may use this blob container "
                   "(default: every service the store has)")
    a.add_argument("--prefix", default="", help="only audit blobs whose key starts with this")
    a.add_argument("--format", choices=["json", "table"], default="json")
    a.set_defaults(func=run_audit)


def run_anatomy(args) -> int:
    from ..ops.anatomy import anatomy

    state, blob = open_stores(args, blob=True, create=False)
    progress = None
    if args.progress:
        def progress(done, total):
            pct = f" ({done * 100 / total:.0f}%)" if total else ""
            sys.stderr.write(f"\ranatomy: {done:,} bytes{pct}")
            sys.stderr.flush()
    try:
        report = anatomy(state, blob, projector_name=args.projector, projector_version=args.projector_version,
                         depth=args.depth, top=args.top, max_keys=args.max_keys, max_paths=args.max_paths,
                         show_values=args.show_values, progress=progress)
    finally:
        if args.progress:
            sys.stderr.write("\n")
        state.close()
        if blob is not None:
            blob.close()
    if args.format == "json":
        print_json(report.to_dict())
    else:
        print(report.table())
    return 0


def run_audit(args) -> int:
    from ..ops.audit import audit_orphans, summary_lines
    from ..state import open_state_store

    state, blob = open_stores(args, blob=True, create=False)
    opened = []
    url = resolve(args.state, STATE_URL_ENV)

    def state_for(service_id: str):
        store = open_state_store(url, service_id=service_id, create=False)
        opened.append(store)
        return store

    try:
        if blob is None:
            raise UsageError("audit-blobs needs a blob store: pass --blob URL (or set SEKIOPS_BLOB_URL)")
        services = [s.strip() for s in args.services.split(",") if s.strip()] if args.services else None
        report = audit_orphans(state, blob, services=services, state_for=state_for, grace=args.grace,
                               prefix=args.prefix)
    finally:
        for s in opened:
            s.close()
        state.close()
        if blob is not None:
            blob.close()
    if args.format == "json":
        print_json(report)
    else:
        print("\n".join(summary_lines(report)))
        if report["orphans"]:
            w = max(len(o["key"]) for o in report["orphans"])
            print(f"{'key'.ljust(w)}  {'bytes':>12}  lastModified")
            for o in report["orphans"]:
                print(f"{o['key'].ljust(w)}  {o['bytes']:>12,}  {o['lastModified']}")
    return 0
