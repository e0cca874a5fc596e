"""Blob stores, chosen by URL scheme through a small registry (papermill-style handlers).

``file:///dir`` or a plain path: :mod:`.local`; ``memory://``: :mod:`.memory`;
``azblob://CONTAINER`` or ``azblob://ACCOUNT.blob.core.windows.net/CONTAINER``: :mod:`.azure`.
"""

from __future__ import annotations

import importlib

from ..errors import UsageError
from ..urls import BLOB_URL_ENV, redact, resolve
from .base import BlobInfo, BlobStore, BlobWrite

#: scheme -> "module:factory"; factories take the URL and return a BlobStore.
REGISTRY: dict[str, str] = {
    "file": "sekiops.blob.local:LocalBlobStore.from_url",
    "memory": "sekiops.blob.memory:MemoryBlobStore.from_url",
    "azblob": "sekiops.blob.azure:AzureBlobStore.from_url",
}


def register(scheme: str, target: str) -> None:
    REGISTRY[scheme] = target


def _load(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def open_blob_store(url: str | None = None, create: bool = True) -> BlobStore | None:
    """Open the blob store named by ``url`` (or $SEKIOPS_BLOB_URL); None when neither is set.

    ``create=False`` (read-only commands): a missing local directory is an error, not created.
    """
    url = resolve(url, BLOB_URL_ENV)
    if url is None:
        return None
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if scheme not in REGISTRY:
        raise UsageError(f"unknown blob store URL scheme {scheme!r} in {redact(url)!r}; "
                         f"known: {', '.join(sorted(REGISTRY))}")
    factory = _load(REGISTRY[scheme])
    return factory(url) if create else factory(url, create=False)


__all__ = ["BlobInfo", "BlobStore", "BlobWrite", "open_blob_store", "register", "REGISTRY"]
