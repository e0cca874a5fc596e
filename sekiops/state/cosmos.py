"""Azure Cosmos DB (NoSQL API) state store: Sekiban's ``multiProjectionStates`` documents.

URL: ``cosmos+https://host[:port]/DATABASE/CONTAINER`` (or ``cosmos+http://``). Database and
container default to ``SekibanDcb`` / ``multiProjectionStates``. The key comes from ``COSMOS_KEY``;
without it, Entra ID through ``azure.identity.DefaultAzureCredential``. Query flags:
``verify=false`` (don't verify TLS: emulators' self-signed certificates), ``create=false`` (never
create the database or container; default: create them, partition key ``/pk``, when a read says
they are missing).

Document shape (format reference 2.1): ``id`` = ProjectorVersion, ``pk`` =
``{serviceId}|MultiProjectionState_{ProjectorName}``, every camelCase property written (nulls
included), ``stateData`` = standard padded Base64 of the envelope bytes (null when offloaded).
Older documents are read leniently: ``documentType`` may be absent and PascalCase property names
are accepted. Status documents (``documentType`` = ``projectionStatus`` or ``id`` starting
``STATUS_``) and documents of another service id are never returned.

Compare-and-swap uses the system ``_etag`` (:attr:`SnapshotRow.token`): create is
``create_item`` (409: someone else won), replace is ``replace_item`` with ``If-Match`` (412: someone
else moved the row, including a tombstone written after our read).

``SnapshotRow.revision``: Cosmos documents have no Revision property (Sekiban writes none and
neither does sekiops), and no server-side counter can be derived from a document. sekiops reports
the document's UpdatedAt in .NET ticks (falling back to ``_ts`` seconds x 10^7): every writer
(Sekiban, sekiops) stamps UpdatedAt, so it normally grows with each write, but it is a writer's
clock, not a counter. It is informational only; nothing compares it. Compare-and-swap is ``_etag``.

Listing (:meth:`CosmosStateStore.list_page`): one cross-partition query scoped by the service's
``pk`` prefix (``STARTSWITH(c.pk, "{serviceId}|MultiProjectionState_")``) and ``serviceId``, keyset
paging on (``pk``, ``id``), which for one service orders exactly as (ProjectorName,
ProjectorVersion) and exists on every document whatever its property casing. It selects metadata
and ``LENGTH``/``RIGHT`` of ``stateData`` (the byte length follows from the Base64 length and
padding), never ``stateData`` itself. ``TOP`` bounds the page (no OFFSET/LIMIT). Ordering on two
properties needs a composite index in Cosmos; containers created by sekiops get composite indexes
on (pk, id) and (projectorName, projectorVersion). On an existing container without them (e.g.
created by Sekiban) the server refuses the two-field ORDER BY; the store then orders by ``pk``
alone (single-property range index, present by default) and sorts versions client-side, reading
only as far as the page needs; if even that is refused it scans the rest of the service's rows
unordered and sorts client-side. The fallback is remembered per store.

Throttling and transient failures: the SDK's own throttle retries and regional failover are
switched off and sekiops retries itself: HTTP 429 and 503 (and, for reads only, 408, 500, 502,
504 and lost connections/time-outs) up to ``retry_attempts`` (5) attempts within ``retry_max_wait`` (30 s) of waiting,
waiting the server's ``x-ms-retry-after-ms`` when given, else exponential backoff from 100 ms,
plus up to 20 % jitter; then StoreUnavailableError. A write that timed out is not retried (it may
have been applied): StoreUnavailableError says so. 413 is ItemTooLargeError; an unreachable
endpoint is StoreUnavailableError naming the redacted location; any other HTTP error is
StoreError. The key never appears in ``repr``, ``location``, messages or logs.

Memory: a write checks the item size before reading the state stream (ItemTooLargeError, nothing
sent), builds the Base64 text from multiple-of-3 slices and asks for ``Prefer: return=minimal``
(the new ``_etag`` comes from the response header), so a 2 MB item costs about three times its size
at peak (our text, the SDK's JSON text and its encoded body). A read is a point read of the whole
document (the SDK parses it at once); the stream then decodes the Base64 slice by slice.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import threading
import warnings
from datetime import datetime
from typing import Any, BinaryIO, Callable
from urllib.parse import unquote, urlsplit

from ..errors import (ConcurrencyConflictError, CorruptSnapshotError, ItemTooLargeError,
                      StoreError, StoreMissingError, StoreUnavailableError, TombstonedError, UsageError)
from ..format.constants import COSMOS_ITEM_LIMIT, LIFECYCLE_ACTIVE, LIFECYCLE_TOMBSTONED, RECORD_THRESHOLD_COSMOS
from ..format.record import SnapshotRow, check_service_id, format_dotnet_timestamp, parse_timestamp, utcnow
from ..retry import RetryPolicy, call_with_retry, retry_after_of
from ..timeouts import timeouts_for
from ..urls import query_flags, redact
from .base import StateCapabilities, StateStore

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "SekibanDcb"
DEFAULT_CONTAINER = "multiProjectionStates"
PARTITION_KEY_PATH = "/pk"
KEY_ENV = "COSMOS_KEY"

DOCUMENT_TYPE = "projectionState"
STATUS_DOCUMENT_TYPE = "projectionStatus"
STATUS_ID_PREFIX = "STATUS_"
PK_KIND = "MultiProjectionState_"

#: Room kept for the metadata and system properties when sizing the inline cap.
ITEM_HEADROOM = 16 * 1024
#: Largest envelope whose Base64 document stays under Cosmos DB's 2 MiB item limit.
INLINE_LIMIT = (COSMOS_ITEM_LIMIT - ITEM_HEADROOM) * 3 // 4  # 1,560,576
#: Allowance for the system properties Cosmos adds (_rid, _self, _etag, _attachments, _ts).
SYSTEM_PROPERTIES_ALLOWANCE = 512

#: Base64 is built and decoded in slices of this many input bytes (a multiple of 3).
ENCODE_CHUNK = 3 * 256 * 1024
#: Base64 characters decoded per slice (a multiple of 4).
DECODE_CHUNK = 4 * 64 * 1024

#: Every property Sekiban's document has, in its order (camelCase).
PROPERTIES = [
    "documentType", "pk", "serviceId", "id", "partitionKey", "projectorName", "projectorVersion",
    "payloadType", "lastSortableUniqueId", "eventsProcessed", "stateData", "isOffloaded", "offloadKey",
    "offloadProvider", "originalSizeBytes", "compressedSizeBytes", "safeWindowThreshold", "createdAt",
    "updatedAt", "buildSource", "buildHost", "generation", "lifecycle",
]
#: Metadata properties a listing selects (both casings), i.e. all but id/pk/stateData.
META_PROPERTIES = [p for p in PROPERTIES if p not in ("id", "pk", "stateData")]
SYSTEM_PROPERTIES = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")

RETRYABLE_ALWAYS = (429, 503)      # the server did not process the request
RETRYABLE_READS = (408, 500, 502, 504)  # the outcome of a write is unknown: reads only


def _pascal(name: str) -> str:
    return name[0].upper() + name[1:]


def _get(doc: dict, name: str, default: Any = None) -> Any:
    """A property in camelCase, else PascalCase (older or custom-serialised documents)."""
    if name in doc:
        return doc[name]
    return doc.get(_pascal(name), default)


def _has(doc: dict, name: str) -> bool:
    return name in doc or _pascal(name) in doc


def _casing(doc: dict, name: str) -> str:
    """The key ``doc`` uses for ``name`` (camelCase when it has neither)."""
    if name not in doc and _pascal(name) in doc:
        return _pascal(name)
    return name


def _base64_length(n: int) -> int:
    return 4 * ((n + 2) // 3)


def _decoded_length(chars: int | None, tail: str | None) -> int | None:
    """Bytes behind ``chars`` Base64 characters whose last two characters are ``tail``."""
    if chars is None:
        return None
    pad = (tail or "").count("=")
    return max(0, chars // 4 * 3 - pad)


def _dotnet_ticks(value: datetime) -> int:
    delta = value - datetime(1, 1, 1, tzinfo=value.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def cosmos_target(url: str) -> tuple[str, str, str, str]:
    """``cosmos+https://host:port/DB/CONTAINER`` -> (endpoint, database, container, location)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("cosmos+https", "cosmos+http"):
        raise UsageError(f"not a Cosmos DB URL: {redact(url)!r} (expected cosmos+https://host/DB/CONTAINER)")
    http_scheme = scheme.split("+", 1)[1]
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise UsageError(f"bad port in Cosmos DB URL {redact(url)!r}") from None
    if not host:
        raise UsageError(f"Cosmos DB URL has no host: {redact(url)!r}")
    port = port or (443 if http_scheme == "https" else 80)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if len(segments) > 2:
        raise UsageError(f"Cosmos DB URL path must be /DATABASE/CONTAINER: {redact(url)!r}")
    database = segments[0] if segments else DEFAULT_DATABASE
    container = segments[1] if len(segments) > 1 else DEFAULT_CONTAINER
    for what, value in (("database", database), ("container", container)):
        if any(c in value for c in "/\\?#") or len(value) > 255:
            raise UsageError(f"invalid Cosmos DB {what} name {value!r}")
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    endpoint = f"{http_scheme}://{hostport}/"
    location = f"{scheme}://{hostport}/{database}/{container}"
    return endpoint, database, container, location


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


