"""Snapshot metrics: OpenTelemetry export, an in-process record, and a memory timeline sampler.

Sekiban's design asked for ``projection_snapshot_tempfile_bytes``, ``projection_snapshot_upload_bytes``,
``projection_snapshot_offload_ratio`` and ``projection_persist_peak_managed_memory_bytes`` plus build and
upload times; Sekiban logs them but never exports them (format reference, section 7). sekiops exports
them for its own persists and restores:

    from sekiops.metrics import record_persist, record_restore, collected_metrics
    result = sekiops.persist_stream(state, blob, f, ...)
    # the pipeline calls record_persist / record_restore itself after every persist and restore
    collected_metrics()            # pandas DataFrame, one row per measurement

Instruments (all histograms, plus two counters), attributes ``projector``, ``mode``, ``backend``:

==============================================  =====  ===================================================
name                                            unit   value
==============================================  =====  ===================================================
projection_snapshot_tempfile_bytes              By     PersistResult.tempfile_bytes (spool bytes)
projection_snapshot_upload_bytes                By     PersistResult.upload_bytes (bytes sent to blobs)
projection_snapshot_offload_ratio               1      PersistResult.offload_ratio (uploaded / stored)
projection_persist_peak_managed_memory_bytes    By     PersistResult.peak_rss_bytes (process RSS peak:
                                                       Python has no managed heap; RSS is what OOMs)
projection_snapshot_build_ms                    ms     PersistResult.build_ms
projection_snapshot_upload_ms                   ms     PersistResult.upload_ms
projection_snapshot_persist_ms                  ms     PersistResult.total_ms
projection_snapshot_original_bytes              By     PersistResult.original_size_bytes (state JSON)
projection_snapshot_persist_count               1      counter, +1 per persist
projection_restore_tempfile_bytes               By     RestoreResult.tempfile_bytes
projection_restore_download_bytes               By     RestoreResult.download_bytes (bytes read from blobs)
projection_restore_peak_memory_bytes            By     RestoreResult.peak_rss_bytes
projection_restore_read_ms                      ms     RestoreResult.read_ms (envelope read + Base64 decode)
projection_restore_decode_ms                    ms     RestoreResult.decode_ms (payload gunzip to output)
projection_restore_ms                           ms     RestoreResult.total_ms
projection_restore_original_bytes               By     RestoreResult.original_size_bytes (bytes written)
projection_snapshot_restore_count               1      counter, +1 per restore
==============================================  =====  ===================================================

OpenTelemetry is imported only when it is in use, so the CLI does not pay for it: when an SDK or
instrumentation has already imported ``opentelemetry.metrics``, when an ``OTEL_*`` exporter
variable is set, when ``SEKIOPS_OTEL=1``, or when a recorder is given a ``meter_provider``.
``SEKIOPS_OTEL=0`` turns the export off. Without an SDK the API is a no-op, as OpenTelemetry
intends. The in-process record (bounded, newest kept) needs nothing and is always kept.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("sekiops.metrics")

METER_NAME = "sekiops"

#: (instrument name, unit, description, result attribute) for persists.
PERSIST_INSTRUMENTS = [
    ("projection_snapshot_tempfile_bytes", "By", "bytes written to snapshot temp files", "tempfile_bytes"),
    ("projection_snapshot_upload_bytes", "By", "bytes uploaded to blob storage", "upload_bytes"),
    ("projection_snapshot_offload_ratio", "1", "uploaded bytes / stored bytes", "offload_ratio"),
    ("projection_persist_peak_managed_memory_bytes", "By", "peak process memory (RSS) during the persist",
     "peak_rss_bytes"),
    ("projection_snapshot_build_ms", "ms", "time to build the payload and envelope", "build_ms"),
    ("projection_snapshot_upload_ms", "ms", "time spent uploading blobs", "upload_ms"),
    ("projection_snapshot_persist_ms", "ms", "whole persist time", "total_ms"),
    ("projection_snapshot_original_bytes", "By", "projector state JSON bytes", "original_size_bytes"),
]
#: (instrument name, unit, description, result attribute) for restores.
RESTORE_INSTRUMENTS = [
    ("projection_restore_tempfile_bytes", "By", "bytes written to restore temp files", "tempfile_bytes"),
    ("projection_restore_download_bytes", "By", "bytes read from blob storage", "download_bytes"),
    ("projection_restore_peak_memory_bytes", "By", "peak process memory (RSS) during the restore",
     "peak_rss_bytes"),
    ("projection_restore_read_ms", "ms", "time to read the envelope", "read_ms"),
    ("projection_restore_decode_ms", "ms", "time to decode the payload to the output", "decode_ms"),
    ("projection_restore_ms", "ms", "whole restore time", "total_ms"),
    ("projection_restore_original_bytes", "By", "projector state bytes written", "original_size_bytes"),
]
PERSIST_COUNTER = "projection_snapshot_persist_count"
RESTORE_COUNTER = "projection_snapshot_restore_count"

COLUMNS = ["seq", "time", "op", "projector", "version", "mode", "backend", "metric", "value", "unit"]
_OTEL_ENV = ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


def otel_in_use() -> bool:
    """Whether exporting through OpenTelemetry is worth its import (see the module docstring)."""
    flag = os.environ.get("SEKIOPS_OTEL", "").strip().lower()
    if flag in ("0", "false", "off", "no"):
        return False
    if flag in ("1", "true", "on", "yes"):
        return True
    return "opentelemetry.metrics" in sys.modules or any(os.environ.get(v) for v in _OTEL_ENV)


class MetricsRecorder:
    """Records persist/restore results as OpenTelemetry measurements and in-process rows.

    ``meter_provider``: an SDK MeterProvider (tests, notebooks); None = the global provider, used
    only when :func:`otel_in_use`. ``keep``: how many in-process rows to keep (newest).
    """

    def __init__(self, meter_provider=None, keep: int = 100_000, export: bool | None = None):
        self._provider = meter_provider
        self._export = export
        self._instruments: dict[str, Any] | None = None
        self._rows: collections.deque = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._seq = 0

    # --- OpenTelemetry -----------------------------------------------------------------------

    def _exporting(self) -> bool:
        if self._export is not None:
            return self._export
        return self._provider is not None or otel_in_use()

    def _meter_instruments(self) -> dict[str, Any]:
        if self._instruments is None:
            from opentelemetry import metrics

            meter = (self._provider.get_meter(METER_NAME) if self._provider is not None
                     else metrics.get_meter(METER_NAME))
            inst: dict[str, Any] = {}
            for name, unit, desc, _ in PERSIST_INSTRUMENTS + RESTORE_INSTRUMENTS:
                inst[name] = meter.create_histogram(name, unit=unit, description=desc)
            inst[PERSIST_COUNTER] = meter.create_counter(PERSIST_COUNTER, unit="1", description="snapshot persists")
            inst[RESTORE_COUNTER] = meter.create_counter(RESTORE_COUNTER, unit="1", description="snapshot restores")
            self._instruments = inst
        return self._instruments

    # --- recording ---------------------------------------------------------------------------

    def record_persist(self, result, *, backend: str | None = None, attributes: dict | None = None) -> list[dict]:
        """Record one :class:`~sekiops.pipeline.persist.PersistResult` (or any object with its fields)."""
        mode = _field(result, "mode") or "streaming"
        return self._record("persist", result, mode, backend, attributes, PERSIST_INSTRUMENTS, PERSIST_COUNTER)

    def record_restore(self, result, *, backend: str | None = None, mode: str | None = None,
                       attributes: dict | None = None) -> list[dict]:
        """Record one :class:`~sekiops.pipeline.restore.RestoreResult`; sekiops restores always stream."""
        mode = mode or _field(result, "mode") or "streaming"
        return self._record("restore", result, mode, backend, attributes, RESTORE_INSTRUMENTS, RESTORE_COUNTER)

    def _record(self, op, result, mode, backend, attributes, table, counter) -> list[dict]:
        projector = str(_field(result, "projector_name") or "")
        version = _field(result, "projector_version")
        backend = backend or _field(result, "backend") or "unknown"
        attrs = {"projector": projector, "mode": str(mode), "backend": str(backend)}
        if attributes:
            attrs.update({str(k): v for k, v in attributes.items() if v is not None})
        now = _dt.datetime.now(_dt.UTC)
        with self._lock:
            self._seq += 1
            seq = self._seq
        rows = []
        for name, unit, _desc, field in table:
            value = _field(result, field)
            if value is None:
                continue
            rows.append({"seq": seq, "time": now, "op": op, "projector": projector, "version": version,
                         "mode": str(mode), "backend": str(backend), "metric": name, "value": float(value),
                         "unit": unit})
        with self._lock:
            self._rows.extend(rows)
        if self._exporting():
            try:
                inst = self._meter_instruments()
                for row in rows:
                    inst[row["metric"]].record(row["value"], attributes=attrs)
                inst[counter].add(1, attributes=attrs)
            except Exception as exc:  # noqa: BLE001 - metrics must never fail a persist or a restore
                log.warning("OpenTelemetry export of %s metrics failed: %s", op, exc)
        return rows

    # --- in-process record -------------------------------------------------------------------

    def records(self) -> list[dict]:
        with self._lock:
            return list(self._rows)

    def collected(self, wide: bool = False):
        """The recorded measurements as a DataFrame.

        Long (default): one row per measurement, columns ``seq`` (operation number), ``time, op,
        projector, version, mode, backend, metric, value, unit``. ``wide=True``: one row per operation, a
        column per metric.
        """
        import pandas as pd

        frame = pd.DataFrame.from_records(self.records(), columns=COLUMNS)
        if not wide:
            return frame
        if frame.empty:
            return pd.DataFrame(columns=["seq", "time", "op", "projector", "version", "mode", "backend"])
        keys = ["seq", "time", "op", "projector", "version", "mode", "backend"]
        frame = frame.assign(version=frame["version"].fillna(""))
        out = frame.pivot_table(index=keys, columns="metric", values="value", aggfunc="last", sort=False)
        out.columns.name = None
        return out.reset_index()

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


def _field(obj, name: str):
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


_DEFAULT: MetricsRecorder | None = None
_DEFAULT_LOCK = threading.Lock()


def default_recorder() -> MetricsRecorder:
    """The process-wide recorder behind :func:`record_persist` / :func:`record_restore`."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = MetricsRecorder()
    return _DEFAULT


