"""Amazon DynamoDB state store: Sekiban's ``SekibanProjectionStates`` items, exactly.

URL: ``dynamodb://TABLE`` (``dynamodb://`` alone: Sekiban's default table
``SekibanProjectionStates``). Query options: ``region=``, ``endpoint=http://host:port`` (DynamoDB
Local, moto, LocalStack...), ``profile=``, ``timeout=``/``connect_timeout=`` (:mod:`sekiops.timeouts`),
``retries=`` (attempts in all, default 5), ``retry_max_wait=`` (seconds, default 30),
``create=false`` (never create a missing table; default: create it, on-demand billing, keys
``pk``/``sk`` as Sekiban's initializer does). Credentials and region: the standard AWS chain
(:mod:`sekiops.aws`).

Item layout (format reference 2.4): ``pk`` = ``SERVICE#{serviceId}#PROJECTOR#{ProjectorName}``,
``sk`` = ``VERSION#{ProjectorVersion}``; camelCase attributes; ``documentType`` = ``projectionState``;
strings as S (timestamps in .NET's round-trip "O" form), counters as N, ``isOffloaded`` as BOOL;
``stateData`` (standard padded Base64 of the envelope, as an S), ``offloadKey``,
``offloadProvider`` and ``buildHost`` only when non-empty, as Sekiban writes them (an empty inline
envelope therefore has no ``stateData`` at all). Items read leniently: ``documentType`` may be
absent (legacy items are snapshots too); status items (``documentType`` = ``projectionStatus`` or
an ``sk`` starting ``STATUS#``) and items of other services are never returned.

Reads: ``GetItem`` with ``ConsistentRead`` for one version (``get``, the stream, the re-read that
settles a lost answer); ``Query`` on ``pk`` (consistent, paged) for one projector's versions; a
paged ``Scan`` filtered by service (keys only, never the whole table in memory) to find the
service's projector names, which :meth:`DynamoDbStateStore.list_page` then walks with one
``Query`` each, in (ProjectorName, ProjectorVersion) order. A listing reads whole items: DynamoDB
bills a read by the item's size whatever is projected, an item is at most 400 KB and a ``Query``
page at most 1 MB, so memory stays bounded; the Base64 text is dropped as soon as its length is
known. Scans are eventually consistent (``capabilities.eventually_consistent_listing``): a
projector created in the last moments may be missed by a listing, never by ``get``.

Compare-and-swap as Sekiban's store does it: create = ``PutItem`` with ``attribute_not_exists(pk)``
(revision 1, lifecycle 0); replace = full-item ``PutItem`` with ``generation = :g AND revision = :r
AND lifecycle = 0`` writing revision + 1 (``ConditionalCheckFailedException``: another writer moved
it, or it was tombstoned: a tombstone is never resurrected); tombstone = ``UpdateItem`` on the same
condition setting lifecycle 1 and generation + 1, revision + 1 (Sekiban's
``InvalidateWithTombstoneAsync``). Items written before Sekiban had control attributes compare
as generation 0, revision 0, lifecycle 0. The token is ``str(revision)``.

Sizes: Sekiban offloads the envelope above min(caller's threshold, 350,000) bytes, comparing raw
bytes although Base64 makes the attribute 4/3 larger; DynamoDB refuses items over 400 KB. So an
envelope between :data:`INLINE_LIMIT` (~301 KB) and 350,000 bytes cannot be stored inline: the
pipeline refuses it before writing (ItemTooLargeError: lower the record threshold), a write
checks the exact item size before sending, and the service's own refusal is ItemTooLargeError
too. Never a truncation.

Throttling (``ProvisionedThroughputExceededException``, ``ThrottlingException``, ...) is retried
with sekiops' backoff rule, as Cosmos DB's 429. A write whose answer is lost (time-out, reset, 5xx)
is not retried here: StoreUnavailableError says it may have been applied, and the pipeline settles
it with a consistent re-read.
"""

from __future__ import annotations

