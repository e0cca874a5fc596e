"""CI memory regression guard (issue 4): streaming persist and restore stay flat in memory.

Not a timed test: it measures memory only. A 100 MB synthetic projector state goes through
``python -m sekiops persist|restore`` (streaming) on the embedded default (SQLite file + local
blob directory), each in a fresh process whose peak RSS the kernel reports (``wait4``), against
an idle baseline (the same command on a ~1 kB state, same stores). It fails when either peak
rises more than 64 MiB above the baseline.

The control proves the guard can fail: Sekiban's byte[] path (modelled in Python from Sekiban's
source, not measured on .NET; it holds the whole state in memory) is measured the same way and
must rise above the same budget, idle baseline + 64 MiB. Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

import pytest

from sekiops.ops.bench import MB, MODELLED, MiB, run_benchmark

STATE_BYTES = 100 * MB
STREAMING_BUDGET = 64 * MiB

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("memory-guard"))


def _report(df) -> None:
    for r in df.to_dict("records"):
        print(f"\n{r['op']:8} {r['mode']:9} {r['size_label']:>6}: peak {r['peak_rss_bytes'] / MB:7.1f} MB, "
              f"idle baseline {r['baseline_rss_bytes'] / MB:6.1f} MB, overhead {r['overhead_bytes'] / MB:7.1f} MB "
              f"({r['overhead_ratio']:.3f}x state), {'modelled: no time' if r['modelled'] else str(r['op_s']) + ' s'}, "
              f"payload {r['payload_location']}, gzip {r['gzip_backend']}", end="")
    print()


def _check_sane(r) -> None:
    assert r["ok"], r["error"]
    assert r["payload_location"] == "blob"  # the path Sekiban takes for a state this size
    # The baseline is a Python process with sekiops imported (~25 MB): not ~0 (nothing measured)
    # and not the pytest process's own size leaking into the child's ru_maxrss.
    assert 10 * MB < r["baseline_rss_bytes"] < 80 * MB, r["baseline_rss_bytes"]


def test_streaming_persist_and_restore_stay_within_64_mib_of_idle(workdir):
    df = run_benchmark(sizes=[STATE_BYTES], modes=["streaming"], ops=["persist", "restore"], workdir=workdir,
                       codec=False, baseline_repeats=2, cleanup=True)
    _report(df)
    assert list(df["op"]) == ["persist", "restore"]
    for r in df.to_dict("records"):
        _check_sane(r)
        assert r["overhead_bytes"] <= STREAMING_BUDGET, (
            f"streaming {r['op']} of {STATE_BYTES / MB:.0f} MB peaked {r['overhead_bytes'] / MiB:.1f} MiB above "
            f"its idle baseline (budget {STREAMING_BUDGET / MiB:.0f} MiB): something buffers the state")
    restore = df[df["op"] == "restore"].iloc[0]
    assert bool(restore["verified"])  # the restored file equals the input (size + sha256)


def test_a_whole_state_buffer_breaks_the_budget(workdir):
    """The control: the same measurement, the same budget, a persist that holds the whole state."""
    df = run_benchmark(sizes=[STATE_BYTES], modes=[MODELLED], ops=["persist"], workdir=workdir,
                       codec=False, baseline_repeats=1, cleanup=True)
    _report(df)
    r = df.iloc[0].to_dict()
    _check_sane(r)
    assert r["modelled"]
    assert r["overhead_bytes"] > STREAMING_BUDGET, (
        f"the modelled byte[] persist of {r['size_bytes'] / MB:.0f} MB peaked only "
        f"{r['overhead_bytes'] / MiB:.1f} MiB above idle, within the {STREAMING_BUDGET / MiB:.0f} MiB budget: "
        "the measurement no longer sees a whole-state buffer, so the guard could not fail")
