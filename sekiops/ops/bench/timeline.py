"""Memory over time of one persist, modelled Sekiban byte[] path vs sekiops streaming.

Each persist runs in a fresh process sampled every ``interval`` seconds
(:func:`sekiops.metrics.sample_command`); the modelled path runs as the benchmark's child
(``python -m sekiops.ops.bench modelled-persist``), the streaming one as ``sekiops persist``.
The modelled path is Sekiban's byte[] path modelled in Python from Sekiban's source, not measured
on .NET: its curve shows which buffers are alive together, not .NET's timing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from ...format.payload import gzip_backend
from ...metrics import sample_command
from ...units import parse_size
from . import commands
from .inputs import generate_state, package_root


def measure_persist_memory(size, workdir: str, modes: Sequence[str] = commands.MODES, interval: float = 0.01,
                           python: str | None = None, timeout: float | None = 600):
    """Persist one generated state of ``size`` once per mode, each in a fresh sampled process.

    Stores: a SQLite file and a blob directory in ``workdir`` (the payload is offloaded above
    Sekiban's threshold). Returns ``(frame, summaries)``: ``frame`` has ``t_s``, ``rss_bytes``,
    ``label`` (the mode); ``summaries`` maps mode -> the command's JSON summary plus ``peak_bytes``
    (the larger of the sampled RSS and the command's own in-process peak), ``returncode``,
    ``state_bytes`` and, for the modelled path, ``modelled: True``.
    """
    size = parse_size(size, what="state size", allow_zero=False)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    state_path = os.path.join(workdir, f"state-{size}.json")
    generate_state(state_path, size)
    env = dict(os.environ)
    for name in ("SEKIOPS_STATE_URL", "SEKIOPS_BLOB_URL", "SEKIOPS_FAILPOINTS"):
        env.pop(name, None)
    root = package_root()
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["SEKIOPS_SPOOL_DIR"] = os.path.join(workdir, "spool")
    stores = ["--state", "sqlite:///" + os.path.join(workdir, "state.db"), "--blob", os.path.join(workdir, "blobs")]
    import pandas as pd

    frames, summaries = [], {}
    for mode in modes:
        out_path = os.path.join(workdir, f"persist-{mode}.json")
        argv = commands.persist_argv(python or sys.executable, mode, stores, f"MemoryTimeline-{mode}", state_path,
                                     gzip_backend().name)
        with open(out_path, "wb") as out, open(out_path + ".err", "wb") as err:
            code, frame, _peak = sample_command(argv, interval=interval, label=mode, timeout=timeout, stdout=out,
                                                stderr=err, env=env, cwd=workdir)
        try:
            with open(out_path) as f:
                summary = json.load(f)
        except (OSError, ValueError):
            with open(out_path + ".err", errors="replace") as f:
                summary = {"error": f.read().strip()[-500:]}
        # the sampled RSS, not wait4's ru_maxrss: a child inherits its parent's high-water mark as the
        # floor of ru_maxrss (see sekiops.ops.bench.measure), and the parent may be a notebook kernel
        sampled = int(frame["rss_bytes"].max()) if len(frame) else 0
        own = summary.get("peak_rss_bytes") if isinstance(summary.get("peak_rss_bytes"), int) else 0
        summary.update(peak_bytes=max(sampled, own or 0), returncode=code, state_bytes=os.path.getsize(state_path),
                       modelled=mode == commands.MODELLED)
        summaries[mode] = summary
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), summaries
