"""Blob stores, chosen by URL scheme through a registry (built-ins, ``register()``, entry points).

``file:///dir`` or a plain path: :mod:`.local`; ``memory://``: :mod:`.memory`;
``azblob://CONTAINER`` or ``azblob://ACCOUNT.blob.core.windows.net/CONTAINER``: :mod:`.azure`;
``s3://BUCKET``: :mod:`.s3`. Every URL may carry Sekiban's key prefix as ``?prefix=...``.
Third-party backends: entry point group ``sekiops.blob_stores``.
"""

from __future__ import annotations

from ..registry import SchemeRegistry, url_scheme
from ..urls import BLOB_URL_ENV, remember_environment_secrets, remember_url_secrets, resolve
from .base import BlobCapabilities, BlobInfo, BlobStore, BlobWrite

BACKENDS = SchemeRegistry("blob store", "sekiops.blob_stores", {
    "file": "sekiops.blob.local:LocalBlobStore.from_url",
    "memory": "sekiops.blob.memory:MemoryBlobStore.from_url",
    "azblob": "sekiops.blob.azure:AzureBlobStore.from_url",
    "s3": "sekiops.blob.s3:S3BlobStore.from_url",
})
#: The built-in backends (scheme -> "module:factory"); see BACKENDS for the live registry.
REGISTRY = BACKENDS.builtins
register = BACKENDS.register


def open_blob_store(url: str | None = None, create: bool = True) -> BlobStore | None:
    """Open the blob store named by ``url`` (or $SEKIOPS_BLOB_URL); None when neither is set.

    ``create=False`` (read-only commands): a missing local directory is an error, not created.
    """
    url = resolve(url, BLOB_URL_ENV)
    if url is None:
        return None
    remember_environment_secrets()
    remember_url_secrets(url)
    factory = BACKENDS.factory(url_scheme(url, default="file"), url)
    return factory(url) if create else factory(url, create=False)


__all__ = ["BlobCapabilities", "BlobInfo", "BlobStore", "BlobWrite", "open_blob_store", "register",
           "BACKENDS", "REGISTRY"]
