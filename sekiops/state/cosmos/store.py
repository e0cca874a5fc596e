"""The Cosmos DB (NoSQL API) state store: Sekiban's ``multiProjectionStates`` documents as rows.

Compare-and-swap uses the system ``_etag`` (:attr:`SnapshotRow.token`): create is
``create_item`` (409: someone else won), replace is ``replace_item`` with ``If-Match`` (412: someone
else moved the row, including a tombstone written after our read).

Listing (:meth:`CosmosStateStore.list_page`): one cross-partition query scoped by the service's
``pk`` prefix (``STARTSWITH(c.pk, "{serviceId}|MultiProjectionState_")``) and ``serviceId``, keyset
paging on (``pk``, ``id``), which for one service orders exactly as (ProjectorName,
ProjectorVersion) and exists on every document whatever its property casing. ``TOP`` bounds the
page (no OFFSET/LIMIT). Ordering on two properties needs a composite index in Cosmos; containers
created by sekiops get composite indexes on (pk, id) and (projectorName, projectorVersion). On an
existing container without them (e.g. created by Sekiban) the server refuses the two-field ORDER
BY; the store then orders by ``pk`` alone (single-property range index, present by default) and
sorts versions client-side, reading only as far as the page needs; if even that is refused it
scans the rest of the service's rows unordered and sorts client-side. The fallback is remembered
per store.

Memory: a write checks the item size before reading the state stream (ItemTooLargeError, nothing
sent), builds the Base64 text from multiple-of-3 slices and asks for ``Prefer: return=minimal``
(the new ``_etag`` comes from the response header), so a 2 MB item costs about three times its size
at peak (our text, the SDK's JSON text and its encoded body). A read is a point read of the whole
document (the SDK parses it at once); the stream then decodes the Base64 slice by slice.

The URL (:mod:`.url`), the document shape (:mod:`.documents`), the retry rule and error mapping
(:mod:`.calls`) and the client set-up (:mod:`.client`) live in their own modules.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from ...errors import (
    ConcurrencyConflictError,
    CorruptSnapshotError,
    ItemTooLargeError,
    StoreError,
    TombstonedError,
    UsageError,
)
from ...format.constants import COSMOS_ITEM_LIMIT, LIFECYCLE_TOMBSTONED, RECORD_THRESHOLD_COSMOS
from ...format.record import SnapshotRow, check_service_id, format_dotnet_timestamp, utcnow
from ...timeouts import timeouts_for
from ..base import StateCapabilities, StateStore
from ..base64text import base64_length, encode_stream, open_base64
from .calls import Secret, http_message, run_call
from .client import client_options, open_container, sign_in
from .documents import (
    INLINE_LIMIT,
    OURS_FILTER,
    SELECT_LIST,
    SYSTEM_PROPERTIES,
    SYSTEM_PROPERTIES_ALLOWANCE,
    casing,
    document_pk,
    is_ours,
    new_document,
    pk_prefix,
    prop,
    query_params,
    row_from_document,
    row_from_full_document,
    row_from_listed_document,
)
from .url import DEFAULT_CONTAINER, DEFAULT_DATABASE, cosmos_target, options_from_url

log = logging.getLogger("sekiops.state.cosmos")


class CosmosStateStore(StateStore):
    """Sekiban MultiProjection rows in a Cosmos DB (NoSQL) container; see the package and module docstrings."""

    kind = "cosmos"
    record_offload_threshold = RECORD_THRESHOLD_COSMOS
    inline_limit = INLINE_LIMIT
    capabilities = StateCapabilities(item_limit=COSMOS_ITEM_LIMIT)

    def __init__(self, endpoint: str, database: str = DEFAULT_DATABASE, container: str = DEFAULT_CONTAINER,
                 service_id: str = "default", *, key: str | None = None, credential: Any = None,
                 verify: bool = True, create: bool = True, location: str | None = None,
                 retry_attempts: int = 5, retry_max_wait: float = 30.0,
                 connection_timeout: float | None = None, read_timeout: float | None = None,
                 transport: Any = None, client_kwargs: dict | None = None):
        check_service_id(service_id)
        self.service_id = service_id
        self.database_name = database
        self.container_name = container
        if location is None:
            parts = urlsplit(endpoint)
            location = f"cosmos+{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/{database}/{container}"
        self.location = location
        self.timeouts = timeouts_for(connect=connection_timeout, io=read_timeout)
        self._borrowed = False
        self.retry_attempts = max(1, int(retry_attempts))
        self.retry_max_wait = float(retry_max_wait)
        self._secret = Secret(key)  # only to scrub it from messages; its repr hides it
        self._order_mode = "composite"  # -> "name" -> "scan" when the server refuses an ORDER BY
        self._order_lock = threading.Lock()
        self._client: Any = None
        self._credential_to_close: Any = None
        try:
            from azure.cosmos import CosmosClient
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise UsageError(f"Cosmos DB support needs azure-cosmos ({exc})") from None
        auth, self._credential_to_close = sign_in(key, credential, self.location)
        kwargs = client_options(endpoint, self.timeouts, verify=verify, transport=transport,
                                client_kwargs=client_kwargs)
        try:
            self._client = self._run("connect", lambda: CosmosClient(endpoint, credential=auth, **kwargs))
            self._container = open_container(self._client, database, container, create=create, run=self._run,
                                             location=self.location, shape=self._shape())
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, service_id: str = "default", **options) -> CosmosStateStore:
        endpoint, database, container, location = cosmos_target(url)
        options = options_from_url(url, options)
        return cls(endpoint, database, container, service_id=service_id, location=location, **options)

    # --- plumbing ----------------------------------------------------------------------------

    def _http_message(self, exc) -> str:
        return http_message(exc, self._secret)

    def _run(self, what: str, fn: Callable[[], Any], idempotent: bool = True) -> Any:
        """Call ``fn`` with sekiops' retry rule and error mapping (:func:`.calls.run_call`)."""
        return run_call(what, fn, idempotent=idempotent, location=self.location, secret=self._secret,
                        attempts=self.retry_attempts, max_wait=self.retry_max_wait, silence=self.timeouts.io)

    def _pk(self, projector_name: str) -> str:
        return document_pk(self.service_id, projector_name)

    @property
    def _pk_prefix(self) -> str:
        return pk_prefix(self.service_id)

    def _is_ours(self, doc: dict) -> bool:
        return is_ours(doc, self.service_id)

    def _row_from_full(self, doc: dict) -> SnapshotRow:
        return row_from_full_document(doc, self.service_id, self.location)

    def _row_from_listed(self, doc: dict) -> SnapshotRow:
        return row_from_listed_document(doc, self.service_id, self.location)

    def _params(self, **extra) -> list[dict]:
        return query_params(self.service_id, **extra)

    def _query(self, sql: str, params: list[dict], partition_key: str | None = None):
        """An iterator over the query's results (lazy: the caller may stop early)."""
        if partition_key is not None:
            return self._container.query_items(sql, parameters=params, partition_key=partition_key)
        return self._container.query_items(sql, parameters=params, enable_cross_partition_query=True)

    # --- reads -------------------------------------------------------------------------------

    def _read_doc(self, projector_name: str, projector_version: str, what: str) -> dict | None:
        from azure.cosmos.exceptions import CosmosHttpResponseError

        if (not projector_name or not projector_version
                or any(c in projector_version for c in "/\\?#") or "|" in projector_name):
            return None  # no Cosmos document can have that id / pk
        pk = self._pk(projector_name)
        try:
            doc = self._run(what, lambda: self._container.read_item(projector_version, partition_key=pk))
        except CosmosHttpResponseError as exc:
            if exc.status_code == 404:
                return None
            raise StoreError(f"{self.location}: {what}: HTTP {exc.status_code}: {self._http_message(exc)}") from None
        if not self._is_ours(doc) or doc.get("pk") != pk:
            return None
        return doc

    def get(self, projector_name: str, projector_version: str) -> SnapshotRow | None:
        doc = self._read_doc(projector_name, projector_version,
                             f"read {self.service_id}/{projector_name}/{projector_version}")
        return self._row_from_full(doc) if doc is not None else None

    def list_service_ids(self) -> list[str]:
        """Every service with snapshot documents in the container (metadata only, no stateData)."""
        docs = self._run("list services", lambda: list(self._container.query_items(
            "SELECT c.pk, c.serviceId, c.ServiceId FROM c", enable_cross_partition_query=True)))
        out = set()
        for doc in docs:
            for field in ("serviceId", "ServiceId"):
                if isinstance(doc.get(field), str):
                    out.add(doc[field])
            pk = doc.get("pk")
            if isinstance(pk, str) and "|MultiProjectionState_" in pk:
                out.add(pk.split("|", 1)[0])
        return sorted(out)

    def latest_active(self, projector_name: str) -> SnapshotRow | None:
        pk = self._pk(projector_name)
        sql = f"SELECT {SELECT_LIST} FROM c WHERE c.pk = @pk AND {OURS_FILTER}"
        params = self._params(pk=pk)
        docs = self._run(f"query {self.service_id}/{projector_name}",
                         lambda: list(self._query(sql, params, partition_key=pk)))
        rows = [self._row_from_listed(d) for d in docs if self._is_ours(d) and d.get("pk") == pk]
        rows = [r for r in rows if not r.is_tombstoned]
        if not rows:
            return None
        floor = datetime.min.replace(tzinfo=utcnow().tzinfo)
        return max(rows, key=lambda r: (r.events_processed, r.updated_at or floor))

    def list_page(self, after: tuple[str, str] | None = None, limit: int = 500,
                  projector_name: str | None = None) -> list[SnapshotRow]:
        limit = int(limit)
        if limit <= 0:
            return []
        rows: list[SnapshotRow] = []
        cursor = (self._pk(after[0]), after[1]) if after is not None else None
        if projector_name is not None:
            pk = self._pk(projector_name)
            if cursor is not None and cursor[0] > pk:
                return []
            if cursor is not None and cursor[0] < pk:
                cursor = None
        # Rows the client-side check drops (should be none: the WHERE clause matches it) must not
        # shorten a page, or iter_rows would stop early: fetch again after the last raw key.
        while len(rows) < limit:
            want = limit - len(rows)
            raw = self._run(f"list {self.service_id}", partial(self._list_raw, cursor, want, projector_name))
            for doc in raw:
                if self._is_ours(doc):
                    rows.append(self._row_from_listed(doc))
            if len(raw) < want:
                break
            cursor = (raw[-1]["pk"], raw[-1]["id"])
        return rows[:limit]

    def _list_raw(self, cursor: tuple[str, str] | None, limit: int, projector_name: str | None) -> list[dict]:
        """Up to ``limit`` raw documents ordered by (pk, id), strictly after ``cursor``."""
        from azure.cosmos.exceptions import CosmosHttpResponseError

        select = SELECT_LIST
        where = OURS_FILTER
        extra: dict[str, Any] = {}
        if projector_name is not None:
            pk = self._pk(projector_name)
            where = f"c.pk = @pk AND {where}"
            extra["pk"] = pk
            if cursor is not None:
                where += " AND c.id > @afterId"
                extra["afterId"] = cursor[1]
            sql = f"SELECT TOP @n {select} FROM c WHERE {where} ORDER BY c.id"
            # One partition, one ORDER BY property: served by the default range index.
            return list(self._query(sql, self._params(n=limit, **extra), partition_key=pk))
        where = f"STARTSWITH(c.pk, @prefix) AND {where}"
        extra["prefix"] = self._pk_prefix
        if cursor is not None:
            where += " AND (c.pk > @afterPk OR (c.pk = @afterPk AND c.id > @afterId))"
            extra.update(afterPk=cursor[0], afterId=cursor[1])
        key = lambda d: (d.get("pk") or "", d.get("id") or "")  # noqa: E731
        while True:
            mode = self._order_mode
            try:
                if mode == "composite":
                    sql = f"SELECT TOP @n {select} FROM c WHERE {where} ORDER BY c.pk, c.id"
                    return list(self._query(sql, self._params(n=limit, **extra)))
                if mode == "name":
                    # ORDER BY pk alone; read until the page is full and the pk has moved on, so
                    # every version of the last name is in hand, then sort versions here.
                    sql = f"SELECT {select} FROM c WHERE {where} ORDER BY c.pk"
                    got: list[dict] = []
                    boundary = None
                    for doc in self._query(sql, self._params(**extra)):
                        if boundary is not None and doc.get("pk") != boundary:
                            break
                        got.append(doc)
                        if boundary is None and len(got) >= limit:
                            boundary = doc.get("pk")
                    return sorted(got, key=key)[:limit]
                # "scan": no ORDER BY at all; every remaining row of the service, sorted here.
                sql = f"SELECT {select} FROM c WHERE {where}"
                return sorted(self._query(sql, self._params(**extra)), key=key)[:limit]
            except CosmosHttpResponseError as exc:
                text = str(getattr(exc, "message", "") or exc).lower()
                if exc.status_code == 400 and mode != "scan" and ("order by" in text or "composite" in text):
                    with self._order_lock:
                        if self._order_mode == mode:
                            self._order_mode = "name" if mode == "composite" else "scan"
                            log.info("%s: server refused ORDER BY (%s); listing falls back to %s ordering",
                                     self.location, mode, self._order_mode)
                    continue
                raise

    def open_state_stream(self, row: SnapshotRow) -> BinaryIO:
        """The row's StateData, Base64-decoded slice by slice.

        A point read necessarily fetches the whole document (at most 2 MB, the item limit), so
        the Base64 text is held once; the decoded bytes are produced a slice at a time. The
        document's ``_etag`` must still be ``row.token``.
        """
        doc = self._read_doc(row.projector_name, row.projector_version, f"read state of {row.where}")
        if doc is None:
            raise ConcurrencyConflictError(f"{self.location}: {row.where} disappeared since it was read")
        if row.token is not None and doc.get("_etag") != row.token:
            raise ConcurrencyConflictError(f"{self.location}: {row.where} changed since it was read; retry")
        text = prop(doc, "stateData")
        del doc
        if text is None:
            raise CorruptSnapshotError(f"{self.location}: {row.where} has no inline StateData")
        if not isinstance(text, str) or len(text) % 4:
            raise CorruptSnapshotError(f"{self.location}: {row.where}: StateData is not padded Base64 "
                                       f"({len(text) if isinstance(text, str) else type(text).__name__} characters)")
        return open_base64(text, self.location, row.where)

    # --- writes ------------------------------------------------------------------------------

    def write(self, row: SnapshotRow, state: BinaryIO | None, state_length: int,
              expected: SnapshotRow | None) -> SnapshotRow:
        from azure.core import MatchConditions
        from azure.cosmos.exceptions import CosmosHttpResponseError

        self.check_row_for_write(row, expected)
        if expected is not None and not expected.token:
            raise ConcurrencyConflictError(f"{self.location}: {row.where}: the expected row carries no "
                                           f"_etag (not read from this store); re-read it first")
        now = utcnow()
        created = (expected.created_at if expected is not None else None) or row.created_at or now
        updated = row.updated_at or now
        inline = not row.is_offloaded
        if inline and (state is None or state_length < 0):
            raise UsageError(f"{self.location}: {row.where}: an inline row needs its StateData")
        doc = new_document(row, self.service_id, "" if inline else None, created, updated)
        # Size check before anything is read or sent: the document with "" for stateData, plus the
        # Base64 text, plus what Cosmos adds.
        item_size = (len(json.dumps(doc, separators=(",", ":")).encode("utf-8"))
                     + (base64_length(state_length) if inline else 0) + SYSTEM_PROPERTIES_ALLOWANCE)
        if item_size > COSMOS_ITEM_LIMIT:
            raise ItemTooLargeError(
                f"{self.location}: {row.where}: inline StateData of {state_length} bytes makes a "
                f"{item_size}-byte item (Base64 {base64_length(state_length)} characters), over Cosmos DB's "
                f"{COSMOS_ITEM_LIMIT}-byte item limit (inline cap {self.inline_limit} bytes): offload it to "
                f"a blob store instead")
        if inline and state is not None:  # (inline without a state was refused above)
            doc["stateData"] = encode_stream(state, state_length, self.location, row.where)
        what = f"{'replace' if expected is not None else 'create'} {row.where}"
        # return=minimal: the service need not echo the ~2 MB document back; the new _etag comes
        # in the response headers, everything else is what we sent.
        answer: dict = {}

        def hook(headers, body):
            answer["etag"] = (headers or {}).get("etag")
            answer["body"] = body

        try:
            if expected is None:
                self._run(what, lambda: self._container.create_item(doc, no_response=True, response_hook=hook),
                          idempotent=False)
            else:
                self._run(what, lambda: self._container.replace_item(
                    row.projector_version, doc, etag=expected.token, no_response=True, response_hook=hook,
                    match_condition=MatchConditions.IfNotModified), idempotent=False)
        except CosmosHttpResponseError as exc:
            if exc.status_code == 409 and expected is None:
                current = self.get(row.projector_name, row.projector_version)
                if current is not None and current.is_tombstoned:
                    raise TombstonedError(f"{self.location}: {row.where} is tombstoned; "
                                          "refusing to overwrite it") from None
                raise ConcurrencyConflictError(f"{self.location}: {row.where} was created by another writer; "
                                               f"nothing written") from None
            if exc.status_code == 412:
                raise ConcurrencyConflictError(f"{self.location}: {row.where} moved since it was read (etag "
                                               f"changed: another write or a tombstone); nothing overwritten") from None
            if exc.status_code == 404:
                raise ConcurrencyConflictError(f"{self.location}: {row.where} disappeared since it was read") from None
            raise StoreError(f"{self.location}: {what}: HTTP {exc.status_code}: {self._http_message(exc)}") from None
        doc["stateData"] = None
        body = answer.get("body")
        etag = (body.get("_etag") if isinstance(body, dict) else None) or answer.get("etag")
        answer.clear()
        if not etag:
            return self._read_back(row, what)
        doc["_etag"] = etag.strip() if isinstance(etag, str) else etag
        return row_from_document(doc, state_length if inline else None, self.service_id, self.location)

    def tombstone(self, expected: SnapshotRow) -> SnapshotRow:
        from azure.core import MatchConditions
        from azure.cosmos.exceptions import CosmosHttpResponseError

        where = expected.where
        if expected.service_id != self.service_id:
            raise UsageError(f"row for service {expected.service_id!r} tombstoned through a store scoped to "
                             f"{self.service_id!r}")
        doc = self._read_doc(expected.projector_name, expected.projector_version, f"read {where}")
        if doc is None:
            raise ConcurrencyConflictError(f"{self.location}: {where} disappeared since it was read")
        if int(prop(doc, "lifecycle") or 0) == LIFECYCLE_TOMBSTONED:
            raise TombstonedError(f"{self.location}: {where} is already tombstoned")
        if not expected.token or doc.get("_etag") != expected.token:
            raise ConcurrencyConflictError(f"{self.location}: {where} moved since it was read; nothing tombstoned")
        etag = doc["_etag"]
        body = {k: v for k, v in doc.items() if k not in SYSTEM_PROPERTIES}
        body[casing(doc, "lifecycle")] = LIFECYCLE_TOMBSTONED
        body[casing(doc, "updatedAt")] = format_dotnet_timestamp(utcnow())
        del doc
        try:
            stored = self._run(f"tombstone {where}", lambda: self._container.replace_item(
                expected.projector_version, body, etag=etag, match_condition=MatchConditions.IfNotModified),
                idempotent=False)
        except CosmosHttpResponseError as exc:
            if exc.status_code in (404, 412):
                raise ConcurrencyConflictError(f"{self.location}: {where} moved since it was read; "
                                               f"nothing tombstoned") from None
            raise StoreError(f"{self.location}: tombstone {where}: HTTP {exc.status_code}: "
                             f"{self._http_message(exc)}") from None
        if not isinstance(stored, dict) or not stored.get("_etag"):
            return self._read_back(expected, f"tombstone {where}")
        return self._row_from_full(stored)

    def _read_back(self, row: SnapshotRow, what: str) -> SnapshotRow:
        """The row as stored, read again after ``what`` succeeded without an ``_etag`` in its answer."""
        stored = self.get(row.projector_name, row.projector_version)
        if stored is None:
            raise ConcurrencyConflictError(f"{self.location}: {what} was applied, but {row.where} was gone when "
                                           "read back (deleted by another writer)")
        return stored

    def _shape(self) -> dict:
        return {"kind": self.kind, "location": self.location, "record_offload_threshold": self.record_offload_threshold,
                "inline_limit": self.inline_limit, "capabilities": self.capabilities}

    def for_service(self, service_id: str) -> CosmosStateStore:
        """The same container scoped to another service, on this store's client."""
        scoped = copy.copy(self)
        scoped.service_id = check_service_id(service_id)
        scoped._borrowed = True
        return scoped

    def close(self) -> None:
        if self._borrowed:  # the client belongs to the store this one was scoped from
            return
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - best effort
                pass
        cred, self._credential_to_close = self._credential_to_close, None
        if cred is not None:
            try:
                cred.close()
            except Exception:  # pragma: no cover
                pass

    def __repr__(self) -> str:
        return f"CosmosStateStore({self.location!r}, service_id={self.service_id!r})"


__all__ = ["CosmosStateStore"]
