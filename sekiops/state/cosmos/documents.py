"""Sekiban's ``multiProjectionStates`` document <-> :class:`SnapshotRow`, and the query text that selects it.

Document shape (format reference 2.1): ``id`` = ProjectorVersion, ``pk`` =
``{serviceId}|MultiProjectionState_{ProjectorName}``, every camelCase property written (nulls
included), ``stateData`` = standard padded Base64 of the envelope bytes (null when offloaded).
Older documents are read leniently: ``documentType`` may be absent and PascalCase property names
are accepted. Status documents (``documentType`` = ``projectionStatus`` or ``id`` starting
``STATUS_``) and documents of another service id are never returned.

``SnapshotRow.revision``: Cosmos documents have no Revision property (Sekiban writes none and
neither does sekiops), and no server-side counter can be derived from a document. sekiops reports
the document's UpdatedAt in .NET ticks (falling back to ``_ts`` seconds x 10^7): every writer
(Sekiban, sekiops) stamps UpdatedAt, so it normally grows with each write, but it is a writer's
clock, not a counter. It is informational only; nothing compares it. Compare-and-swap is ``_etag``.

A listing selects metadata and ``LENGTH``/``RIGHT`` of ``stateData`` (the byte length follows from
the Base64 length and padding), never ``stateData`` itself. Pure functions, no SDK: the store
passes its service id and location.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...errors import CorruptSnapshotError
from ...format.constants import COSMOS_ITEM_LIMIT, LIFECYCLE_ACTIVE
from ...format.record import SnapshotRow, format_dotnet_timestamp, parse_timestamp
from ..base64text import decoded_length

PARTITION_KEY_PATH = "/pk"
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


def pascal(name: str) -> str:
    return name[0].upper() + name[1:]


def prop(doc: dict, name: str, default: Any = None) -> Any:
    """A property in camelCase, else PascalCase (older or custom-serialised documents)."""
    if name in doc:
        return doc[name]
    return doc.get(pascal(name), default)


def casing(doc: dict, name: str) -> str:
    """The key ``doc`` uses for ``name`` (camelCase when it has neither)."""
    if name not in doc and pascal(name) in doc:
        return pascal(name)
    return name


def dotnet_ticks(value: datetime) -> int:
    delta = value - datetime(1, 1, 1, tzinfo=value.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def pk_prefix(service_id: str) -> str:
    """The start of every ``pk`` of the service's projection-state documents."""
    return f"{service_id}|{PK_KIND}"


def document_pk(service_id: str, projector_name: str) -> str:
    """The ``pk`` of the service's documents for ``projector_name``."""
    return f"{service_id}|{PK_KIND}{projector_name}"


def is_ours(doc: Any, service_id: str) -> bool:
    """A projection-state document of ``service_id`` (status and foreign ones: no)."""
    if not isinstance(doc, dict):
        return False
    doc_id = doc.get("id")
    if not isinstance(doc_id, str) or doc_id.startswith(STATUS_ID_PREFIX):
        return False
    doc_type = prop(doc, "documentType")
    if doc_type is not None and doc_type != DOCUMENT_TYPE:
        return False
    pk = doc.get("pk")
    if pk is not None and (not isinstance(pk, str) or not pk.startswith(pk_prefix(service_id))):
        return False
    service = prop(doc, "serviceId")
    if service is not None and service != service_id:
        return False
    if pk is None and service is None:
        return False  # nothing ties it to this service
    return True


