"""Deadlines for store calls: no operation waits forever on a store that stops answering.

Two numbers, the same for every store (PostgreSQL, Cosmos DB, Azure Blob, S3, DynamoDB):

* ``connect`` (default 10 s): to open a connection (TCP + TLS + the login/handshake);
* ``io`` (default 60 s): the longest a store may stay silent during one call — no answer to a
  query or request, no progress on a transfer. A large upload or COPY is not bounded in total,
  only in silence, so a 1 GiB snapshot over a slow link still works while a stopped server is
  detected within ``io`` seconds.

Set them per URL (``?connect_timeout=5s&timeout=30s``), or for every store with the environment
variables ``SEKIOPS_CONNECT_TIMEOUT`` and ``SEKIOPS_TIMEOUT`` (durations: ``30``, ``30s``,
``2m``). A store that times out raises StoreUnavailableError naming itself and the deadline.
"""

from __future__ import annotations

import dataclasses
import os

from .units import parse_seconds

CONNECT_ENV = "SEKIOPS_CONNECT_TIMEOUT"
IO_ENV = "SEKIOPS_TIMEOUT"
DEFAULT_CONNECT = 10.0
DEFAULT_IO = 60.0


@dataclasses.dataclass(frozen=True)
class Timeouts:
    connect: float = DEFAULT_CONNECT
    io: float = DEFAULT_IO

    def describe(self) -> str:
        return f"connect {self.connect:g} s, silence {self.io:g} s"


def timeouts_for(query: dict[str, str] | None = None, **overrides: float | str | None) -> Timeouts:
    """The deadlines for one store: keyword overrides, else URL query, else environment, else defaults."""
    query = query or {}

    def pick(name: str, query_key: str, env: str, default: float) -> float:
        value = overrides.get(name)
        if value is not None:
            return parse_seconds(value, what=f"{name} timeout")
        raw = query.get(query_key) or os.environ.get(env, "").strip()
        seconds = parse_seconds(raw, what=f"{query_key} ({env})") if raw else default
        return seconds if seconds > 0 else default

    return Timeouts(connect=pick("connect", "connect_timeout", CONNECT_ENV, DEFAULT_CONNECT),
                    io=pick("io", "timeout", IO_ENV, DEFAULT_IO))


__all__ = ["Timeouts", "timeouts_for", "CONNECT_ENV", "IO_ENV", "DEFAULT_CONNECT", "DEFAULT_IO"]
