"""Amazon S3 blob store (``s3://BUCKET``), with bounded memory for any blob size.

URL: ``s3://BUCKET``; query options ``prefix=`` (Sekiban's key prefix), ``region=``,
``endpoint=http://host:port`` and ``path_style=true`` (S3-compatible servers: MinIO, moto,
LocalStack...), ``sse=AES256`` (default, as Sekiban's ``EnableEncryption``) or ``sse=none``,
``part_size=`` (a size: bytes, or e.g. ``16MiB``; default 8 MiB, at least S3's 5 MiB),
``concurrency=`` (parts in flight, default 2), ``profile=``, ``timeout=``/``connect_timeout=``,
``retries=``. Credentials and region: the standard AWS chain (:mod:`sekiops.aws`). The bucket
must exist (sekiops never creates one); a missing bucket is an error naming it, never "every
blob is missing".

Writes are content addressed (``{prefix}/{name}/{sha256}.bin``, Sekiban 10.23's keys), content
type ``application/octet-stream``, server-side encryption AES256 unless ``sse=none``. The bytes
are hashed while they are read and nothing lands under the final key unless they match the
caller's hash and size: a blob up to ``part_size`` goes as one ``PutObject`` (Sekiban's own way)
after the check; a larger one as a multipart upload of ``part_size`` parts, completed only after
the check and aborted on any failure. At most ``concurrency + 1`` parts are in memory. A crash
mid-upload leaves an incomplete multipart upload, invisible to readers and listings (a bucket
lifecycle rule ``AbortIncompleteMultipartUpload`` reclaims it). Every part and single put carries
its ``Content-MD5``, so the service refuses bytes damaged on the way. Writing bytes that are
already stored skips the upload and copies the object onto itself (new Last-Modified, new
version): an orphan audit's grace window and a gc's certified version both see the new write.

Reads stream ``GetObject`` bodies; a connection lost mid-body resumes with a ranged GET pinned
to the object's ETag (a rewrite in between fails instead of mixing bytes), and a
content-addressed key's bytes are hashed as they are read: a mismatch at the end is
IntegrityError. Objects Sekiban wrote with one ``PutObject`` and multipart objects read alike.

Versions and conditional delete: S3's ETag is the MD5 of the bytes, so a rewrite of the same
bytes keeps it and cannot tell a gc that a persist wrote the key again after the audit
certified it. On a bucket with versioning **Enabled**, ``BlobInfo.version`` is the VersionId
(every write makes a new one) and ``delete(key, if_version=v)`` permanently deletes ``v`` and
the key's older versions, never a newer one: if a newer version is current, it raises
BlobChangedError and deletes nothing. Listings read ``ListObjectVersions`` (paged) and report
each key's latest version. On an unversioned (or suspended) bucket there is no such guard:
``capabilities.conditional_delete`` is False, ``version`` is ``{ETag}@{Last-Modified seconds}``
(informational) and gc-blobs refuses to delete; audits still work. Enable versioning with
``aws s3api put-bucket-versioning --bucket BUCKET --versioning-configuration Status=Enabled``.

Secrets never reach ``location``, ``repr``, messages or logs: errors name the bucket and key,
the HTTP status and the S3 error code, never the SDK's text (which can quote signatures).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import re
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from .. import aws
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
from ..format.constants import PROVIDER_S3
from ..format.keys import check_key, content_hash
from ..streams import copy_hashing, read_full
from ..units import format_bytes, parse_size
from ..urls import query_flags, redact
from .base import BlobCapabilities, BlobInfo, BlobStore, BlobWrite, check_if_version

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: S3's smallest part (all but the last), largest part and most parts per upload.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
#: Largest object a single CopyObject can copy (the "touch" of an existing blob).
MAX_COPY_SIZE = 5 * 1024 * MiB
#: Default part size (docs/benchmarks.md: 8 MiB parts upload as fast as larger ones and keep
#: the peak at concurrency + 1 parts).
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_CONCURRENCY = 2
#: Bytes per read of a GetObject body.
READ_CHUNK = 1 * MiB
#: Ranged GETs a reader may resume with after connections lost mid-body.
READ_RESUMES = 3
CONTENT_TYPE = "application/octet-stream"
#: Reserved top-level folder, refused as on the other stores.
INCOMING = ".sekiops-incoming"
OWN_OPTIONS = ("prefix", "sse", "part_size", "concurrency", "path_style", "provider", "create")
VERSIONING_HOWTO = ("enable versioning: aws s3api put-bucket-versioning --bucket {bucket} "
                    "--versioning-configuration Status=Enabled")

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _md5(data) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


def _seek_start(stream: BinaryIO) -> int | None:
    try:
        if not stream.seekable():
            return None
        return stream.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _version(info: dict, versioned: bool) -> str | None:
    """The version token of a HEAD or listing entry (see the module docstring)."""
    if versioned and info.get("VersionId") not in (None, ""):
        return str(info["VersionId"])
    etag = info.get("ETag")
    modified = info.get("LastModified")
    if not etag:
        return None
    seconds = int(modified.timestamp()) if isinstance(modified, datetime) else 0
    return f"{etag}@{seconds}"


class S3BlobStore(BlobStore):
    """A :class:`~sekiops.blob.base.BlobStore` over one S3 bucket; see the module docstring."""

    provider = PROVIDER_S3

    def __init__(self, client: Any, bucket: str, *, settings: aws.AwsSettings | None = None, prefix: str = "",
                 sse: str | None = "AES256", part_size: int = DEFAULT_PART_SIZE,
                 concurrency: int = DEFAULT_CONCURRENCY, provider: str | None = None, location: str | None = None):
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise UsageError(f"s3 part_size must be {format_bytes(MIN_PART_SIZE)}..{format_bytes(MAX_PART_SIZE)} "
                             f"(S3's limits), not {format_bytes(part_size)} ({part_size:,} bytes)")
        if not 1 <= concurrency <= 16:
            raise UsageError(f"s3 concurrency must be 1..16, not {concurrency}")
        self._client = client
        self.bucket = bucket
        self.settings = settings or aws.AwsSettings()
        self.prefix = prefix
        self.sse = sse
        self.part_size = int(part_size)
        self.concurrency = int(concurrency)
        if provider:
            self.provider = provider
        base = location or f"s3://{bucket}"
        where = [f"region={self.settings.region}"] if self.settings.region else []
        if self.settings.endpoint:
            where.append(f"endpoint={redact(self.settings.endpoint)}")
        self.location = f"{base} ({', '.join(where)})" if where else base
        self._lock = threading.Lock()
        self.versioning = self._read_versioning()
        self.capabilities = self._capabilities()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3BlobStore:
        parts = urlsplit(url)
        if parts.scheme.lower() != "s3":
            raise UsageError(f"not an s3:// URL: {redact(url)!r}")
        if parts.username or parts.password:
            raise UsageError("an s3:// URL carries no credentials: use the AWS credential chain")
        bucket = unquote(parts.hostname or "")
        if parts.path.strip("/"):
            raise UsageError(f"s3 URL {redact(url.split('?', 1)[0])!r}: name the bucket only (s3://BUCKET); "
                             "a key prefix goes in ?prefix=")
        if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
            raise UsageError(f"{bucket!r} is not a valid S3 bucket name (3-63 lower-case letters, digits, '.', '-')")
        location = f"s3://{bucket}"
        query = query_flags(url)
        for key in OWN_OPTIONS:
            if key in query:
                options.setdefault(key, query[key])
        unknown = set(query) - set(OWN_OPTIONS) - set(aws.COMMON_OPTIONS)
        settings = aws.settings_from(url, options, location)
        prefix = options.pop("prefix", "") or ""
        sse_option = str(options.pop("sse", "AES256") or "AES256").strip()
        sse: str | None
        if sse_option.lower() in ("none", "off", "false"):
            sse = None
        elif sse_option.upper() == "AES256":
            sse = "AES256"
        else:
            raise UsageError(f"{location}: sse={sse_option!r}: use AES256 (default) or none")
        part_size = parse_size(options.pop("part_size", DEFAULT_PART_SIZE), what="s3 option part_size")
        try:
            concurrency = int(options.pop("concurrency", DEFAULT_CONCURRENCY))
        except ValueError:
            raise UsageError(f"{location}: concurrency must be an integer") from None
        path_style = options.pop("path_style", None)
        style = "auto" if path_style is None else ("path" if aws.flag(path_style) else "virtual")
        provider = options.pop("provider", None)
        options.pop("create", None)  # buckets are never created by sekiops
        unknown |= set(options)
        if unknown:
            raise UsageError(f"{location}: unknown option(s) {', '.join(sorted(unknown))} (known: "
                             f"{', '.join(OWN_OPTIONS + aws.COMMON_OPTIONS)})")
        client = aws.make_client("s3", settings, location, s3={"addressing_style": style},
                                 request_checksum_calculation="when_required",
                                 response_checksum_validation="when_required",
                                 max_pool_connections=max(10, concurrency + 2))
        return cls(client, bucket, settings=settings, prefix=prefix, sse=sse, part_size=part_size,
                   concurrency=concurrency, provider=provider, location=location)

    # --- plumbing ----------------------------------------------------------------------------

    def _run(self, what: str, key: str, fn, idempotent: bool = True):
        return aws.run(fn, where=self.location, what=f"{what} {key!r}", settings=self.settings,
                       idempotent=idempotent, hint="retry later")

    def _error(self, exc: BaseException, what: str, key: str) -> SekiopsError:
        """A final error for a ClientError nobody interpreted: status and code, never the SDK text."""
        code, status = aws.error_code(exc)
        where = f"{self.location} ({what} {key!r})"
        if code == "NoSuchBucket":
            return StoreError(f"{where}: bucket {self.bucket!r} does not exist")
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
            return StoreError(f"{where}: the bucket is in another region ({aws.tag(exc)}); set ?region=")
        if code == "InvalidObjectState":
            return StoreError(f"{where}: the object is archived ({aws.tag(exc)}); "
                              "restore it from its storage class first")
        return StoreError(f"{where}: refused ({aws.tag(exc)})")

    def _real_404(self, exc: BaseException, what: str, key: str) -> None:
        """Refuse a 404 that did not come from S3 (a wrong endpoint or a proxy's page): otherwise
        a misconfigured endpoint would make every blob look missing, and audits report lost data."""
        headers = ((getattr(exc, "response", None) or {}).get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        if not any(h in headers for h in ("x-amz-request-id", "x-amz-id-2", "x-amzn-requestid")):
            raise StoreError(f"{self.location} ({what} {key!r}): the endpoint answered HTTP 404 without S3 "
                             "headers; is the endpoint right?") from None
        if aws.error_code(exc)[0] == "NoSuchBucket":
            raise self._error(exc, what, key) from None

    def _key(self, key: str) -> str:
        check_key(key)
        if key.split("/", 1)[0].startswith(".sekiops-"):
            raise UnsafeKeyError(f"blob key {key!r} names the store's private incoming folder")
        return key

    def _read_versioning(self) -> str | None:
        """The bucket's versioning status ("Enabled", "Suspended", ""), None when we may not read it."""
        from botocore.exceptions import ClientError

        try:
            answer = self._run("read versioning of", self.bucket,
                               lambda: self._client.get_bucket_versioning(Bucket=self.bucket))
        except ClientError as exc:
            code, status = aws.error_code(exc)
            if code == "NoSuchBucket" or status == 404:
                raise StoreError(f"{self.location}: bucket {self.bucket!r} does not exist (sekiops never creates "
                                 "buckets: aws s3api create-bucket --bucket ...)") from None
            raise self._error(exc, "read versioning of", self.bucket) from None
        except StoreError as exc:
            if "permission denied" in str(exc):
                log.warning("%s: cannot read the bucket's versioning status (permission denied): conditional "
                            "deletes are off", self.location)
                return None
            raise
        return str(answer.get("Status") or "")

    @property
    def versioned(self) -> bool:
        return self.versioning == "Enabled"

    def _capabilities(self) -> BlobCapabilities:
        if self.versioned:
            return BlobCapabilities(range_reads=True, conditional_delete=True)
        howto = VERSIONING_HOWTO.format(bucket=self.bucket)
        if self.versioning is None:
            note = (f"cannot read bucket {self.bucket}'s versioning status (grant s3:GetBucketVersioning); "
                    f"a conditional delete needs versioning Enabled: {howto}")
        else:
            state = self.versioning or "never enabled"
            note = (f"bucket {self.bucket} has versioning {state}: S3's ETag is the MD5 of the bytes, so a "
                    f"rewrite of the same bytes is indistinguishable without version ids; {howto}")
        return BlobCapabilities(range_reads=True, conditional_delete=False, conditional_delete_note=note)

    def _info(self, key: str, answer: dict) -> BlobInfo:
        size = answer.get("ContentLength", answer.get("Size"))
        return BlobInfo(key, int(size or 0), answer.get("LastModified"), _version(answer, self.versioned))

    def _head(self, key: str, version_id: str | None = None) -> dict | None:
        from botocore.exceptions import ClientError

        kw = {"VersionId": version_id} if version_id else {}
        try:
            return self._run("stat", key, lambda: self._client.head_object(Bucket=self.bucket, Key=key, **kw))
        except ClientError as exc:
            code, status = aws.error_code(exc)
            if status == 404 or code in ("NoSuchKey", "NoSuchVersion", "404"):
                self._real_404(exc, "stat", key)
                return None
            if status == 400 and version_id and code in ("InvalidArgument", "400"):
                return None  # a version id this bucket never issued
            raise self._error(exc, "stat", key) from None

    # --- writes ------------------------------------------------------------------------------

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
                    spool, n, digest = self._spool(stream, name)
                    stream = spool
                else:
                    n, digest = copy_hashing(stream, None)
                    stream.seek(start)
                if size is not None and size != n:
                    raise IntegrityError(f"{self.location}: stream for {name!r} has {n} bytes, the caller "
                                         f"declared {size}")
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
        self._key(key)
        promised = content_hash(key)
        spool = None
        try:
            start = _seek_start(stream)
            if start is None:
                spool, n, digest = self._spool(stream, key)
                stream = spool
            else:
                n, digest = copy_hashing(stream, None)
                stream.seek(start)
            for want, what in ((sha256, "the caller's sha256"), (promised, "the sha256 its key promises")):
                if want and want.lower() != digest:
                    raise IntegrityError(f"{self.location}: bytes for {key!r} differ from {what}; nothing written")
            if size is not None and size != n:
                raise IntegrityError(f"{self.location}: stream for {key!r} has {n} bytes, the caller declared {size}")
            return self._write_key(stream, key, digest, n, hashed=True)
        finally:
            if spool is not None:
                spool.close()

    def _spool(self, stream: BinaryIO, name: str):
        spool = tempfile.TemporaryFile(prefix="sekiops-s3-")
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

    def _check(self, key: str, expect_sha: str, expect_size: int | None, digest: str, n: int) -> None:
        if digest != expect_sha or (expect_size is not None and n != expect_size):
            raise IntegrityError(
                f"{self.location}: bytes for {key!r} differ from the declared hash/size (got {n} bytes, sha256 "
                f"{digest[:12]}...; nothing was written)")

    def _write_key(self, stream: BinaryIO, key: str, expect_sha: str, expect_size: int | None,
                   hashed: bool) -> BlobWrite:
        existing = self._head(key)
        if existing is not None and (expect_size is None or int(existing["ContentLength"]) == expect_size):
            stored_size = int(existing["ContentLength"])
            if hashed:
                # We hashed these bytes ourselves: the key proves the content is already there.
                if self._touch(key, existing):
                    return BlobWrite(key, stored_size, expect_sha)
            else:
                # The caller's hint names an existing blob: make sure the stream really is those bytes.
                start = _seek_start(stream)
                n, digest = copy_hashing(stream, None)
                self._check(key, expect_sha, expect_size, digest, n)
                if n == stored_size and self._touch(key, existing):
                    return BlobWrite(key, n, digest)
                if start is None:
                    raise IntegrityError(
                        f"{self.location}: stored {key!r} has {stored_size} bytes, not the {n} its hash names "
                        "(damaged); write it again with a size hint or a seekable stream")
                stream.seek(start)
                expect_size = n
        n, digest = self._upload(stream, key, expect_sha, expect_size)
        return BlobWrite(key, n, digest)

    def _put_args(self) -> dict:
        args: dict[str, Any] = {"ContentType": CONTENT_TYPE}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        return args

    def _touch(self, key: str, head: dict) -> bool:
        """Copy the stored object onto itself (new Last-Modified and version), so an orphan audit's
        grace window counts from this write and a gc's conditional delete of the version it certified
        fails: a snapshot about to point at it is never collected. False when it is gone meanwhile
        (or too big for one copy): the caller uploads it again."""
        from botocore.exceptions import ClientError

        if int(head.get("ContentLength") or 0) > MAX_COPY_SIZE:
            return False
        source: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if head.get("VersionId") not in (None, "", "null") and self.versioned:
            source["VersionId"] = head["VersionId"]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        try:
            self._run("touch", key, lambda: self._client.copy_object(
                Bucket=self.bucket, Key=key, CopySource=source, MetadataDirective="REPLACE",
                Metadata={"sekiops-written": stamp}, **self._put_args()))
        except ClientError as exc:
            code, status = aws.error_code(exc)
            if code in ("NoSuchKey", "NoSuchVersion") or status == 404:
                self._real_404(exc, "touch", key)
                return False
            raise self._error(exc, "touch", key) from None
        log.debug("%s: %s already stored; touched", self.location, key)
        return True

    def _upload(self, stream: BinaryIO, key: str, expect_sha: str, expect_size: int | None) -> tuple[int, str]:
        part_size = self.part_size
        if expect_size is not None and expect_size > part_size * MAX_PARTS:
            part_size = -(-expect_size // MAX_PARTS)
            part_size = -(-part_size // MiB) * MiB
            if part_size > MAX_PART_SIZE:
                raise StoreError(f"{self.location}: {expect_size} bytes is more than one S3 object holds")
        h = hashlib.sha256()
        first = read_full(stream, part_size)
        h.update(first)
        n = len(first)
        if n < part_size:
            # Everything fits one part: check, then one PutObject (as Sekiban writes).
            self._check(key, expect_sha, expect_size, h.hexdigest(), n)
            from botocore.exceptions import ClientError

            try:
                self._run("upload", key, lambda: self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=first, ContentMD5=_md5(first), **self._put_args()))
            except ClientError as exc:
                raise self._error(exc, "upload", key) from None
            log.debug("%s: wrote %s (%d bytes, one put)", self.location, key, n)
            return n, h.hexdigest()
        return self._multipart(stream, key, first, h, part_size, expect_sha, expect_size)

    def _multipart(self, stream: BinaryIO, key: str, first: bytes, h, part_size: int, expect_sha: str,
                   expect_size: int | None) -> tuple[int, str]:
        from botocore.exceptions import ClientError

        try:
            upload_id = self._run("start upload of", key, lambda: self._client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **self._put_args()))["UploadId"]
        except ClientError as exc:
            raise self._error(exc, "start upload of", key) from None
        parts: list[dict] = []
        pending: deque = deque()
        pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                  thread_name_prefix="sekiops-s3-part") if self.concurrency > 1 else None
        n = len(first)
        data = first
        completed = False
        try:
            number = 0
            while data:
                number += 1
                if number > MAX_PARTS:
                    raise StoreError(f"{self.location}: {key!r} needs more than {MAX_PARTS} parts of {part_size} "
                                     "bytes; raise part_size")
                if pool is None:
                    parts.append(self._part(key, upload_id, number, data))
                else:
                    pending.append(pool.submit(self._part, key, upload_id, number, data))
                del data
                # Bounded memory: wait for a free worker before reading the next part.
                while pending and (len(pending) >= self.concurrency or pending[0].done()):
                    parts.append(pending.popleft().result())
                data = read_full(stream, part_size)
                h.update(data)
                n += len(data)
                if expect_size is not None and n > expect_size:
                    self._check(key, expect_sha, expect_size, h.hexdigest(), n)
            while pending:
                parts.append(pending.popleft().result())
            digest = h.hexdigest()
            self._check(key, expect_sha, expect_size, digest, n)  # a mismatch: never completed, aborted below
            parts.sort(key=lambda p: p["PartNumber"])
            self._complete(key, upload_id, parts, n)
            completed = True
        finally:
            for f in pending:
                f.cancel()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if not completed:
                self._abort(key, upload_id)
        log.debug("%s: wrote %s (%d bytes, %d parts)", self.location, key, n, len(parts))
        return n, digest

    def _part(self, key: str, upload_id: str, number: int, data: bytes) -> dict:
        from botocore.exceptions import ClientError

        try:
            answer = self._run(f"upload part {number} of", key, lambda: self._client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data,
                ContentMD5=_md5(data)))
        except ClientError as exc:
            raise self._error(exc, f"upload part {number} of", key) from None
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _complete(self, key: str, upload_id: str, parts: list[dict], n: int) -> None:
        from botocore.exceptions import ClientError

        try:
            self._run("complete upload of", key, lambda: self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}))
        except ClientError as exc:
            if aws.error_code(exc)[0] == "NoSuchUpload":
                # A retry after a lost answer: the first call completed it. Fine if the object is there.
                head = self._head(key)
                if head is not None and int(head["ContentLength"]) == n:
                    return
            raise self._error(exc, "complete upload of", key) from None

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - best effort: the lifecycle rule reclaims what is left
            log.warning("%s: could not abort the multipart upload of %r; a bucket lifecycle rule "
                        "(AbortIncompleteMultipartUpload) reclaims it", self.location, key)

    # --- reads -------------------------------------------------------------------------------

    def _get(self, key: str, what: str, **kw) -> dict:
        from botocore.exceptions import ClientError

        try:
            return self._run(what, key, lambda: self._client.get_object(Bucket=self.bucket, Key=key, **kw))
        except ClientError as exc:
            code, status = aws.error_code(exc)
            if status == 404 or code in ("NoSuchKey", "NoSuchVersion"):
                self._real_404(exc, what, key)
                raise BlobNotFoundError(f"blob {key!r} not found in {self.location}") from None
            if code == "InvalidRange" or status == 416:
                raise
            if code == "PreconditionFailed" or status == 412:
                raise StoreUnavailableError(f"{self.location} ({what} {key!r}): the blob was written again while "
                                            "being read; read it again") from None
            raise self._error(exc, what, key) from None

    def open_read(self, key: str) -> BinaryIO:
        self._key(key)
        answer = self._get(key, "read")
        return io.BufferedReader(_S3Reader(self, key, answer), buffer_size=READ_CHUNK)

    def stat(self, key: str) -> BlobInfo | None:
        self._key(key)
        head = self._head(key)
        return self._info(key, head) if head is not None else None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        from botocore.exceptions import ClientError

        self._key(key)
        if length <= 0:
            return b""
        try:
            answer = self._get(key, "read", Range=f"bytes={offset}-{offset + length - 1}")
        except ClientError:
            return b""  # InvalidRange: the offset is past the end
        body = answer["Body"]
        try:
            return self._run("read", key, lambda: body.read())
        finally:
            body.close()

    # --- deletes and listings ----------------------------------------------------------------

    def _versions(self, key: str) -> list[dict]:
        """The key's versions and delete markers, newest first (exact key only, all pages)."""
        from botocore.exceptions import ClientError

        out: list[dict] = []
        marker: dict[str, str] = {}
        while True:
            try:
                page = self._run("list versions of", key, partial(self._client.list_object_versions,
                                                                  Bucket=self.bucket, Prefix=key, **marker))
            except ClientError as exc:
                raise self._error(exc, "list versions of", key) from None
            entries = [dict(v, deleteMarker=False) for v in page.get("Versions") or []]
            entries += [dict(v, deleteMarker=True) for v in page.get("DeleteMarkers") or []]
            past = False
            for entry in entries:
                if entry.get("Key") == key:
                    out.append(entry)
                elif (entry.get("Key") or "") > key:
                    past = True
            if past or not page.get("IsTruncated"):
                break
            marker = {"KeyMarker": page.get("NextKeyMarker") or "",
                      "VersionIdMarker": page.get("NextVersionIdMarker") or ""}
        # One key's versions come newest first within a page; sort across pages to be sure.
        floor = datetime.min.replace(tzinfo=UTC)
        out.sort(key=lambda e: (bool(e.get("IsLatest")), e.get("LastModified") or floor), reverse=True)
        return out

    def _delete_version(self, key: str, version_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._run("delete", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=key,
                                                                         VersionId=version_id))
        except ClientError as exc:
            if aws.error_code(exc)[1] == 404:
                return
            raise self._error(exc, "delete", key) from None

    def delete(self, key: str, *, if_version: str | None = None) -> bool:
        from botocore.exceptions import ClientError

        self._key(key)
        check_if_version(self, if_version)
        if if_version is not None:
            if if_version == "null":
                raise UsageError(f"{self.location}: version 'null' (written before versioning was enabled) "
                                 "cannot be deleted conditionally; rewrite or delete it unconditionally")
            # Versioning may have been suspended since this store was opened: then no guard holds.
            if self._read_versioning() != "Enabled":
                raise UsageError(f"{self.location}: versioning is no longer Enabled on bucket {self.bucket}; "
                                 "not deleting conditionally")
        if not self.versioned:
            if self._head(key) is None:
                return False
            try:
                self._run("delete", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=key))
            except ClientError as exc:
                raise self._error(exc, "delete", key) from None
            return True
        versions = self._versions(key)
        if not versions or versions[0]["deleteMarker"]:
            return False  # nothing a reader can see under the key
        current = versions[0]
        if if_version is not None and current.get("VersionId") != if_version:
            raise BlobChangedError(f"{self.location}: blob {key!r} was written again since it was certified "
                                   f"(version {if_version} is no longer the current one); not deleted")
        # The current version and every older one (data and delete markers): a version written
        # after this listing is newer and survives.
        for entry in versions:
            self._delete_version(key, entry["VersionId"])
        return True

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        from botocore.exceptions import ClientError

        if self.versioned:
            marker: dict[str, str] = {}
            while True:
                try:
                    page = self._run("list", prefix or "(all)", partial(self._client.list_object_versions,
                                                                        Bucket=self.bucket, Prefix=prefix, **marker))
                except ClientError as exc:
                    raise self._error(exc, "list", prefix or "(all)") from None
                for v in page.get("Versions") or []:
                    if v.get("IsLatest") and v["Key"].split("/", 1)[0] != INCOMING:
                        yield self._info(v["Key"], v)
                if not page.get("IsTruncated"):
                    return
                marker = {"KeyMarker": page.get("NextKeyMarker") or "",
                          "VersionIdMarker": page.get("NextVersionIdMarker") or ""}
        token: dict[str, str] = {}
        while True:
            try:
                page = self._run("list", prefix or "(all)", partial(self._client.list_objects_v2,
                                                                    Bucket=self.bucket, Prefix=prefix, **token))
            except ClientError as exc:
                raise self._error(exc, "list", prefix or "(all)") from None
            for o in page.get("Contents") or []:
                if o["Key"].split("/", 1)[0] != INCOMING:
                    yield self._info(o["Key"], o)
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - closing must never fail a caller
                pass

    def __repr__(self) -> str:
        return f"S3BlobStore({self.location!r})"


