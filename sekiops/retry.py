"""One retry rule for every store and batch: bounded attempts, bounded total wait, the server's
retry-after honoured, exponential backoff with jitter otherwise.

Stores raise :class:`~sekiops.errors.StoreUnavailableError` (with ``retry_after`` when the
server said how long to wait: Cosmos ``x-ms-retry-after-ms``, HTTP ``Retry-After``) for
failures worth retrying; everything else is final. Only idempotent work is retried here; a
write whose outcome is unknown is settled by its caller (re-read, then decide).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import StoreUnavailableError

log = logging.getLogger("sekiops.retry")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    #: calls in all (the first one included)
    attempts: int = 5
    #: first wait when the server gave none; doubled per attempt
    initial: float = 0.1
    #: longest single wait
    maximum: float = 10.0
    #: most seconds spent waiting over all attempts (a deadline for the whole operation)
    total: float = 30.0
    #: jitter as a fraction of each wait (0.2: up to 20 % more)
    jitter: float = 0.2


#: Stores: a handful of quick tries (a grain persisting behind us is throttled the same way).
STORE_POLICY = RetryPolicy()


def retry_after_of(exc: BaseException) -> float | None:
    """The server's retry-after carried by the error (seconds), when the store recorded one."""
    value = getattr(exc, "retry_after", None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


class Backoff:
    """The waits of one operation: ``next_delay(exc)`` is the next wait, or None to give up."""

    def __init__(self, policy: RetryPolicy = STORE_POLICY):
        self.policy = policy
        self.attempt = 0
        self.waited = 0.0

    def next_delay(self, exc: BaseException | None = None) -> float | None:
        p = self.policy
        self.attempt += 1
        delay = retry_after_of(exc) if exc is not None else None
        if delay is None:
            delay = p.initial * 2 ** (self.attempt - 1)
        delay = min(delay, p.maximum) * (1.0 + random.uniform(0.0, p.jitter))
        if self.attempt >= p.attempts or self.waited + delay > p.total:
            return None
        self.waited += delay
        return delay


def call_with_retry(fn: Callable[[], T], *, what: str, policy: RetryPolicy = STORE_POLICY,
                    retry_on: tuple[type[BaseException], ...] = (StoreUnavailableError,),
                    sleep: Callable[[float], object] | None = None,
                    on_wait: Callable[[str, float, BaseException], object] | None = None,
                    give_up: Callable[[BaseException, Backoff], BaseException] | None = None) -> T:
    """``fn()``, called again on ``retry_on`` errors while the policy allows.

    ``give_up(exc, backoff)`` builds the error raised when the policy is spent (default: the
    last error, its message extended by the attempts and wait). ``sleep`` lets a caller make
    waits interruptible (migrations' pause/stop controls).
    """
    backoff = Backoff(policy)
    while True:
        try:
            return fn()
        except retry_on as exc:
            delay = backoff.next_delay(exc)
            if delay is None:
                if give_up is not None:
                    raise give_up(exc, backoff) from exc
                if isinstance(exc, StoreUnavailableError):
                    raise StoreUnavailableError(
                        f"{exc} ({what}: gave up after {backoff.attempt} attempts and {backoff.waited:.1f} s "
                        "of waiting)", retry_after=retry_after_of(exc)) from exc
                raise
            log.debug("%s: %s; retry %d in %.3f s", what, exc, backoff.attempt, delay)
            if on_wait is not None:
                on_wait(what, delay, exc)
            (sleep or time.sleep)(delay)


__all__ = ["RetryPolicy", "STORE_POLICY", "Backoff", "retry_after_of", "call_with_retry"]
