"""Per-item step executors, one class per migration kind, all driven by :mod:`.runner`.

Every step has the same life cycle, and the runner owns the order and the journal:

``load``
    the item as it is now (the row, or the blob's stat);
``skip_reason``
    why it needs nothing any more (already migrated, tombstoned, exists in the target...);
``prepare``
    everything that changes no row: back up the bytes to be replaced, take the "before"
    digest through the normal restore path, build the new envelope, upload blobs (always
    before the row that will point at them; content-addressed, so a retry reuses them);
``begin``
    the journal's intent line (before, backup, intended);
``apply``
    the single compare-and-swap write (``expected`` = the row as read; another writer wins);
``verify``
    restore the stored row and compare its digest with the one taken before;
``identify``
    after a crash or an ambiguous failure, tell from the store whether the write happened;
``revert``
    put back what the begin line describes (verification failures, and rollback).

Nothing here deletes a blob except :class:`DeleteOrphanBlob`, and it keeps a backup first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
from typing import BinaryIO

from ...blob.base import BlobStore
from ...errors import (
    BlobChangedError,
    BlobNotFoundError,
    GuardRefusedError,
    ItemTooLargeError,
    SekiopsError,
    UsageError,
)
from ...format import keys
from ...format.constants import BUILD_SOURCE_MIGRATE
from ...format.envelope import EnvelopeMeta, offloaded_envelope_bytes, read_envelope, write_inline_envelope
from ...format.record import SnapshotRow, utcnow
from ...pipeline import failpoints
from ...pipeline.spool import Spool, SpoolFile
from ...state.base import StateStore
from ...streams import CountingWriter, copy_hashing
from ..audit import row_references
from .backup import BackupDir, BackupRef
from .journal import row_from_dict, row_to_dict
from .plan import PlanItem, keys_to_move, needs_reencode, open_envelope, record_offload_refusal
from .verify import Digest, payload_digest

HOST = socket.gethostname()[:256]


class Skip(Exception):
    """The item needs nothing (or must be left alone); the reason goes to the journal."""


#: skip reason of an item this journal already migrated (the row still holds that write)
DONE_EARLIER = "done earlier (journal)"


@dataclasses.dataclass
class Verdict:
    #: True: same payload; False: differs (revert and halt); None: superseded by a newer write
    ok: bool | None
    sha256: str | None = None
    note: str = ""


@dataclasses.dataclass
class Prepared:
    """What ``prepare`` built for one item; ``close()`` frees its temp files."""

    item: PlanItem
    action: str
    #: the row (or blob stat) replaced, as read: the compare-and-swap ``expected``
    current: object
    before: dict | None
    backup: BackupRef | None
    digest: Digest | None
    new_row: SnapshotRow | None = None
    state: BinaryIO | None = None
    state_length: int = 0
    intended: dict = dataclasses.field(default_factory=dict)
    uploads: list = dataclasses.field(default_factory=list)
    files: list = dataclasses.field(default_factory=list)
    #: the payload sha256 the write must keep (default: the digest taken before)
    expected_sha: str | None = None
    #: more fields for the journal's begin line
    extra: dict = dataclasses.field(default_factory=dict)

    def begin_fields(self) -> dict:
        return {"action": self.action, "before": self.before,
                "backup": self.backup.to_dict() if self.backup else None,
                "beforePayloadSha256": self.expected_sha or (self.digest.sha256 if self.digest else None),
                "beforeDigest": self.digest.to_dict() if self.digest else None,
                "intended": self.intended, "uploads": self.uploads, **self.extra}

    def state_stream(self) -> BinaryIO | None:
        if self.state is not None:
            self.state.seek(0)
        return self.state

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files.clear()


def stamped(row: SnapshotRow, **changes) -> SnapshotRow:
    """``row`` with the changes, as sekiops' migration writes it (BuildSource, host, UpdatedAt)."""
    return row.replace(build_source=BUILD_SOURCE_MIGRATE, build_host=HOST, updated_at=utcnow(), **changes)


def state_sha(state: StateStore, row: SnapshotRow) -> tuple[int, str]:
    with state.open_state_stream(row) as f:
        return copy_hashing(f, None)


