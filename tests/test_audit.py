"""Orphan-blob audit (issue 6): never an orphan that any service references; no certification when
any row cannot be decoded or the services are not all known."""

from __future__ import annotations

import inspect
import io
import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from sekiops.blob import open_blob_store
from sekiops.errors import UsageError
from sekiops.format.envelope import read_envelope
from sekiops.ops.audit import audit_orphans, discover_service_ids, parse_duration, summary_lines
from sekiops.state import StateCapabilities, open_state_store
from sekiops.state.base import iter_rows
from test_inventory import (
    BACKENDS,
    backend_stores,
    build_deployment,
    embedded_urls,
    fast_sqlite,
    persist_json,
    run_cli,
    state_json,
    write_raw_row,
)

FUTURE = datetime.now(UTC) + timedelta(days=3650)


def expected_refs(stores, blob) -> set[str]:
    """Every key any row (tombstoned included) references, decoded independently of the audit."""
    refs = set()
    for store in stores:
        for row in iter_rows(store):
            if row.is_offloaded:
                refs.add(row.offload_key)
                src = blob.open_read(row.offload_key)
            else:
                src = store.open_state_stream(row)
            with src:
                env = read_envelope(src, row.where)
            if env.is_offloaded:
                refs.add(env.offload_key)
    return refs


def other_service(open_state, blob):
    """A second service sharing the blob container, with blobs at both levels."""
    other = open_state("other")
    persist_json(other, blob, "OtherPay", "1", state_json(200, seed=21), payload_threshold=2000)
    persist_json(other, blob, "OtherBoth", "1", state_json(200, seed=22), payload_threshold=2000,
                 record_threshold=100)
    # the same bytes as a default-service payload: content-addressed, so the same key is shared
    persist_json(other, blob, "PayOff", "9", state_json(200, seed=4), payload_threshold=2000)
    return other


def age_all(blob_root: str, days: int = 30) -> None:
    when = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    for dirpath, _, files in os.walk(blob_root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (when, when))


@pytest.fixture
def deployment(tmp_path):
    state_url, blob_url = embedded_urls(tmp_path)
    stores = []

    def open_state(service="default"):
        s = fast_sqlite(open_state_store(state_url, service_id=service))
        stores.append(s)
        return s

    state, blob = open_state(), open_blob_store(blob_url)
    info = build_deployment(state, blob)
    other = other_service(open_state, blob)
    age_all(blob_url)  # every blob, referenced or not, is past the grace window
    yield state, other, blob, info, state_url, blob_url, open_state
    for s in stores:
        s.close()


def test_orphans_are_exactly_the_unreferenced_blobs(deployment):
    state, other, blob, info, *_ = deployment
    report = audit_orphans(state, blob)
    assert report["certified"] and report["reason"] is None, report
    assert report["services"] == ["default", "other"] and report["servicesSource"] == "store"
    assert [o["key"] for o in report["orphans"]] == [info["orphan"]]
    refs = expected_refs([state, other], blob)
    assert report["referenced"] == len(refs)
    listed = {b.key for b in blob.list()}
    assert listed - refs == {info["orphan"]}
    assert not {o["key"] for o in report["orphans"]} & refs
    # the tombstoned row's payload blob and the other service's blobs are referenced, not orphans
    assert info["Old"].payload_key in refs and info["guid_key"] in refs
    assert report["rows"] == 13 + 3 and report["tombstonedRows"] == 1
    orphan = report["orphans"][0]
    assert set(orphan) >= {"key", "bytes", "lastModified"} and orphan["bytes"] == 200
    assert report["orphanBytes"] == 200 and report["missingReferenced"] == []
    assert any("certified: 1 orphan" in line for line in summary_lines(report))


def test_auditing_from_any_service_gives_the_same_answer(deployment):
    state, other, blob, info, *_ = deployment
    a, b = audit_orphans(state, blob), audit_orphans(other, blob)
    assert a["orphans"] == b["orphans"] and a["referenced"] == b["referenced"] and b["certified"]


def test_grace_window_protects_young_blobs(deployment):
    state, other, blob, info, *_ = deployment
    young = blob.write(io.BytesIO(b"just uploaded, row not written yet"), "Young").key
    report = audit_orphans(state, blob, grace="24h")
    assert young not in [o["key"] for o in report["orphans"]]
    assert young in [o["key"] for o in report["unreferencedWithinGrace"]]
    report = audit_orphans(state, blob, grace="0")
    assert sorted(o["key"] for o in report["orphans"]) == sorted([info["orphan"], young])
    report = audit_orphans(state, blob, grace="7d", now=FUTURE)
    assert sorted(o["key"] for o in report["orphans"]) == sorted([info["orphan"], young])


