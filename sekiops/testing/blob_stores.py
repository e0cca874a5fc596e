"""The blob store conformance suite (see :mod:`sekiops.testing`)."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator

import pytest

from ..blob.base import BlobStore
from ..errors import BlobChangedError, BlobNotFoundError, IntegrityError, UnsafeKeyError, UsageError

Opener = Callable[..., BlobStore]

#: keys Sekiban 10.23 writes with its own test prefixes (and an old GUID key): all must be
#: stored under exactly that name, read back, and listed as exactly that string ({sha}: the bytes')
SEKIBAN_KEYS = ["tenant/P/{sha}.bin", "/tenant\\nested/P/{sha}.bin", "/P/{sha}.bin", " /P/{sha}.bin",
                "tenant//P/v1/{sha}.bin", "a b/c d/P/{sha}.bin", "old/P/0123456789abcdef0123456789abcdef.bin"]
#: (prefix, projector name, key folder) from Sekiban's DeterministicSnapshotKeyTests
PREFIX_CASES = [("tenant", "projector", "tenant/projector"), ("tenant///", "projector", "tenant/projector"),
                ("tenant", "/folder/projector/", "tenant/folder/projector"),
                ("tenant", "\\folder\\projector\\", "tenant/folder/projector"),
                ("tenant", "projector/v1", "tenant/projector/v1"),
                ("/tenant\\nested", "projector", "/tenant\\nested/projector"),
                ("///", "projector", "/projector"), (" ", "projector", " /projector"), ("", "projector", "projector")]
HOSTILE_KEYS = ["../escape.bin", "a/../../b.bin", "./a.bin", "a/./b.bin", "a\\..\\b.bin", "..", "a/\x00.bin",
                "a/\n.bin", ""]


class BlobStoreConformance:
    """Every blob store keeps this contract. Subclass it and implement :meth:`make_opener`."""

    def make_opener(self, request, tmp_path) -> Opener:
        """``open(prefix="") -> BlobStore`` over one fresh, empty container; each call opens
        another store object on the same container, writing keys under ``prefix``."""
        raise NotImplementedError

    @pytest.fixture
    def opener(self, request, tmp_path) -> Iterator[Opener]:
        opened: list[BlobStore] = []
        make = self.make_opener(request, tmp_path)

        def open_(prefix: str = "") -> BlobStore:
            store = make(prefix)
            opened.append(store)
            return store

        yield open_
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, opener) -> BlobStore:
        return opener()

    # --- writes and reads ----------------------------------------------------------------------

    def test_write_is_content_addressed_and_idempotent(self, store):
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

    def test_writing_again_is_a_new_write(self, store):
        """An orphan audit's grace window counts from the latest write of the same bytes, and a
        gc's conditional delete of the version it certified must fail after a rewrite: a persist
        that writes an existing content-addressed blob again is about to point a row at it."""
        data = b"same bytes written twice"
        first = store.write(io.BytesIO(data), "Proj")
        before = store.stat(first.key)
        time.sleep(1.1)
        store.write(io.BytesIO(data), "Proj")
        after = store.stat(first.key)
        assert after.last_modified > before.last_modified
        assert after.version != before.version, "a rewrite of the same bytes must change the version"

    def test_large_blob_round_trip_in_chunks(self, store):
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

    def test_empty_blob(self, store):
        w = store.write(io.BytesIO(b""), "Empty")
        with store.open_read(w.key) as f:
            assert f.read() == b""

    def test_wrong_hash_hint_is_refused_and_leaves_nothing(self, store):
        data = b"some bytes"
        with pytest.raises(IntegrityError):
            store.write(io.BytesIO(data), "Proj", sha256="0" * 64)
        assert not store.exists("Proj/" + "0" * 64 + ".bin")
        assert list(store.list("Proj/")) == []

    def test_write_key_keeps_the_content_address(self, store):
        data = b"put back under its own key"
        key = f"P/{hashlib.sha256(data).hexdigest()}.bin"
        assert store.write_key(io.BytesIO(data), key).key == key
        with store.open_read(key) as f:
            assert f.read() == data
        with pytest.raises(IntegrityError):
            store.write_key(io.BytesIO(b"other bytes"), f"Q/{hashlib.sha256(data).hexdigest()}.bin")
        assert not store.exists(f"Q/{hashlib.sha256(data).hexdigest()}.bin")

    def test_missing_blob(self, store):
        key = "Proj/" + "f" * 64 + ".bin"
        with pytest.raises(BlobNotFoundError):
            store.open_read(key)
        assert not store.exists(key)
        assert store.stat(key) is None
        assert store.delete(key) is False

    def test_list_and_delete(self, store):
        keys = {store.write(io.BytesIO(f"item {i}".encode()), f"P{i % 2}").key for i in range(5)}
        listed = {b.key for b in store.list()}
        assert keys <= listed
        assert {b.key for b in store.list("P0/")} == {k for k in keys if k.startswith("P0/")}
        k = sorted(keys)[0]
        assert store.delete(k) is True
        assert not store.exists(k)
        assert k not in {b.key for b in store.list()}

    # --- keys ----------------------------------------------------------------------------------

    @pytest.mark.parametrize("key", HOSTILE_KEYS)
    def test_hostile_keys_refused(self, store, key):
        with pytest.raises(UnsafeKeyError):
            store.open_read(key)
        with pytest.raises(UnsafeKeyError):
            store.delete(key)
        with pytest.raises(UnsafeKeyError):
            store.write_key(io.BytesIO(b"x"), key)

    def test_sekiban_keys_round_trip_and_list_as_named(self, store):
        """Prefixed keys (a leading '/', backslashes, spaces, empty segments) are stored under
        exactly the name a row gives, and the listing returns that same string."""
        blobs = {}
        for i, template in enumerate(SEKIBAN_KEYS):
            data = f"blob {i}".encode()
            key = template.format(sha=hashlib.sha256(data).hexdigest())
            assert store.write_key(io.BytesIO(data), key).key == key
            blobs[key] = data
        listed = {b.key: b for b in store.list()}
        for key, data in blobs.items():
            assert store.canonical_key(key) in listed, (key, sorted(listed))
            with store.open_read(key) as f:
                assert f.read() == data
            assert store.stat(key).size == len(data)
        assert set(listed) == {store.canonical_key(k) for k in blobs}
        assert {b.key for b in store.list("/")} == {store.canonical_key(k) for k in blobs if k.startswith("/")}
        for key in blobs:
            assert store.delete(key) is True
        assert list(store.list()) == []

    @pytest.mark.parametrize("prefix,name,folder", PREFIX_CASES)
    def test_prefix_is_applied_as_sekiban_applies_it(self, opener, prefix, name, folder):
        store = opener(prefix)
        data = f"prefixed {prefix!r}".encode()
        w = store.write(io.BytesIO(data), name)
        assert w.key == f"{folder}/{hashlib.sha256(data).hexdigest()}.bin"
        with opener().open_read(w.key) as f:  # any store object on the container reads any key
            assert f.read() == data
        assert store.canonical_key(w.key) in {b.key for b in store.list()}

    def test_prefixed_key_over_512_characters_is_refused_before_upload(self, opener):
        name = f"{'p' * 256}/{'v' * 128}"
        ok = opener("t" * 57).write(io.BytesIO(b"at the limit"), name)
        assert len(ok.key) == 512
        with pytest.raises(UnsafeKeyError, match="513.*512"):
            opener("t" * 58).write(io.BytesIO(b"over the limit"), name)
        assert [b.key for b in opener().list()] == [ok.key]

    # --- declared capabilities -----------------------------------------------------------------

    def test_conditional_delete_as_declared(self, store):
        data = b"certified once, written again"
        w = store.write(io.BytesIO(data), "Proj")
        certified = store.stat(w.key)
        if not store.capabilities.conditional_delete:
            assert store.capabilities.conditional_delete_note, "a store without it must say why and what to do"
            with pytest.raises(UsageError):
                store.delete(w.key, if_version=certified.version)
            assert store.exists(w.key)
            return
        assert certified.version
        time.sleep(0.01)
        store.write(io.BytesIO(data), "Proj")  # a persist of the same content, after certification
        with pytest.raises(BlobChangedError):
            store.delete(w.key, if_version=certified.version)
        with store.open_read(w.key) as f:
            assert f.read() == data
        current = store.stat(w.key)
        assert store.delete(w.key, if_version=current.version) is True
        assert not store.exists(w.key)
        assert store.delete(w.key, if_version=current.version) is False

    def test_range_reads_as_declared(self, store):
        data = os.urandom(300_000)
        w = store.write(io.BytesIO(data), "Proj")
        if not store.capabilities.range_reads:
            with pytest.raises(NotImplementedError):
                store.read_range(w.key, 0, 10)
            return
        assert store.read_range(w.key, 0, 100) == data[:100]
        assert store.read_range(w.key, 123_456, 65_536) == data[123_456:123_456 + 65_536]
        assert store.read_range(w.key, len(data) - 5, 100) == data[-5:]

    def test_provider_and_location_are_set(self, store):
        assert isinstance(store.provider, str) and store.provider
        assert "AccountKey" not in store.location and "Eby8" not in repr(store)