def record_persist(result, *, backend: str | None = None, attributes: dict | None = None) -> list[dict]:
    """Export and keep the metrics of one persist (the pipeline's hook). Never raises on OTel absence."""
    return default_recorder().record_persist(result, backend=backend, attributes=attributes)


def record_restore(result, *, backend: str | None = None, mode: str | None = None,
                   attributes: dict | None = None) -> list[dict]:
    """Export and keep the metrics of one restore (the pipeline's hook)."""
    return default_recorder().record_restore(result, backend=backend, mode=mode, attributes=attributes)


def collected_metrics(wide: bool = False):
    """Everything recorded in this process so far, as a pandas DataFrame (see MetricsRecorder.collected)."""
    return default_recorder().collected(wide=wide)


def clear_collected() -> None:
    default_recorder().clear()


# --- memory timeline --------------------------------------------------------------------------


def _status_kib(pid: int | str, fields: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                key = line.split(b":", 1)[0].decode()
                if key in fields:
                    out[key] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids.extend(int(x) for x in f.read().split())
            except OSError:
                continue
    except OSError:
        pass
    return kids


def rss_of(pid: int, children: bool = False) -> int | None:
    """Resident set size of ``pid`` in bytes (with its descendants when ``children``); None once gone."""
    got = _status_kib(pid, ("VmRSS",))
    if "VmRSS" not in got:
        return None
    total = got["VmRSS"] * 1024
    if children:
        stack, seen = _children(pid), {pid}
        while stack:
            c = stack.pop()
            if c in seen:
                continue
            seen.add(c)
            total += (_status_kib(c, ("VmRSS",)).get("VmRSS") or 0) * 1024
            stack.extend(_children(c))
    return total


class MemorySampler:
    """Sample a process's RSS over time in a background thread.

    ::

        with MemorySampler() as s:          # this process; MemorySampler(pid=child.pid) for another
            do_work()
        s.frame()                            # DataFrame: t_s (seconds since start), rss_bytes
        s.peak                               # largest sample, bytes

    Reads ``/proc/PID/status`` (VmRSS) every ``interval`` seconds; a sample is taken at start and at
    stop, so even a short operation has two. Sampling stops by itself when the process is gone.
    ``children=True`` adds the RSS of the process's descendants.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.02, children: bool = False,
                 label: str | None = None):
        self.pid = os.getpid() if pid is None else int(pid)
        self.interval = max(0.001, float(interval))
        self.children = children
        self.label = label
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._hwm = 0  # the kernel's VmHWM of ``pid`` as last seen: catches spikes between samples

    def start(self) -> MemorySampler:
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, name=f"sekiops-memory-sampler-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> MemorySampler:
        if self._stop.is_set() and self._thread is None:
            return self
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample()
        return self

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _sample(self) -> bool:
        rss = rss_of(self.pid, self.children)
        if rss is None:
            return False
        self._hwm = max(self._hwm, (_status_kib(self.pid, ("VmHWM",)).get("VmHWM") or 0) * 1024)
        self.samples.append((time.perf_counter() - self._t0, rss))
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._sample():
                break

    @property
    def peak(self) -> int:
        """Largest sample, or the process's own high-water mark when that is larger."""
        return max(max((r for _, r in self.samples), default=0), self._hwm)

    def frame(self):
        """DataFrame with ``t_s`` and ``rss_bytes`` (plus ``label`` when one was given)."""
        import pandas as pd

        frame = pd.DataFrame(self.samples, columns=["t_s", "rss_bytes"])
        frame["rss_bytes"] = frame["rss_bytes"].astype("int64")
        if self.label is not None:
            frame["label"] = self.label
        return frame


def sample_command(argv: Sequence[str], interval: float = 0.02, children: bool = True, label: str | None = None,
                   timeout: float | None = None, **popen_kwargs):
    """Run ``argv`` and sample its memory until it exits: ``(returncode, DataFrame, peak_bytes)``.

    The DataFrame has ``t_s`` and ``rss_bytes`` (and ``label``). ``peak_bytes`` is the larger of the
    largest sample and the child's own VmHWM as last read, so a spike between two samples is not
    missed (``wait4``'s ru_maxrss is not used: after fork+exec it includes the caller's size).
    Output goes where ``popen_kwargs`` say (inherited by default; give a file, not
    ``subprocess.PIPE``: nothing reads a pipe while the command runs). A command that cannot start
    raises the OSError; ``timeout`` kills it and raises ``subprocess.TimeoutExpired``.
    """
    import pandas as pd  # noqa: F401 - fail early, before the command runs, when pandas is missing

    proc = subprocess.Popen(list(argv), **popen_kwargs)
    sampler = MemorySampler(pid=proc.pid, interval=interval, children=children, label=label).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            # WNOWAIT: see the exit without reaping, so the pid cannot be reused while sampling stops
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                sampler.stop()
                _, status, _ = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                assert timeout is not None  # the deadline comes from it
                raise subprocess.TimeoutExpired(list(argv), timeout)
            time.sleep(min(0.005, interval / 4))
        sampler.stop()
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        sampler.stop()
        raise
    # Not wait4's ru_maxrss: after fork+exec it includes the caller's own size.
    return proc.returncode, sampler.frame(), sampler.peak
