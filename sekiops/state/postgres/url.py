"""A PostgreSQL URL -> the libpq connection string, sekiops' own parameters, secrets, session options.

URL: a libpq URL, ``postgresql://user:pw@host:5432/db?sslmode=require``; libpq's PG* environment
variables fill whatever the URL leaves out. sekiops adds parameters of its own, stripped before
connecting: ``schema=NAME`` (the schema holding the table, else the connection's default schema)
and ``timeout=DURATION`` (sekiops.timeouts). Kept apart from the store so a URL can be taken apart
without a server, and so the password is known (to be scrubbed) before anything can fail.
"""

from __future__ import annotations

import os
from urllib.parse import quote, unquote

from ...errors import UsageError
from ...timeouts import Timeouts
from ...urls import redact

#: query parameters that are sekiops' own, not libpq's (stripped before connecting)
OWN_PARAMETERS = ("schema", "timeout")


def split_schema(url: str) -> tuple[str, str | None]:
    """Remove sekiops' own query parameters; return (libpq URL, schema or None).

    ``schema=NAME`` and ``timeout=DURATION`` (sekiops.timeouts) are sekiops'; other parameters
    (sslmode, options, connect_timeout, ...) are kept byte for byte for libpq.
    """
    return split_own_parameters(url)[:2]


def split_own_parameters(url: str) -> tuple[str, str | None, dict[str, str]]:
    """(libpq URL, schema or None, sekiops' other own parameters) of ``url``."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, None, {}
    fragment = ""
    if "#" in query:
        query, _, fragment = query.partition("#")
    kept, schema, own = [], None, {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if unquote(name) == "schema":
            schema = unquote(value)
        elif unquote(name) in OWN_PARAMETERS:
            own[unquote(name)] = unquote(value)
        elif part:
            kept.append(part)
    out = base + ("?" + "&".join(kept) if kept else "")
    if schema is not None and not schema:
        raise UsageError(f"empty schema= parameter in {redact(url)!r}")
    return out + ("#" + fragment if fragment else ""), schema, own


def check_authority(url: str) -> None:
    """Refuse a URL whose user name or password holds an unencoded ``@``, ``/``, ``?`` or ``#``.

    libpq ends the user-info at the first ``@`` and the authority at the first ``/``, so
    ``u:pa/ss@host`` or ``u:pa@ss@host`` would reach a host named after part of the password
    (and the driver's error would quote it). Said before connecting, with the password hidden.
    """
    rest = url.split("://", 1)[-1]
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    authority = rest[:end]
    if authority.count("@") > 1:
        bad = True
    elif "@" in authority or "@" not in rest[end:] or authority.startswith("["):
        bad = False
    else:  # 'u:pa/ss@host': the authority 'u:pa' is no host:port, so ':pa' began a password
        _host, colon, port = authority.partition(":")
        bad = bool(colon) and not port.isdigit()
    if bad:
        # (no literal at sign in the message: redaction hides a line's URL up to its last one)
        raise UsageError(f"{redact(url)}: the user name or password holds an at sign, slash, question mark "
                         "or hash that is not percent-encoded, so libpq would read part of it as the host; "
                         "write them as %40, %2F, %3F and %23")


def secrets_of(url: str, password: str | None = None) -> list[str]:
    """The password in every form it may appear in a message (raw, unquoted, quoted), longest first."""
    found = set()
    if password:
        found.add(password)
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    if "@" in rest and ":" in rest.rsplit("@", 1)[0]:
        raw = rest.rsplit("@", 1)[0].split(":", 1)[1]
        if raw:
            found |= {raw, unquote(raw)}
    found |= {quote(p, safe="") for p in list(found)}
    # Very short strings would mangle every message; redact() still covers the URL forms.
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def session_options(params: dict, timeouts: Timeouts, application_name: str, server_timeouts: bool) -> dict:
    """libpq settings that bound every wait (sekiops.timeouts), unless the URL sets its own.

    Client side: connect_timeout; TCP keepalives and tcp_user_timeout (a peer that vanishes
    is noticed); and the store's silence watchdog around every call (a peer that stops answering).
    Server side, as a backstop for sessions we lose: statement_timeout (ten silences: a
    COPY of a big value is one long statement) and idle_in_transaction_session_timeout.
    """
    t = timeouts
    kw: dict = {}
    if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
        kw["connect_timeout"] = max(1, int(round(t.connect)))
    if "application_name" not in params and "PGAPPNAME" not in os.environ:
        kw["application_name"] = application_name
    defaults = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                "keepalives_count": "3", "tcp_user_timeout": str(int(t.io * 1000))}
    kw.update({k: v for k, v in defaults.items() if k not in params})
    if server_timeouts and "options" not in params and "PGOPTIONS" not in os.environ:
        kw["options"] = (f"-c statement_timeout={int(t.io * 10_000)} "
                         f"-c idle_in_transaction_session_timeout={int(t.io * 10_000)}")
    return kw
