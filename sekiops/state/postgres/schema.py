"""Sekiban's table ``dcb_multi_projection_states``: its DDL, finding it, and its records <-> rows.

The table and its index are created only when missing, exactly as Sekiban's EF Core model makes
them; an existing table is never altered (its columns are discovered, nothing is migrated). Older
Sekiban tables may lack the control columns (Generation, Lifecycle, Revision) or store timestamps
without time zone; the functions here take the columns found and adapt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from psycopg import sql

from ...errors import StoreError
from ...format.record import SnapshotRow

TABLE = "dcb_multi_projection_states"
PRIMARY_KEY = "PK_dcb_multi_projection_states"
INDEX = "IX_MultiProjectionStates_Service_ProjectorName"
INDEX_UPDATED = "IX_MultiProjectionStates_UpdatedAt"
CHECK = "CK_MultiProjectionStates_OffloadConsistency"

#: The largest value a bytea can hold (1 GiB - 1, minus the 4-byte varlena header).
BYTEA_MAX = 0x3FFFFFFF - 4

#: (name, type, NULL allowed, default) in Sekiban's order; see the format reference, section 2.2.
COLUMNS: list[tuple[str, str, bool, str | None]] = [
    ("ServiceId", "character varying(64)", False, None),
    ("ProjectorName", "character varying(256)", False, None),
    ("ProjectorVersion", "character varying(128)", False, None),
    ("PayloadType", "character varying(512)", False, None),
    ("LastSortableUniqueId", "character varying(100)", False, None),
    ("EventsProcessed", "bigint", False, None),
    ("StateData", "bytea", True, None),
    ("IsOffloaded", "boolean", False, None),
    ("OffloadKey", "character varying(512)", True, None),
    ("OffloadProvider", "character varying(128)", True, None),
    ("OriginalSizeBytes", "bigint", False, None),
    ("CompressedSizeBytes", "bigint", False, None),
    ("SafeWindowThreshold", "character varying(100)", False, None),
    ("CreatedAt", "timestamp with time zone", False, None),
    ("UpdatedAt", "timestamp with time zone", False, None),
    ("BuildSource", "character varying(32)", False, None),
    ("BuildHost", "character varying(256)", True, None),
    ("Generation", "bigint", False, "0"),
    ("Lifecycle", "integer", False, "0"),
    ("Revision", "bigint", False, "0"),
]
KEY_COLUMNS = ["ServiceId", "ProjectorName", "ProjectorVersion"]
META_COLUMNS = ["ServiceId", "ProjectorName", "ProjectorVersion", "PayloadType", "LastSortableUniqueId",
                "EventsProcessed", "IsOffloaded", "OffloadKey", "OffloadProvider", "OriginalSizeBytes",
                "CompressedSizeBytes", "SafeWindowThreshold", "CreatedAt", "UpdatedAt", "BuildSource",
                "BuildHost"]
CONTROL_COLUMNS = ["Generation", "Lifecycle", "Revision"]
CHECK_SQL = ('("IsOffloaded" = false AND "StateData" IS NOT NULL) OR '
             '("IsOffloaded" = true AND "OffloadKey" IS NOT NULL)')

#: Serialises table creation between sekiops processes (any constant: it only has to be shared).
CREATE_LOCK_KEY = 0x5E410B5_0DCB

#: `` WHERE`` clause on the primary key; its parameters are :func:`key` of a row.
KEY_WHERE = sql.SQL(' WHERE "ServiceId" = %s AND "ProjectorName" = %s AND "ProjectorVersion" = %s')


# --- finding and creating the table --------------------------------------------------------------

def locate_table(conn, schema: str | None) -> tuple[str, dict[str, str]] | None:
    """(schema, {column: type}) of the table as this connection resolves it, or None."""
    parts = [schema, TABLE] if schema else [TABLE]
    name = sql.Identifier(*parts).as_string(conn)
    rec = conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')", (name,)).fetchone()
    if rec is None:
        return None
    cols = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum", (name,)).fetchall()
    return rec[0], dict(cols)


def create_table(conn, schema: str | None) -> None:
    """Sekiban's table, primary key, CHECK constraint and two indexes (each only if missing)."""
    parts = [schema, TABLE] if schema else [TABLE]
    table = sql.Identifier(*parts)
    defs = []
    for name, type_, nullable, default in COLUMNS:
        d = sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_))
        if not nullable:
            d += sql.SQL(" NOT NULL")
        if default is not None:
            d += sql.SQL(" DEFAULT ") + sql.SQL(default)
        defs.append(d)
    defs.append(sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
        sql.Identifier(PRIMARY_KEY), sql.SQL(", ").join(map(sql.Identifier, KEY_COLUMNS))))
    defs.append(sql.SQL("CONSTRAINT {} CHECK ({})").format(sql.Identifier(CHECK), sql.SQL(CHECK_SQL)))
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (\n    {}\n)").format(
        table, sql.SQL(",\n    ").join(defs)))
    conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, {})").format(
        sql.Identifier(INDEX), table, sql.Identifier("ServiceId"), sql.Identifier("ProjectorName")))
    conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
        sql.Identifier(INDEX_UPDATED), table, sql.Identifier("UpdatedAt")))


