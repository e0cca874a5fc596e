"""Run a plan's steps under the guards, with the journal, the canary and the audit record.

Without ``execute`` nothing is opened for writing: the result is the dry run. With it:

1. the journal is opened (created, or resumed when it belongs to the same migration) and locked;
2. interrupted steps of earlier runs (``begin`` without outcome) are resolved by looking at the
   store: untouched (redone if still needed), written by us (verified now, then done), or moved
   by another writer (skipped);
3. items run one at a time: pause/stop checked between items, the rate limit, backoff on
   StoreUnavailableError, skip when the item no longer needs the change or another writer got
   there first (compare-and-swap lost: reported, never overwritten), verify after each write;
   a verification failure puts the previous row back and stops the run;
4. the canary: the first N items done in the first run are the canary; the run then stops
   (status ``canary``) unless ``proceed`` (``--continue``) was given;
5. the audit record is rewritten at batch boundaries and at the end.

Fail points (``SEKIOPS_FAILPOINTS``, see :mod:`sekiops.pipeline.failpoints`):
``migrate_after_begin`` (intent journalled, row untouched), ``migrate_after_write`` (row written,
not verified or journalled), ``migrate_after_done``. ``RunOptions.hooks["before_write"]`` may
hold a callable run with ``(item, prepared)`` between the journalled intent and the write
(tests use it to play a grain that persists at the worst moment).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from functools import partial
from itertools import chain as _chain

from ...errors import ConcurrencyConflictError, SekiopsError, StoreUnavailableError, TombstonedError, UsageError
from ...format.record import utcnow
from ...pipeline import failpoints
from ...pipeline.spool import MAX_FILES, Spool
from ...spill import SpilledList
from .auditlog import AuditLog, audit_path, who
from .backup import BackupDir
from .guards import Backoff, BackoffPolicy, Controls, GaveUp, RateLimiter, StopRequested, call_with_backoff
from .journal import Journal, default_backup_dir
from .plan import Plan, PlanItem, check_runnable
from .steps import DONE_EARLIER, Skip, Step, Verdict, make_step

DEFAULT_CANARY = 10
#: rows in flight at once: enough to hide 20-50 ms of store latency, few enough to stay polite
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64


@dataclasses.dataclass
class RunOptions:
    execute: bool = False
    journal: str | None = None
    canary: int = DEFAULT_CANARY
    #: go on past the canary (``--continue``)
    proceed: bool = False
    rate: float | None = None
    batch: int = 100
    pause_file: str | None = None
    stop_file: str | None = None
    #: stop the run after this many items failed (unreadable rows, refused writes)
    max_failures: int = 10
    backoff: BackoffPolicy = dataclasses.field(default_factory=BackoffPolicy)
    hooks: dict = dataclasses.field(default_factory=dict)
    #: items in flight at once after the canary (the canary itself runs one at a time)
    concurrency: int = DEFAULT_CONCURRENCY

    def to_dict(self) -> dict:
        return {"execute": self.execute, "canary": self.canary, "continue": self.proceed, "rate": self.rate,
                "batch": self.batch, "pauseFile": self.pause_file, "stopFile": self.stop_file,
                "maxFailures": self.max_failures, "concurrency": self.concurrency}


@dataclasses.dataclass
class RunResult:
    #: dry-run | complete | canary | stopped | throttled | failed | interrupted
    status: str
    phase: str
    kind: str
    counts: dict
    message: str
    run_id: str | None = None
    journal: str | None = None
    audit: str | None = None
    #: one record per item outcome (a SpilledList: on disk past its memory budget)
    items: Sequence[dict] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("dry-run", "complete", "canary", "stopped")

    def to_dict(self) -> dict:
        """A dict; ``items`` is a plain list unless it grew past memory (then stream it: spill.write_json)."""
        items = self.items if isinstance(self.items, SpilledList) and self.items.spilled else list(self.items)
        return {"status": self.status, "phase": self.phase, "kind": self.kind, "counts": self.counts,
                "message": self.message, "runId": self.run_id, "journal": self.journal, "audit": self.audit,
                "items": items}


class Halt(Exception):
    """The run must stop now (verification failed, too many failures)."""


def default_journal_path(plan: Plan) -> str:
    where = plan.where
    name = f"sekiops-migrate-{plan.kind}-{where['serviceId']}"
    if plan.kind == "copy":
        name += f"-to-{where['target']['serviceId']}"
    return name + ".jsonl"


def new_run_id() -> str:
    return utcnow().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_plan(plan: Plan, ep, options: RunOptions, controls: Controls | None = None,
             progress: Callable[[dict], None] | None = None) -> RunResult:
    """Run (or, without ``options.execute``, only describe) the plan's migration."""
    check_runnable(plan)
    if not options.execute:
        return RunResult("dry-run", "migrate", plan.kind, {"planned": len(plan.items)},
                         f"dry run: nothing was written; pass --execute to migrate {len(plan.items)} item(s) "
                         f"of service {plan.target_service_id}")
    path = options.journal or default_journal_path(plan)
    header = {"kind": plan.kind, "where": plan.where, "params": plan.params, "urls": ep.urls(),
              "backupDir": default_backup_dir(path), "createdAt": utcnow().isoformat(), "who": who()}
    with Journal.open(path, header) as journal:
        backups = BackupDir(journal.backup_dir)
        backups.clean_incoming()
        # every worker holds a few temp files at once: a spool of its own (so a migration never
        # crowds out the persists sharing the machine), whose file cap grows with the workers
        parent = Spool(clean=False).directory  # made and checked (private, ours) first
        spool = Spool(os.path.join(parent, "migrations"), max_files=MAX_FILES + 3 * max(1, options.concurrency))
        step = make_step(plan, ep, spool, backups, options.hooks)
        runner = Runner(journal, step, plan.items, options, phase="migrate", kind=plan.kind, where=plan.where,
                        params=plan.params, controls=controls, progress=progress)
        return runner.run()


