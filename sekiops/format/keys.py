"""Blob keys: how Sekiban names offloaded bytes, and which keys are safe to follow."""

from __future__ import annotations

import re

from ..errors import UnsafeKeyError

_CONTENT_RE = re.compile(r"^(?P<name>.+)/(?P<sha>[0-9a-f]{64})\.bin$")
_GUID_RE = re.compile(r"^(?P<name>.+)/(?P<guid>[0-9a-fA-F]{32})\.bin$")
MAX_KEY_LENGTH = 1024


def payload_key(projector_name: str, sha256_hex: str) -> str:
    """Key of a payload-level blob: ``{ProjectorName}/{sha256}.bin``."""
    return content_key(projector_name, sha256_hex)


def record_key(projector_name: str, projector_version: str, sha256_hex: str) -> str:
    """Key of a record-level (envelope) blob: ``{ProjectorName}/{ProjectorVersion}/{sha256}.bin``."""
    return content_key(f"{projector_name}/{projector_version}", sha256_hex)


def content_key(name: str, sha256_hex: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex):
        raise ValueError("sha256 must be 64 lower-case hex digits")
    return check_key(f"{name}/{sha256_hex}.bin")


def content_hash(key: str) -> str | None:
    """The sha256 a content-addressed key promises, or None for other (e.g. old GUID) keys."""
    m = _CONTENT_RE.match(key or "")
    return m.group("sha") if m else None


def key_style(key: str | None) -> str:
    """``content`` (sha256-addressed), ``guid`` (pre-2026-03 keys), ``other``, or ``none``."""
    if not key:
        return "none"
    if _CONTENT_RE.match(key):
        return "content"
    if _GUID_RE.match(key):
        return "guid"
    return "other"


def check_key(key: str) -> str:
    """Refuse keys that could leave a blob root or confuse a file system or URL.

    Allowed: relative, '/'-separated segments, none empty, '.' or '..', no backslash, NUL,
    control characters, or drive letters; at most 1024 characters.
    """
    if not isinstance(key, str) or not key:
        raise UnsafeKeyError("blob key is empty")
    shown = key[:120].encode("unicode_escape").decode("ascii")
    if len(key) > MAX_KEY_LENGTH:
        raise UnsafeKeyError(f"blob key is longer than {MAX_KEY_LENGTH} characters: {shown}...")
    if key.startswith("/") or "\\" in key or re.match(r"^[A-Za-z]:", key):
        raise UnsafeKeyError(f"blob key is absolute or uses backslashes: {shown}")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise UnsafeKeyError(f"blob key contains control characters: {shown}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeKeyError(f"blob key has an empty, '.' or '..' segment: {shown}")
    return key


def check_key_scope(key: str, projector_name: str) -> str:
    """A key read from a row or envelope must live under that projector's own name.

    Content-addressed keys start with ``{ProjectorName}/``; old GUID keys were
    ``{prefix/}{ProjectorName}/{guid}.bin`` (payload) or ``.../{ProjectorName}/{Version}/{guid}.bin``
    (record), so the name is second or third from the end. A key elsewhere points at another
    projector's (or service's) bytes.
    """
    check_key(key)
    parts = key.split("/")
    style = key_style(key)
    if style == "content":  # {name}/{sha}.bin (payload) or {name}/{version}/{sha}.bin (record)
        ok = parts[0] == projector_name and len(parts) in (2, 3)
    elif style == "guid":
        ok = projector_name in parts[-3:-1]
    else:
        ok = projector_name in parts[:-1]
    if not ok:
        raise UnsafeKeyError(f"blob key {key[:120]!r} does not belong to projector {projector_name!r}")
    return key
