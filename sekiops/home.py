"""The operations folder: where notebook runs keep their journals, backups, audit records and scratch files.

``$SEKIOPS_HOME`` when set, else ``$XDG_DATA_HOME/sekiops``, else ``~/.local/share/sekiops``::

    migrations/   journals of migrations started from notebook 02 or its console, each with its
                  ``.backup`` folder (what a rollback puts back) and ``.audit-<run>.json`` records
    work/         scratch space of notebook runs (generated states, sample evidence), removed by them

Never the notebook's folder: a notebook run leaves no file next to the notebook (journals and
backups hold business data and must not be committed; keep ``SEKIOPS_HOME`` outside any
repository, or add it to ``.gitignore``). The folder is created private (0700).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def ops_home() -> Path:
    """The operations folder (created, 0700, on first use)."""
    env = os.environ.get("SEKIOPS_HOME", "").strip()
    if env:
        path = Path(env).expanduser()
    else:
        data = os.environ.get("XDG_DATA_HOME", "").strip()
        path = (Path(data).expanduser() if data else Path.home() / ".local" / "share") / "sekiops"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def migrations_dir() -> Path:
    path = ops_home() / "migrations"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def migration_journal(plan) -> str:
    """The journal of ``plan`` in :func:`migrations_dir`: one per kind, service(s) and parameters, so a
    rerun with the same parameters resumes, and changed parameters start a journal of their own."""
    where = plan.where
    name = f"{plan.kind}-{where['serviceId']}"
    if plan.kind == "copy" and where.get("target"):
        name += f"-to-{where['target']['serviceId']}"
    ident = json.dumps({"where": where, "params": plan.params}, sort_keys=True, default=str)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
    return str(migrations_dir() / f"{name}-{digest}.jsonl")


def scratch_dir(prefix: str) -> str:
    """A new private scratch folder under ``work/`` of the operations folder (the caller removes it)."""
    base = ops_home() / "work"
    base.mkdir(mode=0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=base)