import base64
import copy
import io
import logging
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator
from datetime import datetime
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from .. import aws
from ..errors import (
    ConcurrencyConflictError,
    CorruptSnapshotError,
    ItemTooLargeError,
    StoreError,
    TombstonedError,
    UsageError,
)
from ..format.constants import LIFECYCLE_ACTIVE, LIFECYCLE_TOMBSTONED, RECORD_THRESHOLD_DYNAMODB
from ..format.record import SnapshotRow, check_service_id, format_dotnet_timestamp, parse_timestamp, utcnow
from ..urls import query_flags, redact
from .base import StateCapabilities, StateStore, check_expected
from .base64text import open_base64

log = logging.getLogger(__name__)

DEFAULT_TABLE = "SekibanProjectionStates"
DOCUMENT_TYPE = "projectionState"
STATUS_DOCUMENT_TYPE = "projectionStatus"
VERSION_PREFIX = "VERSION#"
STATUS_PREFIX = "STATUS#"
#: DynamoDB's item size limit (attribute names and values, UTF-8), 400 KB.
ITEM_LIMIT = 400 * 1024
#: Room kept for the other attributes when sizing the inline cap (a projector name of up to 256
#: characters appears twice, keys and metadata add ~1 KB) and for servers whose limit is a
#: little lower than AWS's (moto refuses items over 405,000 bytes).
ITEM_HEADROOM = 8 * 1024
#: Largest envelope whose Base64 text fits an item beside its metadata: 301,056 bytes.
INLINE_LIMIT = (ITEM_LIMIT - ITEM_HEADROOM) * 3 // 4
#: Sekiban's page size for Query and Scan (QueryPageSize).
PAGE_SIZE = 1000
#: How long a listing may reuse the projector names it scanned (an iteration's pages share them).
NAMES_TTL = 30.0

_TABLE_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
#: the attributes a Scan for names and services needs
_KEY_PROJECTION = "pk, sk, serviceId, documentType"
_OURS_FILTER = "(attribute_not_exists(documentType) OR documentType = :doctype)"


def _s(item: dict, name: str) -> str | None:
    """A string attribute (S; N accepted) or None."""
    value = item.get(name)
    if not isinstance(value, dict):
        return None
    if "S" in value:
        return value["S"]
    if "N" in value:
        return value["N"]
    return None


def _n(item: dict, name: str, default: int = 0) -> int:
    """A number attribute (N; an S of digits accepted); ``default`` when absent or NULL."""
    value = item.get(name)
    if not isinstance(value, dict) or value.get("NULL"):
        return default
    raw = value.get("N", value.get("S"))
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"attribute {name!r} is not a number: {str(raw)[:40]!r}") from None
        if number != int(number):
            raise ValueError(f"attribute {name!r} is not an integer: {str(raw)[:40]!r}") from None
        return int(number)


def _bool(item: dict, name: str) -> bool:
    value = item.get(name)
    if not isinstance(value, dict):
        return False
    if "BOOL" in value:
        return bool(value["BOOL"])
    if "N" in value:
        return value["N"] not in ("0", "")
    if "S" in value:
        return value["S"].strip().lower() == "true"
    return False


def _number_size(text: str) -> int:
    """Upper bound of a number's size in an item: 1 byte per 2 significant digits, plus 1."""
    digits = len(text.lstrip("-").strip("0")) or 1
    return (digits + 1) // 2 + 1


def item_size(item: dict) -> int:
    """The item's size as DynamoDB counts it (names + values, UTF-8), an upper bound for numbers."""
    total = 0
    for name, value in item.items():
        total += len(name.encode("utf-8"))
        if "S" in value:
            total += len(value["S"].encode("utf-8"))
        elif "N" in value:
            total += _number_size(value["N"])
        elif "B" in value:
            total += len(value["B"])
        else:  # BOOL, NULL
            total += 1
    return total


