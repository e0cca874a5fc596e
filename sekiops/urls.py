"""Store URLs: parsing helpers and redaction, so no secret ever reaches output or logs.

Redaction has two layers. :func:`redact` hides what *looks* like a secret in any text: the
user-info of a URL (everything between ``://`` and the *last* ``@`` of the URL when a ``:`` is
in it, so a password holding ``/``, ``@``, ``#`` or ``?`` is hidden whole), secret query
parameters and connection-string keys. And every secret sekiops has been handed (passwords in
URLs, keys from the environment) is remembered with :func:`remember_secret` and replaced
literally wherever it appears, whatever characters it holds.
"""

from __future__ import annotations

import os
import re
import threading
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

STATE_URL_ENV = "SEKIOPS_STATE_URL"
BLOB_URL_ENV = "SEKIOPS_BLOB_URL"
MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_QUERY = re.compile(r"(?i)\b(sig|key|password|pwd|token|secret|accountkey|sharedaccesssignature|"
                           r"x-amz-signature|x-amz-security-token|aws_secret_access_key)=([^&;\s]*)")
_CONN_SECRET = re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|Password|Pwd)=([^;]*)")
#: shortest remembered secret replaced literally (shorter ones would garble ordinary words)
MIN_LITERAL = 4

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def remember_secret(secret: str | None) -> None:
    """Hide ``secret`` (and its URL-encoded and decoded forms) in everything :func:`redact` sees."""
    if not secret:
        return
    forms = {secret, unquote(secret)}
    try:
        forms |= {quote(secret, safe=""), quote(secret)}
    except Exception:  # noqa: BLE001 - quoting never matters more than remembering
        pass
    with _SECRETS_LOCK:
        _SECRETS.update(f for f in forms if len(f) >= MIN_LITERAL)


def remember_url_secrets(url: str | None) -> None:
    """Remember the password and secret query values of a URL, however malformed."""
    if not url:
        return
    for m in _SCHEME.finditer(url):
        userinfo = _userinfo(url, m.end())
        if userinfo is not None and ":" in userinfo[0]:
            remember_secret(userinfo[0].split(":", 1)[1])
    for m in _SECRET_QUERY.finditer(url):
        remember_secret(m.group(2))
    for m in _CONN_SECRET.finditer(url):
        remember_secret(m.group(2))


#: environment variables whose values are secrets (whole, or their key=value parts)
SECRET_ENV = ("COSMOS_KEY", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET",
              "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN")
SECRET_URL_ENV = ("AZURE_STORAGE_CONNECTION_STRING", STATE_URL_ENV, BLOB_URL_ENV, "DATABASE_URL")


def remember_environment_secrets() -> None:
    """Remember the secrets the process environment hands to stores (keys, passwords, SAS)."""
    for name in SECRET_ENV:
        remember_secret(os.environ.get(name, "").strip())
    for name in SECRET_URL_ENV:
        remember_url_secrets(os.environ.get(name))


def _userinfo(text: str, start: int) -> tuple[str, int] | None:
    """(user-info, index of its closing '@') of the URL whose authority starts at ``start``.

    The URL is taken to run to the next ``scheme://`` or the end of the line; its user-info ends
    at the last ``@`` in that span, so ``u:pa/ss@w@host`` has user-info ``u:pa/ss@w``.
    """
    end = len(text)
    nxt = _SCHEME.search(text, start)
    if nxt is not None:
        end = nxt.start()
    newline = text.find("\n", start, end)
    if newline != -1:
        end = newline
    at = text.rfind("@", start, end)
    if at == -1:
        return None
    return text[start:at], at


def redact(text: str) -> str:
    """Hide passwords in URLs (malformed ones too), secret parameters and remembered secrets."""
    if not text:
        return text
    out = str(text)
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in out:
            out = out.replace(secret, MASK)
    pieces: list[str] = []
    pos = 0
    for m in _SCHEME.finditer(out):
        if m.start() < pos:
            continue
        info = _userinfo(out, m.end())
        if info is None or ":" not in info[0]:
            continue
        user = info[0].split(":", 1)[0]
        pieces.append(out[pos:m.end()] + f"{user}:{MASK}")
        pos = info[1]
    out = "".join(pieces) + out[pos:]
    out = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}={MASK}", out)
    out = _CONN_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", out)
    return out


def split(url: str):
    return urlsplit(url)


def query_flags(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def blob_prefix(url: str) -> str:
    """Sekiban's key prefix from a blob URL's ``?prefix=`` (URL-decoded; "" when absent).

    Kept literal, as Sekiban keeps it: only its trailing ``/`` are dropped when a key is built.
    A plain path (no scheme) carries no query.
    """
    if "://" not in url:
        return ""
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get("prefix")
    return values[-1] if values else ""


def resolve(url: str | None, env: str) -> str | None:
    """The URL given, else the environment variable's value, else None."""
    if url:
        return url
    value = os.environ.get(env, "").strip()
    return value or None


__all__ = ["STATE_URL_ENV", "BLOB_URL_ENV", "redact", "remember_secret", "remember_url_secrets",
           "remember_environment_secrets", "split", "query_flags", "strip_query", "blob_prefix", "resolve"]
