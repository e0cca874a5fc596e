"""Container memory: the limit, restarts per sample, one series per sample time, the first breach."""

from __future__ import annotations

from .base import GiB, MiB


def infer_memory_limit(memory) -> int | None:
    """The limit implied by working set / memory percentage (median), snapped to 1/4 GiB when close."""
    import numpy as np

    if memory is None or not len(memory) or "memory_percent" not in memory or "working_set_bytes" not in memory:
        return None
    both = memory.dropna(subset=["working_set_bytes", "memory_percent"])
    both = both[(both["memory_percent"] > 1) & (both["working_set_bytes"] > 0)]
    if both.empty:
        return None
    limit = float(np.median(both["working_set_bytes"] * 100.0 / both["memory_percent"]))
    quarter = GiB / 4
    snapped = round(limit / quarter) * quarter
    if snapped and abs(snapped - limit) / snapped < 0.02:
        return int(snapped)
    return int(round(limit / MiB) * MiB)


def restart_increments(restarts, cumulative: bool | None = None):
    """Restarts per sample from an exported restart count (see the module docstring)."""
    import pandas as pd

    s = pd.to_numeric(restarts, errors="coerce")
    if cumulative is None:
        present = s.dropna()
        diffs = present.diff().dropna()
        nonzero = int((present > 0).sum())
        cumulative = bool(len(present) > 1 and (diffs >= 0).all() and nonzero > int((diffs > 0).sum())
                          and present.iloc[-1] > 0)
    if cumulative:
        filled = s.ffill().fillna(0)
        inc = filled.diff().fillna(0).clip(lower=0)
        return inc
    return s.fillna(0).clip(lower=0)


def memory_series(memory, memory_limit: int, restarts_cumulative: bool | None = None):
    """One row per sample time (replicas: the largest working set, restarts added): ``time``,
    ``working_set_bytes``, ``memory_percent`` (of ``memory_limit``, filled both ways), ``restarts``."""
    import pandas as pd

    cols = ["time", "working_set_bytes", "memory_percent", "restarts"]
    if memory is None or not len(memory):
        return pd.DataFrame(columns=cols)
    m = memory.copy()
    if "replica" in m.columns:
        m["restarts"] = m.groupby("replica", dropna=False)["restarts"].transform(
            lambda s: restart_increments(s, restarts_cumulative))
        m = m.groupby("time", as_index=False).agg(working_set_bytes=("working_set_bytes", "max"),
                                                  memory_percent=("memory_percent", "max"),
                                                  restarts=("restarts", "sum"))
    else:
        m = m.groupby("time", as_index=False).agg(working_set_bytes=("working_set_bytes", "max"),
                                                  memory_percent=("memory_percent", "max"),
                                                  restarts=("restarts", "max"))
        m["restarts"] = restart_increments(m["restarts"], restarts_cumulative).to_numpy()
    ws = m["working_set_bytes"].astype(float)
    pct = m["memory_percent"].astype(float)
    m["working_set_bytes"] = ws.fillna(pct * memory_limit / 100.0)
    m["memory_percent"] = pct.fillna(ws * 100.0 / memory_limit)
    m = m.dropna(subset=["working_set_bytes"], how="all")
    return m[cols].sort_values("time").reset_index(drop=True)




def memory_breach(mem, before=None, threshold: float = 90.0):
    """The first episode of memory at ``threshold`` % of the limit or more (before ``before``, when
    given): ``(first sample, highest sample of the episode)``; the episode ends at the first restart
    or when memory falls under half the threshold. Without such a sample: the highest sample."""
    if mem is None or not len(mem):
        return None
    scope = mem if before is None else mem[mem["time"] < before]
    if not len(scope):
        scope = mem
    hot = scope[scope["memory_percent"] >= threshold]
    if hot.empty:
        top = scope.loc[scope["memory_percent"].idxmax()]
        return top, top
    first = hot.iloc[0]
    rest = scope[scope["time"] >= first["time"]]
    end = len(rest)
    for i, (_, r) in enumerate(rest.iterrows()):
        if i and (r["restarts"] > 0 or r["memory_percent"] < threshold / 2):
            end = i
            break
    episode = rest.iloc[:end]
    return first, episode.loc[episode["memory_percent"].idxmax()]