def matches_intended(state: StateStore, row: SnapshotRow | None, intended: dict) -> bool:
    """Does the stored row hold exactly what a begin line meant to write?"""
    if row is None or row.is_tombstoned or not intended:
        return False
    if intended.get("isOffloaded"):
        return row.is_offloaded and row.offload_key == intended.get("offloadKey")
    if row.is_offloaded or row.state_length != intended.get("stateLength"):
        return False
    return state_sha(state, row)[1] == intended.get("stateSha256")


def place(state: StateStore, blob: BlobStore | None, row: SnapshotRow, envelope: BinaryIO, length: int, sha: str,
          prep: Prepared, force_blob: bool = False) -> dict:
    """Where a new envelope goes, decided as Sekiban decides for the store it is written to.

    Above the store's record-offload threshold (or ``force_blob``) it is uploaded to
    ``{name}/{version}/{sha256}.bin`` now (before the row that will point at it); otherwise it
    stays in ``prep`` as the inline StateData. Fills ``prep.intended`` and returns the row fields.
    """
    threshold = state.record_offload_threshold
    if force_blob or (blob is not None and threshold is not None and length > threshold):
        if blob is None:
            raise UsageError(f"{row.where}: needs a blob store")
        envelope.seek(0)
        written = blob.write(envelope, f"{row.projector_name}/{row.projector_version}", sha256=sha, size=length)
        prep.uploads.append(written.key)
        prep.intended = {"isOffloaded": True, "offloadKey": written.key}
        return dict(is_offloaded=True, offload_key=written.key, offload_provider=blob.provider,
                    state_length=None, original_size_bytes=length, compressed_size_bytes=length)
    if state.inline_limit is not None and length > state.inline_limit:
        raise ItemTooLargeError(f"{state.location}: new envelope of {length} bytes for {row.where} exceeds "
                                f"the store's inline limit ({state.inline_limit}) and no blob store takes it")
    prep.state, prep.state_length = envelope, length
    prep.intended = {"isOffloaded": False, "stateLength": length, "stateSha256": sha}
    return dict(is_offloaded=False, offload_key=None, offload_provider=None, state_length=length,
                original_size_bytes=length, compressed_size_bytes=length)


class Step:
    """Base of the step executors (see the module docstring for the life cycle)."""

    phase = "migrate"

    def __init__(self, ep, spool: Spool, backups: BackupDir, hooks: dict | None = None, **params):
        self.ep = ep
        self.spool = spool
        self.backups = backups
        #: test hooks at points a run cannot otherwise be interleaved (e.g. "before_delete")
        self.hooks = hooks or {}
        self.params = params

    #: the stores whose rows the step changes
    @property
    def state(self) -> StateStore:
        return self.ep.target_state

    @property
    def blob(self) -> BlobStore | None:
        return self.ep.target_blob

    def load(self, item: PlanItem):
        assert item.projector_name is not None and item.projector_version is not None, "a row's item names it"
        return self.state.get(item.projector_name, item.projector_version)

    def skip_reason(self, current, item: PlanItem, done_after: dict | None) -> str | None:
        raise NotImplementedError

    def prepare(self, current, item: PlanItem) -> Prepared:
        raise NotImplementedError

    def apply(self, prep: Prepared):
        assert prep.new_row is not None, "prepare() built the new row"
        assert prep.current is None or isinstance(prep.current, SnapshotRow), "a row step replaces a row"
        return self.state.write(prep.new_row, prep.state_stream(), prep.state_length, prep.current)

    def verify(self, stored, begin: dict) -> Verdict:
        """Restore what was stored and compare with the digest taken before (same row token)."""
        try:
            digest = payload_digest(self.state, self.blob, stored, self.spool)
        except SekiopsError as exc:
            now = self.state.get(stored.projector_name, stored.projector_version)
            if now is None or now.token != stored.token:
                return Verdict(None, note=f"superseded by a newer write before verification ({exc})")
            return Verdict(False, note=f"the new row does not restore: {exc}")
        now = self.state.get(stored.projector_name, stored.projector_version)
        if now is None or now.token != stored.token:
            return Verdict(None, digest.sha256, "superseded by a newer write before verification")
        if digest.sha256 != begin["beforePayloadSha256"]:
            return Verdict(False, digest.sha256, f"payload sha256 {digest.sha256} differs from "
                                                 f"{begin['beforePayloadSha256']} before the write")
        return Verdict(True, digest.sha256)

    def identify(self, begin: dict):
        """('untouched' | 'applied' | 'foreign', current) for a begin whose outcome is unknown."""
        item = begin["item"]
        name, _, version = item.rpartition("/")
        current = self.state.get(name, version)
        before = begin.get("before")
        if current is None:
            return ("untouched" if before is None else "foreign"), None
        if before is not None and current.token == before.get("token"):
            return "untouched", current
        if matches_intended(self.state, current, begin.get("intended") or {}):
            return "applied", current
        return "foreign", current

    def revert(self, begin: dict, stored) -> str | None:
        """Undo the write (compare-and-swap on ``stored``); a description, or None when not undone."""
        raise NotImplementedError

    @staticmethod
    def _guarded(prep: Prepared, build, *args) -> Prepared:
        """``build(prep, *args)``, closing the item's temp files if it fails."""
        try:
            return build(prep, *args)
        except BaseException:
            prep.close()
            raise

    def describe(self, obj) -> dict | None:
        return row_to_dict(obj) if isinstance(obj, SnapshotRow) else obj


