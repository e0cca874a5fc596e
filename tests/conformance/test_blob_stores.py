"""The shipped blob store conformance suite (sekiops.testing), run on every built-in backend
against real servers: memory, local directory, Azure Blob (Azurite), S3 (moto; versioned and not)."""

from __future__ import annotations

import pytest

from sekiops.testing import BlobStoreConformance

from .stores import blob_opener


class TestMemory(BlobStoreConformance):
    def make_opener(self, request, tmp_path):
        return blob_opener("memory", request, tmp_path)


class TestLocal(BlobStoreConformance):
    def make_opener(self, request, tmp_path):
        return blob_opener("local", request, tmp_path)


@pytest.mark.azurite
class TestAzure(BlobStoreConformance):
    def make_opener(self, request, tmp_path):
        return blob_opener("azure", request, tmp_path)


@pytest.mark.aws
class TestS3(BlobStoreConformance):
    """A bucket with versioning Enabled: conditional deletes by VersionId."""

    def make_opener(self, request, tmp_path):
        return blob_opener("s3", request, tmp_path)


@pytest.mark.aws
class TestS3Unversioned(BlobStoreConformance):
    """A bucket without versioning: no conditional delete, and it says how to get one."""

    def make_opener(self, request, tmp_path):
        return blob_opener("s3-unversioned", request, tmp_path)
