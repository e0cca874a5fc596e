"""Capacity model: which projections would run a container out of memory, legacy vs streaming.

For each snapshot row of an inventory, predict the peak memory of a persist and of a restore
under the legacy (whole snapshot in memory, Sekiban's ``byte[]`` path) and the streaming path,
against a container memory limit::

    peak(op, mode) = app_baseline + a[op, mode] + b[op, mode] * payload_original_bytes

``app_baseline`` is what the process holds anyway (runtime, caches, the live object graphs of the
projections: a parameter, default 1.5 GiB). ``a`` and ``b`` are least-squares fits of measured
overheads (peak RSS minus RSS before the operation) against the uncompressed state size, one line
per op x mode, from a benchmark frame with columns ``op`` (persist|restore), ``mode``
(legacy|streaming), ``size_bytes``, ``overhead_bytes`` -- e.g. from :func:`measure_costs`.

Without a benchmark the built-in :data:`DEFAULT_BENCH` is used: the overheads sekiops itself
measured (:func:`measure_costs`, SQLite state store + local blob store, payloads offloaded as
Sekiban offloads them above 1,560,576 compressed bytes; CPython 3.11, isal gzip, Linux x86-64). The
legacy persist is Sekiban's byte[] path modelled buffer by buffer (UTF-16 strings included, every
buffer freed as early as .NET could: a lower bound), and so is the legacy restore (the whole
envelope, the Base64 payload string, ``DecompressToString``'s array and UTF-16 string; not the
projector's object graph). Measure your runtime and pass it as ``bench_df`` when the margin matters.

The state size is the row's ``payloadOriginalBytes`` when the inventory has it. Otherwise it is
estimated, and ``sizeSource`` says how: from ``payloadCompressedBytes`` x 4.5 (a typical gzip ratio
for projection JSON), or from the envelope size (``compressedSizeBytes``, which Sekiban sets to
the envelope length) x 3/4 (Base64) x 4.5. An envelope under 4 KiB may just point at an offloaded
payload, so its size is unknown: those rows get no prediction and the verdict ``unknown size``.

Scenarios in the table: ``legacy`` (legacy persist and restore), ``streaming`` (sekiops streaming
persist and restore) and ``mixed`` (Sekiban's grain at ``sekiban_version``: streaming persist, and
the grain's restore). The grain's restore depends on the version:

* before dcb-v10.23 it holds the whole payload and the object graph (buffered, the legacy restore
  cost) whatever the row;
* from dcb-v10.23 an *offloaded* payload restores streaming in the grain (small memory, the
  streaming restore cost) but needs free disk the size of the payload for its temp file
  ``{TMP}/sekiban-stream-restore-{guid}.payload`` (``restoreTempDiskBytes``); an *inline* Base64
  payload is still decoded whole in memory (buffered); and a projector whose registry lacks the
  streaming capability falls back to the buffered path (Sekiban logs ``Snapshot restore buffered
  fallback``; pass those projectors as ``buffered_projectors``).

``grainRestorePath`` says which path each row was predicted with. Every peak is an *estimate*:
``app_baseline`` plus costs fitted on sekiops' measurements of its own Python processes, where the
legacy persist and restore are modelled in Python from Sekiban's source, not measured on .NET
(:data:`MODEL_NOTE`); ``frame.attrs["inputs"]`` lists what the estimate rests on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ..errors import UsageError
from ..units import format_bytes

GiB = 2**30
DEFAULT_MEMORY_LIMIT = 4 * GiB
DEFAULT_APP_BASELINE = int(1.5 * GiB)
TYPICAL_GZIP_RATIO = 4.5
SMALL_ENVELOPE = 4096
ENVELOPE_OVERHEAD = 1024  # envelope JSON besides the Base64 payload (metadata fields)
OPS = ("persist", "restore")
MODES = ("legacy", "streaming")

#: the Sekiban release whose grain restores offloaded payloads streaming (dcb-v10.23)
STREAMING_RESTORE_VERSION = (10, 23)
#: the version assumed when none is given: the current release
DEFAULT_SEKIBAN_VERSION = "10.23"
#: how every modelled number is labelled
MODEL_NOTE = "modelled in Python from Sekiban's source, not measured on .NET"


def parse_sekiban_version(value) -> tuple[int, int]:
    """``"10.23"``, ``"dcb-v10.23"``, ``"v10.22.1"``, ``(10, 23)`` -> ``(major, minor)``; None -> the default."""
    if value is None or (isinstance(value, str) and not value.strip()):
        value = DEFAULT_SEKIBAN_VERSION
    if isinstance(value, (tuple, list)) and len(value) >= 2:
        return int(value[0]), int(value[1])
    m = re.fullmatch(r"\s*(?:dcb-)?v?(\d+)\.(\d+)(?:\.\d+)*(?:[-+][0-9A-Za-z.-]+)?\s*", str(value))
    if not m:
        raise UsageError(f"Sekiban version {value!r} is not a version (use e.g. 10.23 or dcb-v10.22)")
    return int(m.group(1)), int(m.group(2))


def sekiban_version_text(value) -> str:
    major, minor = parse_sekiban_version(value)
    return f"dcb-v{major}.{minor}"


def streams_offloaded_restore(version) -> bool:
    """Whether the grain of this Sekiban version restores an offloaded payload streaming (10.23+)."""
    return parse_sekiban_version(version) >= STREAMING_RESTORE_VERSION

#: Overheads measured by :func:`measure_costs` (see the module docstring for the setup). Rows:
#: (op, mode, size_bytes = uncompressed state JSON, overhead_bytes = peak RSS - idle baseline).
#: Measured 2026-11-30 with ``measure_costs()`` (32, 96, 192, 384 MiB) on a 2-vCPU Linux x86-64
#: container (CPython 3.11.7, isal gzip, SQLite + local blob store). The fitted slopes: persist
#: legacy ~3.0 x state size, restore legacy ~3.2 x, both streaming paths flat (~6-8 MB).
DEFAULT_BENCH_ROWS: list[tuple[str, str, int, int]] = [
    ("persist", "legacy", 33553838, 105836544),
    ("restore", "legacy", 33553838, 114388992),
    ("persist", "streaming", 33553838, 6352896),
    ("restore", "streaming", 33553838, 5877760),
    ("persist", "legacy", 100663163, 306143232),
    ("restore", "legacy", 100663163, 330604544),
    ("persist", "streaming", 100663163, 7680000),
    ("restore", "streaming", 100663163, 6139904),
    ("persist", "legacy", 201325383, 609349632),
    ("restore", "legacy", 201325383, 654254080),
    ("persist", "streaming", 201325383, 6733824),
    ("restore", "streaming", 201325383, 7356416),
    ("persist", "legacy", 402653073, 1211084800),
    ("restore", "legacy", 402653073, 1303367680),
    ("persist", "streaming", 402653073, 7987200),
    ("restore", "streaming", 402653073, 6221824),
]

#: Scenario name -> (persist mode, restore mode).
SCENARIOS = {"legacy": ("legacy", "legacy"), "streaming": ("streaming", "streaming"),
             "mixed": ("streaming", "legacy")}


def default_bench():
    """The built-in benchmark frame (measured; see :data:`DEFAULT_BENCH_ROWS`)."""
    import pandas as pd

    return pd.DataFrame(DEFAULT_BENCH_ROWS, columns=["op", "mode", "size_bytes", "overhead_bytes"])


# --- fitting ----------------------------------------------------------------------------------


def fit_costs(bench_df) -> dict[tuple[str, str], tuple[float, float]]:
    """Least-squares ``overhead = a + b * size`` per (op, mode): ``{(op, mode): (a, b)}``.

    Lines are kept physical: a negative slope is fitted as a constant (the mean), a negative
    intercept as a line through the origin. One size only: a line through the origin.
    """
    import numpy as np

    frame = _bench_frame(bench_df)
    fits: dict[tuple[str, str], tuple[float, float]] = {}
    for (op, mode), g in frame.groupby(["op", "mode"], sort=False):
        x = g["size_bytes"].to_numpy(dtype=float)
        y = g["overhead_bytes"].to_numpy(dtype=float)
        if len(np.unique(x)) < 2:
            b = float((x * y).sum() / (x * x).sum()) if (x * x).sum() > 0 else 0.0
            a = 0.0 if b > 0 else float(y.mean())
            b = max(b, 0.0)
        else:
            A = np.vstack([np.ones_like(x), x]).T
            (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
            a, b = float(a), float(b)
            if b < 0:
                a, b = float(y.mean()), 0.0
            elif a < 0:
                a, b = 0.0, float((x * y).sum() / (x * x).sum())
        fits[(str(op), str(mode))] = (max(a, 0.0), b)
    return fits


def _bench_frame(bench_df):
    import pandas as pd

    if bench_df is None:
        return default_bench()
    frame = pd.DataFrame(bench_df).copy()
    cols = {c.lower(): c for c in frame.columns}
    if "overhead_bytes" not in cols and {"peak_rss_bytes", "start_rss_bytes"} <= set(cols):
        frame["overhead_bytes"] = frame[cols["peak_rss_bytes"]] - frame[cols["start_rss_bytes"]]
        cols["overhead_bytes"] = "overhead_bytes"
    missing = [c for c in ("op", "mode", "size_bytes", "overhead_bytes") if c not in cols]
    if missing:
        raise UsageError(f"benchmark frame lacks column(s) {', '.join(missing)}; expected op, mode, size_bytes, "
                         "overhead_bytes")
    frame = frame.rename(columns={cols[c]: c for c in ("op", "mode", "size_bytes", "overhead_bytes")})
    if "ok" in cols:  # sekiops.ops.bench frames: failed runs have no meaningful overhead
        frame = frame[frame[cols["ok"]].fillna(False).astype(bool)]
    frame["op"] = frame["op"].astype(str).str.strip().str.lower()
    frame["mode"] = frame["mode"].astype(str).str.strip().str.lower()
    frame["size_bytes"] = pd.to_numeric(frame["size_bytes"], errors="coerce")
    frame["overhead_bytes"] = pd.to_numeric(frame["overhead_bytes"], errors="coerce")
    frame = frame.dropna(subset=["size_bytes", "overhead_bytes"])
    frame = frame[frame["op"].isin(OPS) & frame["mode"].isin(MODES)]
    if frame.empty:
        raise UsageError("benchmark frame has no usable rows (op persist|restore, mode legacy|streaming, numbers)")
    return frame


# --- the table --------------------------------------------------------------------------------


def _size_of(row: dict) -> tuple[float | None, str]:
    def num(name):
        raw = row.get(name)
        try:
            v = float(raw) if raw is not None else math.nan
        except (TypeError, ValueError):
            return None
        return None if math.isnan(v) else v

    original = num("payloadOriginalBytes")
    if original is not None and original > 0:
        return original, "payloadOriginalBytes"
    compressed = num("payloadCompressedBytes")
    if compressed is not None and compressed > 0:
        return compressed * TYPICAL_GZIP_RATIO, f"estimated: payloadCompressedBytes x {TYPICAL_GZIP_RATIO}"
    envelope = num("compressedSizeBytes")
    if envelope is None or envelope <= 0:
        envelope = num("storedBytes")
    if envelope is None or envelope <= 0:
        return None, "unknown: no size columns"
    offloaded = row.get("payloadOffloaded")
    if envelope < SMALL_ENVELOPE and offloaded is not False and str(offloaded).lower() != "false":
        return None, "unknown: envelope < 4 KiB may point at an offloaded payload; give payloadOriginalBytes"
    payload = max(envelope - ENVELOPE_OVERHEAD, 0) * 3 / 4
    return payload * TYPICAL_GZIP_RATIO, f"estimated: envelope x 3/4 x {TYPICAL_GZIP_RATIO}"


def capacity_table(inventory_df, bench_df=None, memory_limit: int = DEFAULT_MEMORY_LIMIT,
                   app_baseline: int = DEFAULT_APP_BASELINE, include_tombstoned: bool = False,
                   sekiban_version=None, buffered_projectors=()):
    """Predicted peak memory per snapshot row, legacy vs streaming, against ``memory_limit``.

    ``inventory_df``: rows as ``sekiops inventory --format json`` gives them (``projectorName``,
    ``projectorVersion``, ``compressedSizeBytes`` ..., optionally ``payloadOriginalBytes``).
    ``bench_df``: measured overheads (columns ``op, mode, size_bytes, overhead_bytes``); None =
    :data:`DEFAULT_BENCH_ROWS`. Tombstoned rows (never restored by Sekiban) are left out unless asked.

    Columns: the row's identity, ``payloadOriginalBytes`` (used) and ``sizeSource``, then
    ``{persist,restore}{Legacy,Streaming}PeakBytes``, per scenario (``legacy``, ``streaming``,
    ``mixed`` = Sekiban's grain at ``sekiban_version``, see the module docstring)
    ``<scenario>PeakBytes``, ``<scenario>OOM`` and ``<scenario>HeadroomBytes`` (limit - peak;
    negative = OOM), ``grainRestorePath`` and ``restoreTempDiskBytes`` (10.23+, offloaded payloads),
    ``streamingSavesBytes`` (legacy peak - streaming peak) and a ``verdict``. Sorted by legacy
    peak, largest first. ``frame.attrs`` holds the parameters, the fitted lines and
    ``maxFittingBytes``: the largest state each scenario fits.
    """
    import pandas as pd

    if memory_limit <= 0:
        raise UsageError("memory limit must be positive")
    if app_baseline < 0:
        raise UsageError("app baseline must not be negative")
    fits = fit_costs(bench_df) if bench_df is not None else fit_costs(default_bench())
    version = parse_sekiban_version(sekiban_version)
    streams = version >= STREAMING_RESTORE_VERSION
    buffered = {_name_key(n) for n in (buffered_projectors or ())}
    notes = []
    if bench_df is not None:
        defaults = fit_costs(default_bench())
        for key in [(o, m) for o in OPS for m in MODES]:
            if key not in fits:
                fits[key] = defaults[key]
                notes.append(f"{key[0]}/{key[1]}: not in the benchmark frame, built-in measured default used")
    inv = pd.DataFrame(inventory_df)
    records = inv.to_dict("records")
    out = []
    for row in records:
        lifecycle = str(row.get("lifecycle", "active") or "active").lower()
        if lifecycle in ("tombstoned", "1") and not include_tombstoned:
            continue
        size, source = _size_of(row)
        rec = {"serviceId": row.get("serviceId"), "projectorName": row.get("projectorName"),
               "projectorVersion": row.get("projectorVersion"), "lifecycle": lifecycle,
               "payloadOriginalBytes": size, "sizeSource": source}
        peaks = {}
        for op in OPS:
            for mode in MODES:
                a, b = fits[(op, mode)]
                peak = None if size is None else app_baseline + a + b * size
                peaks[(op, mode)] = peak
                rec[f"{op}{mode.capitalize()}PeakBytes"] = peak
        path, disk = _grain_restore(row, size, streams, buffered)
        rec["grainRestorePath"] = path
        rec["restoreTempDiskBytes"] = disk
        for name, (pmode, rmode) in SCENARIOS.items():
            if name == "mixed" and path.startswith("streaming"):
                rmode = "streaming"
            p, r = peaks[("persist", pmode)], peaks[("restore", rmode)]
            peak = None if p is None or r is None else max(p, r)  # both known or both not (one size)
            rec[f"{name}PeakBytes"] = peak
            rec[f"{name}OOM"] = None if peak is None else bool(peak > memory_limit)
            rec[f"{name}HeadroomBytes"] = None if peak is None else memory_limit - peak
        lp, sp = rec["legacyPeakBytes"], rec["streamingPeakBytes"]
        rec["streamingSavesBytes"] = None if lp is None else lp - sp
        rec["verdict"] = _verdict(rec)
        out.append(rec)
    frame = pd.DataFrame.from_records(out, columns=_COLUMNS)
    for c in _COLUMNS:
        if c.endswith("Bytes"):
            frame[c] = pd.to_numeric(frame[c], errors="coerce").round().astype("Int64")
        elif c.endswith("OOM"):
            frame[c] = frame[c].astype("boolean")
    if len(frame):
        frame = frame.sort_values("legacyPeakBytes", ascending=False, na_position="last", kind="stable")
        frame = frame.reset_index(drop=True)
    frame.attrs.update({
        "memoryLimitBytes": int(memory_limit), "appBaselineBytes": int(app_baseline),
        "fits": {f"{o}/{m}": {"a": a, "b": b} for (o, m), (a, b) in fits.items()},
        "benchSource": "given" if bench_df is not None else "built-in measured default (DEFAULT_BENCH_ROWS)",
        "sekibanVersion": f"dcb-v{version[0]}.{version[1]}",
        "grainStreamsOffloadedRestore": streams,
        "inputs": {"memory limit": int(memory_limit), "app baseline": int(app_baseline),
                   "Sekiban version": f"dcb-v{version[0]}.{version[1]}",
                   "costs": ("fitted on the given benchmark" if bench_df is not None else
                             "fitted on sekiops' built-in measurements (DEFAULT_BENCH_ROWS)"),
                   "legacy persist and restore": MODEL_NOTE},
        "maxFittingBytes": max_fitting_sizes(fits, memory_limit, app_baseline),
        "notes": notes,
    })
    return frame


_COLUMNS = ["serviceId", "projectorName", "projectorVersion", "lifecycle", "payloadOriginalBytes", "sizeSource",
            "persistLegacyPeakBytes", "persistStreamingPeakBytes", "restoreLegacyPeakBytes",
            "restoreStreamingPeakBytes",
            "legacyPeakBytes", "legacyOOM", "legacyHeadroomBytes",
            "streamingPeakBytes", "streamingOOM", "streamingHeadroomBytes",
            "mixedPeakBytes", "mixedOOM", "mixedHeadroomBytes", "grainRestorePath", "restoreTempDiskBytes",
            "streamingSavesBytes", "verdict"]


def _name_key(name) -> str:
    s = re.sub(r"[^0-9a-z]", "", str(name or "").lower())
    return s[:-len("projector")] if s.endswith("projector") and len(s) > len("projector") else s


def _payload_offloaded(row: dict) -> bool | None:
    v = row.get("payloadOffloaded")
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.strip().lower())
    try:
        return bool(v)
    except (TypeError, ValueError):  # pandas NA
        return None


def _grain_restore(row: dict, size, streams: bool, buffered: set) -> tuple[str, float | None]:
    """(how Sekiban's grain restores this row, temp-file disk it needs) for the ``mixed`` scenario."""
    if not streams:
        return "buffered (before dcb-v10.23)", None
    if _name_key(row.get("projectorName")) in buffered:
        return "buffered (registry lacks streaming: fallback logged)", None
    offloaded = _payload_offloaded(row)
    if offloaded:
        declared = row.get("payloadCompressedBytes")
        disk: float | None
        try:
            disk = None if declared is None else float(declared)
        except (TypeError, ValueError):
            disk = None
        if disk is None or disk != disk or disk <= 0:
            disk = None if size is None else size / TYPICAL_GZIP_RATIO
        return "streaming (offloaded payload, temp file)", disk
    return "buffered (inline Base64 payload)", None


def _verdict(rec: dict) -> str:
    if rec["legacyOOM"] is None:
        return "unknown size"
    legacy, streaming, mixed = rec["legacyOOM"], rec["streamingOOM"], rec["mixedOOM"]
    if not legacy:
        return "fits"
    if streaming:
        return "OOM under legacy and streaming"
    if mixed:
        return "OOM under legacy; Sekiban's grain still OOMs on restore; fits fully streaming"
    return "OOM under legacy; fits streaming"


def max_fitting_sizes(fits: dict, memory_limit: int = DEFAULT_MEMORY_LIMIT,
                      app_baseline: int = DEFAULT_APP_BASELINE) -> dict[str, float | None]:
    """The largest state (uncompressed bytes) each scenario keeps under the limit (inf: no size limit)."""
    out: dict[str, float | None] = {}
    room = memory_limit - app_baseline
    for name, (pmode, rmode) in SCENARIOS.items():
        sizes = []
        for op, mode in (("persist", pmode), ("restore", rmode)):
            a, b = fits[(op, mode)]
            if room - a < 0:
                sizes.append(0.0)
            elif b <= 0:
                sizes.append(math.inf)
            else:
                sizes.append((room - a) / b)
        out[name] = min(sizes)
    return out


# --- measuring --------------------------------------------------------------------------------


def measure_costs(sizes: Sequence[int | str] = (32 * 2**20, 96 * 2**20, 192 * 2**20, 384 * 2**20),
                  workdir: str | None = None, python: str | None = None, progress=None):
    """Measure persist/restore overheads, legacy and streaming, for :func:`capacity_table`.

    A thin use of :func:`sekiops.ops.bench.run_benchmark` (one fresh process per point, embedded
    SQLite + local blob store, overhead = peak RSS - idle baseline); returns its frame.
    """
    from .bench import run_benchmark  # the benchmark harness loads only to measure costs

    return run_benchmark(sizes=sizes, modes=MODES, ops=OPS, workdir=workdir, python=python, codec=False,
                         cleanup=True, progress=progress)


def estimate_caption(frame) -> str:
    """One sentence saying that the table's peaks are estimates and what they rest on (its inputs)."""
    a = getattr(frame, "attrs", {}) or {}
    inputs = a.get("inputs") or {}
    version = inputs.get("Sekiban version") or sekiban_version_text(None)
    grain = ("offloaded payloads restore streaming in the grain (they need free disk the size of the payload), "
             "inline Base64 payloads are decoded whole in memory" if a.get("grainStreamsOffloadedRestore", True)
             else "the grain's restore holds the whole payload and object graph")
    return (f"Estimates, not measurements: peak = app baseline {format_bytes(a.get('appBaselineBytes'))} + a cost "
            f"per operation fitted against the state size ({inputs.get('costs', 'built-in measurements')}); the "
            f"legacy byte[] persist and restore costs are {MODEL_NOTE}. Memory limit "
            f"{format_bytes(a.get('memoryLimitBytes'))}. Sekiban version assumed: {version} ({grain}).")