# --- rewrites in place (offload, reencode) -------------------------------------------------------


class RowRewrite(Step):
    """A row of the service rewritten in place; the previous envelope is backed up first."""

    def skip_reason(self, row, item, done_after):
        if row is None:
            return "row disappeared"
        if row.is_tombstoned:
            return "tombstoned"
        if done_after and row.token == done_after.get("token"):
            return DONE_EARLIER
        return None

    def _backup_and_digest(self, row: SnapshotRow, item: PlanItem) -> Prepared:
        with open_envelope(self.state, self.blob, row) as src:
            ref = self.backups.save(src, expected_size=row.stored_bytes)
        digest = payload_digest(self.state, self.blob, row, self.spool)
        return Prepared(item, item.action, row, row_to_dict(row), ref, digest)

    def _parse_backup(self, prep: Prepared, row: SnapshotRow):
        """The previous envelope, decoded from the backup; inline payload bytes in a spool file."""
        payload = self.spool.create(row.projector_name + "-payload")
        prep.files.append(payload)
        sink = CountingWriter(payload.file, hash_it=True)
        ref = prep.backup
        assert ref is not None, "_backup_and_digest saved the previous envelope"
        with self.backups.open(ref) as f:
            env = read_envelope(f, f"{self.state.location} {row.where} (backup {ref.file})", payload_sink=sink)
        payload.file.flush()
        return env, payload, sink

    def _new_envelope(self, name: str) -> tuple[SpoolFile, CountingWriter]:
        f = self.spool.create(name)
        return f, CountingWriter(f.file, hash_it=True)

    def _finish(self, prep: Prepared, row: SnapshotRow, envelope, length: int, sha: str,
                force_blob: bool = False) -> Prepared:
        fields = place(self.state, self.blob, row, envelope, length, sha, prep, force_blob)
        prep.new_row = stamped(row, **fields)
        return prep

    def revert(self, begin: dict, stored) -> str:
        before = row_from_dict(begin["before"])
        ref = journal_backup(begin)
        if before is None:
            raise UsageError(f"journal: the begin line of {begin.get('item')!r} has no previous row")
        put_previous(self.state, self.blob, self.backups, before, ref, expected=stored)
        return "previous row put back"


def journal_backup(begin: dict) -> BackupRef:
    """The backup a journal begin line names (every step that changes something saves one first)."""
    ref = BackupRef.from_dict(begin.get("backup"))
    if ref is None:
        raise UsageError(f"journal: the begin line of {begin.get('item')!r} names no backup")
    return ref


def put_previous(state: StateStore, blob: BlobStore | None, backups: BackupDir, before: SnapshotRow,
                 ref: BackupRef, expected: SnapshotRow) -> SnapshotRow:
    """Write ``before`` back with its saved envelope bytes (compare-and-swap on ``expected``)."""
    key = previous_blob(blob, backups, before, ref) if before.is_offloaded else None
    return write_previous(state, backups, before, ref, key, expected)