#: a request that got no answer at all is retried this many times (not the full retry_attempts)
SILENT_RETRIES = 2


class _Transient(StoreUnavailableError):
    """A failure the server asks us to retry (429, 503; timeouts and 5xx of reads).

    ``silent``: the server did not answer at all (a timeout): retried SILENT_RETRIES times, not
    five, so a wedged server costs three silence deadlines, not five."""

    def __init__(self, reason: str, retry_after: float | None = None, silent: bool = False):
        super().__init__(reason, retry_after=retry_after)
        self.reason = reason
        self.silent = silent


class CosmosStateStore(StateStore):
    """Sekiban MultiProjection rows in a Cosmos DB (NoSQL) container; see the module docstring."""

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
        from ..format.record import check_service_id

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
        self._secret = _Secret(key)  # only to scrub it from messages; its repr hides it
        self._order_mode = "composite"  # -> "name" -> "scan" when the server refuses an ORDER BY
        self._order_lock = threading.Lock()
        self._client = None
        self._credential_to_close = None
        try:
            from azure.cosmos import CosmosClient, documents
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise UsageError(f"Cosmos DB support needs azure-cosmos ({exc})") from None
        if key:
            try:
                base64.b64decode(key, validate=True)
            except (binascii.Error, ValueError):
                raise UsageError(f"{self.location}: the Cosmos DB key ({KEY_ENV}) is not a Base64 account "
                                 f"key ({len(key)} characters; value not shown)") from None
            auth: Any = key
        elif credential is not None:
            auth = credential
        else:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                raise UsageError(f"{self.location}: no {KEY_ENV} set and azure-identity is not installed "
                                 "for Entra ID sign-in") from None
            auth = self._credential_to_close = DefaultAzureCredential()
        if not verify or (urlsplit(endpoint).hostname or "") in ("localhost", "127.0.0.1", "::1"):
            # Asked for (or, on loopback, done by the SDK anyway): don't warn on every request.
            try:
                from urllib3.exceptions import InsecureRequestWarning
                warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            except ImportError:  # pragma: no cover
                pass
        policy = documents.ConnectionPolicy()
        # sekiops retries 429/503 itself (bounded, with jitter); the SDK's throttle retries would
        # multiply the attempts, and its regional failover would chase an emulator's advertised
        # endpoints. 0 can only be set through the policy object (the kwargs treat 0 as "unset").
        policy.RetryOptions = documents.RetryOptions(max_retry_attempt_count=0, max_wait_time_in_seconds=0)
        kwargs: dict[str, Any] = dict(
            connection_policy=policy, enable_endpoint_discovery=False,
            connection_timeout=self.timeouts.connect, read_timeout=self.timeouts.io,
            retry_connect=1, retry_read=0, retry_backoff_factor=0.2, retry_backoff_max=2,
        )
        if not verify:
            kwargs["connection_verify"] = False
        if transport is not None:
            kwargs["transport"] = transport
        kwargs.update(client_kwargs or {})
        try:
            self._client = self._run("connect", lambda: CosmosClient(endpoint, credential=auth, **kwargs))
            self._container = self._open_container(create)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, service_id: str = "default", **options) -> "CosmosStateStore":
        endpoint, database, container, location = cosmos_target(url)
        flags = query_flags(url)
        if "verify" in flags and "verify" not in options:
            options["verify"] = _flag(flags["verify"])
        if "create" in flags and "create" not in options:
            options["create"] = _flag(flags["create"])
        if "timeout" in flags and "read_timeout" not in options:
            options["read_timeout"] = flags["timeout"]
        if "connect_timeout" in flags and "connection_timeout" not in options:
            options["connection_timeout"] = flags["connect_timeout"]
        if "key" not in options and "credential" not in options:
            options["key"] = os.environ.get(KEY_ENV, "").strip() or None
        return cls(endpoint, database, container, service_id=service_id, location=location, **options)

    # --- plumbing ----------------------------------------------------------------------------

    def _scrub(self, text: Any) -> str:
        text = redact(str(text))
        text = self._secret.scrub(text)
        text = " ".join(text.split())
        return text if len(text) <= 300 else text[:297] + "..."

    def _http_message(self, exc) -> str:
        msg = getattr(exc, "message", None) or str(exc)
        try:  # the service answers a JSON body; show its message only
            body = json.loads(msg) if isinstance(msg, str) and msg.lstrip().startswith("{") else None
            if isinstance(body, dict) and body.get("message"):
                msg = body["message"]
        except ValueError:
            pass
        return self._scrub(msg.split("\nCode:")[0] if isinstance(msg, str) else msg)

    def _run(self, what: str, fn: Callable[[], Any], idempotent: bool = True) -> Any:
        """Call ``fn`` with sekiops' retry rule (sekiops.retry) and error mapping (module docstring).

        CosmosHttpResponseError 404/409/412 are re-raised untouched for the caller to interpret.
        """
        policy = RetryPolicy(attempts=self.retry_attempts, initial=0.1, maximum=5.0, total=self.retry_max_wait)

        silences = 0

        def once() -> Any:
            nonlocal silences
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below; unknown ones re-raised
                err = self._classify(exc, what, idempotent)
                if isinstance(err, _Transient) and err.silent:
                    silences += 1
                    if silences > SILENT_RETRIES:  # a server this silent is not coming back soon
                        raise StoreUnavailableError(
                            f"{self.location}: {what}: no answer within {self.timeouts.io:g} s, {silences} times "
                            "(deadline: ?timeout= or $SEKIOPS_TIMEOUT)") from None
                raise err

        def give_up(exc: BaseException, backoff) -> StoreUnavailableError:
            return StoreUnavailableError(
                f"{self.location}: {what}: {getattr(exc, 'reason', exc)}; gave up after {backoff.attempt} attempts "
                f"and {backoff.waited:.1f} s of waiting (retry later, or raise the container's RU/s)",
                retry_after=retry_after_of(exc))

        return call_with_retry(once, what=f"cosmos {what}", policy=policy, retry_on=(_Transient,), give_up=give_up)

    def _classify(self, exc: Exception, what: str, idempotent: bool) -> BaseException:
        """The error to raise for an SDK failure: _Transient (retried), a final SekiopsError, or
        the SDK's own 404/409/412 for the caller."""
        from azure.core.exceptions import (AzureError, ClientAuthenticationError, ServiceRequestError,
                                           ServiceResponseError)
        from azure.cosmos.exceptions import CosmosClientTimeoutError, CosmosHttpResponseError

        if isinstance(exc, CosmosHttpResponseError):
            status = exc.status_code
            if status in (404, 409, 412):
                return exc
            if status == 413:
                return ItemTooLargeError(f"{self.location}: {what}: Cosmos DB refused the item as too large "
                                         f"(HTTP 413, limit {COSMOS_ITEM_LIMIT} bytes)")
            if status in (401, 403):
                return StoreError(f"{self.location}: {what}: access denied (HTTP {status}): "
                                  f"{self._http_message(exc)}")
            if not (status in RETRYABLE_ALWAYS or (idempotent and status in RETRYABLE_READS)):
                if status in (408, 500, 502, 504):
                    return StoreUnavailableError(f"{self.location}: {what}: HTTP {status}; the write may or may "
                                                 "not have been applied: re-read before retrying")
                return StoreError(f"{self.location}: {what}: HTTP {status}: {self._http_message(exc)}")
            retry_after = None
            raw = (exc.headers or {}).get("x-ms-retry-after-ms") or (exc.headers or {}).get("retry-after-ms")
            if raw is not None:
                try:
                    retry_after = max(0.0, float(raw) / 1000.0)
                except ValueError:
                    retry_after = None
            return _Transient(f"HTTP {status}" + (" (throttled: request rate too large)" if status == 429 else ""),
                              retry_after)
        if isinstance(exc, CosmosClientTimeoutError):
            if not idempotent:
                return StoreUnavailableError(f"{self.location}: {what} timed out; the write may or may not "
                                             "have been applied: re-read before retrying")
            return _Transient("timed out", silent=True)
        if isinstance(exc, ServiceRequestError):
            hint = ("; for an emulator's self-signed certificate add ?verify=false"
                    if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "")
            return StoreUnavailableError(f"{self.location}: cannot reach Cosmos DB ({self._scrub(exc)}){hint}")
        if isinstance(exc, ServiceResponseError):
            if not idempotent:
                return StoreUnavailableError(
                    f"{self.location}: {what}: connection lost before the answer ({self._scrub(exc)}); the "
                    "write may or may not have been applied: re-read before retrying")
            return _Transient(f"no answer ({self._scrub(exc)})", silent=True)
        if isinstance(exc, ClientAuthenticationError):
            return StoreError(f"{self.location}: {what}: cannot sign in to Cosmos DB ({self._scrub(exc)}); "
                              f"set {KEY_ENV} or an Entra ID identity")
        if isinstance(exc, AzureError):
            return StoreError(f"{self.location}: {what}: {type(exc).__name__}: {self._scrub(exc)}")
        return exc

    def _open_container(self, create: bool):
        from azure.cosmos import PartitionKey
        from azure.cosmos.exceptions import CosmosHttpResponseError

        db = self._client.get_database_client(self.database_name)
        try:
            self._run("read database", db.read)
        except CosmosHttpResponseError as exc:
            if exc.status_code != 404:
                raise StoreError(f"{self.location}: read database: HTTP {exc.status_code}") from None
            if not create:
                raise StoreMissingError(f"{self.location}: no database {self.database_name!r} (create=false)",
                                        shape=self._shape()) from None
            try:
                self._run("create database", lambda: self._client.create_database(self.database_name),
                          idempotent=False)
            except CosmosHttpResponseError as exc2:
                if exc2.status_code != 409:  # 409: created meanwhile by someone else: fine
                    raise StoreError(f"{self.location}: create database: HTTP {exc2.status_code}") from None
        container = db.get_container_client(self.container_name)
        try:
            props = self._run("read container", container.read)
        except CosmosHttpResponseError as exc:
            if exc.status_code != 404:
                raise StoreError(f"{self.location}: read container: HTTP {exc.status_code}") from None
            if not create:
                raise StoreMissingError(f"{self.location}: no container {self.container_name!r} (create=false)",
                                        shape=self._shape()) from None
            policy = {
                "indexingMode": "consistent", "automatic": True,
                "includedPaths": [{"path": "/*"}],
                "excludedPaths": [{"path": "/stateData/?"}, {"path": '/"_etag"/?'}],
                "compositeIndexes": [
                    [{"path": "/pk", "order": "ascending"}, {"path": "/id", "order": "ascending"}],
                    [{"path": "/projectorName", "order": "ascending"},
                     {"path": "/projectorVersion", "order": "ascending"}],
                ],
            }
            try:
                self._run("create container", lambda: db.create_container(
                    self.container_name, partition_key=PartitionKey(path=PARTITION_KEY_PATH),
                    indexing_policy=policy), idempotent=False)
            except CosmosHttpResponseError as exc2:
                if exc2.status_code != 409:
                    raise StoreError(f"{self.location}: create container: HTTP {exc2.status_code}") from None
            container = db.get_container_client(self.container_name)
            props = self._run("read container", container.read)
        paths = ((props or {}).get("partitionKey") or {}).get("paths") or []
        if paths and paths != [PARTITION_KEY_PATH]:
            raise StoreError(f"{self.location}: container partition key is {paths}, Sekiban's is "
                             f"[{PARTITION_KEY_PATH!r}]: not a Sekiban multiProjectionStates container")
        return container

    def _pk(self, projector_name: str) -> str:
        return f"{self.service_id}|{PK_KIND}{projector_name}"

    @property
    def _pk_prefix(self) -> str:
        return f"{self.service_id}|{PK_KIND}"

    # --- documents <-> rows --------------------------------------------------------------------

    def _is_ours(self, doc: dict) -> bool:
        """A projection-state document of this store's service (status and foreign ones: no)."""
        if not isinstance(doc, dict):
            return False
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or doc_id.startswith(STATUS_ID_PREFIX):
            return False
        doc_type = _get(doc, "documentType")
        if doc_type is not None and doc_type != DOCUMENT_TYPE:
            return False
        pk = doc.get("pk")
        if pk is not None and (not isinstance(pk, str) or not pk.startswith(self._pk_prefix)):
            return False
        service = _get(doc, "serviceId")
        if service is not None and service != self.service_id:
            return False
        if pk is None and service is None:
            return False  # nothing ties it to this service
        return True

    def _row(self, doc: dict, state_length: int | None) -> SnapshotRow:
        pk = doc.get("pk") or ""
        name = _get(doc, "projectorName")
        if name is None:
            name = pk[len(self._pk_prefix):] if pk.startswith(self._pk_prefix) else None
        if name is None:
            part = _get(doc, "partitionKey") or ""
            name = part[len(PK_KIND):] if part.startswith(PK_KIND) else part
        version = _get(doc, "projectorVersion")
        if version is None:
            version = doc.get("id")
        where = f"{self.service_id}/{name}/{version}"
        try:
            created_at = parse_timestamp(_get(doc, "createdAt"))
            updated_at = parse_timestamp(_get(doc, "updatedAt"))
        except ValueError as exc:
            raise CorruptSnapshotError(f"{self.location}: bad timestamp in {where}: {exc}") from None
        try:
            is_offloaded = bool(_get(doc, "isOffloaded", False))
            if is_offloaded:
                state_length = None
            ts = doc.get("_ts")
            if updated_at is not None:
                revision = _dotnet_ticks(updated_at)
            elif isinstance(ts, (int, float)):
                revision = int(ts) * 10_000_000
            else:
                revision = 0
            return SnapshotRow(
                service_id=self.service_id, projector_name=str(name), projector_version=str(version),
                payload_type=_get(doc, "payloadType") or "",
                last_sortable_unique_id=_get(doc, "lastSortableUniqueId") or "",
                events_processed=int(_get(doc, "eventsProcessed") or 0), is_offloaded=is_offloaded,
                offload_key=_get(doc, "offloadKey"), offload_provider=_get(doc, "offloadProvider"),
                original_size_bytes=int(_get(doc, "originalSizeBytes") or 0),
                compressed_size_bytes=int(_get(doc, "compressedSizeBytes") or 0),
                safe_window_threshold=_get(doc, "safeWindowThreshold") or "",
                created_at=created_at, updated_at=updated_at,
                build_source=_get(doc, "buildSource") or "", build_host=_get(doc, "buildHost"),
                generation=int(_get(doc, "generation") or 0),
                lifecycle=int(_get(doc, "lifecycle") or LIFECYCLE_ACTIVE),
                revision=revision, state_length=state_length, token=doc.get("_etag"))
        except (TypeError, ValueError) as exc:
            raise CorruptSnapshotError(f"{self.location}: {where}: malformed document ({exc})") from None

    def _row_from_full(self, doc: dict) -> SnapshotRow:
        data = _get(doc, "stateData")
        length = None
        if isinstance(data, str):
            length = _decoded_length(len(data), data[-2:])
        return self._row(doc, length)

    def _row_from_projection(self, doc: dict) -> SnapshotRow:
        chars = doc.get("sekiopsChars", doc.get("sekiopsCharsP"))
        tail = doc.get("sekiopsTail", doc.get("sekiopsTailP"))
        return self._row(doc, _decoded_length(chars, tail) if isinstance(chars, int) else None)

    def _document(self, row: SnapshotRow, state_data: str | None, created: datetime,
                  updated: datetime) -> dict:
        name = row.projector_name
        return {
            "documentType": DOCUMENT_TYPE,
            "pk": self._pk(name),
            "serviceId": self.service_id,
            "id": row.projector_version,
            "partitionKey": f"{PK_KIND}{name}",
            "projectorName": name,
            "projectorVersion": row.projector_version,
            "payloadType": row.payload_type,
            "lastSortableUniqueId": row.last_sortable_unique_id,
            "eventsProcessed": row.events_processed,
            "stateData": state_data,
            "isOffloaded": row.is_offloaded,
            "offloadKey": row.offload_key,
            "offloadProvider": row.offload_provider,
            "originalSizeBytes": row.original_size_bytes,
            "compressedSizeBytes": row.compressed_size_bytes,
            "safeWindowThreshold": row.safe_window_threshold,
            "createdAt": format_dotnet_timestamp(created),
            "updatedAt": format_dotnet_timestamp(updated),
            "buildSource": row.build_source,
            "buildHost": row.build_host,
            "generation": row.generation,
            "lifecycle": row.lifecycle,
        }

    # --- queries -----------------------------------------------------------------------------

    def _select(self) -> str:
        cols = ["c.id", "c.pk", "c._etag", "c._ts"]
        for p in META_PROPERTIES:
            cols += [f"c.{p}", f"c.{_pascal(p)}"]
        cols += ["LENGTH(c.stateData) AS sekiopsChars", "RIGHT(c.stateData, 2) AS sekiopsTail",
                 "LENGTH(c.StateData) AS sekiopsCharsP", "RIGHT(c.StateData, 2) AS sekiopsTailP"]
        return ", ".join(cols)

    #: Server-side twin of :meth:`_is_ours` (which still checks every document read).
    _OURS = ("NOT STARTSWITH(c.id, @statusPrefix)"
             " AND (NOT IS_DEFINED(c.documentType) OR IS_NULL(c.documentType) OR c.documentType = @docType)"
             " AND (NOT IS_DEFINED(c.DocumentType) OR IS_NULL(c.DocumentType) OR c.DocumentType = @docType)"
             " AND (NOT IS_DEFINED(c.serviceId) OR IS_NULL(c.serviceId) OR c.serviceId = @sid)"
             " AND (NOT IS_DEFINED(c.ServiceId) OR IS_NULL(c.ServiceId) OR c.ServiceId = @sid)")

    def _params(self, **extra) -> list[dict]:
        values = {"statusPrefix": STATUS_ID_PREFIX, "docType": DOCUMENT_TYPE, "sid": self.service_id, **extra}
        return [{"name": f"@{k}", "value": v} for k, v in values.items()]

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
        sql = f"SELECT {self._select()} FROM c WHERE c.pk = @pk AND {self._OURS}"
        params = self._params(pk=pk)
        docs = self._run(f"query {self.service_id}/{projector_name}",
                         lambda: list(self._query(sql, params, partition_key=pk)))
        rows = [self._row_from_projection(d) for d in docs if self._is_ours(d) and d.get("pk") == pk]
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
            raw = self._run(f"list {self.service_id}",
                            lambda: self._list_raw(cursor, want, projector_name))
            for doc in raw:
                if self._is_ours(doc):
                    rows.append(self._row_from_projection(doc))
            if len(raw) < want:
                break
            cursor = (raw[-1]["pk"], raw[-1]["id"])
        return rows[:limit]

    def _list_raw(self, cursor: tuple[str, str] | None, limit: int, projector_name: str | None) -> list[dict]:
        """Up to ``limit`` raw documents ordered by (pk, id), strictly after ``cursor``."""
        from azure.cosmos.exceptions import CosmosHttpResponseError

        select = self._select()
        where = f"{self._OURS}"
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
        text = _get(doc, "stateData")
        del doc
        if text is None:
            raise CorruptSnapshotError(f"{self.location}: {row.where} has no inline StateData")
        if not isinstance(text, str) or len(text) % 4:
            raise CorruptSnapshotError(f"{self.location}: {row.where}: StateData is not padded Base64 "
                                       f"({len(text) if isinstance(text, str) else type(text).__name__} characters)")
        return io.BufferedReader(_Base64Reader(text, self.location, row.where), buffer_size=DECODE_CHUNK * 3 // 4)

    # --- writes ------------------------------------------------------------------------------

    def write(self, row: SnapshotRow, state: BinaryIO | None, state_length: int,
              expected: SnapshotRow | None) -> SnapshotRow:
        from azure.core import MatchConditions
        from azure.cosmos.exceptions import CosmosHttpResponseError

        row.validate_for_write()
        if row.service_id != self.service_id:
            raise UsageError(f"row for service {row.service_id!r} written through a store scoped to "
                             f"{self.service_id!r}")
        if expected is not None:
            if (expected.projector_name, expected.projector_version) != (row.projector_name, row.projector_version):
                raise UsageError(f"{self.location}: expected row {expected.where} is not {row.where}")
            if expected.is_tombstoned:
                raise TombstonedError(f"{self.location}: {row.where} is tombstoned; refusing to overwrite it")
            if not expected.token:
                raise ConcurrencyConflictError(f"{self.location}: {row.where}: the expected row carries no "
                                               f"_etag (not read from this store); re-read it first")
        now = utcnow()
        created = (expected.created_at if expected is not None else None) or row.created_at or now
        updated = row.updated_at or now
        inline = not row.is_offloaded
        if inline and (state is None or state_length < 0):
            raise UsageError(f"{self.location}: {row.where}: an inline row needs its StateData")
        doc = self._document(row, "" if inline else None, created, updated)
        # Size check before anything is read or sent: the document with "" for stateData, plus the
        # Base64 text, plus what Cosmos adds.
        item_size = (len(json.dumps(doc, separators=(",", ":")).encode("utf-8"))
                     + (_base64_length(state_length) if inline else 0) + SYSTEM_PROPERTIES_ALLOWANCE)
        if item_size > COSMOS_ITEM_LIMIT:
            raise ItemTooLargeError(
                f"{self.location}: {row.where}: inline StateData of {state_length} bytes makes a "
                f"{item_size}-byte item (Base64 {_base64_length(state_length)} characters), over Cosmos DB's "
                f"{COSMOS_ITEM_LIMIT}-byte item limit (inline cap {self.inline_limit} bytes): offload it to "
                f"a blob store instead")
        if inline:
            doc["stateData"] = self._encode(state, state_length, row.where)
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
                    raise TombstonedError(f"{self.location}: {row.where} is tombstoned; refusing to overwrite it") from None
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
            return self.get(row.projector_name, row.projector_version)
        doc["_etag"] = etag.strip() if isinstance(etag, str) else etag
        return self._row(doc, state_length if inline else None)

    def _encode(self, state: BinaryIO, state_length: int, where: str) -> str:
        """Base64 of exactly ``state_length`` bytes of ``state``, read in multiple-of-3 slices."""
        parts: list[str] = []
        left = state_length
        carry = b""
        while left > 0:
            chunk = state.read(min(ENCODE_CHUNK, left))
            if not chunk:
                raise CorruptSnapshotError(f"{self.location}: StateData stream for {where} ended {left} bytes early")
            left -= len(chunk)
            if carry:
                chunk, carry = carry + chunk, b""
            cut = len(chunk) - len(chunk) % 3 if left > 0 else len(chunk)
            if cut < len(chunk):
                carry = bytes(chunk[cut:])
            parts.append(binascii.b2a_base64(memoryview(chunk)[:cut], newline=False).decode("ascii"))
            del chunk
        return "".join(parts)

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
        if int(_get(doc, "lifecycle") or 0) == LIFECYCLE_TOMBSTONED:
            raise TombstonedError(f"{self.location}: {where} is already tombstoned")
        if not expected.token or doc.get("_etag") != expected.token:
            raise ConcurrencyConflictError(f"{self.location}: {where} moved since it was read; nothing tombstoned")
        etag = doc["_etag"]
        body = {k: v for k, v in doc.items() if k not in SYSTEM_PROPERTIES}
        body[_casing(doc, "lifecycle")] = LIFECYCLE_TOMBSTONED
        body[_casing(doc, "updatedAt")] = format_dotnet_timestamp(utcnow())
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
            return self.get(expected.projector_name, expected.projector_version)
        return self._row_from_full(stored)

    def _shape(self) -> dict:
        return {"kind": self.kind, "location": self.location, "record_offload_threshold": self.record_offload_threshold,
                "inline_limit": self.inline_limit, "capabilities": self.capabilities}

    def for_service(self, service_id: str) -> "CosmosStateStore":
        """The same container scoped to another service, on this store's client."""
        import copy

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


class _Secret:
    """Holds the account key for scrubbing messages; shows as ``***`` everywhere."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None):
        self._value = value or None

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


class _Base64Reader(io.RawIOBase):
    """Decodes a Base64 string slice by slice (strictly: bad text is CorruptSnapshotError)."""

    def __init__(self, text: str, location: str, where: str):
        self._text = text
        self._pos = 0
        self._buf = b""
        self._bpos = 0
        self._location = location
        self._where = where

    def readable(self) -> bool:
        return True

    def _refill(self) -> bool:
        if self._pos >= len(self._text):
            return False
        piece = self._text[self._pos:self._pos + DECODE_CHUNK]
        try:
            self._buf = binascii.a2b_base64(piece, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise CorruptSnapshotError(f"{self._location}: {self._where}: StateData is not valid Base64 "
                                       f"near character {self._pos} ({exc})") from None
        self._bpos = 0
        self._pos += len(piece)
        if self._pos >= len(self._text):
            self._text = ""  # release the text as soon as it is consumed
            self._pos = 0
        return True

    def readinto(self, b) -> int:
        while self._bpos >= len(self._buf):
            if not self._refill():
                return 0
        n = min(len(b), len(self._buf) - self._bpos)
        b[:n] = self._buf[self._bpos:self._bpos + n]
        self._bpos += n
        return n

    def close(self) -> None:
        self._text = ""
        self._buf = b""
        super().close()


__all__ = ["CosmosStateStore", "cosmos_target", "INLINE_LIMIT", "DEFAULT_DATABASE", "DEFAULT_CONTAINER"]
