"""Snapshot metrics through OpenTelemetry and in-process, and the memory timeline sampler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import sekiops
from sekiops import metrics as M
from sekiops.ops.synth import write_state

SPEC_PERSIST_NAMES = {"projection_snapshot_tempfile_bytes", "projection_snapshot_upload_bytes",
                      "projection_snapshot_offload_ratio", "projection_persist_peak_managed_memory_bytes",
                      "projection_snapshot_build_ms", "projection_snapshot_upload_ms"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _points(reader) -> dict[str, list]:
    """metric name -> [(unit, attributes, point)] from an InMemoryMetricReader."""
    out: dict[str, list] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "sekiops"
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    out.setdefault(metric.name, []).append((metric.unit, dict(p.attributes), p))
    return out


@pytest.fixture(scope="module")
def persisted(tmp_path_factory):
    """A real streaming persist (payload offloaded to the local blob store) and a real restore."""
    tmp_path = tmp_path_factory.mktemp("metrics")
    state = sekiops.open_state_store(f"sqlite:///{tmp_path}/state.db")
    blob = sekiops.open_blob_store(str(tmp_path / "blobs"))
    src = tmp_path / "state.json"
    with open(src, "wb") as f:
        write_state(f, 3 * 2**20)
    try:
        with open(src, "rb") as f:
            pr = sekiops.persist_stream(state, blob, f, projector_name="CustomerDirectoryProjector",
                                        projector_version="v1", events_processed=1234,
                                        last_sortable_unique_id="0" * 30,
                                        options=sekiops.PersistOptions(payload_threshold=100_000))
        rr = sekiops.restore(state, blob, str(tmp_path / "out.json"), projector_name="CustomerDirectoryProjector")
    finally:
        state.close()
    assert pr.upload_bytes > 0 and pr.tempfile_bytes > 0 and 0 < pr.offload_ratio <= 1
    assert (tmp_path / "out.json").stat().st_size == src.stat().st_size
    return state.kind, pr, rr


def test_persist_and_restore_export_the_exact_metric_names_and_values(persisted):
    kind, pr, rr = persisted
    reader = InMemoryMetricReader()
    rec = M.MetricsRecorder(meter_provider=MeterProvider(metric_readers=[reader]))
    rec.record_persist(pr, backend=kind)
    rec.record_restore(rr, backend=kind)
    points = _points(reader)
    assert SPEC_PERSIST_NAMES <= set(points)
    expected = {name: (unit, getattr(pr, field)) for name, unit, _d, field in M.PERSIST_INSTRUMENTS}
    expected.update({name: (unit, getattr(rr, field)) for name, unit, _d, field in M.RESTORE_INSTRUMENTS})
    assert set(points) == set(expected) | {M.PERSIST_COUNTER, M.RESTORE_COUNTER}
    persist_attrs = {"projector": "CustomerDirectoryProjector", "mode": "streaming", "backend": "sqlite"}
    for name, (unit, value) in expected.items():
        [(got_unit, attrs, point)] = points[name]
        assert got_unit == unit, name
        assert attrs == persist_attrs, name  # restores stream too
        assert point.count == 1 and point.sum == pytest.approx(float(value)), name
    assert points["projection_snapshot_tempfile_bytes"][0][2].sum == pr.tempfile_bytes
    assert points["projection_snapshot_upload_bytes"][0][2].sum == pr.upload_bytes
    assert points["projection_snapshot_offload_ratio"][0][2].sum == pytest.approx(pr.offload_ratio)
    assert points["projection_persist_peak_managed_memory_bytes"][0][2].sum == pr.peak_rss_bytes > 0
    assert points["projection_restore_download_bytes"][0][2].sum == rr.download_bytes > 0
    assert points[M.PERSIST_COUNTER][0][2].value == 1 and points[M.RESTORE_COUNTER][0][2].value == 1

    long = rec.collected()
    assert list(long.columns) == M.COLUMNS
    assert set(long["metric"]) == set(expected)
    row = long[long["metric"] == "projection_snapshot_upload_bytes"].iloc[0]
    assert (row["op"], row["projector"], row["version"], row["mode"], row["backend"], row["unit"]) == \
        ("persist", "CustomerDirectoryProjector", "v1", "streaming", "sqlite", "By")
    assert row["value"] == pr.upload_bytes
    wide = rec.collected(wide=True)
    assert len(wide) == 2 and list(wide["op"]) == ["persist", "restore"]
    assert wide.loc[0, "projection_snapshot_build_ms"] == pr.build_ms


def test_legacy_mode_and_extra_attributes(persisted):
    _kind, pr, _rr = persisted
    reader = InMemoryMetricReader()
    rec = M.MetricsRecorder(meter_provider=MeterProvider(metric_readers=[reader]))
    legacy = dict(pr.to_dict(), mode="legacy")
    rec.record_persist(legacy, backend="cosmos", attributes={"service_id": "default"})
    attrs = _points(reader)["projection_snapshot_tempfile_bytes"][0][1]
    assert attrs == {"projector": "CustomerDirectoryProjector", "mode": "legacy", "backend": "cosmos",
                     "service_id": "default"}


def test_module_functions_use_the_global_provider_in_a_fresh_process(persisted, tmp_path):
    _kind, pr, _rr = persisted
    (tmp_path / "result.json").write_text(json.dumps(pr.to_dict()))
    code = textwrap.dedent(f"""
        import json, sys
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from sekiops import metrics as M
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        M.record_persist(json.load(open({str(tmp_path / 'result.json')!r})), backend="sqlite")
        names = sorted(m.name for rm in reader.get_metrics_data().resource_metrics
                       for sm in rm.scope_metrics for m in sm.metrics)
        print(json.dumps({{"names": names, "rows": len(M.collected_metrics())}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert SPEC_PERSIST_NAMES <= set(got["names"]) and M.PERSIST_COUNTER in got["names"]
    assert got["rows"] == len(M.PERSIST_INSTRUMENTS)


def test_opentelemetry_and_pandas_are_not_imported_unless_used(tmp_path):
    code = textwrap.dedent("""
        import sys
        from sekiops.cli.main import build_parser
        build_parser()
        assert "opentelemetry" not in sys.modules and "pandas" not in sys.modules, "CLI start-up"
        from sekiops import metrics as M
        rows = M.record_persist({"projector_name": "P", "mode": "streaming", "tempfile_bytes": 10,
                                 "upload_bytes": 5, "offload_ratio": 0.5, "peak_rss_bytes": 1, "build_ms": 1.0,
                                 "upload_ms": 2.0, "total_ms": 3.0, "original_size_bytes": 40})
        assert len(rows) == 8
        assert not any(m.startswith("opentelemetry") for m in sys.modules), "record without OTel in use"
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SEKIOPS_OTEL"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_sampler_shows_rising_rss_of_a_subprocess_allocating_200_mb():
    child = textwrap.dedent("""
        import time
        hold = []
        for _ in range(20):
            hold.append(bytearray(10 * 2**20))   # zero-filled: the pages are touched
            time.sleep(0.03)
        time.sleep(0.15)
    """)
    t0 = time.monotonic()
    rc, frame, peak = M.sample_command([sys.executable, "-c", child], interval=0.02, label="alloc")
    assert rc == 0 and time.monotonic() - t0 < 20
    assert list(frame.columns) == ["t_s", "rss_bytes", "label"]
    assert len(frame) >= 10 and frame["t_s"].is_monotonic_increasing
    assert peak >= 200 * 2**20 and peak >= frame["rss_bytes"].max()
    top = int(frame["rss_bytes"].idxmax())
    rising = frame.iloc[: top + 1]
    low, high = rising["rss_bytes"].min(), rising["rss_bytes"].max()
    assert high - low > 180 * 2**20  # the timeline rises by the ~200 MB allocated ...
    between = rising[(rising["rss_bytes"] > low + 0.2 * (high - low))
                     & (rising["rss_bytes"] < low + 0.8 * (high - low))]
    assert len(between) >= 3  # ... step by step, over time (not one jump)
    assert between["rss_bytes"].is_monotonic_increasing


def test_sampler_in_process_and_a_failing_command():
    with M.MemorySampler(interval=0.005) as s:
        block = bytearray(64 * 2**20)
        time.sleep(0.05)
    del block
    f = s.frame()
    assert list(f.columns) == ["t_s", "rss_bytes"] and len(f) >= 2
    assert s.peak >= f["rss_bytes"].iloc[0] + 48 * 2**20
    rc, frame, peak = M.sample_command([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert rc == 3 and peak > 0
    with pytest.raises(OSError):
        M.sample_command(["/nonexistent/program"])
