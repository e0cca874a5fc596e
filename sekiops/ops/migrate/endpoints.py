"""Where a migration reads and writes: the stores it opens, from URLs, and their redacted names.

In-place kinds (offload, reencode) read and write one state store and its blob store. ``copy``
reads a source deployment (opened read-only: ``create=False``, nothing is ever written there)
and writes a target one. ``gc-blobs`` needs the state store of every service that may reference
the blob container, so it opens one store per service id on demand.
"""

from __future__ import annotations

import dataclasses

from ...blob import open_blob_store
from ...blob.base import AbsentBlobStore, BlobStore
from ...errors import StoreMissingError, UsageError
from ...format.constants import DEFAULT_SERVICE_ID
from ...state import open_state_store
from ...state.base import AbsentStateStore, StateStore
from ...urls import BLOB_URL_ENV, STATE_URL_ENV, redact, resolve
from . import KINDS


@dataclasses.dataclass
class Endpoints:
    kind: str
    state_url: str
    blob_url: str | None
    service_id: str
    #: the store rows are read from (the source of a copy)
    state: StateStore
    blob: BlobStore | None
    #: the store rows are written to (the same objects except for copy)
    target_state: StateStore
    target_blob: BlobStore | None
    target_state_url: str | None = None
    target_blob_url: str | None = None
    _per_service: dict = dataclasses.field(default_factory=dict)

    @property
    def target_service_id(self) -> str:
        return self.target_state.service_id

    def required_blob(self, target: bool = False) -> BlobStore:
        """The (target) blob store of a migration that needs one (offload, gc-blobs, rekey: open_endpoints
        refuses them without)."""
        blob = self.target_blob if target else self.blob
        if blob is None:
            raise UsageError(f"{self.kind} needs a blob store: pass --blob URL or set {BLOB_URL_ENV}")
        return blob

    def state_for(self, service_id: str) -> StateStore:
        """The source state store scoped to another service id (gc-blobs scans every service)."""
        if service_id == self.state.service_id:
            return self.state
        store = self._per_service.get(service_id)
        if store is None:
            store = _open_state(self.state_url, service_id, create=False)
            self._per_service[service_id] = store
        return store

    def where(self) -> dict:
        """Redacted locations for plans, journals and audit records (never a secret)."""
        out: dict[str, object] = {
            "state": redact(self.state.location), "blob": redact(self.blob.location) if self.blob else None,
               "serviceId": self.service_id}
        if self.kind == "copy":
            out["target"] = {"state": redact(self.target_state.location),
                             "blob": redact(self.target_blob.location) if self.target_blob else None,
                             "serviceId": self.target_service_id}
        return out

    def urls(self) -> dict:
        """The URLs as given, redacted: what a rollback reopens when no URL is passed to it."""
        out = {"state": redact(self.state_url), "blob": redact(self.blob_url) if self.blob_url else None}
        if self.kind == "copy":
            out["toState"] = redact(self.target_state_url) if self.target_state_url else None
            out["toBlob"] = redact(self.target_blob_url) if self.target_blob_url else None
        return out

    def close(self) -> None:
        seen: set[int] = set()
        for store in [self.state, self.blob, self.target_state, self.target_blob, *self._per_service.values()]:
            if store is not None and id(store) not in seen:
                seen.add(id(store))
                store.close()
        self._per_service.clear()

    def __enter__(self) -> Endpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_endpoints(kind: str, state_url: str | None, blob_url: str | None = None, *,
                   service_id: str = DEFAULT_SERVICE_ID, to_state: str | None = None,
                   to_blob: str | None = None, to_service_id: str | None = None, create: bool = True) -> Endpoints:
    """Open the stores a migration of ``kind`` needs (``$SEKIOPS_STATE_URL``/``$SEKIOPS_BLOB_URL`` fill gaps).

    ``create=False`` (plans and dry runs) creates nothing anywhere: a copy's target that does not
    exist yet is planned against as empty, with the limits of the store that would be created.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown migration {kind!r}; use one of {', '.join(KINDS)}")
    state_url = resolve(state_url, STATE_URL_ENV)
    blob_url = resolve(blob_url, BLOB_URL_ENV)
    if state_url is None:
        raise UsageError(f"no state store: pass --state URL or set {STATE_URL_ENV}")
    if kind != "copy" and (to_state or to_blob or to_service_id):
        raise UsageError(f"--to-state/--to-blob/--to-service-id belong to 'copy', not {kind!r}")
    if kind in ("offload", "gc-blobs", "rekey") and blob_url is None:
        raise UsageError(f"{kind} needs a blob store: pass --blob URL or set {BLOB_URL_ENV}")
    opened: list = []
    try:
        # A copy's source is read-only: never create a database, container or table there.
        state = _open_state(state_url, service_id, create=create and kind not in ("copy", "gc-blobs"))
        opened.append(state)
        blob = open_blob_store(blob_url, create=create and kind != "copy") if blob_url else None
        opened.append(blob)
        target_state, target_blob = state, blob
        if kind == "copy":
            target_sid = to_service_id or service_id
            if not to_state and not to_blob and target_sid == service_id:
                raise UsageError("copy needs a different target: --to-state, --to-blob or --to-service-id")
            to_state_url = to_state or state_url
            to_blob_url = to_blob or blob_url
            if to_state_url == state_url and target_sid == service_id:
                raise UsageError("copy source and target are the same rows (same state store and service id)")
            try:
                target_state = _open_state(to_state_url, target_sid, create=create)
            except StoreMissingError as exc:
                if create or exc.shape is None:
                    raise
                target_state = AbsentStateStore(exc.shape, target_sid)
            opened.append(target_state)
            try:
                target_blob = blob if to_blob_url == blob_url else (
                    open_blob_store(to_blob_url, create=create) if to_blob_url else None)
            except StoreMissingError as exc:
                if create or exc.shape is None:
                    raise
                target_blob = AbsentBlobStore(exc.shape)
            if target_blob is not blob:
                opened.append(target_blob)
            return Endpoints(kind, state_url, blob_url, service_id, state, blob, target_state, target_blob,
                             to_state_url, to_blob_url)
        return Endpoints(kind, state_url, blob_url, service_id, state, blob, target_state, target_blob)
    except BaseException:
        for store in opened:
            if store is not None:
                store.close()
        raise


def _open_state(url: str, service_id: str, create: bool) -> StateStore:
    # create=True is every store's default; not passing it keeps stores without the option
    # (the in-process memory store) usable for in-place migrations.
    return open_state_store(url, service_id=service_id, **({} if create else {"create": False}))