def _base64_length(n: int) -> int:
    return 4 * ((n + 2) // 3)


def _decoded_length(text: str) -> int:
    return max(0, len(text) // 4 * 3 - text[-2:].count("="))


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def dynamodb_target(url: str) -> tuple[str, str]:
    """``dynamodb://TABLE?...`` -> (table, location without secrets)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "dynamodb":
        raise UsageError(f"not a DynamoDB URL: {redact(url)!r} (expected dynamodb://TABLE)")
    if parts.username or parts.password:
        raise UsageError("a dynamodb:// URL carries no credentials: use the AWS credential chain")
    table = unquote(parts.netloc + parts.path).strip("/") or DEFAULT_TABLE
    if not _TABLE_RE.fullmatch(table):
        raise UsageError(f"invalid DynamoDB table name {table!r} (3-255 letters, digits, '_', '-', '.')")
    return table, f"dynamodb://{table}"


class DynamoDbStateStore(StateStore):
    """Sekiban MultiProjection rows in a DynamoDB table; see the module docstring."""

    kind = "dynamodb"
    record_offload_threshold = RECORD_THRESHOLD_DYNAMODB
    #: Sekiban's DynamoDB store offloads above min(caller's threshold, this).
    record_offload_cap = RECORD_THRESHOLD_DYNAMODB
    inline_limit = INLINE_LIMIT
    capabilities = StateCapabilities(eventually_consistent_listing=True, item_limit=ITEM_LIMIT)

    def __init__(self, table: str = DEFAULT_TABLE, service_id: str = "default", *,
                 settings: aws.AwsSettings | None = None, create: bool = True, location: str | None = None,
                 client: Any = None):
        check_service_id(service_id)
        self.service_id = service_id
        self.table = table
        self.settings = settings or aws.AwsSettings()
        base = location or f"dynamodb://{table}"
        self._borrowed = False
        self._names: tuple[float, list[str]] | None = None
        self._names_lock = threading.Lock()
        self._client = client or aws.make_client("dynamodb", self.settings, base)
        where = [f"region={self.settings.region}"]
        if self.settings.endpoint:
            where.append(f"endpoint={redact(self.settings.endpoint)}")
        self.location = f"{base} ({', '.join(where)})"
        self._ensure_table(create)

    @classmethod
    def from_url(cls, url: str, service_id: str = "default", **options) -> DynamoDbStateStore:
        table, location = dynamodb_target(url)
        settings = aws.settings_from(url, options, location)
        flags = query_flags(url)
        create = aws.flag(options.pop("create", flags.get("create", True)))
        unknown = set(options) | (set(flags) - set(aws.COMMON_OPTIONS) - {"create"})
        if unknown:
            raise UsageError(f"{location}: unknown option(s) {', '.join(sorted(unknown))} (known: "
                             f"{', '.join(aws.COMMON_OPTIONS + ('create',))})")
        return cls(table, service_id=service_id, settings=settings, create=create, location=location)

    # --- plumbing ----------------------------------------------------------------------------

    def _run(self, what: str, fn, idempotent: bool = True):
        return aws.run(fn, where=self.location, what=what, settings=self.settings, idempotent=idempotent,
                       hint="retry later, or raise the table's capacity")

    def _fail(self, exc: BaseException, what: str) -> StoreError:
        """A final error for a ClientError nobody interpreted."""
        msg = aws.error_message(exc)
        return StoreError(f"{self.location}: {what}: {aws.tag(exc)}" + (f": {msg}" if msg else ""))

    def _ensure_table(self, create: bool) -> None:
        from botocore.exceptions import ClientError

        try:
            desc = self._run("describe table", lambda: self._client.describe_table(TableName=self.table))["Table"]
        except ClientError as exc:
            if aws.error_code(exc)[0] != "ResourceNotFoundException":
                raise self._fail(exc, "describe table") from None
            if not create:
                raise StoreError(f"{self.location}: no table {self.table!r} (create=false)") from None
            desc = self._create_table()
        keys = {k["AttributeName"]: k["KeyType"] for k in desc.get("KeySchema") or []}
        types = {a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions") or []}
        if keys != {"pk": "HASH", "sk": "RANGE"} or types.get("pk") != "S" or types.get("sk") != "S":
            raise StoreError(f"{self.location}: table keys are {keys or '?'}, Sekiban's are pk (S, hash) and "
                             "sk (S, range): not a Sekiban projection-states table")

    def _create_table(self) -> dict:
        from botocore.exceptions import ClientError

        log.info("%s: creating table %s (on-demand)", self.location, self.table)
        try:
            self._run("create table", lambda: self._client.create_table(
                TableName=self.table, BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                      {"AttributeName": "sk", "AttributeType": "S"}]), idempotent=False)
        except ClientError as exc:
            if aws.error_code(exc)[0] != "ResourceInUseException":  # created meanwhile: fine
                raise self._fail(exc, "create table") from None
        deadline = time.monotonic() + max(60.0, self.settings.timeouts.io)
        while True:
            desc = self._run("describe table", lambda: self._client.describe_table(TableName=self.table))["Table"]
            if desc.get("TableStatus") == "ACTIVE":
                return desc
            if time.monotonic() > deadline:
                raise StoreError(f"{self.location}: the new table did not become ACTIVE in time")
            time.sleep(0.5)

    def _pk(self, name: str) -> str:
        return f"SERVICE#{self.service_id}#PROJECTOR#{name}"

    @property
    def _pk_prefix(self) -> str:
        return f"SERVICE#{self.service_id}#PROJECTOR#"

    def _key(self, name: str, version: str) -> dict:
        return {"pk": {"S": self._pk(name)}, "sk": {"S": VERSION_PREFIX + version}}

    # --- items <-> rows ----------------------------------------------------------------------

    def _is_ours(self, item: dict) -> bool:
        """A projection-state item of this store's service (status and foreign items: no)."""
        pk, sk = _s(item, "pk"), _s(item, "sk")
        if not pk or not pk.startswith(self._pk_prefix) or not sk or not sk.startswith(VERSION_PREFIX):
            return False
        doc_type = _s(item, "documentType")
        if doc_type not in (None, "", DOCUMENT_TYPE):
            return False
        service = _s(item, "serviceId")
        return service in (None, "", self.service_id)

    def _row(self, item: dict, keep_length: bool = True) -> SnapshotRow:
        pk, sk = _s(item, "pk") or "", _s(item, "sk") or ""
        name = _s(item, "projectorName") or pk[len(self._pk_prefix):]
        version = _s(item, "projectorVersion") or sk[len(VERSION_PREFIX):]
        where = f"{self.service_id}/{name}/{version}"
        try:
            created_at = parse_timestamp(_s(item, "createdAt"))
            updated_at = parse_timestamp(_s(item, "updatedAt"))
        except ValueError as exc:
            raise CorruptSnapshotError(f"{self.location}: bad timestamp in {where}: {exc}") from None
        try:
            offloaded = _bool(item, "isOffloaded")
            length = None
            if not offloaded and keep_length:
                value = item.get("stateData")
                if isinstance(value, dict) and isinstance(value.get("S"), str):
                    length = _decoded_length(_pad(value["S"])) if value["S"] else 0
                elif isinstance(value, dict) and "B" in value:
                    length = len(value["B"])
                else:
                    length = 0  # Sekiban writes no stateData for an empty envelope
            revision = _n(item, "revision")
            return SnapshotRow(
                service_id=self.service_id, projector_name=name, projector_version=version,
                payload_type=_s(item, "payloadType") or "",
                last_sortable_unique_id=_s(item, "lastSortableUniqueId") or "",
                events_processed=_n(item, "eventsProcessed"), is_offloaded=offloaded,
                offload_key=_s(item, "offloadKey") or None, offload_provider=_s(item, "offloadProvider") or None,
                original_size_bytes=_n(item, "originalSizeBytes"),
                compressed_size_bytes=_n(item, "compressedSizeBytes"),
                safe_window_threshold=_s(item, "safeWindowThreshold") or "",
                created_at=created_at, updated_at=updated_at, build_source=_s(item, "buildSource") or "",
                build_host=_s(item, "buildHost") or None, generation=_n(item, "generation"),
                lifecycle=_n(item, "lifecycle", LIFECYCLE_ACTIVE), revision=revision,
                state_length=length, token=str(revision))
        except (TypeError, ValueError) as exc:
            raise CorruptSnapshotError(f"{self.location}: {where}: malformed item ({exc})") from None

    def _item(self, row: SnapshotRow, created: datetime, updated: datetime, revision: int,
              lifecycle: int, generation: int) -> dict:
        """Sekiban's item for ``row`` without ``stateData`` (ToAttributeValues' layout)."""
        name, version = row.projector_name, row.projector_version
        item = {
            "pk": {"S": self._pk(name)},
            "sk": {"S": VERSION_PREFIX + version},
            "serviceId": {"S": self.service_id},
            "projectorName": {"S": name},
            "projectorVersion": {"S": version},
            "payloadType": {"S": row.payload_type},
            "lastSortableUniqueId": {"S": row.last_sortable_unique_id},
            "eventsProcessed": {"N": str(int(row.events_processed))},
            "isOffloaded": {"BOOL": bool(row.is_offloaded)},
            "originalSizeBytes": {"N": str(int(row.original_size_bytes))},
            "compressedSizeBytes": {"N": str(int(row.compressed_size_bytes))},
            "safeWindowThreshold": {"S": row.safe_window_threshold},
            "updatedAt": {"S": format_dotnet_timestamp(updated)},
            "createdAt": {"S": format_dotnet_timestamp(created)},
            "buildSource": {"S": row.build_source},
            "generation": {"N": str(int(generation))},
            "revision": {"N": str(int(revision))},
            "lifecycle": {"N": str(int(lifecycle))},
            "documentType": {"S": DOCUMENT_TYPE},
        }
        for attr, value in (("offloadKey", row.offload_key), ("offloadProvider", row.offload_provider),
                            ("buildHost", row.build_host)):
            if value:
                item[attr] = {"S": value}
        return item

    # --- reads -------------------------------------------------------------------------------

    def _get_item(self, name: str, version: str, what: str) -> dict | None:
        from botocore.exceptions import ClientError

        if not name or not version or "#" in name:
            return None  # no Sekiban item can have that key
        try:
            answer = self._run(what, lambda: self._client.get_item(
                TableName=self.table, Key=self._key(name, version), ConsistentRead=True))
        except ClientError as exc:
            raise self._fail(exc, what) from None
        item = answer.get("Item")
        if not item or not self._is_ours(item):
            return None
        return item

    def get(self, projector_name: str, projector_version: str) -> SnapshotRow | None:
        item = self._get_item(projector_name, projector_version,
                              f"read {self.service_id}/{projector_name}/{projector_version}")
        return self._row(item) if item is not None else None

    def _pages(self, what: str, call, **request) -> Iterator[list[dict]]:
        """Every page of a Query or Scan (``ExclusiveStartKey`` loop), one at a time."""
        from botocore.exceptions import ClientError

        start = None
        while True:
            if start is not None:
                request["ExclusiveStartKey"] = start
            try:
                answer = self._run(what, lambda: call(**request))
            except ClientError as exc:
                raise self._fail(exc, what) from None
            yield answer.get("Items") or []
            start = answer.get("LastEvaluatedKey")
            if not start:
                return

    def _query(self, name: str, after_version: str | None, what: str) -> Iterator[dict]:
        """The projector's snapshot items in version order, strictly after ``after_version``."""
        values: dict[str, Any] = {":pk": {"S": self._pk(name)}, ":doctype": {"S": DOCUMENT_TYPE}}
        if after_version is None:
            cond = "pk = :pk AND begins_with(sk, :vp)"
            values[":vp"] = {"S": VERSION_PREFIX}
        else:
            # STATUS# sorts before VERSION#: a bound inside the VERSION# range excludes status items.
            cond = "pk = :pk AND sk > :after"
            values[":after"] = {"S": VERSION_PREFIX + after_version}
        for page in self._pages(what, self._client.query, TableName=self.table, KeyConditionExpression=cond,
                                FilterExpression=_OURS_FILTER, ExpressionAttributeValues=values,
                                ConsistentRead=True, Limit=PAGE_SIZE):
            for item in page:
                if self._is_ours(item):
                    yield item

    def _scan_keys(self, what: str, extra_filter: str = "", values: dict | None = None) -> Iterator[dict]:
        """Key attributes of every snapshot item matching the filter (paged Scan, keys only)."""
        values = dict(values or {})
        values.update({":doctype": {"S": DOCUMENT_TYPE}, ":vp": {"S": VERSION_PREFIX}})
        flt = f"begins_with(sk, :vp) AND {_OURS_FILTER}" + (f" AND {extra_filter}" if extra_filter else "")
        for page in self._pages(what, self._client.scan, TableName=self.table, FilterExpression=flt,
                                ProjectionExpression=_KEY_PROJECTION, ExpressionAttributeValues=values,
                                Limit=PAGE_SIZE):
            yield from page

    def _projector_names(self, fresh: bool) -> list[str]:
        """The service's projector names, sorted (a Scan, reused for NAMES_TTL seconds)."""
        with self._names_lock:
            cached = self._names
            if not fresh and cached is not None and time.monotonic() - cached[0] < NAMES_TTL:
                return cached[1]
        names = set()
        for item in self._scan_keys(f"list {self.service_id}",
                                    "begins_with(pk, :pkp) AND (attribute_not_exists(serviceId) OR serviceId = :sid)",
                                    {":pkp": {"S": self._pk_prefix}, ":sid": {"S": self.service_id}}):
            pk = _s(item, "pk")
            if pk is not None and self._is_ours(item):  # (_is_ours requires a pk)
                names.add(pk[len(self._pk_prefix):])
        result = sorted(names)
        with self._names_lock:
            self._names = (time.monotonic(), result)
        return result

    def list_service_ids(self) -> list[str]:
        out = set()
        for item in self._scan_keys("list services", "begins_with(pk, :sp)", {":sp": {"S": "SERVICE#"}}):
            service = _s(item, "serviceId")
            pk = _s(item, "pk") or ""
            if service:
                out.add(service)
            elif "#PROJECTOR#" in pk:
                out.add(pk[len("SERVICE#"):pk.index("#PROJECTOR#")])
        return sorted(out)

    def latest_active(self, projector_name: str) -> SnapshotRow | None:
        if not projector_name or "#" in projector_name:
            return None
        best = None
        floor = datetime.min.replace(tzinfo=utcnow().tzinfo)
        for item in self._query(projector_name, None, f"query {self.service_id}/{projector_name}"):
            row = self._row(item)
            if row.is_tombstoned:
                continue
            if best is None or (row.events_processed, row.updated_at or floor) > (
                    best.events_processed, best.updated_at or floor):
                best = row
        return best

    def list_page(self, after: tuple[str, str] | None = None, limit: int = 500,
                  projector_name: str | None = None) -> list[SnapshotRow]:
        limit = int(limit)
        if limit <= 0:
            return []
        if projector_name is not None:
            if "#" in projector_name or not projector_name:
                return []
            names = [projector_name]
        else:
            names = self._projector_names(fresh=after is None)
        if after is not None:
            names = names[bisect_left(names, after[0]):]
        rows: list[SnapshotRow] = []
        for name in names:
            start = after[1] if after is not None and name == after[0] else None
            if after is not None and name < after[0]:
                continue
            for item in self._query(name, start, f"list {self.service_id}/{name}"):
                rows.append(self._row(item))
                if len(rows) >= limit:
                    return rows
        return rows

    def open_state_stream(self, row: SnapshotRow) -> BinaryIO:
        """The row's StateData, Base64-decoded slice by slice from one consistent GetItem.

        The item (at most 400 KB) must still carry ``row``'s revision and generation.
        """
        item = self._get_item(row.projector_name, row.projector_version, f"read state of {row.where}")
        if item is None:
            raise ConcurrencyConflictError(f"{self.location}: {row.where} disappeared since it was read")
        current = self._row(item, keep_length=False)
        if row.token is not None and (current.token != row.token or current.generation != row.generation):
            raise ConcurrencyConflictError(f"{self.location}: {row.where} changed since it was read; retry")
        if current.is_offloaded:
            raise CorruptSnapshotError(f"{self.location}: {row.where} has no inline StateData (it is offloaded)")
        value = item.get("stateData")
        del item
        if value is None:
            return io.BytesIO(b"")
        if "B" in value:
            return io.BytesIO(value["B"])
        text = value.get("S")
        if not isinstance(text, str):
            raise CorruptSnapshotError(f"{self.location}: {row.where}: stateData is neither S nor B")
        if len(text) % 4:
            raise CorruptSnapshotError(f"{self.location}: {row.where}: StateData is not padded Base64 "
                                       f"({len(text)} characters)")
        return open_base64(text, self.location, row.where)

    # --- writes ------------------------------------------------------------------------------

    def _expected_revision(self, expected: SnapshotRow) -> int:
        token = expected.token if expected.token is not None else str(expected.revision)
        if not str(token).lstrip("-").isdigit():
            raise UsageError(f"{expected.where}: token {token!r} is not a DynamoDB revision; re-read the row")
        return int(token)

    def _cas(self, expected: SnapshotRow) -> tuple[str, dict, dict]:
        """(condition, names, values): the exact active (generation, revision), as Sekiban checks it.

        Items written before the control attributes existed read as 0/0/0 and match 0/0/0 here.
        """
        generation, revision = int(expected.generation), self._expected_revision(expected)
        names = {"#g": "generation", "#r": "revision", "#l": "lifecycle"}
        values = {":eg": {"N": str(generation)}, ":er": {"N": str(revision)}, ":el": {"N": str(LIFECYCLE_ACTIVE)}}
        parts = ["attribute_exists(pk)"]
        for attr, ph, current in (("#g", ":eg", generation), ("#r", ":er", revision), ("#l", ":el", 0)):
            parts.append(f"(attribute_not_exists({attr}) OR {attr} = {ph})" if current == 0 else f"{attr} = {ph}")
        return " AND ".join(parts), names, values

    def write(self, row: SnapshotRow, state: BinaryIO | None, state_length: int,
              expected: SnapshotRow | None) -> SnapshotRow:
        from botocore.exceptions import ClientError

        self.check_row_for_write(row, expected)
        inline = not row.is_offloaded
        if inline and (state_length < 0 or (state is None and state_length)):
            raise UsageError(f"{self.location}: {row.where}: an inline row needs its StateData")
        now = utcnow()
        created = (expected.created_at if expected is not None else None) or row.created_at or now
        updated = row.updated_at or now
        revision = 1 if expected is None else self._expected_revision(expected) + 1
        item = self._item(row, created, updated, revision, LIFECYCLE_ACTIVE, row.generation)
        b64 = _base64_length(state_length) if inline else 0
        size = item_size(item) + (len("stateData") + b64 if b64 else 0)
        if size > ITEM_LIMIT:
            raise ItemTooLargeError(
                f"{self.location}: {row.where}: inline StateData of {state_length} bytes makes a {size}-byte "
                f"item (Base64 {b64} characters), over DynamoDB's {ITEM_LIMIT}-byte item limit (inline cap "
                f"{self.inline_limit} bytes): offload it to a blob store (a lower record threshold)")
        if inline and state_length:
            assert state is not None  # refused above: an inline row with a length has its StateData
            item["stateData"] = {"S": self._encode(state, state_length, row.where)}
        request: dict[str, Any] = dict(TableName=self.table, Item=item)
        if expected is None:
            request["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            cond, names, values = self._cas(expected)
            request.update(ConditionExpression=cond, ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        what = f"{'replace' if expected is not None else 'create'} {row.where}"
        try:
            self._run(what, lambda: self._client.put_item(**request), idempotent=False)
        except ClientError as exc:
            code = aws.error_code(exc)[0]
            if code == "ConditionalCheckFailedException":
                self._conflict(row, expected)
            if code == "ValidationException" and "size" in aws.error_message(exc).lower():
                raise ItemTooLargeError(f"{self.location}: {what}: DynamoDB refused the {size}-byte item as too "
                                        f"large ({aws.tag(exc)}); offload it to a blob store") from None
            raise self._fail(exc, what) from None
        item.pop("stateData", None)
        stored = self._row(item, keep_length=False)
        return stored.replace(state_length=state_length if inline else None)

    def _conflict(self, row: SnapshotRow, expected: SnapshotRow | None):
        """The condition failed (nothing written): say why, from a consistent re-read."""
        current = self.get(row.projector_name, row.projector_version)
        check_expected(current, expected, self.location, row.where)
        if expected is None:
            raise ConcurrencyConflictError(f"{self.location}: {row.where} was created by another writer; "
                                           "nothing written") from None
        raise ConcurrencyConflictError(
            f"{self.location}: {row.where} moved since it was read (generation {expected.generation}, revision "
            f"{expected.token}); nothing overwritten") from None

    def _encode(self, state: BinaryIO, state_length: int, where: str) -> str:
        """Base64 of exactly ``state_length`` bytes (at most INLINE_LIMIT: bounded by the item limit)."""
        chunks = []
        left = state_length
        while left > 0:
            chunk = state.read(left)
            if not chunk:
                raise CorruptSnapshotError(f"{self.location}: StateData stream for {where} ended {left} bytes early")
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return base64.b64encode(data).decode("ascii")

    def tombstone(self, expected: SnapshotRow) -> SnapshotRow:
        from botocore.exceptions import ClientError

        if expected.service_id != self.service_id:
            raise UsageError(f"row for service {expected.service_id!r} tombstoned through a store scoped to "
                             f"{self.service_id!r}")
        if expected.is_tombstoned:
            raise TombstonedError(f"{self.location}: {expected.where} is already tombstoned")
        cond, names, values = self._cas(expected)
        names["#u"] = "updatedAt"
        values.update({":ng": {"N": str(int(expected.generation) + 1)},
                       ":nr": {"N": str(self._expected_revision(expected) + 1)},
                       ":nl": {"N": str(LIFECYCLE_TOMBSTONED)},
                       ":nu": {"S": format_dotnet_timestamp(utcnow())}})
        what = f"tombstone {expected.where}"
        try:
            answer = self._run(what, lambda: self._client.update_item(
                TableName=self.table, Key=self._key(expected.projector_name, expected.projector_version),
                UpdateExpression="SET #g = :ng, #r = :nr, #l = :nl, #u = :nu", ConditionExpression=cond,
                ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_NEW"),
                idempotent=False)
        except ClientError as exc:
            if aws.error_code(exc)[0] == "ConditionalCheckFailedException":
                current = self.get(expected.projector_name, expected.projector_version)
                if current is not None and current.is_tombstoned:
                    raise TombstonedError(f"{self.location}: {expected.where} is already tombstoned") from None
                raise ConcurrencyConflictError(f"{self.location}: {expected.where} moved since it was read; "
                                               "nothing tombstoned") from None
            raise self._fail(exc, what) from None
        attrs = answer.get("Attributes")
        if not attrs:
            stored = self.get(expected.projector_name, expected.projector_version)
            if stored is None:
                raise ConcurrencyConflictError(f"{self.location}: {what} was applied, but {expected.where} was gone "
                                               "when read back (deleted by another writer)")
            return stored
        return self._row(attrs)

    def for_service(self, service_id: str) -> DynamoDbStateStore:
        """The same table scoped to another service, on this store's client."""
        scoped = copy.copy(self)
        scoped.service_id = check_service_id(service_id)
        scoped._borrowed = True
        scoped._names = None
        scoped._names_lock = threading.Lock()
        return scoped

    def close(self) -> None:
        if self._borrowed:
            return
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - closing must never fail a caller
                pass

    def __repr__(self) -> str:
        return f"DynamoDbStateStore({self.location!r}, service_id={self.service_id!r})"


__all__ = ["DynamoDbStateStore", "dynamodb_target", "INLINE_LIMIT", "ITEM_LIMIT", "DEFAULT_TABLE", "item_size"]