def previous_blob(blob: BlobStore | None, backups: BackupDir, before: SnapshotRow, ref: BackupRef) -> str:
    """The key holding ``before``'s envelope bytes: its own key, or the backup uploaded again."""
    if blob is None:
        raise UsageError(f"{before.where}: the previous envelope was in a blob; pass --blob URL")
    key = before.offload_key
    if key and _blob_holds(blob, key, ref):
        return key
    with backups.open(ref) as f:
        return blob.write(f, f"{before.projector_name}/{before.projector_version}",
                          sha256=ref.sha256, size=ref.bytes).key


def write_previous(state: StateStore, backups: BackupDir, before: SnapshotRow, ref: BackupRef,
                   key: str | None, expected: SnapshotRow) -> SnapshotRow:
    row = before.replace(updated_at=utcnow())
    if before.is_offloaded:
        return state.write(row.replace(offload_key=key), None, 0, expected)
    with backups.open(ref) as f:
        return state.write(row, f, ref.bytes, expected)


def _blob_holds(blob: BlobStore, key: str, ref: BackupRef) -> bool:
    info = blob.stat(key)
    if info is None or info.size != ref.bytes:
        return False
    if keys.content_hash(key) == ref.sha256:
        return True
    with blob.open_read(key) as f:
        return copy_hashing(f, None)[1] == ref.sha256


class Offload(RowRewrite):
    """Rows whose inline envelope is above the threshold."""

    def skip_reason(self, row, item, done_after):
        reason = super().skip_reason(row, item, done_after)
        if reason:
            return reason
        if row.is_offloaded:
            return "already offloaded"
        if (row.state_length or 0) <= self.params["threshold"]:
            return "no longer above the threshold"
        return None


class OffloadRecord(Offload):
    """Envelope bytes unchanged, moved to a record-level blob; the row points at it."""

    def prepare(self, row, item):
        refusal = record_offload_refusal(self.state)
        if refusal:
            raise GuardRefusedError(refusal)
        return self._guarded(self._backup_and_digest(row, item), self._build, row)

    def _build(self, prep, row):
        env = self.backups.open(prep.backup)
        prep.files.append(env)
        return self._finish(prep, row, env, prep.backup.bytes, prep.backup.sha256, force_blob=True)


class OffloadPayload(Offload):
    """Payload to a payload-level blob; a small offloaded envelope stays inline in the row."""

    @property
    def blob(self) -> BlobStore:
        return self.ep.required_blob(target=True)

    def prepare(self, row, item):
        return self._guarded(self._backup_and_digest(row, item), self._build, row)

    def _build(self, prep, row):
        env, payload, sink = self._parse_backup(prep, row)
        if env.is_offloaded:
            raise Skip("payload already offloaded")
        written = self.blob.write(payload.rewind(), row.projector_name, sha256=sink.sha256, size=sink.count)
        prep.uploads.append(written.key)
        meta = _sized(env.meta, prep.digest, sink.count)
        data = offloaded_envelope_bytes(meta, written.key, self.blob.provider, written.size)
        return self._finish(prep, row, io.BytesIO(data), len(data), _sha(data))


class Reencode(RowRewrite):
    """v9 (gzip) or legacy payloadJson envelope rewritten as v10; the payload bytes unchanged."""

    def prepare(self, row, item):
        return self._guarded(self._backup_and_digest(row, item), self._build, row)

    def _build(self, prep, row):
        env, payload, sink = self._parse_backup(prep, row)
        action = needs_reencode(env)
        if action is None:
            raise Skip("already a v10 envelope")
        prep.action = action
        if env.is_offloaded:
            stored = env.payload_length if env.payload_length is not None else prep.digest.compressed_size
            provider = env.storage_provider or (self.blob.provider if self.blob else "")
            assert env.offload_key, "read_envelope refuses an offloaded envelope without offloadKey"
            data = offloaded_envelope_bytes(_sized(env.meta, prep.digest, stored), env.offload_key, provider, stored)
            return self._finish(prep, row, io.BytesIO(data), len(data), _sha(data))
        out, counter = self._new_envelope(row.projector_name + "-envelope")
        prep.files.append(out)
        write_inline_envelope(counter, _sized(env.meta, prep.digest, sink.count), payload.rewind(), sink.count)
        envelope_sha = counter.sha256
        assert envelope_sha is not None  # a hashing CountingWriter
        return self._finish(prep, row, out.rewind(), counter.count, envelope_sha)


