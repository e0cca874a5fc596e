"""The benchmark machinery (sekiops.ops.bench, ``sekiops bench``) at small sizes."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time

import pytest

from sekiops.errors import UsageError
from sekiops.ops import bench
from sekiops.ops.bench import MB, MODELLED, MiB, commands, run_benchmark, run_measured
from sekiops.ops.bench.scenarios import Scenarios
from sekiops.units import parse_size

pytestmark = pytest.mark.timeout(600)


# --- sizes (sekiops.units: the benchmark's --sizes forms) --------------------------------------


@pytest.mark.parametrize("text,value", [("10MB", 10**7), ("100MB", 10**8), ("1GiB", 2**30), ("2MiB", 2 * 2**20),
                                        ("1.5MB", 1_500_000), ("512kB", 512_000), ("64KiB", 65536),
                                        ("4096", 4096), (" 150mb ", 150 * 10**6), ("1GB", 10**9), (7, 7)])
def test_benchmark_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "MB", "10XB", "-1MB", "0", "1..2MB"])
def test_benchmark_refuses_bad_sizes_before_running_anything(bad, tmp_path):
    with pytest.raises(UsageError, match="size"):
        run_benchmark(sizes=[bad], workdir=str(tmp_path))
    assert not os.listdir(tmp_path)


def test_size_labels_are_the_sizes_as_written():
    assert [bench.size_label(s) for s in ("10MB", " 1 GiB", 32 * MiB, 1_500_000)] == ["10MB", "1GiB", "32.0MiB",
                                                                                      "1.43MiB"]


def test_backend_label():
    assert bench.backend_label("sqlite:////x.db", "/tmp/blobs") == "sqlite+local"
    assert bench.backend_label("postgresql://u:p@h/db", "azblob://c") == "postgresql+azblob"
    assert bench.backend_label("cosmos+https://h:1/D/C?verify=false", "azblob://c") == "cosmos+azblob"
    assert bench.backend_label("sqlite:////x.db", None) == "sqlite+none"


# --- one measured process -----------------------------------------------------------------------


def test_run_measured_reports_the_childs_own_peak_not_the_parents():
    ballast = bytearray(200 * MiB)  # this process is now >= 200 MiB
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    idle = run_measured([sys.executable, "-c", "pass"])
    big = run_measured([sys.executable, "-c", "b = bytearray(150 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1"])
    del ballast
    assert idle.ok and big.ok
    # Without the launcher a child's ru_maxrss starts at its parent's RSS (fork + execve).
    assert idle.peak_rss_bytes < 60 * MiB, idle.peak_rss_bytes
    assert big.peak_rss_bytes - idle.peak_rss_bytes >= 145 * MiB
    assert 0 < idle.wall_s < 30


def test_run_measured_exit_status_timeout_and_missing_program():
    m = run_measured([sys.executable, "-c", "import sys; print('{\"a\": 1}'); sys.exit(3)"])
    assert m.returncode == 3 and not m.ok and m.json() == {"a": 1}
    t = time.monotonic()
    m = run_measured([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert m.timed_out and not m.ok and time.monotonic() - t < 20
    assert "timed out" in m.error_line()
    m = run_measured(["/nonexistent/program"])
    assert m.returncode == 127 and "cannot start" in m.error_line()


# --- the benchmark on the embedded default --------------------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("bench-small"))
    lines: list[str] = []
    df = run_benchmark(sizes=["2MB", "8MB"], ops=["persist", "restore", "anatomy"], workdir=workdir,
                       progress=lines.append, baseline_repeats=1)
    return df, lines, workdir


def test_small_run_rows_and_columns(small_run):
    df, lines, workdir = small_run
    assert list(df.columns) == bench.COLUMNS
    pipe = df[df["mode"] != "codec"]
    codec = df[df["mode"] == "codec"]
    assert len(pipe) == 2 * (2 * 2 + 1)  # sizes x (modes x persist/restore + streaming anatomy)
    assert set(zip(pipe["op"], pipe["mode"], strict=True)) == {
        (o, m) for o in ("persist", "restore") for m in bench.MODES} | {("anatomy", "streaming")}
    assert pipe["ok"].all(), pipe[["op", "mode", "size_label", "error"]].to_string()
    assert set(pipe["backend"]) == {"sqlite+local"}
    default_gzip = bench.machine_info()["gzip_backend"]
    assert set(pipe["gzip_backend"]) == {default_gzip}
    # the codec floor: compress and decompress alone, the pipeline's backend and zlib, per size
    assert set(zip(codec["op"], codec["gzip_backend"], strict=True)) >= {("compress", "zlib"), ("decompress", "zlib"),
                                                             ("compress", default_gzip), ("decompress", default_gzip)}
    assert codec["ok"].all() and (codec["throughput_mib_s"] > 0).all()
    for r in pipe.to_dict("records"):
        assert r["peak_rss_bytes"] > 10 * MB and r["baseline_rss_bytes"] > 10 * MB
        assert r["overhead_bytes"] == r["peak_rss_bytes"] - r["baseline_rss_bytes"]
        assert r["envelope_location"] == "inline"
        assert r["modelled"] == (r["mode"] == MODELLED)
        if r["modelled"]:  # the model's time is Python's, not .NET's: memory only
            assert all(r[c] is None or r[c] != r[c] for c in bench.TIME_COLUMNS), r
            assert "modelled" in r["command"] and r["command"].startswith("sekiops.ops.bench modelled-")
        else:
            assert r["wall_s"] > 0 and r["op_s"] > 0 and r["throughput_mib_s"] > 0
            assert r["codec_mib_s"] > 0 and r["ratio_to_codec"] > 0 and r["ratio_to_zlib_codec"] > 0
            assert r["paired_ratio_to_codec"] > 0
    # 2 MB compresses below Sekiban's payload threshold (inline), 8 MB above it (blob)
    locations = {(r["size_label"], r["op"], r["mode"]): r["payload_location"] for r in pipe.to_dict("records")}
    assert {v for (size, _, _), v in locations.items() if size == "2MB"} == {"inline"}
    assert {v for (size, _, _), v in locations.items() if size == "8MB"} == {"blob"}
    read_back = pipe[pipe["op"] != "persist"]
    assert read_back["verified"].map(bool).all()  # restores equal the input; anatomies counted every byte
    assert list(pipe[pipe["op"] == "anatomy"]["command"].unique()) == ["sekiops anatomy"]
    # memory: the modelled byte[] path holds the whole state, streaming does not
    p8 = pipe[(pipe["size_label"] == "8MB") & (pipe["op"] == "persist")].set_index("mode")
    assert p8.loc[MODELLED, "overhead_bytes"] > 8 * MB
    assert p8.loc["streaming", "overhead_bytes"] < p8.loc[MODELLED, "overhead_bytes"]
    assert df.attrs["machine"]["nproc"] >= 1
    # progress: one line per scenario, numbered; modelled lines say what they are
    numbered = [ln for ln in lines if ln.startswith("[")]
    assert len(numbered) == 10 and numbered[-1].startswith("[10/10]")
    for ln in numbered:
        assert ("modelled in Python from Sekiban's source, not measured on .NET" in ln) == ("byte[] path" in ln)
    # the run directory (database, blobs) is gone; the generated states stay for the next run
    assert not [d for d in os.listdir(workdir) if d.startswith("run-")]
    assert os.path.exists(os.path.join(workdir, "states", "state-8000000.json"))


def test_chart_is_a_png(small_run, tmp_path):
    import matplotlib.image

    df, _, _ = small_run
    path = tmp_path / "chart.png"
    bench.plot_benchmark(df).savefig(path, dpi=80)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    img = matplotlib.image.imread(str(path))
    h, w = img.shape[:2]
    assert 200 <= h <= 3000 and 600 <= w <= 5000 and img.shape[2] in (3, 4)
    assert img.std() > 0.01  # not a blank canvas


def test_results_files_round_trip(small_run, tmp_path):
    df, _, _ = small_run
    for name in ("r.csv", "r.json"):
        path = str(tmp_path / name)
        bench.save_results(df, path)
        back = bench.load_results(path)
        assert list(back.columns[:len(bench.COLUMNS)]) == bench.COLUMNS
        assert len(back) == len(df)
        assert list(back["peak_rss_bytes"]) == list(df["peak_rss_bytes"])
        assert list(back["modelled"]) == list(df["mode"] == MODELLED)


def test_old_results_files_lose_the_models_times(tmp_path):
    """Results written before the model left the product had times on legacy rows: not any more."""
    import pandas as pd

    old = pd.DataFrame([{"op": "persist", "mode": "legacy", "size_bytes": 10, "ok": True, "op_s": 1.4,
                         "throughput_mib_s": 72.0, "overhead_bytes": 30},
                        {"op": "persist", "mode": "streaming", "size_bytes": 10, "ok": True, "op_s": 0.25,
                         "throughput_mib_s": 408.0, "overhead_bytes": 7}])
    old.to_csv(tmp_path / "old.csv", index=False)
    back = bench.load_results(str(tmp_path / "old.csv")).set_index("mode")
    assert pd.isna(back.loc["legacy", "op_s"]) and pd.isna(back.loc["legacy", "throughput_mib_s"])
    assert back.loc["streaming", "op_s"] == 0.25 and back.loc["legacy", "overhead_bytes"] == 30
    assert bool(back.loc["legacy", "modelled"]) and not bool(back.loc["streaming", "modelled"])


def test_every_argv_the_benchmark_builds_is_accepted_by_its_program(tmp_path):
    """The benchmark declares its commands (no argparse internals); each argv must parse in the real program."""
    from sekiops.cli.main import build_parser
    from sekiops.ops.bench.__main__ import parser as child_parser

    s = Scenarios(workdir=str(tmp_path), state_url=None, blob_url=None, python=sys.executable, heap=True,
                  verify=True, repeat=1, baseline_repeats=1, timeout=None, progress=None, memory_margin=4.0)
    argvs = [s.persist_argv("P", "/in.json", m, "zlib", payload_threshold=0, heap=True) for m in bench.MODES]
    argvs += [s.restore_argv("P", "/out.json", m, heap=True) for m in bench.MODES]
    argvs += [s.scenario_argv("anatomy", "streaming", "P", "/unused"),
              commands.codec_argv(sys.executable, "compress", "zlib", "/a", "/b")]
    programs = {"sekiops": build_parser(), commands.CHILD_MODULE: child_parser()}
    for argv in argvs:
        assert argv[:2] == [sys.executable, "-m"]
        programs[argv[2]].parse_args(argv[3:])  # SystemExit (a test error) if an option is unknown
    modelled = [a for a in argvs if a[2] == commands.CHILD_MODULE and "codec" not in a]
    assert {a[3] for a in modelled} == {"modelled-persist", "modelled-restore"}
    assert all(a[2] == "sekiops" for a in argvs if a[3] in ("persist", "restore", "anatomy"))


def test_restore_mismatch_is_marked_failed(tmp_path):
    """A restore whose output differs from the input is a failed row, not a number."""
    workdir = str(tmp_path)
    states = tmp_path / "states"
    states.mkdir()
    path = str(states / f"state-{2 * MB}.json")
    meta = bench.generate_state(path, 2 * MB)
    meta["sha256"] = "0" * 64  # what the benchmark believes the input hashes to
    with open(path + ".meta.json", "w") as f:
        json.dump(meta, f)
    df = run_benchmark(sizes=["2MB"], modes=["streaming"], ops=["restore"], workdir=workdir, codec=False,
                       baseline_repeats=1)
    r = df.iloc[0]
    assert not r["ok"] and "differs from the input" in r["error"], r["error"]
    assert not r["verified"]


def test_generate_state_is_valid_json_and_reused(tmp_path):
    path = str(tmp_path / "s.json")
    meta = bench.generate_state(path, 3 * MB + 17)
    assert abs(meta["bytes"] - (3 * MB + 17)) < 5000 and os.path.getsize(path) == meta["bytes"]
    with open(path, "rb") as f:
        doc = json.load(f)
    assert doc["summary"]["customerCount"] == len(doc["customers"]) > 1000
    mtime = os.path.getmtime(path)
    assert bench.generate_state(path, 3 * MB + 17) == meta and os.path.getmtime(path) == mtime
    # sizes where sekiops.ops.synth.write_state's end-of-state loop once spun forever
    for target in (1000, 5000):
        m = bench.generate_state(str(tmp_path / f"t{target}.json"), target)
        assert m["bytes"] <= target
        with open(str(tmp_path / f"t{target}.json"), "rb") as f:
            json.load(f)


def test_generated_state_is_synths_output(tmp_path):
    """The benchmark's states are the synthetic generator's, byte for byte."""
    import hashlib
    import io

    from sekiops.ops import synth

    buf = io.BytesIO()
    n = synth.write_state(buf, 2 * MB)
    meta = bench.generate_state(str(tmp_path / "s.json"), 2 * MB)
    assert meta["bytes"] == n and meta["sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()


def test_urls_with_secrets_reach_children_through_the_environment(tmp_path):
    secret_state = "postgresql://bench:s3cret@127.0.0.1:5432/db"
    secret_blob = "azblob://acct.blob.core.windows.net/c?sv=2022-11-02&sig=s3cretsig"
    b = Scenarios(workdir=str(tmp_path), state_url=secret_state, blob_url=secret_blob, python=sys.executable,
                  heap=False, verify=True, repeat=1, baseline_repeats=1, timeout=None, progress=None,
                  memory_margin=4.0)
    argv = b.persist_argv("P", "/in.json", "streaming", "zlib") + b.restore_argv("P", "/out", MODELLED)
    assert not any("s3cret" in a for a in argv) and "--state" not in argv and "--blob" not in argv
    assert b.env["SEKIOPS_STATE_URL"] == secret_state and b.env["SEKIOPS_BLOB_URL"] == secret_blob
    plain = Scenarios(workdir=str(tmp_path), state_url="sqlite:////x.db", blob_url="/tmp/blobs",
                      python=sys.executable, heap=False, verify=True, repeat=1, baseline_repeats=1, timeout=None,
                      progress=None, memory_margin=4.0)
    argv = plain.persist_argv("P", "/in.json", "streaming", "zlib")
    assert argv[argv.index("--state") + 1] == "sqlite:////x.db" and argv[argv.index("--blob") + 1] == "/tmp/blobs"
    assert "SEKIOPS_STATE_URL" not in plain.env and "SEKIOPS_BLOB_URL" not in plain.env


# --- the CLI ------------------------------------------------------------------------------------


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "sekiops", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_bench_out_chart_and_progress(tmp_path):
    import matplotlib.image

    out, chart = tmp_path / "results.json", tmp_path / "chart.png"
    p = _cli("--sizes", "2MB", "--modes", "streaming", "--ops", "persist,restore", "--workdir",
             str(tmp_path / "w"), "--out", str(out), "--chart", str(chart), "--format", "json",
             "--baseline-repeats", "1")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [(r["op"], r["mode"]) for r in rows if r["mode"] != "codec"] == [("persist", "streaming"),
                                                                           ("restore", "streaming")]
    assert all(r["ok"] for r in rows)
    progress = [ln for ln in p.stderr.splitlines() if ln.startswith("[")]
    assert len(progress) == 2 and progress[0].startswith("[1/2] persist streaming sqlite+local 2MB")
    saved = json.loads(out.read_text())
    assert saved["machine"]["cpu_model"] is not None and len(saved["rows"]) == len(rows)
    img = matplotlib.image.imread(str(chart))
    assert img.shape[0] > 200 and img.shape[1] > 600
    # --append adds a second run's rows to the same file (one chart for several backends)
    p = _cli("--sizes", "2MB", "--modes", "streaming", "--ops", "persist", "--no-codec", "--workdir",
             str(tmp_path / "w"), "--out", str(out), "--append", "--format", "csv", "--baseline-repeats", "1")
    assert p.returncode == 0, p.stderr
    assert len(json.loads(out.read_text())["rows"]) == len(rows) + 1
    assert p.stdout.splitlines()[0].startswith("op,mode,variant,backend,")


def test_cli_bench_table_format_labels_the_model(tmp_path):
    p = _cli("--sizes", "2MB", "--modes", "legacy", "--ops", "persist", "--no-codec", "--workdir",
             str(tmp_path), "--baseline-repeats", "1", "--timeout", "5m")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    header = lines[0].split()
    assert header[:5] == ["op", "mode", "variant", "backend", "size_label"] and "overhead_mib" in header
    assert "legacy (modelled)" in lines[1]
    assert lines[-1] == ("# legacy (modelled) = Sekiban's byte[] path, modelled in Python from Sekiban's source, "
                         "not measured on .NET: memory only, no times")
    assert "modelled in Python from Sekiban's source, not measured on .NET" in p.stderr


def test_paired_ratio_is_the_median_of_same_round_ratios():
    from sekiops.ops.bench.codec import CodecFloor

    floor = CodecFloor(sys.executable, "/nonexistent", run=None)
    state = {"path": "/s.json", "bytes": 10}
    # the machine slows down in round 2: codec and scenario alike; round 1's scenario failed
    floor.rounds[("/s.json", "isal", "decompress")] = [1.0, 2.0, 1.0]
    assert floor.paired_ratio(state, "isal", "decompress", {0: 1.25, 2: 1.0}) == 0.9  # median of 0.8 and 1.0
    assert floor.paired_ratio(state, "isal", "compress", {0: 2.0}) is None  # no compress rounds
    floor.rounds[("/s.json", "isal", "compress")] = [1.0, 9.0, 9.0]
    assert floor.paired_ratio(state, "isal", "compress", {0: 2.0, 1: 10.0, 2: 9.5}) == 0.9  # median of .5 .9 .947


def test_cli_bench_out_may_go_into_the_workdir_it_creates(tmp_path):
    work = tmp_path / "not-yet" / "bench"  # as in docs/benchmarks.md's reproduce script
    p = _cli("--sizes", "2MB", "--modes", "streaming", "--ops", "persist", "--no-codec", "--workdir", str(work),
             "--out", str(work / "results.json"), "--baseline-repeats", "1")
    assert p.returncode == 0, p.stderr
    assert json.loads((work / "results.json").read_text())["rows"][0]["ok"]


@pytest.mark.parametrize("args,needle", [(["--sizes", "10XB"], "not a size"), (["--modes", "fast"], "modes"),
                                         (["--timeout", "soon"], "not a duration"),
                                         (["--out", "/nonexistent-dir/x.csv"], "does not exist"),
                                         (["--out", "x.txt"], ".csv or .json"),
                                         (["--blob", "/tmp/x"], "--blob needs --state")])
def test_cli_bench_usage_errors(args, needle):
    p = _cli(*args, timeout=60)
    assert p.returncode == 2
    assert p.stderr.startswith("error: ") and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1


# --- real servers: PostgreSQL + Azurite ---------------------------------------------------------


def test_bench_postgres_and_azurite(postgres_server, azure_storage_env, tmp_path):
    from sekiops.blob import open_blob_store

    container = "bench" + secrets.token_hex(4)
    blob_url = f"azblob://{container}"
    lines: list[str] = []
    df = run_benchmark(sizes=["8MB"], modes=[MODELLED, "streaming"], ops=["persist", "restore"],
                       state_url=postgres_server.url, blob_url=blob_url, workdir=str(tmp_path),
                       progress=lines.append, baseline_repeats=1)
    print("\n" + "\n".join(lines))
    pipe = df[df["mode"] != "codec"]
    assert len(pipe) == 4 and pipe["ok"].all(), pipe[["op", "mode", "error"]].to_string()
    assert set(pipe["backend"]) == {"postgresql+azblob"}
    assert set(pipe["payload_location"]) == {"blob"} and set(pipe["envelope_location"]) == {"inline"}
    assert (pipe["overhead_bytes"].notna()).all()
    assert (pipe[pipe["mode"] == "streaming"]["throughput_mib_s"] > 0).all()
    assert pipe[pipe["mode"] == MODELLED]["throughput_mib_s"].isna().all()  # the model's time is not reported
    assert pipe[pipe["op"] == "restore"]["verified"].map(bool).all()
    assert df.attrs["service_id"].startswith("bench-")
    # the URL's secrets never reach the frame
    assert not df.astype(str).apply(lambda col: col.str.contains(postgres_server.url, regex=False)).any().any()
    # the blobs the benchmark wrote stay, so no row it wrote points at a deleted blob
    from sekiops import open_state_store

    store = open_blob_store(blob_url)
    state = open_state_store(postgres_server.url, service_id=df.attrs["service_id"])
    try:
        keys = {b.key for b in store.list("SekiopsBench-")}
        assert keys
        for row in state.list_page():
            assert not row.is_offloaded or row.offload_key in keys
    finally:
        store.close()
        state.close()


# --- memory over time (notebook 03's "proof" chart) ---------------------------------------------------


def test_persist_memory_timeline_streaming_beside_the_model(tmp_path):
    frame, runs = bench.measure_persist_memory("8MB", str(tmp_path))
    assert set(frame["label"]) == set(bench.MODES)
    assert all(r["returncode"] == 0 for r in runs.values()), runs
    assert runs[MODELLED]["modelled"] and not runs["streaming"]["modelled"]
    assert runs[MODELLED]["peak_bytes"] > runs["streaming"]["peak_bytes"] + 8 * MB
    for r in runs.values():
        assert r["upload_bytes"] > 0 and r["offload_ratio"] > 0.9 and r["payload_location"] == "blob"


def test_columns_and_lines_speak_binary_units():
    """One unit convention (issue 16): the benchmark's columns and progress lines use MiB, never MB."""
    from sekiops.ops.bench.report import TABLE_COLUMNS, codec_line
    from sekiops.ops.bench.scenarios import COLUMNS

    decimal = [c for c in list(COLUMNS) + list(TABLE_COLUMNS) if re.search(r"_mb(_s)?$|mbps", c, re.I)]
    assert not decimal, decimal
    line = codec_line({"op": "compress", "size_label": "10MiB", "gzip_backend": "zlib", "ok": True, "op_s": 0.05,
                       "throughput_mib_s": 190.7, "peak_rss_bytes": 30 * 2**20})
    assert "190.7 MiB/s" in line and "MB/s" not in line, line
