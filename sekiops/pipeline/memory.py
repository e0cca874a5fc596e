"""Peak memory of an operation: the kernel's RSS high-water mark and, optionally, the Python heap peak."""

from __future__ import annotations

import dataclasses
import resource
import tracemalloc


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(field.encode() + b":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    return (kib or 0) * 1024


def peak_rss_bytes() -> int:
    """The process's RSS high-water mark (VmHWM; ru_maxrss where /proc is absent)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5), so a peak belongs to one operation."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclasses.dataclass
class MemoryProbe:
    """Measure one operation: ``with MemoryProbe(heap=True) as m: ...`` then ``m.peak_rss``."""

    heap: bool = False
    start_rss: int = 0
    peak_rss: int = 0
    peak_heap: int | None = None
    reset_ok: bool = False
    _traced: bool = False

    def __enter__(self) -> "MemoryProbe":
        self.reset_ok = reset_peak_rss()
        self.start_rss = rss_bytes()
        if self.heap and not tracemalloc.is_tracing():
            tracemalloc.start()
            self._traced = True
        elif self.heap:
            tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc) -> None:
        self.peak_rss = peak_rss_bytes()
        if self.heap:
            self.peak_heap = tracemalloc.get_traced_memory()[1]
            if self._traced:
                tracemalloc.stop()
