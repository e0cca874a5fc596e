"""Capacity model: predicted peak memory per projection, legacy vs streaming (sekiops.ops.capacity)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import sekiops
from sekiops.errors import SekiopsError
from sekiops.ops import capacity as C

GB = 10**9
GiB = 2**30


def _inv(**rows):
    base = {"serviceId": "default", "projectorVersion": "v1", "lifecycle": "active"}
    return pd.DataFrame([{**base, "projectorName": name, **cols} for name, cols in rows.items()])


def test_a_1_2_gb_projection_ooms_a_4_gib_container_under_legacy_but_fits_streaming():
    table = C.capacity_table(_inv(CustomerDirectoryProjector={"payloadOriginalBytes": 1.2 * GB}))
    row = table.iloc[0]
    assert table.attrs["memoryLimitBytes"] == 4 * GiB and table.attrs["appBaselineBytes"] == int(1.5 * GiB)
    assert table.attrs["benchSource"].startswith("built-in measured")
    assert row["sizeSource"] == "payloadOriginalBytes"
    assert row["legacyOOM"] and row["legacyPeakBytes"] > 4 * GiB and row["legacyHeadroomBytes"] < 0
    assert not row["streamingOOM"] and row["streamingPeakBytes"] < 4 * GiB and row["streamingHeadroomBytes"] > 2 * GiB
    # Sekiban's streaming persist alone does not save it: its restore still holds everything
    assert row["mixedOOM"]
    assert row["streamingSavesBytes"] == row["legacyPeakBytes"] - row["streamingPeakBytes"] > 2.5 * GB
    assert row["verdict"].startswith("OOM under legacy")
    for col in ("persistLegacyPeakBytes", "persistStreamingPeakBytes", "restoreLegacyPeakBytes",
                "restoreStreamingPeakBytes"):
        assert row[col] > int(1.5 * GiB)
    limits = table.attrs["maxFittingBytes"]
    assert 0.5 * GB < limits["legacy"] < 1.2 * GB and limits["streaming"] > 100 * GB


def test_small_projection_fits_and_a_bigger_limit_saves_the_big_one():
    inv = _inv(Small={"payloadOriginalBytes": 50_000_000}, Big={"payloadOriginalBytes": 1.2 * GB})
    table = C.capacity_table(inv)
    assert list(table["projectorName"]) == ["Big", "Small"]  # largest legacy peak first
    assert table.set_index("projectorName").loc["Small", "verdict"] == "fits"
    roomy = C.capacity_table(inv, memory_limit=8 * GiB)
    assert not roomy["legacyOOM"].any()
    tight = C.capacity_table(inv, memory_limit=4 * GiB, app_baseline=0)
    assert not tight.set_index("projectorName").loc["Big", "legacyOOM"]


def test_sizes_are_estimated_and_said_so():
    inv = _inv(Measured={"payloadOriginalBytes": 1000, "compressedSizeBytes": 5},
               FromPayload={"payloadCompressedBytes": 100_000_000},
               FromEnvelope={"compressedSizeBytes": 4_001_024, "storedBytes": 4_001_024},
               OffloadedPayload={"compressedSizeBytes": 900},
               SmallInline={"compressedSizeBytes": 900, "payloadOffloaded": False},
               NoSizes={},
               Dead={"payloadOriginalBytes": 9 * GB, "lifecycle": "tombstoned"})
    t = C.capacity_table(inv).set_index("projectorName")
    assert "Dead" not in t.index
    assert t.loc["Measured", "payloadOriginalBytes"] == 1000
    assert t.loc["FromPayload", "payloadOriginalBytes"] == 450_000_000
    assert "x 4.5" in t.loc["FromPayload", "sizeSource"]
    assert t.loc["FromEnvelope", "payloadOriginalBytes"] == 4_000_000 * 3 / 4 * 4.5
    assert t.loc["FromEnvelope", "sizeSource"].startswith("estimated: envelope")
    for name in ("OffloadedPayload", "NoSizes"):
        assert t.loc[name, "sizeSource"].startswith("unknown")
        assert pd.isna(t.loc[name, "legacyPeakBytes"]) and t.loc[name, "verdict"] == "unknown size"
    assert t.loc["SmallInline", "verdict"] == "fits"
    with_dead = C.capacity_table(inv, include_tombstoned=True)
    assert "Dead" in set(with_dead["projectorName"])


def test_fitting_from_a_bench_frame():
    rng = np.random.default_rng(7)
    rows = []
    truth = {("persist", "legacy"): (20e6, 3.0), ("restore", "legacy"): (5e6, 4.0),
             ("persist", "streaming"): (8e6, 0.0), ("restore", "streaming"): (12e6, 0.01)}
    for (op, mode), (a, b) in truth.items():
        for size in (50e6, 100e6, 200e6, 400e6):
            rows.append({"op": op.upper(), "mode": mode, "size_bytes": size,
                         "overhead_bytes": a + b * size + rng.normal(0, 1e6)})
    bench = pd.DataFrame(rows)
    fits = C.fit_costs(bench)
    for key, (a, b) in truth.items():
        fa, fb = fits[key]
        assert fb == pytest.approx(b, abs=0.01) and fa == pytest.approx(a, abs=3e6), key
    table = C.capacity_table(_inv(P={"payloadOriginalBytes": 500e6}), bench_df=bench, memory_limit=4 * GiB,
                             app_baseline=GiB)
    row = table.iloc[0]
    assert row["persistLegacyPeakBytes"] == pytest.approx(GiB + 20e6 + 3.0 * 500e6, rel=0.01)
    assert row["restoreLegacyPeakBytes"] == pytest.approx(GiB + 5e6 + 4.0 * 500e6, rel=0.01)
    assert table.attrs["benchSource"] == "given"
    assert table.attrs["fits"]["persist/legacy"]["b"] == pytest.approx(3.0, abs=0.01)
    limit = table.attrs["maxFittingBytes"]["legacy"]
    assert limit == pytest.approx((4 * GiB - GiB - 5e6) / 4.0, rel=0.01)


def test_partial_bench_falls_back_to_the_measured_defaults_and_physical_lines():
    bench = pd.DataFrame([
        {"op": "persist", "mode": "legacy", "size_bytes": 100e6, "overhead_bytes": 150e6, "ok": True},
        {"op": "persist", "mode": "legacy", "size_bytes": 200e6, "overhead_bytes": 9e12, "ok": False},  # failed run
        {"op": "restore", "mode": "streaming", "size_bytes": 100e6, "overhead_bytes": 11e6, "ok": True},
        {"op": "restore", "mode": "streaming", "size_bytes": 200e6, "overhead_bytes": 9e6, "ok": True},
        {"op": "compress", "mode": "codec", "size_bytes": 100e6, "overhead_bytes": 1, "ok": True},
    ])
    fits = C.fit_costs(bench)
    assert fits[("persist", "legacy")] == (0.0, 1.5)  # one size: through the origin
    assert fits[("restore", "streaming")] == (10e6, 0.0)  # negative slope: a constant
    table = C.capacity_table(_inv(P={"payloadOriginalBytes": 1e9}), bench_df=bench)
    notes = table.attrs["notes"]
    assert len(notes) == 2 and all("built-in measured default" in n for n in notes)
    with pytest.raises(SekiopsError):
        C.fit_costs(pd.DataFrame({"op": ["persist"], "size_bytes": [1]}))
    with pytest.raises(SekiopsError):
        C.capacity_table(_inv(P={}), memory_limit=0)


def test_default_bench_is_the_measured_run():
    bench = C.default_bench()
    assert set(map(tuple, bench[["op", "mode"]].drop_duplicates().to_numpy())) == \
        {(o, m) for o in C.OPS for m in C.MODES}
    fits = C.fit_costs(bench)
    assert fits[("persist", "legacy")][1] > 1.0 and fits[("restore", "legacy")][1] > 1.0
    assert fits[("persist", "streaming")][1] < 0.01 and fits[("restore", "streaming")][1] < 0.01
    assert math.isinf(C.max_fitting_sizes({k: (1e6, 0.0) for k in fits})["streaming"])


def test_capacity_from_a_real_inventory(tmp_path):
    """With the metadata only (``--metadata-only``: no payload sizes read) a tiny envelope may hide an
    offloaded payload, so its size is unknown; a bigger inline envelope gives an estimate. The default
    inventory reads the envelope heads, so both sizes are known."""
    from sekiops.ops.inventory import inventory_records
    from sekiops.ops.synth import write_state

    state = sekiops.open_state_store(f"sqlite:///{tmp_path}/state.db")
    try:
        sekiops.persist(state, None, lambda out: out.write(b'{"items":[' + b'{"id":1},' * 20000 + b'{"id":2}]}'),
                        projector_name="TinyProjector", projector_version="v1", events_processed=3,
                        last_sortable_unique_id="0" * 30)
        big = sekiops.persist(state, None, lambda out: write_state(out, 2 * 2**20), projector_name="DirectoryProjector",
                              projector_version="v1", events_processed=3, last_sortable_unique_id="0" * 30)
        inv = pd.DataFrame(list(inventory_records(state, read_envelope_heads=False)))
        with_heads = pd.DataFrame(list(inventory_records(state)))
    finally:
        state.close()
    known = C.capacity_table(with_heads).set_index("projectorName")
    assert known.loc["TinyProjector", "verdict"] == "fits"
    assert known.loc["TinyProjector", "sizeSource"] == "payloadOriginalBytes"
    assert known.loc["DirectoryProjector", "payloadOriginalBytes"] == big.original_size_bytes
    table = C.capacity_table(inv).set_index("projectorName")
    assert table.loc["TinyProjector", "verdict"] == "unknown size"
    row = table.loc["DirectoryProjector"]
    assert row["verdict"] == "fits" and row["sizeSource"].startswith("estimated: envelope")
    # the estimate (envelope x 3/4 x 4.5) lands near the real state size
    assert 0.5 * big.original_size_bytes < row["payloadOriginalBytes"] < 2 * big.original_size_bytes


def test_the_sekiban_version_changes_the_grain_restore():
    """dcb-v10.23+: an offloaded payload restores streaming in the grain (needs temp-file disk), an inline
    Base64 payload is still decoded in memory; before 10.23 every restore holds the whole payload."""
    import pandas as pd

    from sekiops.ops.capacity import capacity_table, estimate_caption, parse_sekiban_version

    inv = pd.DataFrame([
        {"projectorName": "Offloaded", "projectorVersion": "v1", "payloadOriginalBytes": 1_500_000_000,
         "payloadCompressedBytes": 300_000_000, "payloadOffloaded": True, "lifecycle": "active"},
        {"projectorName": "Inline", "projectorVersion": "v1", "payloadOriginalBytes": 1_500_000_000,
         "payloadOffloaded": False, "lifecycle": "active"},
    ])
    new = capacity_table(inv).set_index("projectorName")
    old = capacity_table(inv, sekiban_version="dcb-v10.22").set_index("projectorName")
    fallback = capacity_table(inv, buffered_projectors=["OffloadedProjector"]).set_index("projectorName")
    assert new.loc["Offloaded", "grainRestorePath"].startswith("streaming")
    assert new.loc["Offloaded", "restoreTempDiskBytes"] == 300_000_000
    assert not bool(new.loc["Offloaded", "mixedOOM"])  # streams in the grain: fits 4 GiB
    assert new.loc["Inline", "grainRestorePath"].startswith("buffered (inline")
    assert bool(new.loc["Inline", "mixedOOM"])
    assert old.loc["Offloaded", "grainRestorePath"].startswith("buffered (before")
    assert bool(old.loc["Offloaded", "mixedOOM"]) and pd.isna(old.loc["Offloaded", "restoreTempDiskBytes"])
    assert fallback.loc["Offloaded", "grainRestorePath"].startswith("buffered (registry")
    caption = estimate_caption(capacity_table(inv))
    assert caption.startswith("Estimates, not measurements") and "dcb-v10.23" in caption
    assert "modelled in Python from Sekiban's source, not measured on .NET" in caption and "1.50 GiB" in caption
    assert parse_sekiban_version("dcb-v10.23") == parse_sekiban_version("10.23.0") == (10, 23)
