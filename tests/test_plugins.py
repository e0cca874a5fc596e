"""Third-party backends: registered from outside the package (register() and entry points), and
held to the same contract by the conformance suites sekiops ships (sekiops.testing)."""

from __future__ import annotations

import io
import sys
import threading
from typing import BinaryIO

import pytest

from sekiops.blob import BACKENDS as BLOB_BACKENDS, open_blob_store
from sekiops.errors import CorruptSnapshotError, UsageError
from sekiops.format.record import SnapshotRow, check_service_id, utcnow
from sekiops.state import BACKENDS as STATE_BACKENDS, StateCapabilities, StateStore, open_state_store
from sekiops.state.base import check_expected
from sekiops.testing import StateStoreConformance

_TABLES: dict[str, dict] = {}
_LOCK = threading.Lock()


class ToyStateStore(StateStore):
    """A third party's state store, written against the public contract only: rows in a dict
    keyed by (service, name, version), one lock, tokens from a counter."""

    kind = "toy"
    capabilities = StateCapabilities()

    def __init__(self, table: str, service_id: str = "default"):
        self.table = table
        self.service_id = check_service_id(service_id)
        self.location = f"toy://{table}"
        with _LOCK:
            self._rows = _TABLES.setdefault(table, {})

    @classmethod
    def from_url(cls, url: str, service_id: str = "default", **options) -> ToyStateStore:
        return cls(url.split("://", 1)[1], service_id)

    def _key(self, name, version):
        return (self.service_id, name, version)

    def get(self, projector_name, projector_version):
        item = self._rows.get(self._key(projector_name, projector_version))
        return item[0] if item else None

    def latest_active(self, projector_name):
        rows = [r for (s, n, _), (r, _) in list(self._rows.items())
                if s == self.service_id and n == projector_name and not r.is_tombstoned]
        return max(rows, key=lambda r: (r.events_processed, r.updated_at)) if rows else None

    def list_page(self, after=None, limit=500, projector_name=None):
        keys = sorted(k for k in list(self._rows) if k[0] == self.service_id
                      and (projector_name is None or k[1] == projector_name)
                      and (after is None or (k[1], k[2]) > tuple(after)))
        return [self._rows[k][0] for k in keys[:limit]]

    def open_state_stream(self, row) -> BinaryIO:
        item = self._rows.get(self._key(row.projector_name, row.projector_version))
        if item is None or item[1] is None:
            raise CorruptSnapshotError(f"{self.location}: {row.where} has no inline StateData")
        return io.BytesIO(item[1])

    def write(self, row: SnapshotRow, state, state_length, expected):
        row.validate_for_write()
        data = state.read(state_length) if state is not None else None
        with _LOCK:
            current = self.get(row.projector_name, row.projector_version)
            check_expected(current, expected, self.location, row.where)
            revision = current.revision + 1 if current else 1
            stored = row.replace(service_id=self.service_id, revision=revision, token=f"t{revision}",
                                 created_at=current.created_at if current else utcnow(),
                                 updated_at=row.updated_at or utcnow(),
                                 state_length=None if row.is_offloaded else len(data or b""))
            self._rows[self._key(row.projector_name, row.projector_version)] = (
                stored, None if row.is_offloaded else (data or b""))
            return stored

    def list_service_ids(self):
        return sorted({k[0] for k in list(self._rows)})

    def tombstone(self, expected):
        with _LOCK:
            current = self.get(expected.projector_name, expected.projector_version)
            check_expected(current, expected, self.location, expected.where)
            stored = current.replace(lifecycle=1, revision=current.revision + 1, token=f"t{current.revision + 1}")
            key = self._key(expected.projector_name, expected.projector_version)
            self._rows[key] = (stored, self._rows[key][1])
            return stored

    def for_service(self, service_id):
        return ToyStateStore(self.table, service_id)


@pytest.fixture
def toy_registered():
    STATE_BACKENDS.register("toy", ToyStateStore.from_url)
    yield
    STATE_BACKENDS.unregister("toy")


class TestToyBackend(StateStoreConformance):
    """The shipped suite, run on a backend that lives outside the package."""

    @pytest.fixture(autouse=True)
    def _registered(self, toy_registered):
        yield

    def make_opener(self, request, tmp_path):
        table = f"{request.node.name}-{id(tmp_path)}"
        return lambda service_id="default", **options: open_state_store(f"toy://{table}", service_id=service_id)


def test_unknown_scheme_names_the_known_ones():
    with pytest.raises(UsageError, match="unknown state store URL scheme 'nosuch'.*sqlite"):
        open_state_store("nosuch://x")
    with pytest.raises(UsageError, match="unknown blob store URL scheme 'nosuch'"):
        open_blob_store("nosuch://x")


def test_entry_points_add_backends_without_touching_sekiops(tmp_path, monkeypatch):
    """A package that declares ``sekiops.state_stores`` / ``sekiops.blob_stores`` entry points is
    found by URL scheme, as papermill finds I/O handlers."""
    dist = tmp_path / "toyplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[sekiops.state_stores]\ntoyep = toyplugin_mod:ToyState.from_url\n"
        "[sekiops.blob_stores]\ntoyblob = toyplugin_mod:toy_blob\n")
    (tmp_path / "toyplugin_mod.py").write_text(
        "from test_plugins import ToyStateStore as ToyState\n"
        "from sekiops.blob.memory import MemoryBlobStore\n"
        "def toy_blob(url, create=True):\n"
        "    return MemoryBlobStore.from_url('memory://' + url.split('://', 1)[1])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(STATE_BACKENDS, "_entry_points", None)
    monkeypatch.setattr(BLOB_BACKENDS, "_entry_points", None)
    try:
        state = open_state_store("toyep://plugged", service_id="svc")
        assert state.kind == "toy" and state.service_id == "svc"
        blob = open_blob_store("toyblob://plugged")
        assert blob.write(io.BytesIO(b"x"), "P").key.startswith("P/")
        assert "toyep" in STATE_BACKENDS.schemes() and "toyblob" in BLOB_BACKENDS.schemes()
    finally:
        STATE_BACKENDS._entry_points = None
        BLOB_BACKENDS._entry_points = None
        sys.modules.pop("toyplugin_mod", None)


def test_a_broken_plugin_is_named(tmp_path, monkeypatch):
    dist = tmp_path / "brokenplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sekiops.state_stores]\nbroken = no_such_module_xyz:Store\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(STATE_BACKENDS, "_entry_points", None)
    try:
        with pytest.raises(UsageError, match="no_such_module_xyz.*cannot be loaded"):
            open_state_store("broken://x")
    finally:
        STATE_BACKENDS._entry_points = None
