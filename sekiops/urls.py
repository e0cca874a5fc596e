"""Store URLs: parsing helpers and redaction, so no secret ever reaches output or logs."""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, urlsplit, urlunsplit

STATE_URL_ENV = "SEKIOPS_STATE_URL"
BLOB_URL_ENV = "SEKIOPS_BLOB_URL"

_SECRET_QUERY = re.compile(r"(?i)(sig|key|password|pwd|token|secret|accountkey|sharedaccesssignature)=([^&;]*)")
_CONN_SECRET = re.compile(r"(?i)(AccountKey|SharedAccessSignature|Password|Pwd)=([^;]*)")


def redact(text: str) -> str:
    """Hide passwords in URLs, secret query parameters and connection-string keys."""
    if not text:
        return text
    out = re.sub(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@",
                 lambda m: f"{m['scheme']}{m['user']}:***@", text)
    out = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}=***", out)
    out = _CONN_SECRET.sub(lambda m: f"{m.group(1)}=***", out)
    return out


def split(url: str):
    return urlsplit(url)


def query_flags(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def resolve(url: str | None, env: str) -> str | None:
    """The URL given, else the environment variable's value, else None."""
    if url:
        return url
    value = os.environ.get(env, "").strip()
    return value or None
