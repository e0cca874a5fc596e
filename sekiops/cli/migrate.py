"""``sekiops migrate plan|run|rollback``: guarded migrations (dry run unless --execute)."""

from __future__ import annotations

import argparse
import sys

from ..errors import GuardRefusedError
from ..units import format_bytes
from .main import DURATION_HELP, SIZE_HELP, add_store_args, duration_type, print_json, size_type

# The command's implementation (sekiops.ops, the pipelines, the stores) is imported inside its
# function: every command module loads to build the parser, and `sekiops --help` needs none of it.

KINDS = ("offload", "reencode", "copy", "gc-blobs", "rekey")
SHOWN_ITEMS = 50


def register(sub) -> None:
    p = sub.add_parser("migrate", help="guarded migrations: offload, reencode, copy, gc-blobs, rekey",
                       description="Plan and run guarded migrations of snapshot rows. Every migration is "
                       "planned first; 'run' is a dry run unless --execute. Runs keep a checkpoint journal "
                       "(resume, rollback), verify each row through the normal restore path, and never "
                       "overwrite a row another writer changed (compare-and-swap).")
    msub = p.add_subparsers(dest="migrate_command", metavar="ACTION", parser_class=type(p))
    msub.required = True

    plan = msub.add_parser("plan", help="show what a migration would change (reads only)",
                           description="Print what the migration would change: rows, bytes moved, bytes "
                           "freed in the row store, estimated time (and Cosmos DB request units when Cosmos is "
                           "involved). Writes nothing.")
    _migration_args(plan)
    plan.set_defaults(func=run_plan_command)

    run = msub.add_parser("run", help="run a migration (dry run unless --execute)",
                          description="Plan, then (with --execute) migrate: canary first, then the rest "
                          "with --continue; rate-limited; pause/stop with flag files; resumable from the "
                          "journal; an audit record next to the journal.")
    _migration_args(run)
    run.add_argument("--execute", action="store_true", help="really migrate (default: dry run)")
    run.add_argument("--journal", metavar="FILE", help="checkpoint journal (JSON lines); a rerun with the same "
                     "file resumes (default: sekiops-migrate-KIND-SERVICE.jsonl)")
    run.add_argument("--canary", type=int, default=10, metavar="N", help="migrate N rows, verify them and stop "
                     "for a check (default %(default)s; 0 = no canary)")
    run.add_argument("--continue", dest="proceed", action="store_true",
                     help="go on past the canary (with a passed canary: migrate the rest)")
    _guard_args(run)
    run.set_defaults(func=run_run_command)

    rb = msub.add_parser("rollback", help="put back the rows a migration journal changed",
                         description="Restore the previous rows recorded in the journal (compare-and-swap: a "
                         "row changed since the migration is reported, not touched), verify each. Dry run "
                         "unless --execute. The stores are the journal's, or --state/--blob (for a copy: "
                         "the target's).")
    rb.add_argument("--journal", required=True, metavar="FILE", help="the migration's journal")
    rb.add_argument("--state", metavar="URL", help="state store the migration wrote (default: the journal's)")
    rb.add_argument("--blob", metavar="URL", help="blob store the migration wrote (default: the journal's)")
    rb.add_argument("--execute", action="store_true", help="really roll back (default: dry run)")
    rb.add_argument("--format", choices=["table", "json"], default="table")
    _guard_args(rb)
    rb.set_defaults(func=run_rollback_command)


