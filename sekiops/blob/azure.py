"""Azure Blob Storage blob store (``azblob://``), with bounded memory for any blob size.

URLs:

* ``azblob://CONTAINER``: account and credential from ``$AZURE_STORAGE_CONNECTION_STRING``
  (shared key, SAS, ``UseDevelopmentStorage=true`` or an Azurite endpoint);
* ``azblob://ACCOUNT.blob.core.windows.net/CONTAINER``: Entra ID through azure-identity's
  ``DefaultAzureCredential``; when ``$AZURE_STORAGE_CONNECTION_STRING`` names the same account
  its key (or SAS) is used instead. A SAS may also be given as the URL's query string.

Options (URL query or keyword arguments of :meth:`AzureBlobStore.from_url`): ``block_size``
(a size: bytes, or e.g. ``8MiB``; default 4 MiB), ``concurrency`` (upload workers, default 2),
``api_version`` (default ``$SEKIOPS_AZURE_API_VERSION``, else the SDK's newest; Azurite 3.35
knows up to ``2025-11-05`` and refuses newer ones unless started with ``--skipApiVersionCheck``),
``retries`` (default 3, short exponential backoff, so a dead endpoint fails within ~10-30 s).

Writes are content addressed (``{name}/{sha256}.bin``). The bytes go up as blocks of
``block_size`` (``Put Block``) followed by one ``Put Block List`` with content type
``application/octet-stream``; the bytes are hashed as they are read and the block list is only
committed when they match the caller's hash/size, so a failed or refused write leaves no blob
under the final key (Azure garbage-collects uncommitted blocks). At most
``concurrency + 1`` blocks are in memory at once. Reads stream ``max_chunk_get_size`` ranges.

Secrets (account key, SAS, connection string) never reach ``location``, ``repr``, exception
messages or our log records: errors are described by HTTP status and Azure error code only,
and SDK exceptions are not chained (their text can hold request URLs with a SAS).
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import secrets
import socket
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContentSettings, ExponentialRetry

from ..errors import (
    BlobChangedError,
    BlobNotFoundError,
    IntegrityError,
    SekiopsError,
    SpoolError,
    StoreError,
    StoreUnavailableError,
    UnsafeKeyError,
    UsageError,
)
from ..format.constants import PROVIDER_AZURE
from ..format.keys import check_key, content_hash
from ..streams import copy_hashing, read_full
from ..timeouts import Timeouts, timeouts_for
from ..units import format_bytes, parse_size
from ..urls import redact
from .base import BlobCapabilities, BlobInfo, BlobStore, BlobWrite, check_if_version

log = logging.getLogger(__name__)

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
API_VERSION_ENV = "SEKIOPS_AZURE_API_VERSION"

MiB = 1024 * 1024
DEFAULT_BLOCK_SIZE = 4 * MiB
DEFAULT_CONCURRENCY = 2
#: Download: size of the first GET and of every following ranged GET.
DEFAULT_GET_SIZE = 4 * MiB
#: Azure limits: blocks per blob, and size of one block.
MAX_BLOCKS = 50_000
MAX_BLOCK_SIZE = 4000 * MiB
#: Reserved top-level folder (never written by this store; kept out of keys for parity with
#: the local store, whose private incoming folder has the same name).
INCOMING = ".sekiops-incoming"
CONTENT_TYPE = "application/octet-stream"
#: Bounded retries (the SDK's defaults wait 15 s, 18 s, 24 s...): with 3 retries a refusing
#: endpoint fails after ~11 s of backoff, a silent one after 4 connect timeouts more (~27 s).
#: A server that accepts and then goes silent is given the store's silence deadline
#: (sekiops.timeouts: ``?timeout=``, $SEKIOPS_TIMEOUT, default 60 s) per try.
RETRY_TOTAL = 3
RETRY_INITIAL_BACKOFF = 1.0
RETRY_INCREMENT_BASE = 1.6
RETRY_JITTER = 0.5
#: per-try connect timeout (a lower ``?connect_timeout=`` wins)
CONNECTION_TIMEOUT = 4

_CONTAINER_RE = re.compile(r"^(\$root|\$web|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})$")
_ACCOUNT_RE = re.compile(r"^[a-z0-9]{3,24}$")


class AzureBlobStore(BlobStore):
    """A :class:`~sekiops.blob.base.BlobStore` over one Azure Blob Storage container.

    Versions are ETags (every write, even of the same bytes, changes it), so a conditional
    delete is one ``Delete Blob`` with ``If-Match``.
    """

    provider = PROVIDER_AZURE
    capabilities = BlobCapabilities(range_reads=True, conditional_delete=True)

    def __init__(self, service: BlobServiceClient, container: str, *,
                 block_size: int = DEFAULT_BLOCK_SIZE, concurrency: int = DEFAULT_CONCURRENCY,
                 credential_kind: str = "unknown", provider: str | None = None, prefix: str = ""):
        if block_size < 1 or block_size > MAX_BLOCK_SIZE:
            raise UsageError(f"azure block size must be 1 B..{format_bytes(MAX_BLOCK_SIZE)}, not {block_size:,} bytes")
        if concurrency < 1 or concurrency > 64:
            raise UsageError(f"azure upload concurrency must be 1..64, not {concurrency}")
        self._service = service
        self.container = container
        self.account = service.account_name or "unknown-account"
        self.location = f"azblob://{self.account}/{container}"
        self._container = service.get_container_client(container)
        self.block_size = int(block_size)
        self.concurrency = int(concurrency)
        #: ``connection-string``, ``shared-key``, ``sas`` or ``entra-id``: how we authenticate.
        self.credential_kind = credential_kind
        self._container_ready = False
        self._lock = threading.Lock()
        self.prefix = prefix
        if provider:
            self.provider = provider

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AzureBlobStore:
        parts = urlsplit(url)
        if parts.scheme.lower() != "azblob":
            raise UsageError(f"not an azblob:// URL: {_redact_url(url)!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        sas = None
        prefix = query.pop("prefix", "")
        if "sig" in query:
            # The rest of the query is a SAS token; only ``prefix`` may be mixed into it.
            sas = "&".join(p for p in parts.query.split("&") if not p.startswith("prefix="))
            query = {}
        for k, v in query.items():
            options.setdefault(k, v)
        block_size = parse_size(options.pop("block_size", DEFAULT_BLOCK_SIZE), what="azblob option block_size")
        concurrency = _parse_int(options.pop("concurrency", DEFAULT_CONCURRENCY), "concurrency")
        api_version = options.pop("api_version", None) or os.environ.get(API_VERSION_ENV, "").strip() or None
        retries = _parse_int(options.pop("retries", RETRY_TOTAL), "retries")
        timeouts = timeouts_for({k: str(options.pop(k)) for k in ("timeout", "connect_timeout") if k in options})
        if not 0 <= retries <= 10:
            raise UsageError(f"azblob option retries={retries} must be 0..10")
        credential = options.pop("credential", None)
        provider = options.pop("provider", None)
        options.pop("create", None)  # containers are created on first write only, never by a read
        if options:
            raise UsageError(f"unknown azblob option(s): {', '.join(sorted(options))}")

        host = parts.hostname or ""
        path = unquote(parts.path).strip("/")
        conn = os.environ.get(CONNECTION_STRING_ENV, "").strip()
        kw = _client_kwargs(api_version, retries, timeouts)

        if "." not in (parts.netloc or ""):
            # azblob://CONTAINER: everything about the account comes from the connection string.
            container = unquote(parts.netloc)
            if path:
                raise UsageError(
                    f"azblob URL {_redact_url(url)!r}: use azblob://CONTAINER (account from "
                    f"${CONNECTION_STRING_ENV}) or azblob://ACCOUNT.blob.core.windows.net/CONTAINER")
            _check_container(container)
            if not conn:
                raise UsageError(
                    f"azblob://{container} needs ${CONNECTION_STRING_ENV} (or use "
                    f"azblob://ACCOUNT.blob.core.windows.net/{container} with Entra ID)")
            try:
                service = BlobServiceClient.from_connection_string(conn, **kw)
            except ValueError as exc:
                raise UsageError(f"${CONNECTION_STRING_ENV} is not a usable storage connection "
                                 f"string ({_safe_value_error(exc)})") from None
            kind = "connection-string"
            return cls(service, container, block_size=block_size, concurrency=concurrency,
                       credential_kind=kind, provider=provider, prefix=prefix)

        # azblob://ACCOUNT.blob.core.windows.net/CONTAINER
        container = path
        if "/" in container:
            raise UsageError(f"azblob URL {_redact_url(url)!r} names more than a container")
        _check_container(container)
        account = host.split(".", 1)[0].lower()
        if not _ACCOUNT_RE.match(account):
            raise UsageError(f"azblob URL {_redact_url(url)!r}: {account!r} is not a storage account name")
        account_url = f"https://{parts.netloc}"
        kind = "entra-id"
        if credential is not None:
            kind = "explicit"
        elif sas:
            credential, kind = sas, "sas"
        else:
            fields = _parse_connection_string(conn) if conn else {}
            if fields.get("accountname", "").lower() == account and fields.get("accountkey"):
                credential = {"account_name": fields["accountname"], "account_key": fields["accountkey"]}
                kind = "shared-key"
            elif fields.get("accountname", "").lower() == account and fields.get("sharedaccesssignature"):
                credential, kind = fields["sharedaccesssignature"], "sas"
            else:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
        try:
            service = BlobServiceClient(account_url, credential=credential, **kw)
        except ValueError as exc:
            raise UsageError(f"azblob URL {_redact_url(url)!r}: {_safe_value_error(exc)}") from None
        return cls(service, container, block_size=block_size, concurrency=concurrency,
                   credential_kind=kind, provider=provider, prefix=prefix)

    @property
    def credential(self) -> Any:
        """The SDK credential object in use (never printed: may hold a key)."""
        return self._service.credential

    # --- keys --------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_key(key)
        if key.split("/", 1)[0].startswith(".sekiops-"):
            raise UnsafeKeyError(f"blob key {key!r} names the store's private incoming folder")
        return key

    # --- protocol ----------------------------------------------------------------------------

    def write(self, stream: BinaryIO, name: str, *, sha256: str | None = None,
              size: int | None = None) -> BlobWrite:
        self._key(self.key_for(name, "0" * 64))  # a bad name or an over-long prefixed key: refused first
        if sha256 is not None:
            sha256 = sha256.lower()
            if not re.fullmatch(r"[0-9a-f]{64}", sha256):
                raise IntegrityError(f"{self.location}: sha256 hint for {name!r} is not 64 hex digits")
        spool = None
        try:
            if sha256 is None:
                start = _seek_start(stream)
                if start is None:
                    # Not seekable: spool to a private temp file (0600, already unlinked) while
                    # hashing, then upload from the spool.
                    spool, n, digest = self._spool(stream, name)
                    stream, start = spool, 0
                else:
                    n, digest = copy_hashing(stream, None)
                    stream.seek(start)
                if size is not None and size != n:
                    raise IntegrityError(
                        f"{self.location}: stream for {name!r} has {n} bytes, the caller declared {size}")
                expect_sha, expect_size = digest, n
            else:
                expect_sha, expect_size = sha256, size
            key = self._key(self.key_for(name, expect_sha))
            return self._write_key(stream, key, expect_sha, expect_size, hashed=sha256 is None)
        finally:
            if spool is not None:
                spool.close()

    def write_key(self, stream: BinaryIO, key: str, *, sha256: str | None = None,
                  size: int | None = None) -> BlobWrite:
        """Bytes under exactly ``key`` (a content-addressed key must be their hash), hashed first."""
        self._key(key)
        promised = content_hash(key)
        spool = None
        try:
            start = _seek_start(stream)
            if start is None:
                spool, n, digest = self._spool(stream, key)
                stream, start = spool, 0
            else:
                n, digest = copy_hashing(stream, None)
                stream.seek(start)
            for want, what in ((sha256, "the caller's sha256"), (promised, "the sha256 its key promises")):
                if want and want != digest:
                    raise IntegrityError(f"{self.location}: bytes for {key!r} differ from {what}; nothing written")
            if size is not None and size != n:
                raise IntegrityError(f"{self.location}: stream for {key!r} has {n} bytes, the caller declared {size}")
            return self._write_key(stream, key, digest, n, hashed=True)
        finally:
            if spool is not None:
                spool.close()

    def _spool(self, stream: BinaryIO, name: str):
        spool = tempfile.TemporaryFile(prefix="sekiops-azure-")
        try:
            n, digest = copy_hashing(stream, spool)
            spool.flush()
            spool.seek(0)
        except OSError as exc:
            spool.close()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise SpoolError(f"{self.location}: no room in {tempfile.gettempdir()!r} to spool the "
                                 f"non-seekable stream for {name!r} ({exc.strerror})") from None
            raise
        except BaseException:
            spool.close()
            raise
        return spool, n, digest

    def _write_key(self, stream: BinaryIO, key: str, expect_sha: str, expect_size: int | None,
                   hashed: bool) -> BlobWrite:
        blob = self._container.get_blob_client(key)
        existing = self._head(blob, key, for_write=True)
        if existing is not None and (expect_size is None or existing.size == expect_size):
            if hashed:
                # We hashed these bytes ourselves: the key proves the content is already there.
                log.debug("%s: %s already stored (%d bytes)", self.location, key, existing.size)
                if self._touch(blob, key):
                    return BlobWrite(key, existing.size, expect_sha)
                # deleted between the HEAD and the touch: upload it again (below)
            else:
                # The caller's hint names an existing blob: make sure the stream really is those bytes.
                start = _seek_start(stream)
                n, digest = copy_hashing(stream, None)
                self._check(key, expect_sha, expect_size, digest, n)
                if n == existing.size and self._touch(blob, key):
                    return BlobWrite(key, n, digest)
                # The stored blob's size contradicts its own key: it is damaged. Rewrite it.
                if start is None:
                    raise IntegrityError(
                        f"{self.location}: stored {key!r} has {existing.size} bytes, not the {n} its "
                        f"hash names (damaged); write it again with a size hint or a seekable stream")
                stream.seek(start)
                expect_size = n
        n, digest = self._upload_blocks(blob, stream, key, expect_sha, expect_size)
        return BlobWrite(key, n, digest)

    def _check(self, key: str, expect_sha: str, expect_size: int | None, digest: str, n: int) -> None:
        if digest != expect_sha or (expect_size is not None and n != expect_size):
            raise IntegrityError(
                f"{self.location}: bytes for {key!r} differ from the declared hash/size "
                f"(got {n} bytes, sha256 {digest[:12]}...; nothing was committed)")

    def _upload_blocks(self, blob, stream: BinaryIO, key: str, expect_sha: str,
                       expect_size: int | None) -> tuple[int, str]:
        block_size = self.block_size
        if expect_size is not None and expect_size > block_size * MAX_BLOCKS:
            block_size = -(-expect_size // MAX_BLOCKS)
            block_size = -(-block_size // MiB) * MiB
            if block_size > MAX_BLOCK_SIZE:
                raise StoreError(f"{self.location}: {expect_size} bytes is more than one blob holds")
        # Block ids must all have the same length within a blob (uncommitted ones of an earlier
        # or concurrent upload included): 16 hex digits of upload id + 6 digits of index.
        upload_id = secrets.token_hex(8)
        h = hashlib.sha256()
        n = 0
        ids: list[str] = []
        pending: deque = deque()
        pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                  thread_name_prefix="sekiops-azure-put") if self.concurrency > 1 else None
        try:
            while True:
                # Bounded memory: wait until a worker is free before reading the next block.
                while pending and (len(pending) >= self.concurrency or pending[0].done()):
                    pending.popleft().result()
                data = read_full(stream, block_size)
                if not data:
                    break
                h.update(data)
                n += len(data)
                if expect_size is not None and n > expect_size:
                    self._check(key, expect_sha, expect_size, h.hexdigest(), n)
                if len(ids) >= MAX_BLOCKS:
                    raise StoreError(f"{self.location}: {key!r} needs more than {MAX_BLOCKS} blocks "
                                     f"of {block_size} bytes; raise block_size")
                block_id = f"{upload_id}{len(ids):06d}"
                ids.append(block_id)
                if pool is None:
                    self._stage(blob, key, block_id, data)
                else:
                    pending.append(pool.submit(self._stage, blob, key, block_id, data))
                del data
            while pending:
                pending.popleft().result()
        except BaseException:
            for f in pending:
                f.cancel()
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        digest = h.hexdigest()
        # Mismatch: never commit; the staged blocks stay uncommitted and Azure drops them.
        self._check(key, expect_sha, expect_size, digest, n)
        try:
            blob.commit_block_list(ids, content_settings=ContentSettings(content_type=CONTENT_TYPE))
        except HttpResponseError as exc:
            if _code(exc) in ("InvalidBlockList", "InvalidBlobOrBlock"):
                # A concurrent writer of the same bytes committed first (which drops other
                # writers' uncommitted blocks): fine when the blob is now there, same size.
                info = self._head(blob, key)
                if info is not None and info.size == n:
                    log.debug("%s: %s was committed by a concurrent writer", self.location, key)
                    return n, digest
            raise self._error(exc, "commit", key) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self._error(exc, "commit", key) from None
        log.debug("%s: wrote %s (%d bytes, %d blocks)", self.location, key, n, len(ids))
        return n, digest

    def _stage(self, blob, key: str, block_id: str, data: bytes) -> None:
        for attempt in (1, 2):
            try:
                blob.stage_block(block_id, data, length=len(data))
                return
            except ResourceNotFoundError as exc:
                if attempt == 1 and _code(exc) == "ContainerNotFound":
                    self._create_container(key)
                    continue
                raise self._error(exc, "upload", key) from None
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
                raise self._error(exc, "upload", key) from None

    def _create_container(self, key: str) -> None:
        with self._lock:
            if self._container_ready:
                return
            try:
                self._container.create_container()
                log.debug("%s: created container", self.location)
            except ResourceExistsError:
                pass
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
                raise self._error(exc, "create container for", key) from None
            self._container_ready = True

    def _touch(self, blob, key: str) -> bool:
        """Refresh Last-Modified and the ETag of a blob written again (skipped upload), so an orphan
        audit's grace window counts from this write and a gc's conditional delete of the version it
        certified fails: a snapshot about to point at it is never collected. False when the blob
        was deleted meanwhile (the caller uploads it again)."""
        try:
            blob.set_blob_metadata({"sekiopswritten": datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")})
            return True
        except ResourceNotFoundError as exc:
            self._real_404(exc, "touch", key)
            return False
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            raise self._error(exc, "touch", key) from None

    def _head(self, blob, key: str, for_write: bool = False) -> BlobInfo | None:
        try:
            p = blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            self._real_404(exc, "stat", key)
            if for_write and _code(exc) == "ContainerNotFound":
                self._create_container(key)
            return None
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            raise self._error(exc, "stat", key) from None
        return BlobInfo(key, int(p.size), p.last_modified, _etag(p.etag))

    def open_read(self, key: str) -> BinaryIO:
        self._key(key)
        blob = self._container.get_blob_client(key)
        try:
            downloader = blob.download_blob(max_concurrency=1)
        except ResourceNotFoundError as exc:
            self._real_404(exc, "read", key)
            raise BlobNotFoundError(f"blob {key!r} not found in {self.location}") from None
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            raise self._error(exc, "read", key) from None
        chunks = iter(downloader.chunks())

        def next_chunk() -> bytes:
            try:
                return next(chunks, b"")
            except ResourceNotFoundError as exc:
                self._real_404(exc, "read", key)
                raise BlobNotFoundError(f"blob {key!r} disappeared from {self.location} while "
                                        f"being read") from None
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
                raise self._error(exc, "read", key) from None

        return io.BufferedReader(_ChunkStream(next_chunk, downloader.size), buffer_size=1 * MiB)

    def stat(self, key: str) -> BlobInfo | None:
        self._key(key)
        return self._head(self._container.get_blob_client(key), key)

    def canonical_key(self, key: str) -> str:
        """Azure Storage keeps a ``\\`` in a blob name as ``/`` (the listing shows the latter)."""
        return key.replace("\\", "/")

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self._key(key)
        blob = self._container.get_blob_client(key)
        try:
            return blob.download_blob(offset=offset, length=length, max_concurrency=1).readall()
        except ResourceNotFoundError as exc:
            self._real_404(exc, "read", key)
            raise BlobNotFoundError(f"blob {key!r} not found in {self.location}") from None
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            if getattr(exc, "status_code", None) == 416:  # range past the end
                return b""
            raise self._error(exc, "read", key) from None

    def delete(self, key: str, *, if_version: str | None = None) -> bool:
        self._key(key)
        check_if_version(self, if_version)
        try:
            if if_version is None:
                self._container.delete_blob(key)
            else:
                self._container.delete_blob(key, etag=if_version, match_condition=MatchConditions.IfNotModified)
            return True
        except ResourceNotFoundError as exc:
            self._real_404(exc, "delete", key)
            return False
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            if getattr(exc, "status_code", None) == 412 and if_version is not None:
                if self.stat(key) is None:  # If-Match on a blob that is gone: nothing to delete
                    return False
                raise BlobChangedError(f"{self.location}: blob {key!r} was written again since it was "
                                       "certified (ETag changed); not deleted") from None
            if _code(exc) == "SnapshotsPresent":
                raise StoreError(f"{self.location}: blob {key!r} has snapshots; not deleted "
                                 f"(remove the snapshots first)") from None
            raise self._error(exc, "delete", key) from None

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        pages = self._container.list_blobs(name_starts_with=prefix or None).by_page()
        while True:
            try:
                page = next(pages, None)
                if page is None:
                    return
                items = list(page)
            except ResourceNotFoundError as exc:
                self._real_404(exc, "list", prefix or "(all)")
                return  # no container: nothing stored yet
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
                raise self._error(exc, "list", prefix or "(all)") from None
            for b in items:
                if b.name.split("/", 1)[0] == INCOMING:
                    continue
                yield BlobInfo(b.name, int(b.size or 0), b.last_modified, _etag(b.etag))

    def close(self) -> None:
        for obj in (self._service, self._service.credential if self.credential_kind == "entra-id" else None):
            try:
                if obj is not None and hasattr(obj, "close"):
                    obj.close()
            except Exception:  # closing must never fail a caller
                pass

    def __enter__(self) -> AzureBlobStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AzureBlobStore({self.location!r})"

    # --- errors ------------------------------------------------------------------------------

    def _real_404(self, exc: Exception, op: str, key: str) -> None:
        """Refuse a 404 that did not come from Azure Storage (wrong endpoint, proxy page).

        Otherwise a misconfigured endpoint would make every blob look missing, which audits
        would report as lost data.
        """
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        if not any(h in headers for h in ("x-ms-request-id", "x-ms-error-code")):
            raise StoreError(f"{self.location} ({op} {key!r}): the endpoint answered HTTP 404 "
                             f"without Azure Storage headers; is the blob endpoint right?") from None

    def _error(self, exc: Exception, op: str, key: str) -> SekiopsError:
        """A SekiopsError for an SDK failure: status and error code only, never the SDK's text."""
        where = f"{self.location} ({op} {key!r})"
        if isinstance(exc, ServiceRequestError):
            return StoreUnavailableError(f"{where}: cannot reach the blob endpoint ({_cause(exc)})")
        if isinstance(exc, ServiceResponseError):
            return StoreUnavailableError(f"{where}: connection failed while waiting for the answer "
                                         f"({_cause(exc)})")
        status = getattr(exc, "status_code", None)
        code = _code(exc)
        tag = f"HTTP {status}" + (f" {code}" if code else "") if status else (code or type(exc).__name__)
        if isinstance(exc, ClientAuthenticationError) and status is None:
            # Raised by azure-identity before any request: no usable credential.
            return StoreError(f"{where}: authentication failed: no usable Azure credential "
                              f"({self.credential_kind}; {type(exc).__name__}): sign in (az login, "
                              f"managed identity, AZURE_CLIENT_ID/...) or set ${CONNECTION_STRING_ENV}")
        reason = str(getattr(getattr(exc, "response", None), "reason", "") or "").lower()
        if (status == 401 or code in ("AuthenticationFailed", "InvalidAuthenticationInfo")
                or (status == 403 and "failed to authenticate" in reason)):
            # (Azurite answers a bad signature with AuthorizationFailure and this reason phrase.)
            return StoreError(f"{where}: authentication failed ({tag})")
        if status == 403:
            return StoreError(f"{where}: permission denied ({tag})")
        if status == 412 and op == "read":
            # The blob was rewritten (new ETag) between two ranged GETs: a retry reads it whole.
            return StoreUnavailableError(f"{where}: the blob changed while being read ({tag})")
        if status is not None and (status >= 500 or status in (408, 429)):
            return StoreUnavailableError(f"{where}: the service is unavailable or throttling ({tag})")
        if code == "InvalidHeaderValue":
            # Typically x-ms-version: emulators lag behind the SDK's newest API version.
            return StoreError(f"{where}: refused ({tag}); if the service does not know API version "
                              f"{self._service.api_version}, set ${API_VERSION_ENV} (e.g. 2025-11-05)")
        return StoreError(f"{where}: refused ({tag})")


