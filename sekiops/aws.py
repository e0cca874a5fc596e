"""AWS plumbing shared by the DynamoDB state store and the S3 blob store (boto3).

* Credentials and region come from boto3's standard chain: environment
  (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_REGION`` or
  ``AWS_DEFAULT_REGION``), the shared profile (``AWS_PROFILE`` or ``?profile=``), then the
  container or instance role. ``?region=`` overrides the region; ``?endpoint=http://host:port``
  points at a local or S3/DynamoDB-compatible server (the region then defaults to ``us-east-1``).
* No call waits forever: botocore gets sekiops' deadlines (:mod:`sekiops.timeouts`:
  ``?connect_timeout=``/``?timeout=``, ``$SEKIOPS_CONNECT_TIMEOUT``/``$SEKIOPS_TIMEOUT``) as its
  connect and read timeouts, and botocore's own retries are switched off: sekiops retries with
  its one rule (:mod:`sekiops.retry`), so the attempts and the total wait are bounded and known.
* Errors become :class:`~sekiops.errors.SekiopsError` subclasses naming the store and the item
  or key, described by HTTP status and AWS error code (plus the service's message for
  DynamoDB's validation errors): never the SDK's text, never a signature or a key. Throttling
  (``ProvisionedThroughputExceededException``, ``ThrottlingException``, ``SlowDown``, ...) is
  retried with backoff like Cosmos DB's 429; a write whose answer was lost is not retried here
  (it may have been applied): the caller settles it with a consistent re-read.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .errors import SekiopsError, StoreError, StoreUnavailableError, UsageError
from .retry import RetryPolicy, call_with_retry, retry_after_of
from .timeouts import Timeouts, timeouts_for
from .urls import query_flags, redact, remember_secret

#: AWS error codes that mean "throttled: the request was not processed, try again later".
THROTTLING_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "ThrottledException",
    "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
    "SlowDown", "TransactionConflictException", "BandwidthLimitExceeded", "EC2ThrottledException",
})
#: error codes and statuses of a failure whose outcome is unknown for a write (retried for reads)
UNKNOWN_OUTCOME_CODES = frozenset({"InternalServerError", "InternalError", "ServiceUnavailable",
                                   "RequestTimeout", "RequestTimeoutException"})
#: options every AWS store URL accepts (each store adds its own)
COMMON_OPTIONS = ("region", "endpoint", "profile", "timeout", "connect_timeout", "retries", "retry_max_wait")

DEFAULT_ENDPOINT_REGION = "us-east-1"


@dataclasses.dataclass
class AwsSettings:
    """What a store URL says about where and how to reach AWS."""

    region: str | None = None
    endpoint: str | None = None
    profile: str | None = None
    timeouts: Timeouts = dataclasses.field(default_factory=timeouts_for)
    retry_attempts: int = 5
    retry_max_wait: float = 30.0

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.retry_attempts, initial=0.1, maximum=5.0, total=self.retry_max_wait)


def flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"not a boolean: {value!r} (use true or false)")


def check_endpoint(value: str, what: str) -> str:
    """``http(s)://host[:port]`` with no credentials in it; returned without a trailing ``/``."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{what}: endpoint {redact(value)!r} must be http://host[:port] or https://host[:port]")
    if parts.username or parts.password:
        raise UsageError(f"{what}: the endpoint must not carry credentials; use the AWS credential chain")
    try:
        _ = parts.port  # parsed on access: raises ValueError for a bad port
    except ValueError:
        raise UsageError(f"{what}: bad port in endpoint {redact(value)!r}") from None
    return value.strip().rstrip("/")