def _migration_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    add_store_args(p)
    p.add_argument("--projector", metavar="NAME", help="only this projector's rows")
    p.add_argument("--threshold", type=size_type("--threshold"), metavar="SIZE", help="offload: envelopes larger "
                   f"than this ({SIZE_HELP}; default: the state store's Sekiban record-offload threshold)")
    p.add_argument("--payload-level", action="store_true", help="offload: move the payload to a blob and keep a "
                   "small envelope inline (Sekiban-compatible on SQLite) instead of the whole envelope")
    p.add_argument("--to-state", metavar="URL", help="copy: target state store (default: the source's)")
    p.add_argument("--to-blob", metavar="URL", help="copy: target blob store (default: the source's)")
    p.add_argument("--to-service-id", metavar="ID", help="copy: target service id (default: the source's)")
    p.add_argument("--grace", type=duration_type("--grace"), default=24 * 3600.0, metavar="DURATION",
                   help=f"gc-blobs: keep blobs written within this window ({DURATION_HELP}; default 24h)")
    p.add_argument("--prefix", default="", metavar="KEYS", help="gc-blobs: only blobs whose key starts with this "
                   "(a very large container is collected a part at a time)")
    p.add_argument("--services", metavar="A,B,...", help="gc-blobs: every service id whose rows may use the blob "
                   "container (default: all, when the state store can list them)")
    p.add_argument("--rate", type=float, metavar="ROWS_PER_S", help="rate limit (also used by the time estimate)")
    p.add_argument("--format", choices=["table", "json"], default="table")


def _guard_args(p: argparse.ArgumentParser) -> None:
    if not any(a.dest == "rate" for a in p._actions):
        p.add_argument("--rate", type=float, metavar="ROWS_PER_S", help="at most this many rows per second")
    p.add_argument("--batch", type=int, default=100, metavar="N",
                   help="rows between progress reports and audit-record updates (default %(default)s)")
    p.add_argument("--pause-file", metavar="F", help="while this file exists the run waits between rows")
    p.add_argument("--stop-file", metavar="F", help="when this file appears the run stops cleanly between rows")
    p.add_argument("--concurrency", type=int, default=4, metavar="N",
                   help="rows in flight at once after the canary (1..64, default %(default)s): hides store "
                   "latency; a store that throttles slows the whole pool")


# --- commands ------------------------------------------------------------------------------------


def _open_and_plan(args, create: bool = False):
    """Open the stores and plan; nothing is created unless ``create`` (``run --execute``)."""
    from ..ops.migrate.endpoints import open_endpoints
    from ..ops.migrate.plan import make_plan

    ep = open_endpoints(args.kind, args.state, args.blob, service_id=args.service_id, to_state=args.to_state,
                        to_blob=args.to_blob, to_service_id=args.to_service_id, create=create)
    try:
        services = [s.strip() for s in args.services.split(",") if s.strip()] if args.services else None
        plan = make_plan(args.kind, ep, projector=args.projector, threshold=args.threshold,
                         payload_level=args.payload_level, grace_hours=args.grace / 3600, services=services,
                         rate=args.rate, prefix=args.prefix)
    except BaseException:
        ep.close()
        raise
    return ep, plan


def run_plan_command(args) -> int:
    ep, plan = _open_and_plan(args)
    ep.close()
    _print_plan(plan, args.format)
    if plan.refused:
        raise GuardRefusedError(f"migration {plan.kind} refused: {plan.refused}")
    return 0


def run_run_command(args) -> int:
    from ..ops.migrate.plan import check_runnable
    from ..ops.migrate.runner import run_plan

    ep, plan = _open_and_plan(args, create=args.execute)
    try:
        if args.format == "table":
            _print_plan(plan, "table")
        check_runnable(plan)
        opts = _options(args, journal=args.journal, canary=args.canary, proceed=args.proceed)
        if args.execute and args.format == "table":
            _say(f"migrating service {plan.target_service_id} ({plan.kind}, {len(plan.items)} item(s))")
        result = run_plan(plan, ep, opts, progress=_progress(args))
    finally:
        ep.close()
    return _report(result, plan if args.format == "json" else None, args.format)


