"""Every Cosmos DB SDK call goes through :func:`run_call`: sekiops' retry rule and error mapping.

The SDK's own throttle retries and regional failover are switched off (see :mod:`.client`) and
sekiops retries itself: HTTP 429 and 503 (and, for reads only, 408, 500, 502, 504 and lost
connections/time-outs) up to ``retry_attempts`` (5) attempts within ``retry_max_wait`` (30 s) of
waiting, waiting the server's ``x-ms-retry-after-ms`` when given, else exponential backoff from
100 ms, plus up to 20 % jitter; then StoreUnavailableError. A write that timed out is not retried
(it may have been applied): StoreUnavailableError says so. 413 is ItemTooLargeError; an
unreachable endpoint is StoreUnavailableError naming the redacted location; any other HTTP error
is StoreError. 404, 409 and 412 are handed back to the caller, who knows what they mean.

The key never appears in ``repr``, ``location``, messages or logs: :class:`Secret` holds it only
to scrub it out of what the SDK says.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ...errors import ItemTooLargeError, StoreError, StoreUnavailableError
from ...format.constants import COSMOS_ITEM_LIMIT
from ...retry import RetryPolicy, call_with_retry, retry_after_of
from ...urls import redact
from .url import KEY_ENV

RETRYABLE_ALWAYS = (429, 503)      # the server did not process the request
RETRYABLE_READS = (408, 500, 502, 504)  # the outcome of a write is unknown: reads only

#: a request that got no answer at all is retried this many times (not the full retry_attempts)
SILENT_RETRIES = 2


class Transient(StoreUnavailableError):
    """A failure the server asks us to retry (429, 503; timeouts and 5xx of reads).

    ``silent``: the server did not answer at all (a timeout): retried SILENT_RETRIES times, not
    five, so a wedged server costs three silence deadlines, not five."""

    def __init__(self, reason: str, retry_after: float | None = None, silent: bool = False):
        super().__init__(reason, retry_after=retry_after)
        self.reason = reason
        self.silent = silent


class Secret:
    """Holds the account key for scrubbing messages; shows as ``***`` everywhere."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None):
        self._value = value or None

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


def scrub(text: Any, secret: Secret) -> str:
    """``text`` without URL credentials or the key, on one line, at most 300 characters."""
    text = redact(str(text))
    text = secret.scrub(text)
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def http_message(exc: BaseException, secret: Secret) -> str:
    """The service's own message from an HTTP error (its JSON body's ``message``), scrubbed."""
    msg = getattr(exc, "message", None) or str(exc)
    try:  # the service answers a JSON body; show its message only
        body = json.loads(msg) if isinstance(msg, str) and msg.lstrip().startswith("{") else None
        if isinstance(body, dict) and body.get("message"):
            msg = body["message"]
    except ValueError:
        pass
    return scrub(msg.split("\nCode:")[0] if isinstance(msg, str) else msg, secret)


def classify(exc: Exception, what: str, idempotent: bool, location: str, secret: Secret) -> BaseException:
    """The error to raise for an SDK failure: Transient (retried), a final SekiopsError, or
    the SDK's own 404/409/412 for the caller."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError, ServiceResponseError
    from azure.cosmos.exceptions import CosmosClientTimeoutError, CosmosHttpResponseError

    if isinstance(exc, CosmosHttpResponseError):
        status = exc.status_code
        if status in (404, 409, 412):
            return exc
        if status == 413:
            return ItemTooLargeError(f"{location}: {what}: Cosmos DB refused the item as too large "
                                     f"(HTTP 413, limit {COSMOS_ITEM_LIMIT} bytes)")
        if status in (401, 403):
            return StoreError(f"{location}: {what}: access denied (HTTP {status}): {http_message(exc, secret)}")
        if not (status in RETRYABLE_ALWAYS or (idempotent and status in RETRYABLE_READS)):
            if status in (408, 500, 502, 504):
                return StoreUnavailableError(f"{location}: {what}: HTTP {status}; the write may or may "
                                             "not have been applied: re-read before retrying")
            return StoreError(f"{location}: {what}: HTTP {status}: {http_message(exc, secret)}")
        retry_after = None
        raw = (exc.headers or {}).get("x-ms-retry-after-ms") or (exc.headers or {}).get("retry-after-ms")
        if raw is not None:
            try:
                retry_after = max(0.0, float(raw) / 1000.0)
            except ValueError:
                retry_after = None
        return Transient(f"HTTP {status}" + (" (throttled: request rate too large)" if status == 429 else ""),
                         retry_after)
    if isinstance(exc, CosmosClientTimeoutError):
        if not idempotent:
            return StoreUnavailableError(f"{location}: {what} timed out; the write may or may not "
                                         "have been applied: re-read before retrying")
        return Transient("timed out", silent=True)
    if isinstance(exc, ServiceRequestError):
        hint = ("; for an emulator's self-signed certificate add ?verify=false"
                if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "")
        return StoreUnavailableError(f"{location}: cannot reach Cosmos DB ({scrub(exc, secret)}){hint}")
    if isinstance(exc, ServiceResponseError):
        if not idempotent:
            return StoreUnavailableError(
                f"{location}: {what}: connection lost before the answer ({scrub(exc, secret)}); the "
                "write may or may not have been applied: re-read before retrying")
        return Transient(f"no answer ({scrub(exc, secret)})", silent=True)
    if isinstance(exc, ClientAuthenticationError):
        return StoreError(f"{location}: {what}: cannot sign in to Cosmos DB ({scrub(exc, secret)}); "
                          f"set {KEY_ENV} or an Entra ID identity")
    if isinstance(exc, AzureError):
        return StoreError(f"{location}: {what}: {type(exc).__name__}: {scrub(exc, secret)}")
    return exc


def run_call(what: str, fn: Callable[[], Any], *, idempotent: bool, location: str, secret: Secret,
             attempts: int, max_wait: float, silence: float) -> Any:
    """Call ``fn`` with sekiops' retry rule (sekiops.retry) and the error mapping of :func:`classify`.

    ``silence`` is the store's io deadline, named in the message when the server stays silent
    more than SILENT_RETRIES times. CosmosHttpResponseError 404/409/412 are re-raised untouched.
    """
    policy = RetryPolicy(attempts=attempts, initial=0.1, maximum=5.0, total=max_wait)

    silences = 0

    def once() -> Any:
        nonlocal silences
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below; unknown ones re-raised
            err = classify(exc, what, idempotent, location, secret)
            if isinstance(err, Transient) and err.silent:
                silences += 1
                if silences > SILENT_RETRIES:  # a server this silent is not coming back soon
                    raise StoreUnavailableError(
                        f"{location}: {what}: no answer within {silence:g} s, {silences} times "
                        "(deadline: ?timeout= or $SEKIOPS_TIMEOUT)") from None
            if err is exc:
                raise
            raise err from exc

    def give_up(exc: BaseException, backoff) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"{location}: {what}: {getattr(exc, 'reason', exc)}; gave up after {backoff.attempt} attempts "
            f"and {backoff.waited:.1f} s of waiting (retry later, or raise the container's RU/s)",
            retry_after=retry_after_of(exc))

    return call_with_retry(once, what=f"cosmos {what}", policy=policy, retry_on=(Transient,), give_up=give_up)