class Rekey(RowRewrite):
    """Blobs moved under the blob store's prefix: the payload blob copied (same bytes, Sekiban's
    prefixed key), the envelope naming it, a record-level envelope written under its new key."""

    @property
    def blob(self) -> BlobStore:
        return self.ep.required_blob(target=True)

    def skip_reason(self, row, item, done_after):
        reason = super().skip_reason(row, item, done_after)
        if reason:
            return reason

        if not keys_to_move(self.blob, row, row_references(self.state, self.blob, row)):
            return "already under the prefix"
        return None

    def prepare(self, row, item):
        return self._guarded(self._backup_and_digest(row, item), self._build, row)

    def _build(self, prep, row):
        env, payload, sink = self._parse_backup(prep, row)
        if env.is_offloaded:
            assert env.offload_key, "read_envelope refuses an offloaded envelope without offloadKey"
            keys.check_key_scope(env.offload_key, row.projector_name)
            with self.blob.open_read(env.offload_key) as src:
                written = self.blob.write(src, row.projector_name, sha256=keys.content_hash(env.offload_key),
                                          size=env.payload_length)
            prep.uploads.append(written.key)
            meta = _sized(env.meta, prep.digest, written.size)
            data = offloaded_envelope_bytes(meta, written.key, env.storage_provider or self.blob.provider,
                                            written.size)
            return self._finish(prep, row, io.BytesIO(data), len(data), _sha(data), force_blob=row.is_offloaded)
        # inline payload: the envelope bytes stay; a record-level envelope moves under the prefix
        src = self.backups.open(prep.backup)
        prep.files.append(src)
        return self._finish(prep, row, src, prep.backup.bytes, prep.backup.sha256, force_blob=row.is_offloaded)


def _sized(meta: EnvelopeMeta, digest: Digest, stored: int) -> EnvelopeMeta:
    """The envelope metadata with the sizes Sekiban writes: decoded and stored payload bytes."""
    return dataclasses.replace(meta, original_size_bytes=digest.original_size, compressed_size_bytes=stored)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- copy ----------------------------------------------------------------------------------------


class CopyRow(Step):
    """A source row recreated in the target deployment under the target service id."""

    def load(self, item):
        return self.ep.state.get(item.projector_name, item.projector_version)

    def skip_reason(self, row, item, done_after):
        if row is None:
            return "gone from the source"
        if row.is_tombstoned:
            return "tombstoned in the source"
        existing = self.state.get(row.projector_name, row.projector_version)
        if existing is not None:
            if done_after and existing.token == done_after.get("token"):
                return DONE_EARLIER
            return "exists in the target (never overwritten)"
        return None

    def prepare(self, row, item):
        raw = self.spool.create(row.projector_name + "-envelope")
        return self._guarded(Prepared(item, "copy", None, None, None, None, files=[raw]), self._build, row)

    def _build(self, prep, row):
        src_state, src_blob = self.ep.state, self.ep.blob
        raw = prep.files[0]
        with open_envelope(src_state, src_blob, row) as src:
            length, sha = copy_hashing(src, raw.file)
        prep.digest = payload_digest(src_state, src_blob, row, self.spool)
        raw.rewind()
        env = read_envelope(raw.file, f"{src_state.location} {row.where}")
        envelope, env_len, env_sha = raw.rewind(), length, sha
        if env.is_offloaded:
            if self.blob is None:
                raise Skip("the payload is in a blob and there is no target blob store (--to-blob)")
            assert env.offload_key, "read_envelope refuses an offloaded envelope without offloadKey"
            keys.check_key_scope(env.offload_key, row.projector_name)
            try:
                with src_blob.open_read(env.offload_key) as payload:
                    written = self.blob.write(payload, row.projector_name,
                                              sha256=keys.content_hash(env.offload_key), size=env.payload_length)
            except BlobNotFoundError as exc:
                raise Skip(f"payload blob missing in the source: {exc}") from None
            prep.uploads.append(written.key)
            if written.key != env.offload_key or env.storage_provider != self.blob.provider:
                meta = _sized(env.meta, prep.digest, written.size)
                data = offloaded_envelope_bytes(meta, written.key, self.blob.provider, written.size)
                envelope, env_len, env_sha = io.BytesIO(data), len(data), _sha(data)
        fields = place(self.state, self.blob, row, envelope, env_len, env_sha, prep)
        prep.new_row = stamped(row, service_id=self.state.service_id, token=None, revision=0, **fields)
        return prep

    def apply(self, prep):
        return self.state.write(prep.new_row, prep.state_stream(), prep.state_length, None)

    def revert(self, begin, stored) -> str:
        self.state.tombstone(stored)
        return "copied row tombstoned (the state store protocol has no delete)"