class _ChunkStream(io.RawIOBase):
    """Raw readable stream over successive downloaded chunks (``b""`` at the end)."""

    def __init__(self, next_chunk, size: int):
        self._next = next_chunk
        self._chunk = memoryview(b"")
        self._eof = False
        #: Blob size announced by the service.
        self.size = size

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        while not self._chunk:
            if self._eof:
                return False
            data = self._next()
            if not data:
                self._eof = True
                self._chunk = memoryview(b"")
                return False
            self._chunk = memoryview(data)
        return True

    def readinto(self, b) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed blob stream")
        if not self._fill():
            return 0
        n = min(len(b), len(self._chunk))
        b[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n

    def readall(self) -> bytes:
        parts = []
        while self._fill():
            parts.append(bytes(self._chunk))
            self._chunk = memoryview(b"")
        return b"".join(parts)

    def close(self) -> None:
        self._chunk = memoryview(b"")
        super().close()


# --- helpers ---------------------------------------------------------------------------------


def _client_kwargs(api_version: str | None, retries: int = RETRY_TOTAL,
                   timeouts: Timeouts | None = None) -> dict[str, Any]:
    timeouts = timeouts or timeouts_for()
    kw: dict[str, Any] = dict(
        max_single_get_size=DEFAULT_GET_SIZE,
        max_chunk_get_size=DEFAULT_GET_SIZE,
        # The SDK annotates these as int but computes the delay in floats (get_backoff_time): the
        # sub-second jitter and the 1.6 base are deliberate.
        retry_policy=ExponentialRetry(initial_backoff=RETRY_INITIAL_BACKOFF,  # type: ignore[arg-type]
                                      increment_base=RETRY_INCREMENT_BASE,  # type: ignore[arg-type]
                                      retry_total=retries,
                                      random_jitter_range=RETRY_JITTER),  # type: ignore[arg-type]
        connection_timeout=min(CONNECTION_TIMEOUT, timeouts.connect),
        read_timeout=timeouts.io,
    )
    if api_version:
        kw["api_version"] = api_version
    return kw


def _etag(value: str | None) -> str | None:
    """One form for an ETag (listings and property reads quote it differently): quoted."""
    if not value:
        return None
    return value if value.startswith('"') else f'"{value}"'


def _seek_start(stream: BinaryIO) -> int | None:
    """The stream's position when it can be read twice, else None."""
    try:
        if not stream.seekable():
            return None
        return stream.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _code(exc: Exception) -> str | None:
    code = getattr(exc, "error_code", None)
    if code is None:
        resp = getattr(exc, "response", None)
        headers = getattr(resp, "headers", None)
        if headers is not None:
            code = headers.get("x-ms-error-code")
    return str(getattr(code, "value", code)) if code else None


def _cause(exc: BaseException) -> str:
    """A short, secret-free description of why a connection failed."""
    seen = set()
    cur: BaseException | None = exc
    chain = []
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__ or getattr(cur, "inner_exception", None)
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return "timed out"
        if isinstance(e, socket.gaierror):
            return "host name not found"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
    names = [type(e).__name__ for e in chain]
    low = " ".join(str(e) for e in chain).lower()
    for needle, what in (("connection refused", "connection refused"), ("timed out", "timed out"),
                         ("name or service not known", "host name not found"),
                         ("temporary failure in name resolution", "host name not found"),
                         ("nodename nor servname", "host name not found"),
                         ("certificate", "TLS certificate problem"),
                         ("connection reset", "connection reset"),
                         ("connection aborted", "connection aborted")):
        if needle in low:
            return what
    return names[-1] if names else "unknown error"


def _parse_connection_string(conn: str) -> dict[str, str]:
    out = {}
    for part in conn.split(";"):
        k, sep, v = part.partition("=")
        if sep:
            out[k.strip().lower()] = v.strip()
    return out


def _check_container(name: str) -> None:
    if not name:
        raise UsageError("azblob URL names no container")
    if not _CONTAINER_RE.match(name):
        raise UsageError(f"{name!r} is not a valid Azure container name "
                         "(3-63 lower-case letters, digits and single hyphens)")


def _parse_int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"azblob option {what}={value!r} is not an integer") from None


def _redact_url(url: str) -> str:
    return redact(url.split("?", 1)[0]) + ("?***" if "?" in url else "")


def _safe_value_error(exc: ValueError) -> str:
    text = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return text[:200]
