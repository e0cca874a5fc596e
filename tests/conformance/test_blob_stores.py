"""Conformance suite every blob store passes (memory, local directory, Azure Blob via Azurite)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from sekiops.errors import BlobNotFoundError, IntegrityError, UnsafeKeyError

from .stores import BLOB_KINDS, SERVER_MARK, blob_opener


@pytest.fixture(params=[pytest.param(k, marks=getattr(pytest.mark, SERVER_MARK.get(k, k)))
                        for k in BLOB_KINDS])
def store(request, tmp_path):
    s = blob_opener(request.param, request, tmp_path)()
    yield s
    s.close()


def test_write_is_content_addressed_and_idempotent(store):
    data = os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    w1 = store.write(io.BytesIO(data), "Proj")
    assert w1.key == f"Proj/{sha}.bin" and w1.size == len(data) and w1.sha256 == sha
    w2 = store.write(io.BytesIO(data), "Proj", sha256=sha, size=len(data))
    assert w2.key == w1.key
    with store.open_read(w1.key) as f:
        assert f.read() == data
    assert store.exists(w1.key)
    info = store.stat(w1.key)
    assert info.size == len(data) and info.last_modified is not None


def test_writing_again_refreshes_last_modified(store):
    """An orphan audit's grace window must count from the latest write of the same bytes: a
    persist that re-uploads an existing content-addressed blob is about to point a row at it."""
    import time

    data = b"same bytes written twice"
    first = store.write(io.BytesIO(data), "Proj")
    before = store.stat(first.key).last_modified
    time.sleep(1.1)
    store.write(io.BytesIO(data), "Proj")
    assert store.stat(first.key).last_modified > before


def test_large_blob_round_trip_in_chunks(store):
    chunk = os.urandom(1 << 20)
    data = chunk * 9 + b"tail"
    w = store.write(io.BytesIO(data), "Big/v1")
    got = hashlib.sha256()
    n = 0
    with store.open_read(w.key) as f:
        while True:
            b = f.read(300_000)
            if not b:
                break
            assert len(b) <= 300_000
            got.update(b)
            n += len(b)
    assert n == len(data) and got.hexdigest() == w.sha256


def test_empty_blob(store):
    w = store.write(io.BytesIO(b""), "Empty")
    with store.open_read(w.key) as f:
        assert f.read() == b""


def test_wrong_hash_hint_is_refused_and_leaves_nothing(store):
    data = b"some bytes"
    with pytest.raises(IntegrityError):
        store.write(io.BytesIO(data), "Proj", sha256="0" * 64)
    assert not store.exists("Proj/" + "0" * 64 + ".bin")
    assert list(store.list("Proj/")) == []


def test_missing_blob(store):
    with pytest.raises(BlobNotFoundError):
        store.open_read("Proj/" + "f" * 64 + ".bin")
    assert not store.exists("Proj/" + "f" * 64 + ".bin")
    assert store.stat("Proj/" + "f" * 64 + ".bin") is None
    assert store.delete("Proj/" + "f" * 64 + ".bin") is False


def test_list_and_delete(store):
    keys = {store.write(io.BytesIO(f"item {i}".encode()), f"P{i % 2}").key for i in range(5)}
    listed = {b.key for b in store.list()}
    assert keys <= listed
    assert {b.key for b in store.list("P0/")} == {k for k in keys if k.startswith("P0/")}
    k = sorted(keys)[0]
    assert store.delete(k) is True
    assert not store.exists(k)
    assert k not in {b.key for b in store.list()}


@pytest.mark.parametrize("key", ["../escape.bin", "/etc/passwd", "a/../../b.bin", "a\\b.bin",
                                 "C:/x.bin", "a//b.bin", "./a.bin", "a/\x00.bin", ""])
def test_hostile_keys_refused(store, key):
    with pytest.raises(UnsafeKeyError):
        store.open_read(key)
    with pytest.raises(UnsafeKeyError):
        store.delete(key)


def test_provider_and_location_are_set(store):
    assert isinstance(store.provider, str) and store.provider
    assert "AccountKey" not in store.location and "Eby8" not in repr(store)
