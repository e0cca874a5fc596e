"""gc-blobs' safety net: the orphan audit's verdict, and the reference re-check before each delete.

The orphan audit (:func:`sekiops.ops.audit.audit_orphans`) lists blobs no row of any service
references, after a grace window, and certifies them only when every row decoded. Between the
audit and a delete a grain may persist a row pointing at an "orphan" (content-addressed keys:
the same bytes get the same key). So before the audit a :class:`~sekiops.ops.audit.RowWatch`
records every row's compare-and-swap token (all services); right before each delete it lists
the rows again (metadata only) and decodes every row whose token changed or that is new. And
the delete itself is conditional on the exact version the audit certified (ETag, VersionId,
inode): a blob written again meanwhile is never deleted. Services: the ones named
(``--services``), else those the audit's discovery finds; when a store cannot tell, gc-blobs
refuses rather than guess.
"""

from __future__ import annotations

from datetime import timedelta

from ...errors import UsageError
from ...format.record import check_service_id
from ..audit import RowWatch, audit_orphans, discover_service_ids


def service_ids(ep, services: list[str] | None) -> list[str]:
    """Every service whose rows may reference the blob container."""
    if services:
        return sorted({check_service_id(s) for s in services})
    found, _ = discover_service_ids(ep.state)
    if found is None:
        raise UsageError(f"{ep.state.location} cannot list its service ids; pass --services a,b,... naming every "
                         "service whose rows may use this blob container (gc-blobs never guesses)")
    return found


def reference_watch(ep, services: list[str]) -> RowWatch:
    """A RowWatch over every service's rows (tokens recorded now; see sekiops.ops.audit)."""
    watch = RowWatch({sid: ep.state_for(sid) for sid in services}, ep.blob)
    watch.snapshot()
    return watch


def run_audit(ep, services: list[str], grace_hours: float, prefix: str = "") -> dict:
    """The orphan audit over every service, on the endpoints' stores."""
    return audit_orphans(ep.state, ep.blob, services=services, state_for=ep.state_for,
                         grace=timedelta(hours=grace_hours), prefix=prefix)
