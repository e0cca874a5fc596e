"""gc-blobs' safety net: the orphan audit's verdict, and the reference re-check before each delete.

The orphan audit (:func:`sekiops.ops.audit.audit_orphans`) lists blobs no row of any service
references, after a grace window, and certifies them only when every row decoded. Between the
audit and a delete a grain may persist a row pointing at an "orphan" (content-addressed keys:
the same bytes get the same key). So before the audit a :class:`ReferenceWatch` records every
row's compare-and-swap token (all services); before each delete it lists the rows again
(metadata only) and decodes every row whose token changed or that is new, adding their keys
(:func:`sekiops.ops.audit.row_references`) to the references. A row unchanged since the snapshot
was seen by the audit; a changed one is read here. A changed row that cannot be decoded stops
the deletes. Services: the ones named (``--services``), else those the audit's discovery finds;
when a store cannot tell, gc-blobs refuses rather than guess.
"""

from __future__ import annotations

from datetime import timedelta

from ...errors import ConcurrencyConflictError, GuardRefusedError, SekiopsError, UsageError
from ...state.base import iter_rows
from ..audit import audit_orphans, discover_service_ids, row_references


def service_ids(ep, services: list[str] | None) -> list[str]:
    """Every service whose rows may reference the blob container."""
    from ...format.record import check_service_id

    if services:
        return sorted({check_service_id(s) for s in services})
    found, _ = discover_service_ids(ep.state)
    if found is None:
        raise UsageError(f"{ep.state.location} cannot list its service ids; pass --services a,b,... naming every "
                         "service whose rows may use this blob container (gc-blobs never guesses)")
    return found


class ReferenceWatch:
    """Row tokens at a point in time, and the blob keys of rows written since."""

    def __init__(self, ep, services: list[str]):
        self.ep = ep
        self.services = services
        self.tokens: dict[tuple[str, str, str], str | None] = {}
        self.refs: dict[str, str] = {}
        self.row_count = 0

    def snapshot(self) -> None:
        self.tokens.clear()
        for sid in self.services:
            for row in iter_rows(self.ep.state_for(sid)):
                self.tokens[(sid, row.projector_name, row.projector_version)] = row.token
        self.row_count = len(self.tokens)

    def refresh(self) -> None:
        """Read the references of every row written since the snapshot (or the last refresh)."""
        for sid in self.services:
            store = self.ep.state_for(sid)
            for row in iter_rows(store):
                key = (sid, row.projector_name, row.projector_version)
                if key in self.tokens and self.tokens[key] == row.token:
                    continue
                for ref in self._references(store, row):
                    self.refs.setdefault(ref, f"{sid}/{row.projector_name}/{row.projector_version}")
                self.tokens[key] = row.token

    def _references(self, store, row) -> list[str]:
        refs: list[str] = []
        for _ in range(3):
            if row.is_offloaded and row.offload_key:
                refs.append(row.offload_key)  # kept even if the envelope then fails to decode
            try:
                return refs + row_references(store, self.ep.blob, row)
            except ConcurrencyConflictError:
                row = store.get(row.projector_name, row.projector_version)
                if row is None:
                    return refs
            except SekiopsError as exc:
                raise GuardRefusedError(f"{row.where} changed since the audit and cannot be decoded ({exc}); "
                                        "its references are unknown, so gc-blobs stops deleting") from None
        raise GuardRefusedError(f"{row.where} keeps changing; gc-blobs stops deleting")

    def referenced_by(self, key: str) -> str | None:
        return self.refs.get(key)


def run_audit(ep, services: list[str], grace_hours: float) -> dict:
    """The orphan audit over every service, on the endpoints' stores."""
    return audit_orphans(ep.state, ep.blob, services=services, state_for=ep.state_for,
                         grace=timedelta(hours=grace_hours))