class Runner:
    """Runs items of one phase (``migrate`` or ``rollback``) through a step executor."""

    def __init__(self, journal: Journal, step: Step, items: list[PlanItem], options: RunOptions, *,
                 phase: str, kind: str, where: dict, params: dict, controls: Controls | None = None,
                 progress: Callable[[dict], None] | None = None):
        self.journal, self.step, self.items, self.options = journal, step, items, options
        self.phase, self.kind = phase, kind
        self.controls = controls or Controls(options.pause_file, options.stop_file)
        if controls is not None:
            controls.pause_file = controls.pause_file or options.pause_file
            controls.stop_file = controls.stop_file or options.stop_file
        self.progress = progress
        self.rate = RateLimiter(options.rate)
        self.run_id = new_run_id()
        self.counts = {"done": 0, "skipped": 0, "failed": 0, "reverted": 0, "already": 0}
        self.results = SpilledList()
        if not 1 <= options.concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"concurrency must be 1..{MAX_CONCURRENCY}, not {options.concurrency}")
        #: journal, counts, results, audit record and progress are shared by the workers
        self._lock = threading.RLock()
        #: a store asked us to back off: no new item starts before this (time.monotonic)
        self._throttled_until = 0.0
        self.audit = AuditLog(audit_path(journal.path, self.run_id), run_id=self.run_id, kind=kind, phase=phase,
                              where=where, params=params, options=options.to_dict(), journal=journal.path)

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        j = self.journal
        j.append({"t": "run", "run": self.run_id, "phase": self.phase, "at": utcnow().isoformat(), "who": who(),
                  "options": self.options.to_dict()}, durable=True)
        status, message = "complete", None
        try:
            self._resolve_pending()
            status, message = self._items()
        except StopRequested:
            status, message = "stopped", "stopped on request between items; rerun to resume from the journal"
        except GaveUp as exc:
            status, message = "throttled", str(exc)
        except Halt as exc:
            status, message = "failed", str(exc)
        except BaseException as exc:
            status, message = "interrupted", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            totals = {**self.counts, "planned": len(self.items)}
            message = message or f"{self.phase} {self.kind}: {self._count_text()}"
            j.append({"t": "end", "run": self.run_id, "phase": self.phase, "at": utcnow().isoformat(),
                      "status": status, "totals": totals, "message": message})
            self.audit.finish(status, totals, message)
            self.audit.write()
            self._emit("end", status=status, message=message)
        return RunResult(status, self.phase, self.kind, dict(self.counts), message, self.run_id, j.path,
                         self.audit.path, self.results)

    def _items(self) -> tuple[str, str | None]:
        j, opts = self.journal, self.options
        canary = 0 if (self.phase != "migrate" or j.canary_passed) else max(0, opts.canary)
        if self.phase == "migrate" and j.canary_passed and not opts.proceed and self.items:
            return "canary", ("the canary passed in an earlier run; pass --continue to migrate the remaining "
                              f"{len(self.items)} item(s)")
        items: Iterator[tuple[int, PlanItem]] = iter(enumerate(self.items, 1))
        n = 0
        for n, item in items:  # the canary: one at a time, so it is exactly the first N items
            if not canary:
                items = _chain([(n, item)], items)
                break
            self._next_slot()
            self._process(item)
            if self.counts["done"] >= canary:
                j.append({"t": "canary", "run": self.run_id, "rows": self.counts["done"], "result": "passed"})
                self._emit("canary", rows=self.counts["done"])
                canary = 0
                if not opts.proceed and n < len(self.items):
                    return "canary", (f"canary passed: {self.counts['done']} item(s) migrated and verified; "
                                      f"check them, then rerun with --continue for the remaining "
                                      f"{len(self.items) - n}")
            self._batch_boundary(n)
        else:
            return "complete", None
        self._concurrently(items)
        return "complete", None

    def _next_slot(self) -> None:
        """Before an item starts: pause/stop, the shared backoff, the rate limit."""
        self.controls.checkpoint(on_pause=lambda: self._emit("paused"))
        while True:
            wait = self._throttled_until - time.monotonic()
            if wait <= 0:
                break
            self.controls.sleep(wait)
            self.controls.checkpoint(on_pause=lambda: self._emit("paused"))
        self.rate.wait(self.controls)

    def _batch_boundary(self, n: int) -> None:
        if n % max(1, self.options.batch) == 0:
            with self._lock:
                self.audit.write({**self.counts, "planned": len(self.items)}, force=False)

    def _concurrently(self, items) -> None:
        """The items after the canary, ``options.concurrency`` at a time.

        Each worker runs one item's whole life cycle; the journal is order-independent (every line
        names its item), so a resume finds each item's state whatever the interleaving. A stop, a
        halt or a give-up lets the items in flight finish (never half a write) and starts no more.
        """
        limit = self.options.concurrency
        if limit == 1:
            for n, item in items:
                self._next_slot()
                self._process(item)
                self._batch_boundary(n)
            return

        inflight: set = set()
        error: BaseException | None = None

        def reap(block: bool) -> None:
            nonlocal error
            if not inflight:
                return
            done, _ = wait(inflight, timeout=None if block else 0, return_when=FIRST_COMPLETED)
            for f in done:
                inflight.discard(f)
                exc = f.exception()
                if exc is not None and error is None:
                    error = exc

        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="sekiops-migrate") as pool:
            try:
                for n, item in items:
                    reap(block=False)
                    while len(inflight) >= limit and error is None:
                        reap(block=True)
                    if error is not None:
                        break
                    if self.controls.pause_requested:  # "paused" means nothing is moving: settle first
                        while inflight:
                            reap(block=True)
                    self._next_slot()
                    inflight.add(pool.submit(self._process, item))
                    self._batch_boundary(n)
            finally:
                while inflight:  # the items in flight end their life cycle; none is cut in half
                    reap(block=True)
        if error is not None:
            raise error

    # --- one item ------------------------------------------------------------------------------

    def _call(self, fn, what: str):
        return call_with_backoff(fn, what, self.options.backoff, self.controls, on_wait=self._backing_off)

    def _backing_off(self, what: str, seconds: float, exc: BaseException) -> None:
        """A store throttles one worker: the whole pool slows down (no new item for that long)."""
        with self._lock:
            self._throttled_until = max(self._throttled_until, time.monotonic() + seconds)
        self._emit("backoff", what=what, seconds=round(seconds, 2), error=str(exc))

    def _process(self, item: PlanItem) -> None:
        st = self.journal.item(self.phase, item.item)
        done_after = (st.done or {}).get("after") if st and st.done else None
        step = self.step
        try:
            current = self._call(lambda: step.load(item), f"read {item.item}")
            reason = self._call(lambda: step.skip_reason(current, item, done_after), f"check {item.item}")
            if reason == DONE_EARLIER:  # nothing to record: the journal has it already
                with self._lock:
                    self.counts["already"] += 1
                self._emit("item", item=item.item, action=item.action, result="already", reason=reason)
                return
            if reason:
                self._outcome("skipped", item, item.action, reason=reason, before=step.describe(current))
                return
            prep = self._call(lambda: step.prepare(current, item), f"prepare {item.item}")
        except Skip as exc:
            self._outcome("skipped", item, item.action, reason=str(exc))
            return
        except (ConcurrencyConflictError, TombstonedError) as exc:
            self._outcome("skipped", item, item.action, reason=f"another writer changed it while it was read; "
                                                               f"left alone ({exc})")
            return
        except (StopRequested, GaveUp):
            raise
        except SekiopsError as exc:
            self._outcome("failed", item, item.action, reason=f"left unchanged: {exc}")
            return
        try:
            self._execute(item, prep)
        finally:
            prep.close()

    def _execute(self, item: PlanItem, prep) -> None:
        begin = {"t": "begin", "phase": self.phase, "run": self.run_id, "item": item.item, **prep.begin_fields()}
        self._journal(begin, durable=True)
        failpoints.hit("migrate_after_begin")
        hook = self.options.hooks.get("before_write")
        if hook is not None:
            hook(item, prep)
        try:
            stored = self._write(prep, begin)
        except Skip as exc:
            self._outcome("skipped", item, prep.action, reason=str(exc), before=prep.before)
            return
        except (StopRequested, GaveUp):
            raise
        except SekiopsError as exc:
            status, current = self._call(lambda: self.step.identify(begin), f"re-read {item.item}")
            if status != "applied":
                self._outcome("failed", item, prep.action, reason=f"write refused, left unchanged: {exc}",
                              before=prep.before)
                return
            stored = current
        failpoints.hit("migrate_after_write")
        self._conclude(item, begin, stored)
        failpoints.hit("migrate_after_done")

    def _write(self, prep, begin: dict):
        """The compare-and-swap write; an ambiguous failure is settled by re-reading the row."""
        backoff = Backoff(self.options.backoff)
        while True:
            try:
                return self.step.apply(prep)
            except (ConcurrencyConflictError, TombstonedError) as exc:
                raise Skip(f"another writer changed it first; not overwritten ({exc})") from None
            except StoreUnavailableError as exc:
                status, current = self._call(lambda: self.step.identify(begin), f"re-read {begin['item']}")
                if status == "applied":
                    return current
                if status == "foreign":
                    raise Skip("another writer changed it while the write was in doubt; not overwritten") from None
                delay = backoff.next_delay(exc)
                if delay is None:
                    raise GaveUp(f"{exc} — write of {begin['item']}: still unavailable after {backoff.attempt} "
                                 "attempts; the run stopped and resumes from its journal") from exc
                self._backing_off(f"write {begin['item']}", delay, exc)
                self.controls.sleep(delay)

    def _conclude(self, item: PlanItem | None, begin: dict, stored) -> None:
        step = self.step
        name = begin["item"]
        try:
            verdict = self._call(lambda: step.verify(stored, begin), f"verify {name}")
        except SekiopsError as exc:
            verdict = Verdict(False, note=f"verification could not run: {exc}")
        if verdict.ok is False:
            try:
                undone = step.revert(begin, stored)
                if undone:
                    with self._lock:
                        self.counts["reverted"] += 1
                else:
                    undone = "left as written"
            except SekiopsError as exc:
                undone = f"could not put the previous state back ({exc}); roll back from the journal"
            self._outcome("failed", item, begin["action"], name=name, reason=f"verification failed: {verdict.note}",
                          before=begin.get("before"), after=step.describe(stored), reverted=undone)
            raise Halt(f"{name}: verification failed ({verdict.note}); {undone}. The run stopped")
        self._outcome("done", item, begin["action"], name=name, before=begin.get("before"),
                      after=step.describe(stored), payload_sha256=verdict.sha256, verified=verdict.ok is True,
                      reason=verdict.note or None)

    def _resolve_pending(self) -> None:
        for st in self.journal.pending(self.phase):
            begin = st.begin
            assert begin is not None, "a pending item's last record is its begin line"
            status, current = self._call(partial(self.step.identify, begin), f"re-read {st.item}")
            if status == "untouched":
                self._journal({"t": "reset", "phase": self.phase, "run": self.run_id, "item": st.item,
                               "reason": "interrupted before its write; redone if still needed"})
            elif status == "foreign":
                self._outcome("skipped", None, begin["action"], name=st.item,
                              reason="another writer changed it while the run was interrupted; not overwritten",
                              before=begin.get("before"))
            else:
                self._conclude(None, begin, current)

    # --- bookkeeping ---------------------------------------------------------------------------

    def _outcome(self, result: str, item: PlanItem | None, action: str, *, name: str | None = None,
                 reason: str | None = None, before=None, after=None, payload_sha256: str | None = None,
                 **extra) -> None:
        if not name:
            assert item is not None, "an outcome without a plan item is named"
            name = item.item
        rec = {"t": result, "phase": self.phase, "run": self.run_id, "item": name, "action": action,
               "reason": reason, "at": utcnow().isoformat()}
        if result == "done":
            rec.update(after=after, payloadSha256=payload_sha256)
        rec.update(extra)
        entry = {"item": name, "action": action, "result": result, "reason": reason}
        with self._lock:
            self.journal.append(rec)
            self.counts[result] += 1
            self.audit.item(name, action, result, before=before, after=after, reason=reason,
                            payload_sha256=payload_sha256, **extra)
            self.results.append(entry)
            failed = self.counts["failed"]
        self._emit("item", **entry)
        if result == "failed" and failed >= self.options.max_failures:
            raise Halt(f"{failed} item(s) failed (limit {self.options.max_failures}); the run stopped")

    def _journal(self, record: dict, durable: bool = False) -> None:
        with self._lock:
            self.journal.append(record, durable=durable)

    def _count_text(self) -> str:
        c = self.counts
        text = f"{c['done']} done, {c['skipped']} skipped, {c['failed']} failed"
        return text + (f", {c['already']} done by an earlier run" if c["already"] else "")

    def _emit(self, event: str, **data) -> None:
        if self.progress is not None:
            with self._lock:
                self.progress({"event": event, "counts": dict(self.counts), "total": len(self.items), **data})
