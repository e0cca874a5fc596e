"""Blob keys: how Sekiban names offloaded bytes, and which keys are safe to follow.

Since 2026-03 Sekiban writes content-addressed keys ``{name}/{sha256}.bin`` (payload level:
name = ProjectorName; record level: name = ``{ProjectorName}/{ProjectorVersion}``), the name
normalised by turning ``\\`` into ``/`` and trimming ``/`` at both ends. Since dcb-v10.23 a
configured prefix is put in front, literal apart from its trailing slashes:
``{prefix.rstrip('/')}/{name}/{sha256}.bin`` (so ``/tenant\\nested``, ``///`` and `` `` are
all real prefixes), and a prefixed key longer than 512 characters is refused before upload.
Older keys were ``{prefix/}{name}/{32-hex-guid}.bin``. A reader never derives a key: it reads
the key a row or envelope names, checks it here, and hands it to the blob store, which maps it
to exactly one place inside its root.
"""

from __future__ import annotations

import re

from ..errors import UnsafeKeyError

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_CONTENT_RE = re.compile(r"^(?P<folder>.*)/(?P<sha>[0-9a-f]{64})\.bin$", re.DOTALL)
_GUID_RE = re.compile(r"^(?P<folder>.*)/(?P<guid>[0-9a-fA-F]{32})\.bin$", re.DOTALL)
#: Longest key sekiops follows when reading (Azure allows 1,024 characters, S3 1,024 bytes).
MAX_KEY_LENGTH = 1024
#: Sekiban's ``MaxDeterministicKeyLength``: a prefixed content-addressed key may not be longer.
MAX_PREFIXED_KEY_LENGTH = 512


def normalise_name(name: str) -> str:
    """Sekiban's folder name for a key: ``\\`` -> ``/``, ``/`` trimmed at both ends."""
    return name.replace("\\", "/").strip("/")


def content_key(name: str, sha256_hex: str, prefix: str | None = None) -> str:
    """``{prefix}/{name}/{sha256}.bin`` exactly as Sekiban computes it (empty prefix: none).

    A prefixed key over 512 characters is refused (UnsafeKeyError) with Sekiban's wording,
    before anything is uploaded.
    """
    if not _SHA_RE.fullmatch(sha256_hex or ""):
        raise ValueError("sha256 must be 64 lower-case hex digits")
    folder = normalise_name(name)
    if not folder:
        raise UnsafeKeyError(f"blob name {_shown(name)!r} is empty once Sekiban normalises it")
    key = f"{folder}/{sha256_hex}.bin"
    if prefix:
        key = f"{prefix.rstrip('/')}/{key}"
        if len(key) > MAX_PREFIXED_KEY_LENGTH:
            raise UnsafeKeyError(
                f"Snapshot prefix '{_shown(prefix)}' produces a deterministic key of length {len(key)}, "
                f"exceeding the limit of {MAX_PREFIXED_KEY_LENGTH} characters.")
    return check_key(key)


def payload_key(projector_name: str, sha256_hex: str, prefix: str | None = None) -> str:
    """Key of a payload-level blob: ``{prefix}/{ProjectorName}/{sha256}.bin``."""
    return content_key(projector_name, sha256_hex, prefix)


def record_key(projector_name: str, projector_version: str, sha256_hex: str, prefix: str | None = None) -> str:
    """Key of a record-level (envelope) blob: ``{prefix}/{ProjectorName}/{ProjectorVersion}/{sha256}.bin``."""
    return content_key(f"{projector_name}/{projector_version}", sha256_hex, prefix)


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


def _shown(key: str, limit: int = 120) -> str:
    return key[:limit].encode("unicode_escape").decode("ascii") + ("..." if len(key) > limit else "")


def check_key(key: str) -> str:
    """Refuse keys no blob store should follow; return the key unchanged.

    Allowed: any key Sekiban can write, prefixes included: a leading ``/``, ``\\``, spaces and
    empty segments (``tenant//P/...``) are literal characters of a key. Refused: empty keys,
    keys over 1,024 characters, control characters, and ``.`` or ``..`` segments (which a file
    system or URL would resolve). Each store maps an accepted key to exactly one place inside
    its own root.
    """
    if not isinstance(key, str) or not key:
        raise UnsafeKeyError("blob key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise UnsafeKeyError(f"blob key is longer than {MAX_KEY_LENGTH} characters: {_shown(key)}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in key):
        raise UnsafeKeyError(f"blob key contains control characters: {_shown(key)}")
    if any(part in (".", "..") for part in key.replace("\\", "/").split("/")):
        raise UnsafeKeyError(f"blob key has a '.' or '..' segment: {_shown(key)}")
    if key.endswith("/"):
        raise UnsafeKeyError(f"blob key ends with '/' (it names a folder, not a blob): {_shown(key)}")
    return key


def _owned_prefix(folder: str, name: str) -> str | None:
    """The prefix in front of ``name`` when ``folder`` is ``name`` or ends with ``/{name}``."""
    if folder == name:
        return ""
    if name and folder.endswith("/" + name):
        return folder[: -len(name) - 1] or "/"
    return None


def key_prefix(key: str, projector_name: str, projector_version: str | None = None) -> str | None:
    """The prefix in front of a content-addressed key's ``{name}/`` part (``""`` = none), or None
    when the key is not one of that projector's content-addressed keys.

    Without ``projector_version``, a record-level key of any single-segment version belongs too.
    """
    m = _CONTENT_RE.match(key or "")
    if not m:
        return None
    return _folder_prefix(m.group("folder"), projector_name, projector_version)


def _folder_prefix(folder: str, projector_name: str, projector_version: str | None) -> str | None:
    name = normalise_name(projector_name)
    if projector_version is not None:
        found = _owned_prefix(folder, normalise_name(f"{projector_name}/{projector_version}"))
        if found is not None:
            return found
    found = _owned_prefix(folder, name)
    if found is None and projector_version is None:
        found = _owned_prefix(folder.rpartition("/")[0], name)  # {name}/{version}
    return found


def check_key_scope(key: str, projector_name: str, projector_version: str | None = None) -> str:
    """A key read from a row or envelope must belong to that projector.

    Content-addressed and old GUID keys: ``{name}/{id}.bin`` or ``{name}/{version}/{id}.bin``,
    or the same after any prefix (``.../{name}/{id}.bin``): Sekiban 10.23 prefixes, and the
    old GUID keys' optional prefix. Other keys must at least name the projector as a folder.
    A key elsewhere points at another projector's (or service's) bytes.
    """
    check_key(key)
    m = _CONTENT_RE.match(key) or _GUID_RE.match(key)
    if m:
        ok = _folder_prefix(m.group("folder"), projector_name, projector_version) is not None
    else:
        ok = normalise_name(projector_name) in key.replace("\\", "/").split("/")[:-1]
    if not ok:
        raise UnsafeKeyError(f"blob key {_shown(key)!r} does not belong to projector {projector_name!r}")
    return key