# --- gc-blobs ------------------------------------------------------------------------------------


class DeleteOrphanBlob(Step):
    """Delete one certified orphan blob: saved to the backups first, references re-checked right
    before the delete, and the delete conditional on the exact version the audit certified."""

    def __init__(self, ep, spool, backups, hooks=None, *, watch, cutoff, **params):
        super().__init__(ep, spool, backups, hooks, **params)
        self.watch = watch
        self.cutoff = cutoff

    @property
    def blob(self) -> BlobStore:
        return self.ep.required_blob(target=True)

    def load(self, item):
        return self.blob.stat(item.item)

    def skip_reason(self, info, item, done_after):
        if info is None:
            return "already gone"
        if item.version and info.version and info.version != item.version:
            return "written again since the audit (its version changed)"
        if info.size != item.delete_bytes:
            return f"size changed since the audit ({item.delete_bytes} -> {info.size})"
        if info.last_modified is not None and info.last_modified >= self.cutoff:
            return "modified inside the grace window (written again since the audit)"
        self.watch.refresh()
        ref = self.watch.referenced_by(item.item)
        if ref:
            return f"referenced by {ref} (written since the audit)"
        return None

    def prepare(self, info, item):
        with self.blob.open_read(item.item) as f:
            ref = self.backups.save(f, expected_size=info.size)
        before = {"key": info.key, "bytes": info.size, "version": item.version or info.version,
                  "lastModified": info.last_modified.isoformat() if info.last_modified else None}
        return Prepared(item, "delete-blob", info, before, ref, None, intended={"deleted": True})

    def apply(self, prep):
        key = prep.item.item
        # Sekiban's rule: re-check references at deletion time, then delete only what was certified.
        self.watch.refresh()
        ref = self.watch.referenced_by(key)
        if ref:
            raise Skip(f"referenced by {ref} (written since the audit); not deleted")
        failpoints.hit("gc_before_delete")
        hook = self.hooks.get("before_delete")
        if hook is not None:
            hook(key)
        try:
            self.blob.delete(key, if_version=prep.before["version"])
        except BlobChangedError as exc:
            raise Skip(f"written again since the audit; not deleted ({exc})") from None
        return None

    def verify(self, stored, begin) -> Verdict:
        self.watch.refresh()
        ref = self.watch.referenced_by(begin["item"])
        if ref:
            return Verdict(False, note=f"{ref} referenced the blob right after it was deleted")
        return Verdict(True)

    def identify(self, begin):
        info = self.blob.stat(begin["item"])
        if info is None:
            return "applied", None
        certified = (begin.get("before") or {}).get("version")
        if certified and info.version and info.version != certified:
            return "foreign", info  # written again by someone else: not ours to delete
        return "untouched", info

    def revert(self, begin, stored) -> str:
        ref = journal_backup(begin)
        key = begin["item"]
        if self.blob.stat(key) is not None:
            return "the blob is there again (written by another writer); backup kept"
        with self.backups.open(ref) as f:
            self.blob.write_key(f, key, sha256=ref.sha256, size=ref.bytes)
        return "blob put back from the backup"

    def describe(self, obj):
        return None


STEP_CLASSES = {"offload-record": OffloadRecord, "offload-payload": OffloadPayload, "reencode": Reencode,
                "copy": CopyRow, "gc-blobs": DeleteOrphanBlob, "rekey": Rekey}


def make_step(plan, ep, spool: Spool, backups: BackupDir, hooks: dict | None = None) -> Step:
    params = dict(plan.params)
    if plan.kind == "offload":
        cls = OffloadPayload if params.get("payloadLevel") else OffloadRecord
        return cls(ep, spool, backups, hooks, threshold=params["threshold"])
    if plan.kind == "gc-blobs":
        return DeleteOrphanBlob(ep, spool, backups, hooks, watch=plan.context["watch"],
                                cutoff=plan.context["cutoff"])
    return STEP_CLASSES[plan.kind](ep, spool, backups, hooks)
