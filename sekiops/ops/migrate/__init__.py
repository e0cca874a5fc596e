"""Guarded migrations of Sekiban snapshot rows (issue 7): plan first, dry-run by default.

Kinds: ``offload`` (big inline envelopes to blobs, record or payload level), ``reencode`` (v9 gzip
and legacy ``payloadJson`` envelopes rewritten as v10, payload unchanged), ``copy`` (one
deployment/service to another, the source never touched), ``gc-blobs`` (delete certified orphan
blobs), ``rekey`` (move a deployment's blobs under the blob URL's ``?prefix=``, as Sekiban 10.23
writes them; the old keys stay for gc-blobs). Every migration is a list of per-row steps run by
one runner with the same guards: canary, rate limit, bounded backoff, pause/stop flag files, a
checkpoint journal (resume and rollback), compare-and-swap on every write, verification through
the normal restore path, and an audit record per run. Modules:

* :mod:`.endpoints` — which stores a migration reads and writes, opened from URLs;
* :mod:`.plan` — the plan model and one planner per kind; :mod:`.estimate` — bytes, RU, time;
* :mod:`.steps` — per-row step executors; :mod:`.verify` — payload digests through restore;
* :mod:`.journal`, :mod:`.backup` — checkpoint journal and content-addressed backups;
* :mod:`.guards` — rate limit, backoff, pause/stop controls; :mod:`.auditlog` — the audit record;
* :mod:`.runner` — runs a plan; :mod:`.rollback` — puts journalled rows back;
* :mod:`.gcscan` — the reference re-check that gc-blobs runs before each delete.

Library use::

    from sekiops.ops.migrate import open_endpoints, make_plan, run_plan, RunOptions
    ep = open_endpoints("offload", state_url, blob_url)
    plan = make_plan("offload", ep, threshold=1_000_000)
    result = run_plan(plan, ep, RunOptions(execute=True, journal="offload.jsonl", canary=10))
"""

from __future__ import annotations

import importlib

KINDS = ("offload", "reencode", "copy", "gc-blobs", "rekey")

_EXPORTS = {
    "open_endpoints": ".endpoints",
    "Endpoints": ".endpoints",
    "make_plan": ".plan",
    "Plan": ".plan",
    "PlanItem": ".plan",
    "run_plan": ".runner",
    "RunOptions": ".runner",
    "RunResult": ".runner",
    "plan_rollback": ".rollback",
    "Controls": ".guards",
}

__all__ = sorted(_EXPORTS) + ["KINDS"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sekiops.ops.migrate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
