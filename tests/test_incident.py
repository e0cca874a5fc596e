"""Post-incident analysis (sekiops.ops.incident), the demo evidence, and ``sekiops report incident``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from sekiops.errors import SekiopsError, UsageError
from sekiops.ops import incident as I
from sekiops.ops.demo_evidence import write_demo_evidence
from sekiops.ops.logs import parse_container_memory, parse_log_file

DATA = Path(__file__).resolve().parent / "data"
GiB = 2**30


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    return write_demo_evidence(str(tmp_path_factory.mktemp("evidence")))


@pytest.fixture(scope="module")
def demo_rep(evidence):
    return I.analyse(evidence["logs_file"], evidence["metrics_file"], evidence["time_from"], evidence["time_to"],
                     service_id=evidence["service_id"], memory_limit=evidence["memory_limit"])


def by_id(findings, prefix):
    return [f for f in findings if f["id"].startswith(prefix)]


# --- the demo evidence is what the parsers accept --------------------------------------------------


def test_demo_evidence_parses_with_the_section_7_templates(evidence):
    logs = parse_log_file(evidence["logs_file"], include_message=True)
    frame = logs.frame
    kinds = frame["kind"].value_counts().to_dict()
    assert kinds["persist_legacy"] == 13 and kinds["persist_streaming"] == 14
    assert kinds["restore"] == 3 and kinds["state_restore_failed"] == 2 and kinds["blob_read_failed"] == 1
    assert kinds["catch_up_batch_summary"] == 12 and kinds["state_restore_success"] == 1
    # every message is the exact rendered template
    persist = frame[frame["kind"] == "persist_legacy"].iloc[-1]
    assert persist["message"].startswith("Persist: CustomerDirectory, Events=1348000, SafeVer=1347988, "
                                         "UnsafeVer=1348000, EnvelopeSize=421003264, SafeThreshold=")
    streaming = frame[frame["kind"] == "persist_streaming"].iloc[0]
    assert re.fullmatch(r"StreamingPersist: CustomerDirectory, BuildMs=\d+, UploadMs=\d+, TempFileBytes=\d+, "
                        r"PeakMemory=\d+, Events=\d+", streaming["message"])
    restore = frame[frame["kind"] == "restore"].iloc[0]
    assert restore["message"] == ("Restore: CustomerDirectory, RecordEvents=1348000, StateDataLen=421003264, "
                                  "Original=1420886016, Compressed=315752448, PostSafeVer=1347988, "
                                  "PostUnsafeVer=1348000")
    # unrelated rows are counted, never fatal
    assert logs.skipped_reasons == {"not a Sekiban snapshot event": 22, "other event id 1004 (CatchUpStarted)": 1}
    memory = parse_container_memory(evidence["metrics_file"]).frame
    assert len(memory) == 121 and memory["restarts"].sum() == 3
    assert memory["memory_percent"].max() == pytest.approx(99.1)
    assert I.infer_memory_limit(memory) == 4 * GiB


def test_demo_evidence_is_deterministic_and_scales_with_the_limit(tmp_path):
    a = write_demo_evidence(str(tmp_path / "a"))
    b = write_demo_evidence(str(tmp_path / "b"))
    assert Path(a["logs_file"]).read_bytes() == Path(b["logs_file"]).read_bytes()
    c = write_demo_evidence(str(tmp_path / "c"), memory_limit=8 * GiB)
    assert c["memory_limit"] == "8GiB"
    assert I.infer_memory_limit(parse_container_memory(c["metrics_file"]).frame) == 8 * GiB


# --- the timeline -----------------------------------------------------------------------------------


def test_timeline_aligns_events_with_memory_and_restarts(demo_rep):
    tl = demo_rep.timeline
    assert tl["time"].is_monotonic_increasing
    assert set(tl["category"]) >= {"persist", "restore", "failure", "catch_up", "memory", "restart"}
    # the last byte[] persist (02:47:20): nearest sample 02:47, 98.6 % of the limit in the next 5 minutes
    last = tl[tl["kind"] == "persist_legacy"].iloc[-1]
    assert last["projectorName"] == "CustomerDirectory" and last["envelope_bytes"] == 421_003_264
    assert last["memory_time"] == pd.Timestamp("2026-03-10T02:47:00Z")
    assert last["peak_after_percent"] == pytest.approx(98.6)
    assert last["working_set_bytes"] == tl[(tl["kind"] == "memory") & (tl["time"] == last["memory_time"])][
        "working_set_bytes"].iloc[0]
    # restarts are rows of their own, at the samples that counted them
    restarts = tl[tl["kind"] == "restart"]
    assert [t.strftime("%H:%M") for t in restarts["time"]] == ["02:49", "02:52", "02:56"]
    # restores carry the state size (Original differs from Compressed), streaming persists PeakMemory
    restore = tl[tl["kind"] == "restore"].iloc[0]
    assert restore["state_bytes"] == 1_420_886_016 and restore["envelope_bytes"] == 421_003_264
    big = tl[(tl["kind"] == "persist_streaming") & (tl["projectorName"] == "CustomerDirectory")]
    assert len(big) == 11 and big["peak_memory_bytes"].between(3.5e8, 4.2e8).all()
    # events sort before nothing they follow: each event's memory sample is within the tolerance
    ev = tl[tl["source"] == "logs"]
    assert ((ev["time"] - ev["memory_time"]).abs() <= pd.Timedelta("3min")).all()


def test_window_service_and_projector_filters(evidence):
    rep = I.analyse(evidence["logs_file"], evidence["metrics_file"], "2026-03-10T02:30:00Z", "2026-03-10T03:00:00Z",
                    projectors="CustomerDirectoryProjector")  # the "Projector" suffix does not matter
    tl = rep.timeline
    assert tl["time"].min() >= pd.Timestamp("2026-03-10T02:30:00Z")
    assert tl["time"].max() <= pd.Timestamp("2026-03-10T03:00:00Z")
    assert set(tl.loc[tl["source"] == "logs", "projectorName"]) == {"CustomerDirectory"}
    assert len(rep.memory) == 31
    assert not by_id(rep.findings, "streaming")  # the fix is outside the window
    # events that carry a ServiceId are kept only for that service
    events = parse_log_file(evidence["logs_file"]).frame
    events["ServiceId"] = ["tenant-a" if i % 2 else None for i in range(len(events))]
    kept = I.filter_events(events, service_id="tenant-b")
    assert len(kept) == events["ServiceId"].isna().sum()
    assert I.projector_key("CustomerDirectoryProjector") == I.projector_key("customer-directory")


def test_restart_counts_per_interval_and_running():
    assert I.restart_increments(pd.Series([0, 0, 1, 0, 0, 2, 0])).tolist() == [0, 0, 1, 0, 0, 2, 0]
    # a running count (Maximum of the replica's restart count) is differenced
    assert I.restart_increments(pd.Series([4, 4, 5, 5, 5, 7, 7])).tolist() == [0, 0, 1, 0, 0, 2, 0]
    assert I.restart_increments(pd.Series([0, 1, 1, 1]), cumulative=False).tolist() == [0, 1, 1, 1]


def test_cumulative_restart_export_and_percent_only_memory(tmp_path):
    path = tmp_path / "mem.csv"
    rows = ["TimeGenerated,MemoryPercentage,RestartCount"]
    for i, (pct, count) in enumerate([(40, 2), (60, 2), (95, 2), (20, 3), (70, 3), (97, 3), (22, 4), (30, 4)]):
        rows.append(f"2026-03-10T02:{i:02d}:00Z,{pct},{count}")
    path.write_text("\n".join(rows) + "\n")
    logs = tmp_path / "logs.jsonl"
    logs.write_text(json.dumps({"timestamp": "2026-03-10T02:01:40Z", "message":
                                "Persist: Big, Events=10, SafeVer=9, UnsafeVer=10, EnvelopeSize=500000000, "
                                "SafeThreshold=x"}) + "\n")
    rep = I.analyse(str(logs), str(path), memory_limit="2GiB")
    assert rep.memory["restarts"].tolist() == [0, 0, 0, 1, 0, 0, 1, 0]
    assert rep.memory["working_set_bytes"].max() == pytest.approx(0.97 * 2 * GiB)
    peak = by_id(rep.findings, "memory_peak")[0]
    assert peak["text"].startswith("Memory reached 95% of the 2 GiB limit")
    assert "20 s after a legacy (byte[]) persist of Big with EnvelopeSize=500,000,000 B (477 MiB)" in peak["text"]
    assert "2 restarts followed" in peak["text"]


# --- findings and recommended settings --------------------------------------------------------------


def test_findings_on_the_demo_evidence(demo_rep):
    f = demo_rep.findings
    assert [x["severity"] for x in f] == sorted((x["severity"] for x in f), key=I.SEVERITY_ORDER.get)
    peak = by_id(f, "memory_peak")[0]
    assert peak["severity"] == "critical"
    assert re.search(r"Memory reached 99% of the 4 GiB limit \(3\.9\d GiB working set\) at 2026-03-10 02:48:00 UTC, "
                     r"(39|40) s after a legacy \(byte\[\]\) persist of CustomerDirectory with "
                     r"EnvelopeSize=421,003,264 B \(402 MiB\); 3 restarts followed \(02:49:00, 02:52:00, 02:56:00\)\.",
                     peak["text"]), peak["text"]
    assert peak["trigger"]["kind"] == "persist_legacy" and peak["restartsAfter"] == 3
    restarts = by_id(f, "restarts")[0]
    assert restarts["oomKills"] == 3 and "restarted 3 times" in restarts["text"]
    failures = by_id(f, "failures")[0]
    assert "2 × StateRestoreFailed" in failures["text"] and "1 × BlobReadFailed" in failures["text"]
    assert "OutOfMemoryException" in failures["text"]
    growth = by_id(f, "legacy_persists:CustomerDirectory")[0]
    assert "EnvelopeSize went from 225 MiB to 402 MiB (+78%)" in growth["text"]
    streaming = by_id(f, "streaming")[0]
    assert streaming["severity"] == "ok" and "StreamingPersist" in streaming["text"]
    assert "PeakMemory 89.1 MiB–385 MiB" in streaming["text"] and "no restart" in streaming["text"]
    capacity = by_id(f, "capacity:logs:CustomerDirectory")[0]
    assert capacity["severity"] == "critical" and capacity["legacyPeakBytes"] > 4 * GiB
    assert capacity["streamingPeakBytes"] < 2 * GiB
    assert not by_id(f, "capacity:logs:OrderSummary")


def test_recommended_settings_follow_the_evidence(demo_rep):
    recs = {r["setting"]: r for r in demo_rep.recommendations}
    assert recs["Snapshot persist"]["value"].startswith("streaming")
    assert "402 MiB" in recs["Snapshot persist"]["why"]
    # Sekiban dcb-v10.23 (the default): offloaded payloads restore streaming, inline ones in memory
    assert recs["Snapshot restore"]["value"].startswith("offload large payloads")
    assert "dcb-v10.23 (assumed)" in recs["Snapshot restore"]["why"]
    assert "CustomerDirectory still exceeds the limit on the grain's restore" in recs["Snapshot restore"]["why"]
    assert recs["CatchUpBatchSize"]["value"] == "200–500"
    batch = recs["CatchUpBatchSize"]["why"]
    assert "RequestedMaxCount=5,000" in batch and "(latest: 500)" in batch
    assert "force offload" in recs["Payload offload threshold (OffloadThresholdBytes)"]["why"]
    assert "CustomerDirectory" in recs["Payload offload threshold (OffloadThresholdBytes)"]["why"]
    limit = recs["Container memory limit"]["value"]
    assert limit.startswith("≥ 2 GiB with streaming persist + restore")
    assert "≥ 7.50 GiB with Sekiban's grain on dcb-v10.23" in limit  # 3.2x-the-state byte[] restore (capacity defaults)
    assert "421 MiB" in recs["Temp file space (ephemeral storage)"]["why"]
    md = I.recommendations_markdown(demo_rep.recommendations)
    assert md.count("\n") == len(demo_rep.recommendations) + 1


def test_findings_on_the_fixture_exports():
    rep = I.analyse(DATA / "appinsights_traces.csv", DATA / "container_memory.csv")
    assert rep.memory_limit == 4 * GiB and rep.limit_source.startswith("inferred")
    peak = by_id(rep.findings, "memory_peak")[0]
    assert peak["text"] == ("Memory reached 98% of the 4 GiB limit (3.91 GiB working set) at 2026-02-25 09:40:00 UTC, "
                            "9 min 19 s after a legacy (byte[]) persist of CustomerDirectoryProjector with "
                            "EnvelopeSize=1,094,220,113 B (1.02 GiB); 1 restart followed (09:42:00).")
    assert "restarted once" in by_id(rep.findings, "restarts")[0]["text"]
    failures = by_id(rep.findings, "failures")[0]
    assert failures["failures"] == 3 and "StateNotFound" in failures["text"]
    # Original == Compressed == StateDataLen: the restore logged the envelope, not the state
    assert "envelopes up to 1.02 GiB" in by_id(rep.findings, "restores")[0]["text"]
    cap = by_id(rep.findings, "capacity:logs:CustomerDirectoryProjector")[0]
    assert "state ≈ 3.49 GiB" in cap["text"] and cap["legacyPeakBytes"] > 8 * GiB
    assert "modelled in Python from Sekiban's source, not measured on .NET" in cap["text"]
    assert any("customDimensions is not valid JSON" in n for n in rep.notes)

    other = I.analyse(DATA / "loganalytics_apptraces.json", DATA / "azuremetrics_long.csv",
                      time_from="2026-02-25T09:00:00Z", time_to="2026-02-25T11:00:00Z", memory_limit=4 * GiB)
    assert other.limit_source == "given"
    assert other.memory["memory_percent"].max() == pytest.approx(97.8)
    assert by_id(other.findings, "capacity")[0]["severity"] == "ok"
    assert "OrderSummaryProjector" in by_id(other.findings, "streaming")[0]["text"]


def test_bad_inputs_raise_clear_errors(tmp_path, evidence):
    with pytest.raises(UsageError, match="logs file .*nope.csv.* not found"):
        I.analyse(str(tmp_path / "nope.csv"), evidence["metrics_file"])
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(SekiopsError, match=r"^metrics file .*b\.bin': not a CSV or JSON export"):
        I.analyse(evidence["logs_file"], str(binary))
    with pytest.raises(UsageError, match="not before"):
        I.analyse(evidence["logs_file"], evidence["metrics_file"], "2026-03-10T04:00Z", "2026-03-10T02:00Z")
    with pytest.raises(UsageError, match="outside the data"):
        I.analyse(evidence["logs_file"], evidence["metrics_file"], "2027-01-01")
    with pytest.raises(UsageError, match="memory limit"):
        I.analyse(evidence["logs_file"], evidence["metrics_file"], memory_limit="lots")
    with pytest.raises(UsageError, match="implausibly small"):
        I.parse_limit("4")


def test_charts_and_tables_render_headless(demo_rep):
    from sekiops.ops.charts import png

    for fig in (I.timeline_chart(demo_rep), I.persist_size_chart(demo_rep),
                I.capacity_chart(demo_rep.capacity, demo_rep.memory_limit)):
        assert png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    table = I.events_table(demo_rep)
    assert list(table.columns)[:3] == ["time (UTC)", "what", "projector"]
    # catch-up batches: only when the batch size changes (5,000 then 500)
    assert (table["what"] == "catch-up batch").sum() == 2
    assert "| memory limit | 4 GiB (given) |" in I.scope_markdown(demo_rep)
    json.dumps(demo_rep.summary())  # JSON-friendly


def test_persist_memory_timeline_legacy_vs_streaming(tmp_path):
    frame, runs = I.measure_persist_memory("24MB", str(tmp_path))
    assert set(frame["label"]) == {"legacy", "streaming"}
    assert all(r["returncode"] == 0 for r in runs.values())
    assert runs["legacy"]["peak_bytes"] > runs["streaming"]["peak_bytes"]
    metrics = I.persist_metrics_frame(runs)
    assert (metrics["projection_snapshot_upload_bytes"] > 0).all()  # 24 MB of JSON: payload offloaded
    assert (metrics["projection_snapshot_offload_ratio"] > 0.9).all()
    assert metrics.set_index("mode").loc["streaming", "projection_snapshot_tempfile_bytes"] > 0
    from sekiops.ops.charts import png

    assert png(I.memory_over_time_chart(frame, runs))[:4] == b"\x89PNG"
    assert png(I.offload_ratio_chart(metrics))[:4] == b"\x89PNG"


# --- the demo deployment carries the evidence -------------------------------------------------------


def test_demo_deployment_writes_evidence_for_notebook_04(tmp_path):
    from sekiops.ops.demo import _notebook_parameters
    from sekiops.ops.demo_deployment import build_demo_deployment

    dep = build_demo_deployment(str(tmp_path / "dep"), big_bytes=1_000_000)
    assert set(dep.evidence) == {"logs_file", "metrics_file", "time_from", "time_to", "memory_limit", "service_id"}
    assert os.path.isfile(dep.evidence["logs_file"]) and os.path.isfile(dep.evidence["metrics_file"])
    params = _notebook_parameters("04_post_incident_report.ipynb", dep, "bench.csv")
    assert params["logs_file"] == dep.evidence["logs_file"] and params["state_url"] == dep.state_url
    rep = I.analyse(params["logs_file"], params["metrics_file"], params["time_from"], params["time_to"],
                    service_id=params["service_id"], memory_limit=params["memory_limit"],
                    state_url=params["state_url"], blob_url=params["blob_url"])
    assert rep.sources["inventory"] and set(rep.capacity["source"]) == {"logs", "inventory"}
    assert "CustomerDirectory" in set(rep.capacity.loc[rep.capacity["source"] == "inventory", "projectorName"])


# --- sekiops report incident ------------------------------------------------------------------------


def run_cli(argv, capsys):
    from sekiops.cli.main import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_report_incident_end_to_end(tmp_path, evidence, capsys):
    pytest.importorskip("papermill")
    out = tmp_path / "report.html"
    kept = tmp_path / "report.ipynb"
    code, stdout, stderr = run_cli(["report", "incident", "--logs", evidence["logs_file"], "--metrics",
                                    evidence["metrics_file"], "--from", evidence["time_from"], "--to",
                                    evidence["time_to"], "--memory-limit", "4GiB", "--out", str(out),
                                    "--ipynb", str(kept)], capsys)
    assert code == 0, stderr
    assert stderr == ""  # the kernel's start-up chatter stays out of the terminal
    assert stdout.splitlines()[0] == f"report: {out}"
    assert "[critical] Memory reached the limit: Memory reached 99% of the 4 GiB limit" in stdout
    html = out.read_text()
    for heading in ("Post-incident report: snapshot memory and restarts", "What this report looked at", "Summary",
                    "Timeline", "Events in the window", "Capacity: which projections fit the memory limit",
                    "Recommended settings", "Data and method"):
        assert heading in html, heading
    # the findings, as the report states them
    assert "EnvelopeSize=421,003,264 B (402 MiB); 3 restarts followed (02:49:00, 02:52:00, 02:56:00)" in html
    assert "<title>Post-incident report: snapshot memory and restarts</title>" in html
    assert "After the switch to streaming persist" in html and "200–500" in html
    assert html.count("data:image/png;base64,") >= 4
    # no code cells: neither inputs nor prompts
    assert "incident.analyse(" not in html and "import pandas" not in html
    code_cells = re.findall(r'class="jp-Cell jp-CodeCell[^"]*"', html)
    assert code_cells and all("jp-mod-noInput" in c for c in code_cells)
    assert 'class="highlight' not in html and "jp-InputPrompt" not in html.split("</style>")[-1]
    assert "In&nbsp;[" not in html
    nb = json.loads(kept.read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    # the CLI analysed once and handed its analysis to the notebook, which did not read the exports again
    assert injected and "analysis_file" in "".join(injected[0]["source"])
    assert evidence["logs_file"] not in "".join(injected[0]["source"])


def test_cli_report_with_inventory_from_the_environment(tmp_path, evidence, capsys, monkeypatch):
    pytest.importorskip("papermill")
    from sekiops.ops.demo_deployment import build_demo_deployment

    dep = build_demo_deployment(str(tmp_path / "dep"), big_bytes=1_000_000)
    monkeypatch.setenv("SEKIOPS_STATE_URL", dep.state_url)
    monkeypatch.setenv("SEKIOPS_BLOB_URL", dep.blob_url)
    out = tmp_path / "r.html"
    kept = tmp_path / "r.ipynb"
    code, stdout, stderr = run_cli(["report", "incident", "--logs", evidence["logs_file"], "--metrics",
                                    evidence["metrics_file"], "--projector", "CustomerDirectory", "--out", str(out),
                                    "--ipynb", str(kept)], capsys)
    assert code == 0, stderr
    html = out.read_text()
    assert "inventory" in html and "CustomerDirectory v3" in html
    assert "OrderSummary" not in html.split("Capacity: which projections")[1].split("Recommended settings")[0]
    # store URLs (which may carry a password) reach the kernel through its environment, not as parameters
    nb = json.loads(kept.read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert injected and "sekiban.db" not in "".join(injected[0]["source"])


@pytest.mark.parametrize("case", ["missing", "binary", "metrics-not-memory", "no-events", "bad-time", "bad-limit",
                                  "empty-window", "store"])
def test_cli_report_incident_errors_exit_2_with_one_line(tmp_path, evidence, capsys, case):
    logs, metrics = evidence["logs_file"], evidence["metrics_file"]
    extra: list[str] = []
    if case == "missing":
        logs = str(tmp_path / "missing.csv")
    elif case == "binary":
        logs = str(tmp_path / "b.bin")
        Path(logs).write_bytes(b"\x00\x01\x02\x03")
    elif case == "metrics-not-memory":
        metrics = logs
    elif case == "no-events":
        logs = str(tmp_path / "other.csv")
        Path(logs).write_text("timestamp,message\n2026-03-10T02:00:00Z,hello\n")
    elif case == "bad-time":
        extra = ["--from", "yesterday"]
    elif case == "bad-limit":
        extra = ["--memory-limit", "lots"]
    elif case == "empty-window":
        extra = ["--from", "2026-03-10T05:00:00Z", "--to", "2026-03-10T06:00:00Z"]
    elif case == "store":
        extra = ["--state", "postgresql://sre:hunter2@127.0.0.1:1/sekiban"]
    out = tmp_path / "r.html"
    code, stdout, stderr = run_cli(["report", "incident", "--logs", logs, "--metrics", metrics, "--out", str(out),
                                    *extra], capsys)
    assert code == 2, (case, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "hunter2" not in stderr
    assert not out.exists()


def test_timeline_explorer_widgets_and_headless(demo_rep, capsys):
    from sekiops.widgets.timeline import build_timeline_widget, timeline_explorer

    assert timeline_explorer(demo_rep, mode="plain") is None
    assert "open this notebook in JupyterLab" in capsys.readouterr().out
    pytest.importorskip("ipywidgets")
    box = build_timeline_widget(demo_rep)
    picker, caption = box.children[0].children
    slider, chart = box.children[1], box.children[2]
    assert "all projectors" in caption.value
    first = chart.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"  # the chart is widget state, not captured output
    slider.index = (30, 60)
    picker.value = "OrderSummary"
    assert caption.value.startswith("02:30–03:00 UTC, OrderSummary: ")
    assert chart.value[:4] == b"\x89PNG" and chart.value != first
    capsys.readouterr()


# --- evidence is optional ----------------------------------------------------------------------------


def test_report_from_logs_alone_says_it_lacks_metrics_and_inventory(evidence):
    rep = I.analyse(evidence["logs_file"], None, evidence["time_from"], evidence["time_to"])
    assert rep.lacks == ["metrics", "inventory"]
    assert not len(rep.memory) and len(rep.events)
    assert any("no metrics export given" in n for n in rep.notes)
    scope = I.scope_markdown(rep)
    assert "evidence missing | metrics, inventory" in scope and "**not given**: no metrics export" in scope
    assert by_id(rep.findings, "legacy_persists:CustomerDirectory") and not by_id(rep.findings, "memory_peak")
    assert by_id(rep.findings, "capacity:logs:CustomerDirectory")  # the logs still size the projection


def test_report_from_metrics_alone(evidence):
    rep = I.analyse(None, evidence["metrics_file"])
    assert rep.lacks == ["logs", "inventory"]
    assert len(rep.memory) == 121 and not len(rep.events)
    assert rep.memory_limit == 4 * GiB and rep.limit_source.startswith("inferred")
    peak = by_id(rep.findings, "memory_peak")[0]
    assert peak["text"].startswith("Memory reached 99% of the 4 GiB limit") and peak["trigger"] is None
    assert "3 times" in by_id(rep.findings, "restarts")[0]["text"]
    assert "**not given**: no logs export" in I.scope_markdown(rep)


def test_report_from_an_inventory_alone(tmp_path):
    from sekiops.ops.demo_deployment import build_demo_deployment

    dep = build_demo_deployment(str(tmp_path / "dep"), big_bytes=2_000_000)
    rep = I.analyse(state_url=dep.state_url, blob_url=dep.blob_url, memory_limit="4GiB")
    assert rep.lacks == ["logs", "metrics"]
    assert set(rep.capacity["source"]) == {"inventory"} and "CustomerDirectory" in set(rep.capacity["projectorName"])
    assert by_id(rep.findings, "capacity")[0]["severity"] == "ok"
    with pytest.raises(UsageError, match="no evidence"):
        I.analyse()


@pytest.mark.parametrize("which", ["logs", "metrics", "state"])
def test_cli_report_incident_with_one_piece_of_evidence(tmp_path, evidence, capsys, which):
    pytest.importorskip("papermill")
    out = tmp_path / "r.html"
    args = ["report", "incident", "--out", str(out)]
    if which == "logs":
        args += ["--logs", evidence["logs_file"]]
    elif which == "metrics":
        args += ["--metrics", evidence["metrics_file"]]
    else:
        from sekiops.ops.demo_deployment import build_demo_deployment

        dep = build_demo_deployment(str(tmp_path / "dep"), big_bytes=1_000_000)
        args += ["--state", dep.state_url, "--blob", dep.blob_url]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    lacks = {"logs": "metrics, inventory", "metrics": "logs, inventory", "state": "logs, metrics"}[which]
    assert f"evidence not given: {lacks}" in stdout
    html = out.read_text()
    assert "evidence missing" in html and "not given" in html
    assert "<title>Post-incident report: snapshot memory and restarts</title>" in html


def test_cli_report_incident_without_any_evidence_is_one_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SEKIOPS_STATE_URL", raising=False)
    code, _, stderr = run_cli(["report", "incident", "--out", str(tmp_path / "r.html")], capsys)
    assert code == 2 and stderr.startswith("error: no evidence") and len(stderr.splitlines()) == 1


# --- the Sekiban version -----------------------------------------------------------------------------


def test_findings_and_settings_follow_the_sekiban_version(evidence):
    new = I.analyse(evidence["logs_file"], evidence["metrics_file"], memory_limit="4GiB")
    old = I.analyse(evidence["logs_file"], evidence["metrics_file"], memory_limit="4GiB", sekiban_version="10.22")
    assert new.sekiban_version == "dcb-v10.23" and old.sekiban_version == "dcb-v10.22"
    rn, ro = by_id(new.findings, "restores")[0]["text"], by_id(old.findings, "restores")[0]["text"]
    assert "dcb-v10.23 (assumed) an inline Base64 payload is still decoded whole" in rn
    assert "dcb-v10.22 (assumed) the grain's restore materialises the whole payload" in ro
    restore_new = {r["setting"]: r for r in new.recommendations}["Snapshot restore"]
    restore_old = {r["setting"]: r for r in old.recommendations}["Snapshot restore"]
    assert restore_new["value"].startswith("offload large payloads") and "sekiban-stream-restore-" in restore_new["why"]
    assert restore_old["value"].startswith("upgrade Sekiban to dcb-v10.23")
    assert "Sekiban version assumed | dcb-v10.22" in I.scope_markdown(old)
    with pytest.raises(UsageError, match="not a version"):
        I.analyse(evidence["logs_file"], None, sekiban_version="latest")


def test_buffered_fallback_events_are_a_finding_and_restore_buffered(evidence):
    events = parse_log_file(evidence["logs_file"]).frame
    extra = events[events["kind"] == "restore"].head(1).copy()
    extra["kind"] = "restore_buffered_fallback"
    extra["Registry"], extra["Format"], extra["Reason"] = "MyRegistry", "v10", "registry lacks streaming"
    frame = pd.concat([events, extra], ignore_index=True).sort_values("time").reset_index(drop=True)
    rep = I.analyse(frame, evidence["metrics_file"], memory_limit="4GiB")
    f = by_id(rep.findings, "buffered_fallback")[0]
    assert "fell back to the buffered path" in f["text"] and "Registry=MyRegistry" in f["text"]
    assert (rep.capacity["grainRestorePath"].str.startswith("buffered")).all()


def test_modules_stay_small_and_ops_never_import_widgets_or_cli():
    root = Path(I.__file__).resolve().parents[2]
    for path in list((root / "ops" / "incident").glob("*.py")) + [root / "ops" / "capacity.py"] + \
            list((root / "widgets").glob("*.py")):
        assert len(path.read_text().splitlines()) <= 800, path
    mine = list((root / "ops" / "incident").glob("*.py")) + [root / "ops" / n for n in (
        "capacity.py", "charts.py", "report.py", "demo.py", "demo_deployment.py", "demo_evidence.py")]
    for path in mine:
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(\.\.+|sekiops\.)(widgets|cli)\b", text, re.M), path
        assert "_parent_cmdline" not in text and "/proc/{os.getppid()}" not in text, path
