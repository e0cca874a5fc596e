"""AzureBlobStore against Azurite: bounded memory, secrets kept out of messages, integrity,
credential selection. The shared behaviour is in tests/conformance/test_blob_stores.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import uuid
from pathlib import Path

import pytest

from sekiops.blob import open_blob_store
from sekiops.errors import (
    BlobNotFoundError,
    IntegrityError,
    SekiopsError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
CONN_ENV = "AZURE_STORAGE_CONNECTION_STRING"


def _container() -> str:
    return "t" + uuid.uuid4().hex[:12]


def _account_key(conn: str) -> str:
    return dict(p.split("=", 1) for p in conn.split(";") if "=" in p)["AccountKey"]


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return port


class NonSeekable(io.RawIOBase):
    """A pipe-like stream: readable once, not seekable, short reads."""

    def __init__(self, data: bytes, max_read: int = 100_000):
        self._src = io.BytesIO(data)
        self._max = max_read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:
        chunk = self._src.read(min(len(b), self._max))
        b[: len(chunk)] = chunk
        return len(chunk)


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


# --- memory and throughput -----------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    r"""
    import hashlib, io, json, sys, time
    from sekiops.blob import open_blob_store

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise SystemExit("no " + field)

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    path, url, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = open_blob_store(url)
    store.write(io.BytesIO(b"warm-up"), "Warm")          # load the SDK, open the connection pool
    with store.open_read(store.write(io.BytesIO(b"w2"), "Warm").key) as f:
        f.read()
    before = status("VmHWM")
    phase_reset = reset_peak()
    rss0 = status("VmRSS")
    with open(path, "rb") as src:                          # seekable: hashed first, then uploaded
        t = time.monotonic()
        w = store.write(src, "Big/v1")
        up_s = time.monotonic() - t
    up_peak = status("VmHWM")
    reset_peak()
    rss1 = status("VmRSS")
    h = hashlib.sha256()
    n = 0
    t = time.monotonic()
    with store.open_read(w.key) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
    down_s = time.monotonic() - t
    down_peak = status("VmHWM")
    print(json.dumps({
        "key": w.key, "sha256": w.sha256, "size": w.size, "read_sha256": h.hexdigest(),
        "read_size": n, "upload_s": up_s, "download_s": down_s,
        "hwm_before": before, "hwm_end": max(up_peak, down_peak),
        "phase_reset": phase_reset,
        "upload_growth": up_peak - (rss0 if phase_reset else before),
        "download_growth": down_peak - (rss1 if phase_reset else before),
    }))
    """
)


@pytest.mark.slow
def test_200mib_upload_and_streamed_download_keep_memory_bounded(azure_storage_env, tmp_path, capsys):
    size = 200 * MiB
    path = tmp_path / "big.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            h.update(chunk)
            f.write(chunk)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(path), f"azblob://{_container()}", str(size)],
        capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["size"] == size and r["sha256"] == h.hexdigest()
    assert r["read_size"] == size and r["read_sha256"] == r["sha256"]
    growth = r["hwm_end"] - r["hwm_before"]
    line = (f"azure 200 MiB: upload {size / MiB / r['upload_s']:.0f} MiB/s "
            f"({r['upload_s']:.2f} s, incl. hash pass), download {size / MiB / r['download_s']:.0f} MiB/s "
            f"({r['download_s']:.2f} s); peak RSS growth {growth / MiB:.1f} MiB overall, "
            f"upload phase {r['upload_growth'] / MiB:.1f} MiB, download phase "
            f"{r['download_growth'] / MiB:.1f} MiB")
    with capsys.disabled():
        print("\n" + line)
    assert growth < 32 * MiB, line
    assert r["upload_growth"] < 32 * MiB and r["download_growth"] < 32 * MiB, line


# --- secrets -------------------------------------------------------------------------------


def test_account_key_never_in_repr_location_errors_or_logs(azure_storage_env, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    conn = azure_storage_env.connection_string
    key = _account_key(conn)
    store = open_blob_store(f"azblob://{_container()}")
    assert store.provider == "AzureBlobStorage"
    assert store.location == f"azblob://devstoreaccount1/{store.container}"
    for text in (repr(store), store.location, str(vars(store).get("location"))):
        assert key not in text and "AccountKey" not in text

    with pytest.raises(BlobNotFoundError) as missing:
        store.open_read("Proj/" + "a" * 64 + ".bin")
    assert store.location in str(missing.value) and "Proj/" in str(missing.value)
    with pytest.raises(IntegrityError) as bad:
        store.write(io.BytesIO(b"abc"), "Proj", sha256="1" * 64)
    for exc in (missing.value, bad.value):
        assert key not in _all_text(exc)

    # A dead port: transient, fast enough, and no secret anywhere in the exception chain.
    dead = conn.replace(azure_storage_env.blob_endpoint,
                        f"http://127.0.0.1:{_dead_port()}/devstoreaccount1")
    assert dead != conn
    monkeypatch.setenv(CONN_ENV, dead)
    dead_store = open_blob_store(f"azblob://{_container()}")
    t = time.monotonic()
    with pytest.raises(StoreUnavailableError) as unavailable:
        dead_store.write(io.BytesIO(b"payload"), "Proj")
    elapsed = time.monotonic() - t
    assert elapsed < 30, f"dead endpoint took {elapsed:.1f} s to fail"
    text = _all_text(unavailable.value)
    assert key not in text and "AccountKey" not in text
    assert dead_store.location in str(unavailable.value) and "Proj/" in str(unavailable.value)
    assert unavailable.value.transient

    # Other operations against the dead port (no retries, to keep the test quick).
    quick = type(dead_store).from_url(f"azblob://{_container()}", retries=0)
    for op in (lambda: quick.open_read("P/" + "b" * 64 + ".bin"), lambda: quick.stat("P/x.bin"),
               lambda: list(quick.list()), lambda: quick.delete("P/x.bin")):
        with pytest.raises(StoreUnavailableError) as e:
            op()
        assert key not in _all_text(e.value)

    # Wrong key: the service refuses (403 AuthenticationFailed) -> StoreError, not transient.
    wrong_key = base64.b64encode(os.urandom(64)).decode()
    monkeypatch.setenv(CONN_ENV, conn.replace(key, wrong_key))
    denied = open_blob_store(f"azblob://{_container()}")
    with pytest.raises(StoreError) as refused:
        denied.stat("P/x.bin")
    assert "authentication failed" in str(refused.value)
    assert not isinstance(refused.value, StoreUnavailableError)
    text = _all_text(refused.value)
    assert wrong_key not in text and key not in text

    for rec in caplog.records:
        msg = rec.getMessage()
        assert key not in msg and wrong_key not in msg
        if rec.name.startswith("sekiops"):
            assert "Authorization" not in msg and "SharedKey" not in msg and "sig=" not in msg


def test_sas_in_url_is_not_shown(monkeypatch):
    monkeypatch.delenv(CONN_ENV, raising=False)
    secret = "c2VjcmV0c2lnbmF0dXJl"
    store = open_blob_store(f"azblob://acct.blob.core.windows.net/c01?sv=2022-11-02&sp=r&sig={secret}")
    assert store.credential_kind == "sas"
    assert store.location == "azblob://acct/c01"
    assert secret not in repr(store) and secret not in store.location
    with pytest.raises(UsageError) as e:
        open_blob_store(f"azblob://acct.blob.core.windows.net/Bad_Name?sig={secret}")
    assert secret not in str(e.value)


# --- integrity -----------------------------------------------------------------------------


def test_wrong_sha256_hint_commits_nothing(azure_storage_env):
    store = open_blob_store(f"azblob://{_container()}?block_size=64KiB")
    data = os.urandom(300_000)  # several blocks are staged before the mismatch shows
    real = hashlib.sha256(data).hexdigest()
    wrong = hashlib.sha256(b"something else").hexdigest()
    for stream in (io.BytesIO(data), NonSeekable(data)):
        with pytest.raises(IntegrityError):
            store.write(stream, "Proj", sha256=wrong)
    with pytest.raises(IntegrityError):  # right hash, wrong size
        store.write(io.BytesIO(data), "Proj", sha256=real, size=len(data) + 1)
    with pytest.raises(IntegrityError):  # no hash, wrong size
        store.write(NonSeekable(data), "Proj", size=len(data) - 1)
    for sha in (wrong, real):
        k = f"Proj/{sha}.bin"
        assert not store.exists(k) and store.stat(k) is None
        with pytest.raises(BlobNotFoundError):
            store.open_read(k)
    assert list(store.list()) == []

    # A hint naming an existing blob is still checked against the stream; the blob is untouched.
    w = store.write(io.BytesIO(b"original"), "Proj")
    with pytest.raises(IntegrityError):
        store.write(io.BytesIO(b"impostor"), "Proj", sha256=w.sha256)
    with store.open_read(w.key) as f:
        assert f.read() == b"original"
    # And a correct hint for it is idempotent.
    assert store.write(NonSeekable(b"original"), "Proj", sha256=w.sha256, size=8) == w


def test_multi_block_upload_non_seekable_and_idempotent(azure_storage_env, monkeypatch):
    from sekiops.blob.azure import AzureBlobStore

    staged = []
    orig = AzureBlobStore._stage

    def counting(self, blob, key, block_id, data):
        staged.append((block_id, len(data)))
        return orig(self, blob, key, block_id, data)

    monkeypatch.setattr(AzureBlobStore, "_stage", counting)
    store = open_blob_store(f"azblob://{_container()}?block_size=64KiB&concurrency=3")
    assert store.block_size == 64 * 1024 and store.concurrency == 3
    data = os.urandom(1_000_003)
    w = store.write(NonSeekable(data, max_read=7_777), "Multi/v1")  # spooled, then uploaded
    assert w.key == f"Multi/v1/{hashlib.sha256(data).hexdigest()}.bin" and w.size == len(data)
    assert len(staged) == -(-len(data) // (64 * 1024))
    assert all(n == 64 * 1024 for _, n in staged[:-1])
    assert len({len(b) for b, _ in staged}) == 1  # block ids of one length
    with store.open_read(w.key) as f:
        assert f.read(10) == data[:10]
        assert f.read() == data[10:]
    props = store._container.get_blob_client(w.key).get_blob_properties()
    assert props.content_settings.content_type == "application/octet-stream"

    staged.clear()
    assert store.write(io.BytesIO(data), "Multi/v1") == w  # same bytes: nothing uploaded again
    assert staged == []
    assert [b.key for b in store.list("Multi/")] == [w.key]


def test_concurrent_writers_of_the_same_bytes(azure_storage_env):
    store = open_blob_store(f"azblob://{_container()}?block_size=128KiB")
    store.write(io.BytesIO(b"x"), "Init")  # container exists before the race
    data = os.urandom(2 * MiB + 5)
    results, errors = [], []

    def writer():
        try:
            # Each writer gets its own client, as separate processes would.
            s = open_blob_store(f"azblob://{store.container}?block_size=128KiB")
            results.append(s.write(io.BytesIO(data), "Race", sha256=hashlib.sha256(data).hexdigest()))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({r.key for r in results}) == 1
    with store.open_read(results[0].key) as f:
        assert f.read() == data


def test_missing_container_reads_and_first_write_creates_it(azure_storage_env):
    store = open_blob_store(f"azblob://{_container()}")
    k = "P/" + "c" * 64 + ".bin"
    with pytest.raises(BlobNotFoundError) as e:
        store.open_read(k)
    assert k in str(e.value) and store.location in str(e.value)
    assert store.stat(k) is None and store.delete(k) is False and list(store.list()) == []
    w = store.write(io.BytesIO(b"first"), "P")
    assert [b.key for b in store.list()] == [w.key]


def test_api_version_option(azure_storage_env, monkeypatch):
    monkeypatch.setenv("SEKIOPS_AZURE_API_VERSION", "2021-08-06")
    store = open_blob_store(f"azblob://{_container()}")
    assert store._service.api_version == "2021-08-06"
    w = store.write(io.BytesIO(b"versioned"), "V")
    with store.open_read(w.key) as f:
        assert f.read() == b"versioned"
    monkeypatch.setenv("SEKIOPS_AZURE_API_VERSION", "1999-01-01")
    with pytest.raises(UsageError):
        open_blob_store(f"azblob://{_container()}")


# --- URL handling and credential selection (no network) ------------------------------------


def test_entra_id_is_used_without_connection_string(monkeypatch):
    from azure.identity import DefaultAzureCredential

    monkeypatch.delenv(CONN_ENV, raising=False)
    store = open_blob_store("azblob://acct.blob.core.windows.net/c01")
    assert isinstance(store.credential, DefaultAzureCredential)
    assert store.credential_kind == "entra-id"
    assert store.location == "azblob://acct/c01"
    assert store._service.url.startswith("https://acct.blob.core.windows.net")

    # A connection string for another account does not apply ...
    other = ("DefaultEndpointsProtocol=https;AccountName=otheracct;"
             "AccountKey=" + base64.b64encode(b"k" * 64).decode() + ";EndpointSuffix=core.windows.net")
    monkeypatch.setenv(CONN_ENV, other)
    assert isinstance(open_blob_store("azblob://acct.blob.core.windows.net/c01").credential,
                      DefaultAzureCredential)
    # ... one for the same account does (shared key), and its key is not shown.
    same = other.replace("otheracct", "acct")
    monkeypatch.setenv(CONN_ENV, same)
    keyed = open_blob_store("azblob://acct.blob.core.windows.net/c01")
    assert keyed.credential_kind == "shared-key"
    assert not isinstance(keyed.credential, DefaultAzureCredential)
    assert _account_key(same) not in repr(keyed) + keyed.location


@pytest.mark.parametrize("url", [
    "azblob://Bad_Container",
    "azblob://ab",
    "azblob://acct.blob.core.windows.net/",
    "azblob://acct.blob.core.windows.net/c01/extra",
    "azblob://container1/extra",
    "azblob://container1?block_size=lots",
    "azblob://container1?nonsense=1",
])
def test_bad_urls_are_usage_errors(url, monkeypatch):
    monkeypatch.setenv(CONN_ENV, "UseDevelopmentStorage=true")
    with pytest.raises(UsageError):
        open_blob_store(url)


def test_short_url_needs_a_connection_string(monkeypatch):
    monkeypatch.delenv(CONN_ENV, raising=False)
    with pytest.raises(UsageError, match=CONN_ENV):
        open_blob_store("azblob://container1")


def test_errors_are_sekiops_errors():
    assert issubclass(StoreUnavailableError, SekiopsError) and issubclass(StoreError, SekiopsError)


def test_writer_losing_the_commit_race_still_succeeds(azure_storage_env, monkeypatch, caplog):
    """Another writer commits the same bytes mid-upload (which drops our staged blocks)."""
    from sekiops.blob.azure import AzureBlobStore

    container = _container()
    store = open_blob_store(f"azblob://{container}?block_size=64KiB&concurrency=1")
    other = open_blob_store(f"azblob://{container}?block_size=64KiB&concurrency=1")
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    orig = AzureBlobStore._stage
    calls = []

    def stage(self, blob, key, block_id, chunk):
        orig(self, blob, key, block_id, chunk)
        calls.append(self)
        if self is store and len([c for c in calls if c is store]) == 2:
            assert other.write(io.BytesIO(data), "Race", sha256=sha).size == len(data)

    monkeypatch.setattr(AzureBlobStore, "_stage", stage)
    caplog.set_level(logging.DEBUG, logger="sekiops.blob.azure")
    w = store.write(io.BytesIO(data), "Race", sha256=sha)
    assert any("concurrent writer" in r.getMessage() for r in caplog.records)
    assert any(c is other for c in calls)  # the other writer really uploaded in between
    assert w.key == f"Race/{sha}.bin" and w.size == len(data)
    with store.open_read(w.key) as f:
        assert f.read() == data


def test_blob_rewritten_during_a_read_is_a_transient_error(azure_storage_env):
    store = open_blob_store(f"azblob://{_container()}")
    data = os.urandom(9 * MiB)  # more than one ranged GET
    w = store.write(io.BytesIO(data), "Changing")
    with store.open_read(w.key) as f:
        assert f.read(1000) == data[:1000]
        # Someone rewrites the blob (same bytes, new ETag) while we are between ranges.
        store._container.get_blob_client(w.key).upload_blob(data, overwrite=True)
        with pytest.raises(StoreUnavailableError, match="changed while being read"):
            f.read()
    with store.open_read(w.key) as f:  # a retry reads the new version whole
        assert f.read() == data


def test_damaged_blob_under_a_content_key_is_rewritten(azure_storage_env):
    store = open_blob_store(f"azblob://{_container()}")
    data = os.urandom(50_000)
    sha = hashlib.sha256(data).hexdigest()
    key = f"Proj/{sha}.bin"
    store._create_container(key)
    store._container.get_blob_client(key).upload_blob(data[:1000])  # truncated copy
    assert store.write(io.BytesIO(data), "Proj").size == len(data)  # we hash: sizes differ
    with store.open_read(key) as f:
        assert f.read() == data
    store._container.get_blob_client(key).upload_blob(data[:1000], overwrite=True)
    assert store.write(io.BytesIO(data), "Proj", sha256=sha).size == len(data)  # hint, no size
    assert store.stat(key).size == len(data)


def test_blob_deleted_between_the_check_and_the_touch_is_uploaded_again(azure_storage_env, monkeypatch):
    from sekiops.blob.azure import AzureBlobStore

    store = open_blob_store(f"azblob://{_container()}")
    data = os.urandom(50_000)
    key = store.write(io.BytesIO(data), "Proj").key
    orig = AzureBlobStore._touch

    def deleted_first(self, blob, k):
        blob.delete_blob()  # another writer's gc wins the race: the touch finds nothing
        return orig(self, blob, k)

    monkeypatch.setattr(AzureBlobStore, "_touch", deleted_first)
    w = store.write(io.BytesIO(data), "Proj")  # we hash: the key names these bytes
    assert (w.key, w.size) == (key, len(data))
    monkeypatch.undo()
    with store.open_read(key) as f:
        assert f.read() == data
