"""Run-time guards of a migration: pause/stop controls, rate limit, bounded backoff with retry-after.

gh-ost's operator controls, adapted: a *pause file* (while it exists the run waits between
rows), a *stop file* (the run finishes the row in hand and ends cleanly, resumable), and the
same two as methods for in-process consoles (the notebook's buttons). They are only looked at
between rows, so a stop never leaves a half-migrated row.

Backoff: a store that answers 429/503 (Cosmos throttling) or is briefly unreachable raises
:class:`~sekiops.errors.StoreUnavailableError` (after the store's own short retries). The runner
then waits — the server's retry-after when the error carries one (``exc.retry_after``, seconds),
else exponential from ``initial`` — with up to 20 % jitter, each wait capped at ``maximum`` and
all waits for one operation at ``total``; past that the run stops, resumable, with a clear error.
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import time
from collections.abc import Callable

from ...errors import StoreUnavailableError


class StopRequested(Exception):
    """The operator asked to stop (stop file or console); raised between rows only."""


class Controls:
    """Pause/stop from flag files and from code (the notebook console's buttons)."""

    def __init__(self, pause_file: str | None = None, stop_file: str | None = None, poll: float = 0.5):
        self.pause_file = pause_file
        self.stop_file = stop_file
        self.poll = poll
        self._pause = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()

    def pause(self) -> None:
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set() or bool(self.stop_file and os.path.exists(self.stop_file))

    @property
    def pause_requested(self) -> bool:
        return self._pause.is_set() or bool(self.pause_file and os.path.exists(self.pause_file))

    def checkpoint(self, on_pause: Callable[[], None] | None = None) -> None:
        """Between rows: wait while paused; raise StopRequested when asked to stop."""
        announced = False
        while True:
            if self.stop_requested:
                raise StopRequested()
            if not self.pause_requested:
                return
            if not announced and on_pause is not None:
                on_pause()
                announced = True
            self._wake.wait(self.poll)
            self._wake.clear()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up (raising StopRequested) as soon as a stop is asked for."""
        end = time.monotonic() + max(0.0, seconds)
        while True:
            if self.stop_requested:
                raise StopRequested()
            left = end - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(min(left, self.poll))
            self._wake.clear()


class RateLimiter:
    """At most ``rate`` rows per second (None or 0: no limit), spaced evenly."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    def wait(self, controls: Controls) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self._next > now:
            controls.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval


@dataclasses.dataclass
class BackoffPolicy:
    attempts: int = 8
    initial: float = 0.5
    maximum: float = 30.0
    total: float = 180.0


def retry_after_of(exc: BaseException) -> float | None:
    """The server's retry-after carried by the error (seconds), when the store recorded one."""
    value = getattr(exc, "retry_after", None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


class Backoff:
    """The waits for one operation: ``next_delay(exc)`` is the next wait, or None to give up."""

    def __init__(self, policy: BackoffPolicy):
        self.policy = policy
        self.attempt = 0
        self.waited = 0.0

    def next_delay(self, exc: BaseException) -> float | None:
        p = self.policy
        self.attempt += 1
        delay = retry_after_of(exc)
        if delay is None:
            delay = p.initial * 2 ** (self.attempt - 1)
        delay = min(delay, p.maximum) * (1.0 + random.uniform(0.0, 0.2))
        if self.attempt >= p.attempts or self.waited + delay > p.total:
            return None
        self.waited += delay
        return delay


class GaveUp(StoreUnavailableError):
    """A store stayed unavailable through the whole backoff; the run stops, resumable."""


def call_with_backoff(fn: Callable[[], object], what: str, policy: BackoffPolicy, controls: Controls,
                      on_wait: Callable[[str, float, BaseException], None] | None = None):
    """``fn()``, retried on StoreUnavailableError as the policy allows (only for idempotent work)."""
    backoff = Backoff(policy)
    while True:
        try:
            return fn()
        except StoreUnavailableError as exc:
            delay = backoff.next_delay(exc)
            if delay is None:
                raise GaveUp(f"{exc} — {what}: still unavailable after {backoff.attempt} attempts and "
                             f"{backoff.waited:.1f} s of backoff; the run stopped and resumes from its "
                             "journal") from exc
            if on_wait is not None:
                on_wait(what, delay, exc)
            controls.sleep(delay)