def row_from_document(doc: dict, state_length: int | None, service_id: str, location: str) -> SnapshotRow:
    """The row a document holds; ``state_length`` is the decoded StateData length when known."""
    prefix = pk_prefix(service_id)
    pk = doc.get("pk") or ""
    name = prop(doc, "projectorName")
    if name is None:
        name = pk[len(prefix):] if pk.startswith(prefix) else None
    if name is None:
        part = prop(doc, "partitionKey") or ""
        name = part[len(PK_KIND):] if part.startswith(PK_KIND) else part
    version = prop(doc, "projectorVersion")
    if version is None:
        version = doc.get("id")
    where = f"{service_id}/{name}/{version}"
    try:
        created_at = parse_timestamp(prop(doc, "createdAt"))
        updated_at = parse_timestamp(prop(doc, "updatedAt"))
    except ValueError as exc:
        raise CorruptSnapshotError(f"{location}: bad timestamp in {where}: {exc}") from None
    try:
        is_offloaded = bool(prop(doc, "isOffloaded", False))
        if is_offloaded:
            state_length = None
        ts = doc.get("_ts")
        if updated_at is not None:
            revision = dotnet_ticks(updated_at)
        elif isinstance(ts, (int, float)):
            revision = int(ts) * 10_000_000
        else:
            revision = 0
        return SnapshotRow(
            service_id=service_id, projector_name=str(name), projector_version=str(version),
            payload_type=prop(doc, "payloadType") or "",
            last_sortable_unique_id=prop(doc, "lastSortableUniqueId") or "",
            events_processed=int(prop(doc, "eventsProcessed") or 0), is_offloaded=is_offloaded,
            offload_key=prop(doc, "offloadKey"), offload_provider=prop(doc, "offloadProvider"),
            original_size_bytes=int(prop(doc, "originalSizeBytes") or 0),
            compressed_size_bytes=int(prop(doc, "compressedSizeBytes") or 0),
            safe_window_threshold=prop(doc, "safeWindowThreshold") or "",
            created_at=created_at, updated_at=updated_at,
            build_source=prop(doc, "buildSource") or "", build_host=prop(doc, "buildHost"),
            generation=int(prop(doc, "generation") or 0),
            lifecycle=int(prop(doc, "lifecycle") or LIFECYCLE_ACTIVE),
            revision=revision, state_length=state_length, token=doc.get("_etag"))
    except (TypeError, ValueError) as exc:
        raise CorruptSnapshotError(f"{location}: {where}: malformed document ({exc})") from None


def row_from_full_document(doc: dict, service_id: str, location: str) -> SnapshotRow:
    """The row of a whole document (a point read): the length comes from its ``stateData``."""
    data = prop(doc, "stateData")
    length = None
    if isinstance(data, str):
        length = decoded_length(len(data), data[-2:])
    return row_from_document(doc, length, service_id, location)


def row_from_listed_document(doc: dict, service_id: str, location: str) -> SnapshotRow:
    """The row of a document selected by :data:`SELECT_LIST` (no ``stateData``, its length and tail)."""
    chars = doc.get("sekiopsChars", doc.get("sekiopsCharsP"))
    tail = doc.get("sekiopsTail", doc.get("sekiopsTailP"))
    return row_from_document(doc, decoded_length(chars, tail) if isinstance(chars, int) else None,
                             service_id, location)


def new_document(row: SnapshotRow, service_id: str, state_data: str | None, created: datetime,
                 updated: datetime) -> dict:
    """The document sekiops writes for ``row``: every camelCase property, in Sekiban's order."""
    name = row.projector_name
    return {
        "documentType": DOCUMENT_TYPE,
        "pk": document_pk(service_id, name),
        "serviceId": service_id,
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


# --- query text ----------------------------------------------------------------------------------

def _select_list() -> str:
    cols = ["c.id", "c.pk", "c._etag", "c._ts"]
    for p in META_PROPERTIES:
        cols += [f"c.{p}", f"c.{pascal(p)}"]
    cols += ["LENGTH(c.stateData) AS sekiopsChars", "RIGHT(c.stateData, 2) AS sekiopsTail",
             "LENGTH(c.StateData) AS sekiopsCharsP", "RIGHT(c.StateData, 2) AS sekiopsTailP"]
    return ", ".join(cols)


#: What a listing selects: metadata in both casings, and StateData's length and last two characters.
SELECT_LIST = _select_list()

#: Server-side twin of :func:`is_ours` (which still checks every document read).
OURS_FILTER = ("NOT STARTSWITH(c.id, @statusPrefix)"
               " AND (NOT IS_DEFINED(c.documentType) OR IS_NULL(c.documentType) OR c.documentType = @docType)"
               " AND (NOT IS_DEFINED(c.DocumentType) OR IS_NULL(c.DocumentType) OR c.DocumentType = @docType)"
               " AND (NOT IS_DEFINED(c.serviceId) OR IS_NULL(c.serviceId) OR c.serviceId = @sid)"
               " AND (NOT IS_DEFINED(c.ServiceId) OR IS_NULL(c.ServiceId) OR c.ServiceId = @sid)")


def query_params(service_id: str, **extra: Any) -> list[dict]:
    """The parameters :data:`OURS_FILTER` needs, plus ``extra`` (``@name`` -> value)."""
    values = {"statusPrefix": STATUS_ID_PREFIX, "docType": DOCUMENT_TYPE, "sid": service_id, **extra}
    return [{"name": f"@{k}", "value": v} for k, v in values.items()]