def find_or_create_table(conn, schema: str | None, create: bool, location: str) -> tuple[str, dict[str, str]] | None:
    """The table as :func:`locate_table` finds it, created first when missing and ``create``.

    Creation runs under a transaction-scoped advisory lock, so concurrent sekiops processes
    create it once. A named schema must exist already.
    """
    found = locate_table(conn, schema)
    if found is None and create:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK_KEY,))
        found = locate_table(conn, schema)
        if found is None:
            if schema and conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
                raise StoreError(f"{location}: schema {schema!r} does not exist")
            create_table(conn, schema)
            found = locate_table(conn, schema)
    return found


def check_columns(nsp: str, cols: dict[str, str], location: str) -> None:
    """Refuse a table that lacks Sekiban's columns or whose StateData is not bytea."""
    missing = [c for c in META_COLUMNS + ["StateData"] if c not in cols]
    if missing:
        raise StoreError(f"{location}: table {nsp}.{TABLE} lacks Sekiban columns {missing}")
    if cols["StateData"] != "bytea":
        raise StoreError(f"{location}: {nsp}.{TABLE}.StateData is {cols['StateData']}, not bytea")


def meta_columns_sql(control: list[str]) -> sql.Composable:
    """The columns a row is read from: metadata, the control columns found, StateData's length."""
    return sql.SQL("{}, octet_length({})").format(
        sql.SQL(", ").join(map(sql.Identifier, META_COLUMNS + control)), sql.Identifier("StateData"))


# --- records <-> rows ----------------------------------------------------------------------------

@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def token_of(revision: int, updated_at: datetime | None, control: list[str]) -> str:
    """The compare-and-swap token: ``str(Revision)``, or UpdatedAt on a table without Revision."""
    if "Revision" in control:
        return str(revision)
    # A pre-Revision Sekiban table: UpdatedAt is the only thing that moves on every write.
    return "u:" + (updated_at.isoformat() if updated_at else "")


def row_from_record(rec, control: list[str]) -> SnapshotRow:
    """The row of a record selected by :func:`meta_columns_sql` (columns in that order)."""
    n = len(META_COLUMNS)
    values = dict(zip(control, rec[n:n + len(control)], strict=False))
    revision = int(values.get("Revision", 0) or 0)
    updated_at = as_utc(rec[13])
    return SnapshotRow(
        service_id=rec[0], projector_name=rec[1], projector_version=rec[2], payload_type=rec[3],
        last_sortable_unique_id=rec[4] or "", events_processed=int(rec[5]), is_offloaded=bool(rec[6]),
        offload_key=rec[7], offload_provider=rec[8], original_size_bytes=int(rec[9] or 0),
        compressed_size_bytes=int(rec[10] or 0), safe_window_threshold=rec[11] or "",
        created_at=as_utc(rec[12]), updated_at=updated_at, build_source=rec[14] or "",
        build_host=rec[15], generation=int(values.get("Generation", 0) or 0),
        lifecycle=int(values.get("Lifecycle", 0) or 0), revision=revision,
        state_length=rec[-1], token=token_of(revision, updated_at, control))


def column_values(row: SnapshotRow, service_id: str, created: datetime, updated: datetime, control: list[str],
                  naive_ts: bool) -> dict:
    """Column -> value for writing ``row`` (metadata and the control columns the table has)."""
    values = {
        "ServiceId": service_id, "ProjectorName": row.projector_name,
        "ProjectorVersion": row.projector_version, "PayloadType": row.payload_type,
        "LastSortableUniqueId": row.last_sortable_unique_id, "EventsProcessed": int(row.events_processed),
        "IsOffloaded": bool(row.is_offloaded), "OffloadKey": row.offload_key,
        "OffloadProvider": row.offload_provider, "OriginalSizeBytes": int(row.original_size_bytes),
        "CompressedSizeBytes": int(row.compressed_size_bytes),
        "SafeWindowThreshold": row.safe_window_threshold,
        "CreatedAt": db_timestamp(created, naive_ts), "UpdatedAt": db_timestamp(updated, naive_ts),
        "BuildSource": row.build_source, "BuildHost": row.build_host,
        "Generation": int(row.generation), "Lifecycle": int(row.lifecycle),
    }
    return {k: v for k, v in values.items() if k in META_COLUMNS or k in control}


def db_timestamp(value: datetime, naive: bool) -> datetime:
    """A timestamp to write: aware UTC, or naive UTC for a "timestamp without time zone" column
    (an aware value would be shifted by the session's TimeZone)."""
    utc = as_utc(value)
    return utc.replace(tzinfo=None) if naive else utc
