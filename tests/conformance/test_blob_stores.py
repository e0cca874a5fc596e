"""The shipped blob store conformance suite (sekiops.testing), run on every built-in backend
against real servers: memory, local directory, Azure Blob (Azurite)."""

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
