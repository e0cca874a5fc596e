"""Rollback: put back, from the journal, what a migration changed — with the same guards.

For every item the journal records as ``done`` (and not rolled back since), the ``begin`` line
says what the row was (``before``: metadata and token) and where its previous envelope bytes
are (``backup``). Rollback runs as the ``rollback`` phase of the same journal, through the
same runner: compare-and-swap on the row *as the migration left it* (a row a grain has
written since is reported and left alone), the previous envelope written back (an offloaded
one re-uploaded from the backup if its blob is gone), then verified: the restored payload
must hash to the digest taken before the migration. Copies are undone by tombstoning the
rows they created (the state store protocol has no delete); gc-blobs deletions by uploading
the saved bytes again. Rerunning a rollback resumes it.

The stores are reopened from the URLs given, else from the journal header's (redacted) URLs
when they hold no secret; either way their locations must be the journal's.
"""

from __future__ import annotations

from collections.abc import Callable

from ...blob import open_blob_store
from ...blob.base import BlobStore
from ...errors import GuardRefusedError, UsageError
from ...pipeline.spool import Spool
from ...state import open_state_store
from .backup import BackupDir
from .endpoints import Endpoints
from .estimate import Estimate
from .guards import Controls
from .journal import ItemState, Journal, row_from_dict, row_to_dict
from .plan import Plan, PlanItem
from .runner import Runner, RunOptions, RunResult
from .steps import Prepared, Step, Verdict, journal_backup, previous_blob, write_previous


def _undo_id(done: dict) -> str:
    """Identity of the migration step a rollback undoes."""
    return f"{done.get('run')}@{done.get('at')}"


def rollback_items(journal: Journal) -> tuple[list[PlanItem], list[dict]]:
    """Items to roll back (done by the migration, not rolled back since) and those that cannot be."""
    items, skipped = [], []
    for st in journal.states("migrate"):
        if st.done is None:
            continue
        rb = journal.item("rollback", st.item)
        if rb is not None and rb.done is not None and (rb.done_begin or {}).get("undo") == _undo_id(st.done):
            continue
        begin = st.done_begin or {}
        if st.done.get("verified") is False:
            skipped.append({"item": st.item, "reason": "superseded by a newer write during the migration"})
            continue
        before = begin.get("before") or {}
        backup = begin.get("backup") or {}
        name, _, version = st.item.rpartition("/")
        items.append(PlanItem(item=st.item, action=f"rollback-{begin.get('action')}",
                              projector_name=before.get("projector_name") or name,
                              projector_version=before.get("projector_version") or version,
                              stored_bytes=int(backup.get("bytes") or 0), read_bytes=int(backup.get("bytes") or 0),
                              inline_after=0 if before.get("is_offloaded") else int(backup.get("bytes") or 0),
                              upload_bytes=int(backup.get("bytes") or 0) if journal.header["kind"] == "gc-blobs" else 0,
                              note=f"undo {begin.get('action')} of run {st.done.get('run')}"))
    return items[::-1], skipped


def plan_rollback(journal_path: str) -> Plan:
    """What a rollback of the journal would do (reads the journal only)."""
    journal = Journal.read(journal_path)
    items, skipped = rollback_items(journal)
    est = Estimate(rows=len(items), bytes_read=sum(i.read_bytes for i in items),
                   bytes_written_rows=sum(i.inline_after for i in items),
                   bytes_uploaded=sum(i.upload_bytes for i in items))
    h = journal.header
    return Plan(f"rollback-{h['kind']}", h["where"], {"rollbackOf": journal.path, **(h.get("params") or {})},
                items, skipped, est, context={"journal": journal})


def open_rollback_endpoints(journal_path: str, state_url: str | None = None,
                            blob_url: str | None = None) -> Endpoints:
    """The stores the migration wrote (a copy's target), checked against the journal's locations."""
    h = Journal.read(journal_path).header
    urls, where = h.get("urls") or {}, h["where"]
    copy = h["kind"] == "copy"
    wrote = where["target"] if copy else where
    state_url = state_url or urls.get("toState" if copy else "state") or (urls.get("state") if copy else None)
    blob_url = blob_url or urls.get("toBlob" if copy else "blob") or (urls.get("blob") if copy else None)
    for what, url in (("--state", state_url), ("--blob", blob_url)):
        if url and "***" in url:
            raise UsageError(f"the journal's {what[2:]} URL had a secret (redacted); pass {what} URL")
    if not state_url:
        raise UsageError("the journal names no state store URL; pass --state URL")
    state = open_state_store(state_url, service_id=wrote["serviceId"], create=False)
    try:
        blob = open_blob_store(blob_url) if blob_url else None
    except BaseException:
        state.close()
        raise
    ep = Endpoints("rollback", state_url, blob_url, wrote["serviceId"], state, blob, state, blob)
    try:
        got = ep.where()
        if got["state"] != wrote["state"] or (wrote.get("blob") and got["blob"] != wrote["blob"]):
            raise GuardRefusedError(f"these stores ({got['state']}, {got['blob']}) are not the ones the journal "
                                    f"migrated ({wrote['state']}, {wrote.get('blob')}); refusing to roll back")
    except BaseException:
        ep.close()
        raise
    return ep