class _S3Reader(io.RawIOBase):
    """A GetObject body, resumed with a ranged GET pinned to the ETag when the connection drops;
    the bytes of a content-addressed key are hashed and checked at the end."""

    def __init__(self, store: S3BlobStore, key: str, answer: dict):
        self._store = store
        self._key = key
        self._body = answer["Body"]
        self._etag = answer.get("ETag")
        self._version = answer.get("VersionId") if store.versioned else None
        self.size = int(answer.get("ContentLength") or 0)
        self._pos = 0
        self._resumes = 0
        sha = content_hash(key)
        self._want = sha
        self._h = hashlib.sha256() if sha else None
        self._checked = False

    def readable(self) -> bool:
        return True

    def _resume(self, exc: BaseException) -> None:
        if self._resumes >= READ_RESUMES:
            raise StoreUnavailableError(f"{self._store.location} (read {self._key!r}): connection lost at byte "
                                        f"{self._pos} of {self.size} ({aws.cause(exc)}) {self._resumes + 1} times; "
                                        "gave up") from None
        self._resumes += 1
        log.info("%s: read of %r lost at byte %d (%s); resuming", self._store.location, self._key, self._pos,
                 aws.cause(exc))
        try:
            self._body.close()
        except Exception:  # noqa: BLE001
            pass
        kw: dict[str, str] = {"Range": f"bytes={self._pos}-"}
        if self._version:
            kw["VersionId"] = self._version
        elif self._etag:
            kw["IfMatch"] = self._etag
        self._body = self._store._get(self._key, "read", **kw)["Body"]

    def readinto(self, b) -> int:
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError as Urllib3Error

        if self.closed:
            raise ValueError("I/O operation on closed blob stream")
        if self._pos >= self.size:
            self._verify()
            return 0
        want = min(len(b), READ_CHUNK, self.size - self._pos)
        while True:
            try:
                data = self._body.read(want)
            except (BotoCoreError, Urllib3Error, OSError) as exc:
                self._resume(exc)
                continue
            if not data:
                self._resume(ConnectionResetError("body ended early"))
                continue
            break
        n = len(data)
        b[:n] = data
        self._pos += n
        if self._h is not None:
            self._h.update(data)
        return n

    def _verify(self) -> None:
        if self._checked or self._h is None:
            return
        self._checked = True
        got = self._h.hexdigest()
        if got != self._want:
            raise IntegrityError(f"{self._store.location}: blob {self._key!r} does not match its sha256 "
                                 f"(read {self.size} bytes hashing to {got[:12]}...)")

    def close(self) -> None:
        try:
            self._body.close()
        except Exception:  # noqa: BLE001
            pass
        super().close()


__all__ = ["S3BlobStore", "DEFAULT_PART_SIZE", "MIN_PART_SIZE"]