def settings_from(url: str, options: dict, what: str) -> AwsSettings:
    """Pop the common options (URL query first, keyword arguments win) into :class:`AwsSettings`."""
    query = query_flags(url)
    for key in COMMON_OPTIONS:
        if key in query:
            options.setdefault(key, query[key])
    endpoint = options.pop("endpoint", None) or None
    if endpoint:
        endpoint = check_endpoint(str(endpoint), what)
    region = (options.pop("region", None) or "").strip() or None
    profile = (options.pop("profile", None) or "").strip() or None
    timeouts = timeouts_for({k: str(options.pop(k)) for k in ("timeout", "connect_timeout") if k in options})
    try:
        attempts = int(options.pop("retries", 5))
        max_wait = float(str(options.pop("retry_max_wait", 30.0)).rstrip("s"))
    except ValueError:
        raise UsageError(f"{what}: retries must be an integer and retry_max_wait a number of seconds") from None
    if not 1 <= attempts <= 20:
        raise UsageError(f"{what}: retries={attempts} must be 1..20 (attempts in all)")
    return AwsSettings(region=region, endpoint=endpoint, profile=profile, timeouts=timeouts,
                       retry_attempts=attempts, retry_max_wait=max_wait)


def make_client(service: str, settings: AwsSettings, location: str, **config: Any):
    """A boto3 client with sekiops' deadlines, no SDK retries, credentials checked up front."""
    try:
        import boto3
        import botocore.config
        from botocore.exceptions import BotoCoreError, ProfileNotFound
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise UsageError(f"{location}: AWS support needs boto3 ({exc})") from None
    try:
        session = boto3.session.Session(profile_name=settings.profile)
    except ProfileNotFound:
        raise UsageError(f"{location}: AWS profile {settings.profile!r} not found in the shared config") from None
    except BotoCoreError as exc:
        raise UsageError(f"{location}: cannot read the AWS configuration ({type(exc).__name__})") from None
    region = settings.region or session.region_name or (DEFAULT_ENDPOINT_REGION if settings.endpoint else None)
    if not region:
        raise UsageError(f"{location}: no AWS region: add ?region=REGION to the URL or set AWS_REGION "
                         "(or AWS_DEFAULT_REGION, or a profile's region)")
    settings.region = region
    try:
        credentials = session.get_credentials()
    except BotoCoreError as exc:
        raise StoreError(f"{location}: cannot load AWS credentials ({type(exc).__name__}): check the "
                         "environment, the shared profile or the instance/container role") from None
    if credentials is None:
        raise StoreError(f"{location}: no AWS credentials found (looked in the environment, the shared "
                         "profile and the instance/container role): set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with a role")
    try:
        frozen = credentials.get_frozen_credentials()
        remember_secret(frozen.secret_key)
        remember_secret(frozen.token)
    except BotoCoreError as exc:
        raise StoreError(f"{location}: cannot load AWS credentials ({type(exc).__name__})") from None
    cfg = botocore.config.Config(
        connect_timeout=settings.timeouts.connect, read_timeout=settings.timeouts.io,
        retries={"total_max_attempts": 1, "mode": "standard"},
        user_agent_extra="sekiops", **config)
    try:
        return session.client(service, region_name=region, endpoint_url=settings.endpoint, config=cfg)
    except BotoCoreError as exc:
        raise UsageError(f"{location}: cannot make the {service} client ({type(exc).__name__})") from None
    except ValueError as exc:
        raise UsageError(f"{location}: cannot make the {service} client ({redact(str(exc))[:200]})") from None