def run_rollback(journal_path: str, ep: Endpoints | None, options: RunOptions, controls: Controls | None = None,
                 progress: Callable[[dict], None] | None = None) -> RunResult:
    plan = plan_rollback(journal_path)
    if not options.execute:
        return RunResult("dry-run", "rollback", plan.kind, {"planned": len(plan.items)},
                         f"dry run: nothing was written; pass --execute to roll back {len(plan.items)} item(s)")
    if ep is None:
        raise UsageError("rolling back writes: open the stores with open_rollback_endpoints()")
    with Journal.open(journal_path) as journal:
        backups = BackupDir(journal.backup_dir, create=False)
        cls = {"copy": RollbackCopy, "gc-blobs": RollbackDelete}.get(journal.header["kind"], RollbackRow)
        step = cls(ep, Spool(), backups, journal=journal)
        items, _ = rollback_items(journal)
        runner = Runner(journal, step, items, options, phase="rollback", kind=journal.header["kind"],
                        where=journal.header["where"], params=plan.params, controls=controls, progress=progress)
        return runner.run()


class _Rollback(Step):
    phase = "rollback"

    def __init__(self, ep, spool, backups, *, journal: Journal):
        super().__init__(ep, spool, backups)
        self.journal = journal

    def forward(self, item: PlanItem) -> ItemState:
        st = self.journal.item("migrate", item.item)
        assert st is not None, "rollback_items lists items of the migration's journal"
        return st

    def skip_reason(self, current, item, done_after):
        st = self.forward(item)
        after = (st.done or {}).get("after") or {}
        if current is None:
            return "row disappeared since the migration"
        if current.token != after.get("token"):
            return "changed since the migration (another writer); not rolled back"
        return None

    def _prepared(self, current, item: PlanItem, **kw) -> Prepared:
        st = self.forward(item)
        assert st.done is not None, "rollback_items lists items the migration did"
        return Prepared(item, item.action, current, row_to_dict(current), extra={"undo": _undo_id(st.done)}, **kw)

    def done_begin(self, item: PlanItem) -> dict:
        """The begin line the migration's done record closed."""
        begin = self.forward(item).done_begin
        assert begin is not None, "a done record closes a begin line"
        return begin

    def revert(self, begin, stored) -> None:
        return None  # a rollback that does not verify is left for the operator to inspect


class RollbackRow(_Rollback):
    """offload/reencode: the previous row and envelope bytes, from the backup."""

    def prepare(self, row, item):
        begin = self.done_begin(item)
        before = row_from_dict(begin["before"])
        ref = journal_backup(begin)
        if before is None:
            raise UsageError(f"journal: the begin line of {item.item!r} has no previous row")
        key = previous_blob(self.blob, self.backups, before, ref) if before.is_offloaded else None
        prep = self._prepared(row, item, backup=ref, digest=None, expected_sha=begin["beforePayloadSha256"])
        prep.new_row = before
        prep.extra["key"] = key
        prep.intended = ({"isOffloaded": True, "offloadKey": key} if before.is_offloaded else
                         {"isOffloaded": False, "stateLength": ref.bytes, "stateSha256": ref.sha256})
        return prep

    def apply(self, prep):
        return write_previous(self.state, self.backups, prep.new_row, prep.backup, prep.extra["key"], prep.current)


class RollbackCopy(_Rollback):
    """copy: tombstone the row the copy created (compare-and-swap on the row as copied)."""

    def prepare(self, row, item):
        prep = self._prepared(row, item, backup=None, digest=None)
        prep.intended = {"tombstoned": True}
        return prep

    def apply(self, prep):
        return self.state.tombstone(prep.current)

    def verify(self, stored, begin):
        now = self.state.get(stored.projector_name, stored.projector_version)
        return Verdict(bool(now is not None and now.is_tombstoned), note="" if now and now.is_tombstoned
                       else "the copied row is not tombstoned")

    def identify(self, begin):
        name, _, version = begin["item"].rpartition("/")
        current = self.state.get(name, version)
        if current is not None and current.token == (begin.get("before") or {}).get("token"):
            return "untouched", current
        if current is not None and current.is_tombstoned:
            return "applied", current
        return "foreign", current


class RollbackDelete(_Rollback):
    """gc-blobs: upload the deleted blob's saved bytes again."""

    @property
    def blob(self) -> BlobStore:
        return self.ep.required_blob(target=True)

    def load(self, item):
        return self.blob.stat(item.item)

    def skip_reason(self, info, item, done_after):
        return "the blob exists again" if info is not None else None

    def prepare(self, info, item):
        begin = self.done_begin(item)
        prep = self._prepared(None, item, backup=journal_backup(begin), digest=None)
        prep.before, prep.intended = None, {"restored": True}
        return prep

    def apply(self, prep):
        with self.backups.open(prep.backup) as f:  # under its exact key: prefixed and GUID keys too
            written = self.blob.write_key(f, prep.item.item, sha256=prep.backup.sha256, size=prep.backup.bytes)
        return {"key": written.key, "bytes": written.size}

    def verify(self, stored, begin):
        info = self.blob.stat(stored["key"]) if stored else None
        return Verdict(info is not None, note="" if info else "the blob is still missing")

    def identify(self, begin):
        info = self.blob.stat(begin["item"])
        return ("applied" if info is not None else "untouched"), ({"key": begin["item"]} if info else None)

    def describe(self, obj):
        return obj if isinstance(obj, dict) else None