@pytest.mark.parametrize("where", ["default", "other"])
def test_an_undecodable_row_certifies_nothing(deployment, where):
    state, other, blob, info, *_ = deployment
    target = state if where == "default" else other
    write_raw_row(target, "Broken", "1", b'{"isOffloaded": false, "inlineState": {"payloadBase64": "!!!"')
    report = audit_orphans(state, blob)
    assert report["certified"] is False and report["orphans"] == []
    assert report["undecodable"] and report["undecodable"][0]["projectorName"] == "Broken"
    assert report["undecodable"][0]["serviceId"] == where
    assert "could not be decoded" in report["reason"]
    assert report["uncertifiedUnreferencedCount"] == 1


def test_a_missing_envelope_blob_certifies_nothing(deployment):
    state, other, blob, info, *_ = deployment
    blob.delete(info["RecOff"].envelope_key)  # its envelope may have referenced a payload blob
    report = audit_orphans(state, blob)
    assert not report["certified"] and report["orphans"] == []
    assert [u["projectorName"] for u in report["undecodable"]] == ["RecOff"]
    assert report["missingReferenced"][0]["key"] == info["RecOff"].envelope_key


class Opaque:
    """A store that declares it cannot list every service sharing its table (a custom StateStore)."""

    kind = "custom"
    capabilities = StateCapabilities(lists_all_services=False)

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_unknown_services_certify_nothing_unless_named(deployment):
    state, other, blob, info, state_url, blob_url, open_state = deployment
    opaque = Opaque(state)
    assert discover_service_ids(opaque) == (None, "partial")
    report = audit_orphans(opaque, blob)
    assert not report["certified"] and report["orphans"] == [] and report["servicesSource"] == "partial"
    assert "only service 'default' was covered" in report["reason"]
    report = audit_orphans(opaque, blob, services=["default", "other"],
                           state_for=lambda s: open_state(s))
    assert report["certified"] and [o["key"] for o in report["orphans"]] == [info["orphan"]]
    # naming too few services is the caller's responsibility, but the report says which were covered
    report = audit_orphans(state, blob, services=["default"])
    assert report["services"] == ["default"] and report["servicesSource"] == "explicit"
    assert info["orphan"] in [o["key"] for o in report["orphans"]]
    # stores given per service (what gc-blobs passes)
    report = audit_orphans(state, blob, states=[state, other], grace=timedelta(hours=1))
    assert report["certified"] and report["services"] == ["default", "other"]


def test_store_listing_is_used_when_offered(deployment):
    state, other, blob, info, *_ = deployment

    class Lister(Opaque):
        capabilities = StateCapabilities()

        def list_service_ids(self):
            return ["other"]

    assert discover_service_ids(Lister(state)) == (["default", "other"], "store")


def test_signature_fits_gc_blobs():
    params = inspect.signature(audit_orphans).parameters
    assert [n for n, p in params.items() if p.default is inspect.Parameter.empty] == ["state", "blob"]
    assert {"services", "states", "grace"} <= set(params)


def test_parse_duration():
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("0") == timedelta(0)
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("3600") == timedelta(hours=1)  # a bare number is seconds, in every option
    assert parse_duration(timedelta(hours=2)) == timedelta(hours=2)
    for bad in ("1x", "-1h", "h", "24 parsecs", ""):
        with pytest.raises(UsageError):
            parse_duration(bad)


@pytest.mark.parametrize("kind", BACKENDS)
def test_cli_audit_blobs(kind, request, tmp_path, capsys):
    with backend_stores(request, kind, tmp_path) as (state_url, blob_url, open_state, blob):
        state = open_state()
        info = build_deployment(state, blob, guid_row=False)
        other = other_service(open_state, blob)
        refs = expected_refs([state, other], blob)
        # Azure cannot back-date a blob: a zero grace makes every unreferenced blob old enough
        code, out, err = run_cli(["audit-blobs", "--state", state_url, "--blob", blob_url, "--grace", "0"], capsys)
        assert code == 0, err
        report = json.loads(out)
        assert report["certified"] is True, report
        assert report["services"] == ["default", "other"]
        assert [o["key"] for o in report["orphans"]] == [info["orphan"]]
        assert report["referenced"] == len(refs) and report["undecodable"] == []
        for o in report["orphans"]:
            assert set(o) >= {"key", "bytes", "lastModified"} and o["key"] not in refs
        code, out, _ = run_cli(["audit-blobs", "--state", state_url, "--blob", blob_url, "--grace", "24h",
                                "--format", "table"], capsys)
        aged = 1 if kind == "embedded" else 0  # only a local directory lets the test back-date the orphan
        assert code == 0 and f"certified: {aged} orphan(s)" in out
        write_raw_row(other, "Broken", "1", b"garbage")
        code, out, _ = run_cli(["audit-blobs", "--state", state_url, "--blob", blob_url, "--grace", "0"], capsys)
        report = json.loads(out)
        assert code == 0 and report["certified"] is False and report["orphans"] == []
        assert report["undecodable"][0]["projectorName"] == "Broken"
        code, _, err = run_cli(["audit-blobs", "--state", state_url, "--grace", "soon"], capsys)
        assert code == 2 and err.startswith("error: ")