def run_rollback_command(args) -> int:
    from ..ops.migrate.rollback import open_rollback_endpoints, plan_rollback, run_rollback

    plan = plan_rollback(args.journal)
    if args.format == "table":
        _print_plan(plan, "table")
    if not args.execute:
        ep = None
    else:
        ep = open_rollback_endpoints(args.journal, args.state, args.blob)
    try:
        opts = _options(args, journal=args.journal, canary=0, proceed=True)
        result = run_rollback(args.journal, ep, opts, progress=_progress(args))
    finally:
        if ep is not None:
            ep.close()
    return _report(result, plan if args.format == "json" else None, args.format)


def _options(args, **kw):
    from ..ops.migrate.runner import RunOptions

    return RunOptions(execute=args.execute, rate=args.rate, batch=max(1, args.batch), pause_file=args.pause_file,
                      stop_file=args.stop_file, concurrency=args.concurrency, **kw)


def _report(result, plan, fmt: str) -> int:
    if fmt == "json":
        print_json({"plan": plan.to_dict() if plan is not None else None, "result": result.to_dict()})
    else:
        print(f"result: {result.status} — {result.message}")
        c = result.counts
        if result.status != "dry-run":
            print(f"done {c.get('done', 0)}, skipped {c.get('skipped', 0)}, failed {c.get('failed', 0)}, "
                  f"reverted {c.get('reverted', 0)}")
            skipped = [i for i in result.items if i["result"] != "done"]
            for i in skipped[:SHOWN_ITEMS]:
                print(f"  {i['result']:8} {i['item']}: {i['reason']}")
            if len(skipped) > SHOWN_ITEMS:
                print(f"  ... and {len(skipped) - SHOWN_ITEMS} more (see the audit record)")
            print(f"journal: {result.journal}")
            print(f"audit record: {result.audit}")
        sys.stdout.flush()
    if not result.ok:
        raise GuardRefusedError(f"{result.phase} {result.kind} {result.status}: {result.message}")
    return 0


def _print_plan(plan, fmt: str) -> None:
    if fmt == "json":
        print_json(plan.to_dict())
        return
    for line in plan.summary_lines():
        print(line)
    if plan.items:
        cols = [("action", 16), ("envelope", 8), ("payload", 7), ("stored", 10), ("row after", 10),
                ("blob bytes", 10), ("item", 0)]
        print("  ".join(f"{c:<{w}}" if w else c for c, w in cols))
        for i in plan.items[:SHOWN_ITEMS]:
            vals = [i.action, "blob" if i.placement == "blob" else ("row" if i.placement == "inline" else "-"),
                    i.payload_location, format_bytes(i.stored_bytes), format_bytes(i.inline_after),
                    format_bytes(i.upload_bytes or i.delete_bytes), i.item]
            print("  ".join(f"{v:<{w}}" if w else v for v, (_, w) in zip(vals, cols, strict=True)))
            for flag in i.flags:
                print(f"    ! {flag}")
        if len(plan.items) > SHOWN_ITEMS:
            print(f"... and {len(plan.items) - SHOWN_ITEMS} more (--format json lists every item)")
    for s in plan.skipped[:10]:
        print(f"left alone: {s['item']}: {s['reason']}")
    if len(plan.skipped) > 10:
        print(f"left alone: ... and {len(plan.skipped) - 10} more")
    sys.stdout.flush()


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _progress(args):
    every = max(1, args.batch)

    def report(ev: dict) -> None:
        c = ev["counts"]
        seen = c["done"] + c["skipped"] + c["failed"] + c.get("already", 0)
        kind = ev["event"]
        if kind == "item" and seen % every == 0:
            _say(f"progress: {seen}/{ev['total']} done={c['done']} skipped={c['skipped']} failed={c['failed']}")
        elif kind == "paused":
            _say("paused (pause file present); waiting")
        elif kind == "backoff":
            _say(f"store unavailable ({ev['what']}); retrying in {ev['seconds']} s")
        elif kind == "canary":
            _say(f"canary passed: {ev['rows']} row(s) migrated and verified")

    return report