def error_code(exc: BaseException) -> tuple[str | None, int | None]:
    """(AWS error code, HTTP status) of a botocore ClientError, else (None, None)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None, None
    code = (response.get("Error") or {}).get("Code")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return (str(code) if code else None), (int(status) if status else None)


def error_message(exc: BaseException, limit: int = 200) -> str:
    """The service's own message of a ClientError, redacted and shortened ("" when none)."""
    response = getattr(exc, "response", None)
    msg = ((response or {}).get("Error") or {}).get("Message") if isinstance(response, dict) else None
    if not msg:
        return ""
    text = " ".join(redact(str(msg)).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def tag(exc: BaseException) -> str:
    """``HTTP 400 ValidationException``: how an AWS error is named in our messages."""
    code, status = error_code(exc)
    parts = [f"HTTP {status}" if status else None, code if code and code != str(status) else None]
    return " ".join(p for p in parts if p) or type(exc).__name__


def cause(exc: BaseException) -> str:
    """A short, secret-free description of a transport failure."""
    seen = set()
    cur: BaseException | None = exc
    chain = []
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return "timed out"
        if isinstance(e, socket.gaierror):
            return "host name not found"
    low = " ".join(str(e) for e in chain).lower()
    for needle, what in (("connection refused", "connection refused"), ("read timeout", "timed out"),
                         ("timed out", "timed out"), ("connection reset", "connection reset"),
                         ("connection aborted", "connection aborted"),
                         ("connection was closed", "connection closed before the answer"),
                         ("name or service not known", "host name not found"),
                         ("temporary failure in name resolution", "host name not found"),
                         ("certificate", "TLS certificate problem"),
                         ("incompleteread", "answer cut short"), ("protocolerror", "connection broken")):
        if needle in low:
            return what
    return type(exc).__name__


class Transient(StoreUnavailableError):
    """A failure worth retrying (throttled, unreachable, or a read that timed out)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason, retry_after=retry_after)
        self.reason = reason


def classify(exc: BaseException, where: str, what: str, idempotent: bool) -> BaseException:
    """The error to raise for a boto3 failure.

    :class:`Transient` (retried), a final :class:`SekiopsError`, or ``exc`` itself when it is a
    ClientError the caller interprets (conditional check failed, not found, ...).
    """
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        CredentialRetrievalError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, SekiopsError):
        return exc
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        if code in THROTTLING_CODES or status == 429:
            return Transient(f"throttled ({tag(exc)})")
        if code in UNKNOWN_OUTCOME_CODES or (status is not None and status >= 500):
            if idempotent:
                return Transient(f"service error ({tag(exc)})")
            return StoreUnavailableError(f"{where}: {what}: {tag(exc)}; the write may or may not have been "
                                         "applied: re-read before retrying")
        if code in ("UnrecognizedClientException", "InvalidClientTokenId", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "InvalidToken",
                    "IncompleteSignatureException", "MissingAuthenticationTokenException"):
            return StoreError(f"{where}: {what}: authentication failed ({tag(exc)}): check the AWS credentials")
        if code in ("AccessDeniedException", "AccessDenied", "AllAccessDisabled") or status == 403:
            return StoreError(f"{where}: {what}: permission denied ({tag(exc)})")
        return exc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return StoreError(f"{where}: {what}: no usable AWS credentials ({type(exc).__name__}): set "
                          "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with a role")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        # Nothing was sent (no connection): safe to retry, writes included.
        return Transient(f"cannot reach the endpoint ({cause(exc)})")
    if isinstance(exc, (ReadTimeoutError, ConnectionClosedError, HTTPClientError)):
        reason = "no answer in time" if isinstance(exc, ReadTimeoutError) else f"connection lost ({cause(exc)})"
        if idempotent:
            return Transient(reason)
        return StoreUnavailableError(f"{where}: {what}: {reason}; the write may or may not have been applied: "
                                     "re-read before retrying")
    if isinstance(exc, BotoCoreError):
        return StoreError(f"{where}: {what}: {type(exc).__name__}")
    return exc


def run(fn: Callable[[], Any], *, where: str, what: str, settings: AwsSettings, idempotent: bool = True,
        hint: str = "retry later") -> Any:
    """``fn()`` with the retry rule and error mapping above (ClientErrors the caller reads pass through)."""

    def once() -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified; unknown ones re-raised as they are
            mapped = classify(exc, where, what, idempotent)
            if mapped is exc:
                raise
            raise mapped from None

    def give_up(exc: BaseException, backoff) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"{where}: {what}: {getattr(exc, 'reason', exc)}; gave up after {backoff.attempt} attempts and "
            f"{backoff.waited:.1f} s of waiting ({hint})", retry_after=retry_after_of(exc))

    return call_with_retry(once, what=f"{where} {what}", policy=settings.policy, retry_on=(Transient,),
                           give_up=give_up)


__all__ = ["AwsSettings", "THROTTLING_CODES", "settings_from", "make_client", "classify", "run", "error_code",
           "error_message", "tag", "cause", "flag", "check_endpoint", "Transient"]
