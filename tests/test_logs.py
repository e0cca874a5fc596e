"""Sekiban log events and container memory metrics from Azure exports (sekiops.ops.logs, `sekiops logs`)."""

from __future__ import annotations

import gzip
import json
import math
import os

import pandas as pd
import pytest

from sekiops.cli.main import main
from sekiops.errors import SekiopsError
from sekiops.ops import logs as L

DATA = os.path.join(os.path.dirname(__file__), "data")

# Copied verbatim from the format reference, section 7 (not imported: the module must match the spec).
SPEC_STREAMING = ("StreamingPersist: {ProjectorName}, BuildMs={BuildMs}, UploadMs={UploadMs}, "
                  "TempFileBytes={TempFileBytes}, PeakMemory={PeakMemory}, Events={Events}")
SPEC_LEGACY = ("Persist: {ProjectorName}, Events={EventsProcessed}, SafeVer={SafeVersion}, UnsafeVer={UnsafeVersion}, "
               "EnvelopeSize={EnvelopeSize}, SafeThreshold={SafeThreshold}")
SPEC_RESTORE = ("Restore: {ProjectorName}, RecordEvents={RecordEvents}, StateDataLen={StateDataLen}, "
                "Original={OriginalSize}, Compressed={CompressedSize}, PostSafeVer={PostSafeVersion}, "
                "PostUnsafeVer={PostUnsafeVersion}")

STREAMING_VALUES = {"ProjectorName": "CustomerDirectoryProjector", "BuildMs": 8412, "UploadMs": 3107,
                    "TempFileBytes": 1_101_234_567, "PeakMemory": 412_345_678, "Events": 1_310_000}
LEGACY_VALUES = {"ProjectorName": "CustomerDirectoryProjector", "EventsProcessed": 1_302_113, "SafeVersion": 1_302_101,
                 "UnsafeVersion": 1_302_113, "EnvelopeSize": 1_094_220_113, "SafeThreshold": "02/25/2026 09:30:40"}
RESTORE_VALUES = {"ProjectorName": "CustomerDirectoryProjector", "RecordEvents": 1_302_113,
                  "StateDataLen": 1_094_220_113, "OriginalSize": 1_094_220_113, "CompressedSize": 1_094_220_113,
                  "PostSafeVersion": 1_302_101, "PostUnsafeVersion": 1_302_113}

SAMPLE_VALUES = {
    "ProjectorName": "OrdersProjector", "Position": "063900000000000000000000000042", "Events": 52_400,
    "Error": "Exception of type 'System.OutOfMemoryException' was thrown.", "IsOffloaded": True,
    "OffloadKey": "OrdersProjector/v1/" + "ab" * 32 + ".bin", "ProjectorVersion": "v1", "Version": "v1",
    "CurrentSafeVersion": 9000, "LastGoodSafeVersion": 9100,
    "Registry": "KenbaiApi.Domain.Generated.KenbaiMultiProjectorTypes", "Format": "offloaded",
    "Reason": "capability-absent",
}
SAMPLE_VALUES.update({k: v for k, v in {**STREAMING_VALUES, **LEGACY_VALUES, **RESTORE_VALUES}.items()
                      if k != "ProjectorName"})

EXPECTED_KIND = {1002: "state_restore_success", 1003: "state_restore_failed", 1008: "blob_read_failed",
                 1012: "state_not_found", 1018: "restore", 1021: "integrity_guard_blocked_persist",
                 1022: "integrity_guard_blocked_restore", 1023: "full_catch_up_initiated",
                 1025: "catch_up_batch_summary"}


def _one(records, **kw):
    result = L.parse_log_records(records, **kw)
    assert len(result.frame) == 1, (result.frame, result.skipped_reasons)
    return result.frame.iloc[0], result


# --- templates ------------------------------------------------------------------------------


def test_module_templates_are_the_spec_templates():
    assert L.TEMPLATE_PERSIST_STREAMING == SPEC_STREAMING
    assert L.TEMPLATE_PERSIST_LEGACY == SPEC_LEGACY
    assert L.TEMPLATE_RESTORE == SPEC_RESTORE
    assert {eid for eid, _k, _t in L.TEMPLATES} >= {1017, 1018}
    assert set(L.EVENTS) == {1002, 1003, 1008, 1012, 1017, 1018, 1021, 1022, 1023, 1025}


@pytest.mark.parametrize("template,values,kind", [
    (SPEC_STREAMING, STREAMING_VALUES, "persist_streaming"),
    (SPEC_LEGACY, LEGACY_VALUES, "persist_legacy"),
    (SPEC_RESTORE, RESTORE_VALUES, "restore"),
])
def test_spec_templates_render_and_parse_from_the_message(template, values, kind):
    message = L.render_template(template, values)
    assert "{" not in message
    row, result = _one([{"timestamp": "2026-02-25T10:00:00.1234567Z", "message": message}])
    assert result.skipped == 0
    assert row["eventId"] == (1018 if kind == "restore" else 1017)
    assert row["kind"] == kind
    assert row["projectorName"] == values["ProjectorName"]
    assert row["time"] == pd.Timestamp("2026-02-25T10:00:00.123456Z")
    for name, value in values.items():
        if name != "ProjectorName":
            assert row[name] == value, name
            if isinstance(value, int):
                assert isinstance(row[name], (int,)) or float(row[name]).is_integer()


@pytest.mark.parametrize("template,values,kind", [
    (SPEC_STREAMING, STREAMING_VALUES, "persist_streaming"),
    (SPEC_LEGACY, LEGACY_VALUES, "persist_legacy"),
    (SPEC_RESTORE, RESTORE_VALUES, "restore"),
])
def test_spec_templates_parse_from_custom_dimensions_only(template, values, kind):
    """Application Insights keeps named values as strings, plus {OriginalFormat}; no message, no EventId."""
    dims = {k: str(v) for k, v in values.items()}
    dims["{OriginalFormat}"] = template
    dims["CategoryName"] = "Sekiban.Dcb.Orleans.Grains.MultiProjectionGrain"
    for shape in (json.dumps(dims), dims):  # a JSON string (CSV export) or an object (JSON export)
        row, _ = _one([{"TimeGenerated": "2026-02-25T10:00:00Z", "Properties": shape}])
        assert row["kind"] == kind and row["projectorName"] == values["ProjectorName"]
        for name, value in values.items():
            if name != "ProjectorName":
                assert row[name] == value, name
        assert "CategoryName" not in row.index


def test_dimensions_win_over_the_rendered_text_and_fill_gaps():
    message = L.render_template(SPEC_STREAMING, {**STREAMING_VALUES, "PeakMemory": None})
    assert "PeakMemory=(null)" in message
    dims = {"EventId": "1017", "BuildMs": "9999"}
    row, _ = _one([{"timestamp": "2026-02-25T10:00:00Z", "message": message, "customDimensions": json.dumps(dims)}])
    assert row["BuildMs"] == 9999 and row["UploadMs"] == STREAMING_VALUES["UploadMs"]
    assert pd.isna(row["PeakMemory"])


def test_every_charted_event_renders_and_parses():
    """Each known message (format reference and Sekiban's grain) parses from the text alone, and
    from the dimensions alone; events without a known wording parse from EventId + dimensions."""
    for eid, kind, template in L.TEMPLATES:
        names = L.template_names(template)
        values = {n: SAMPLE_VALUES[n] for n in names}
        message = L.render_template(template, values)
        row, _ = _one([{"timestamp": "2026-02-25T10:00:00Z", "message": message}])
        assert row["kind"] == kind and (pd.isna(row["eventId"]) if eid is None else row["eventId"] == eid), message
        assert row["projectorName"] == values["ProjectorName"]
        for n in names:
            if n != "ProjectorName":
                assert row[n] == values[n], (message, n)
        dims = {**{n: str(values[n]) for n in names}, "{OriginalFormat}": template}
        row2, _ = _one([{"timestamp": "2026-02-25T10:00:00Z", "customDimensions": dims}])
        assert row2["kind"] == kind and (pd.isna(row2["eventId"]) if eid is None else row2["eventId"] == eid)
    for eid in (1022, 1023):
        dims = {"EventId": str(eid), "EventName": L.EVENTS[eid][0], "ProjectorName": "OrdersProjector",
                "CurrentSafeVersion": "10", "Reason": "safe version regressed"}
        row, _ = _one([{"timestamp": "2026-02-25T10:00:00Z", "message": "some wording", "customDimensions": dims}])
        assert (row["eventId"], row["kind"]) == (eid, EXPECTED_KIND[eid])
        assert row["CurrentSafeVersion"] == 10 and row["Reason"] == "safe version regressed"
    # by EventName only (IncludeEventId off, EventName on)
    row, _ = _one([{"timestamp": "2026-02-25T10:00:00Z", "message": "x",
                    "customDimensions": {"EventName": "FullCatchUpInitiated", "ProjectorName": "P"}}])
    assert row["eventId"] == 1023


def test_catch_up_batch_summary_takes_every_pair():
    message = ("[OrdersProjector] Catch-up batch summary. BatchNumber=3, StartPosition=063900000000000000000000000001, "
               "RequestedMaxCount=500, FetchedCount=500, ReadElapsedMs=120, PersistTriggered=True, "
               "PersistReason=batch_size, EventTypeSummary=OrderPlaced:400|OrderPaid:100")
    row, _ = _one([{"timestamp": "2026-02-25T10:00:00Z", "message": message}])
    assert row["eventId"] == 1025 and row["kind"] == "catch_up_batch_summary"
    assert row["projectorName"] == "OrdersProjector"
    assert row["BatchNumber"] == 3 and row["FetchedCount"] == 500 and row["ReadElapsedMs"] == 120
    assert row["PersistTriggered"] is True or row["PersistTriggered"] == True  # noqa: E712 (pandas boolean)
    assert row["StartPosition"] == "063900000000000000000000000001"  # an id, not a number


def test_values_become_numbers_where_they_are_numbers():
    assert L.to_value("123") == 123 and isinstance(L.to_value("123"), int)
    assert L.to_value("12.5") == 12.5
    assert L.to_value("(null)") is None and L.to_value("") is None
    assert L.to_value("063900000000000000000000000042") == "063900000000000000000000000042"
    assert L.to_value("02/25/2026 09:30:40", "SafeThreshold") == "02/25/2026 09:30:40"
    assert L.to_value("True") is True
    assert L.snake_case("StateRestoreFailed") == "state_restore_failed"
    assert L.snake_case("IntegrityGuardBlockedPersist") == "integrity_guard_blocked_persist"


def test_console_lines_and_json_console_formatter():
    msg = L.render_template(SPEC_RESTORE, RESTORE_VALUES)
    rows = [
        {"TimeGenerated": "2026-02-25T10:00:00Z",
         "Log_s": "info: Sekiban.Dcb.Orleans.Grains.MultiProjectionGrain[1018]"},
        {"TimeGenerated": "2026-02-25T10:00:00Z", "Log_s": "      " + msg},
        {"TimeGenerated": "2026-02-25T10:00:01Z", "Log_s": json.dumps({
            "Timestamp": "2026-02-25T10:00:01Z", "EventId": 1017, "LogLevel": "Information",
            "Category": "Sekiban.Dcb.Orleans.Grains.MultiProjectionGrain",
            "Message": L.render_template(SPEC_STREAMING, STREAMING_VALUES),
            "State": {"Message": "...", **STREAMING_VALUES, "{OriginalFormat}": SPEC_STREAMING}})},
    ]
    result = L.parse_log_records(rows)
    assert list(result.frame["kind"]) == ["restore", "persist_streaming"]
    assert result.frame.iloc[1]["TempFileBytes"] == STREAMING_VALUES["TempFileBytes"]
    assert result.skipped == 1 and "console header" in next(iter(result.skipped_reasons))


def test_garbage_is_counted_never_fatal():
    rows = [
        {"timestamp": "2026-02-25T10:00:00Z", "message": L.render_template(SPEC_STREAMING, STREAMING_VALUES)},
        {"timestamp": "garbage", "message": "\x00\x07\u2603{{{ }}} Persist: , Events="},
        {"timestamp": None, "message": None, "customDimensions": None},
        {"timestamp": "2026-02-25T10:00:00Z", "message": "Request finished 200"},
        {"timestamp": "2026-02-25T10:00:00Z", "customDimensions": "{broken json"},
        {"timestamp": "2026-02-25T10:00:00Z", "customDimensions": {"EventId": "1004", "ProjectorName": "P"}},
        {"message": ["a", "list"]},
        "not even a dict",
        {"timestamp": 12, "customDimensions": 42},
    ]
    result = L.parse_log_records(rows)
    assert len(result.frame) == 1
    assert result.skipped == len(rows) - 1
    reasons = result.skipped_reasons
    assert reasons["no message or customDimensions"] >= 1
    assert reasons["other event id 1004 (CatchUpStarted)"] == 1
    assert reasons["customDimensions is not valid JSON"] == 1
    assert sum(reasons.values()) == result.skipped


# --- restore buffered fallback (dcb-v10.23, format reference section 8): every input shape --------

FALLBACK = ("Snapshot restore buffered fallback. Projector={ProjectorName}, Registry={Registry}, Format={Format}, "
            "Reason={Reason}")  # copied from the format reference, section 8
REGISTRY = "KenbaiApi.Domain.Generated.KenbaiMultiProjectorTypes"


def test_fallback_template_is_the_spec_template():
    assert L.TEMPLATE_RESTORE_BUFFERED_FALLBACK == FALLBACK
    assert (None, "restore_buffered_fallback", FALLBACK) in L.TEMPLATES


@pytest.mark.parametrize("name,fmt,skipped", [
    ("restore_fallback_appinsights.csv", "csv", {"not a Sekiban snapshot event": 1}),
    ("restore_fallback_loganalytics.json", "log-analytics-json", {"not a Sekiban snapshot event": 1}),
    ("restore_fallback.jsonl", "json-lines", {"not a Sekiban snapshot event": 1}),
    ("restore_fallback_console.txt", "text", {"console header line (event id carried to the next line)": 4,
                                              "other event id 14": 1}),
])
def test_restore_buffered_fallback_in_every_input_shape(name, fmt, skipped):
    """App Insights CSV (customDimensions + {OriginalFormat}, and the rendered text alone), Log Analytics
    (Properties as a JSON string and as an object), .NET JSON console and CLEF lines, kubectl console text."""
    result = L.parse_log_file(os.path.join(DATA, name))
    assert result.source_format == fmt
    assert result.skipped_reasons == skipped
    f = result.frame
    fallback = f[f["kind"] == "restore_buffered_fallback"]
    assert list(fallback["projectorName"]) == ["OrderSummaryProjector", "CustomerDirectoryProjector"]
    assert fallback["eventId"].isna().all()  # Sekiban logs it without an event id
    assert list(fallback["Registry"]) == [REGISTRY] * 2
    assert list(fallback["Format"]) == ["offloaded"] * 2 and list(fallback["Reason"]) == ["capability-absent"] * 2
    assert fallback["time"].iloc[0] == pd.Timestamp("2026-02-25T12:00:05Z")
    restores = f[f["kind"] == "restore"]
    assert len(restores) == (0 if name.endswith(".jsonl") else 1)
    if len(restores):
        assert restores.iloc[0]["eventId"] == 1018 and restores.iloc[0]["RecordEvents"] == 52000
    assert not {"CategoryName", "AspNetCoreEnvironment", "SourceContext"} & set(f.columns)


def test_fallback_with_an_event_id_of_another_release_is_still_the_fallback():
    message = L.render_template(FALLBACK, {"ProjectorName": "P", "Registry": "R", "Format": "inline",
                                           "Reason": "capability-absent"})
    row, _ = _one([{"timestamp": "2026-02-25T10:00:00Z", "message": message,
                    "customDimensions": {"EventId": "1031", "CategoryName": "Sekiban.Dcb.Actors.X"}}])
    assert row["kind"] == "restore_buffered_fallback" and row["eventId"] == 1031 and row["Format"] == "inline"


def test_cli_lists_the_fallback_kind(capsys):
    assert main(["logs", os.path.join(DATA, "restore_fallback_console.txt"), "--kind", "restore_buffered_fallback",
                 "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["projectorName"] for e in doc["events"]] == ["OrderSummaryProjector", "CustomerDirectoryProjector"]
    assert doc["events"][0]["eventId"] is None and doc["events"][0]["Reason"] == "capability-absent"


# --- control characters: one odd message never refuses a whole export -----------------------------



@pytest.mark.parametrize("shape", ["csv", "jsonl", "json-array", "log-analytics", "text"])
def test_a_control_character_in_one_row_skips_that_row_only(tmp_path, shape):
    good = L.render_template(SPEC_RESTORE, RESTORE_VALUES)
    odd = "Request failed: bad header \x00\x01 in upstream reply"
    rows = [{"timestamp": "2026-02-25T10:00:00Z", "message": odd},
            {"timestamp": "2026-02-25T10:00:01Z", "message": good}]
    if shape == "csv":
        text = "timestamp,message\n" + "".join(f'{r["timestamp"]},"{r["message"]}"\n' for r in rows)
    elif shape == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif shape == "json-array":
        text = json.dumps(rows, ensure_ascii=False)
    elif shape == "log-analytics":
        text = json.dumps({"tables": [{"columns": [{"name": "TimeGenerated"}, {"name": "Message"}],
                                       "rows": [[r["timestamp"], r["message"]] for r in rows]}]}, ensure_ascii=False)
    else:
        text = "".join(f'{r["timestamp"]} {r["message"]}\n' for r in rows)
    if shape != "csv" and shape != "text":  # json.dumps escapes the NUL: put it back raw, as the bad export has it
        text = text.replace("\\u0000\\u0001", "\x00\x01")
    assert "\x00" in text
    p = tmp_path / f"export.{shape}"
    p.write_bytes(text.encode())
    result = L.parse_log_file(str(p))
    assert list(result.frame["kind"]) == ["restore"]
    assert result.skipped_reasons == {"row holds a NUL or raw control character": 1}
    assert "row holds a NUL or raw control character (1)" in result.summary_line()


def test_cli_counts_the_odd_row_and_parses_the_rest(tmp_path, capsys):
    p = tmp_path / "traces.csv"
    good = L.render_template(SPEC_STREAMING, STREAMING_VALUES)
    p.write_bytes(("timestamp,message\n2026-02-25T10:00:00Z,\"bad \x00 byte\"\n"
                   f"2026-02-25T10:00:01Z,\"{good}\"\n").encode())
    assert main(["logs", str(p)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "# parsed 1 events, skipped 1 lines: row holds a NUL or raw control character (1)"


# --- files ------------------------------------------------------------------------------------


def test_app_insights_portal_csv_export():
    result = L.parse_log_file(os.path.join(DATA, "appinsights_traces.csv"))
    f = result.frame
    assert result.source_format == "csv"
    assert list(f.columns[:4]) == ["time", "eventId", "kind", "projectorName"]
    assert list(f["kind"]) == ["persist_legacy"] * 3 + ["state_restore_failed", "blob_read_failed", "state_not_found",
                                                          "restore"] + ["persist_streaming"] * 3
    assert f["time"].is_monotonic_increasing and str(f["time"].dt.tz) == "UTC"
    assert f["time"].iloc[0] == pd.Timestamp("2026-02-25T09:10:41.120Z")  # "2/25/2026, 9:10:41.120 AM"
    legacy = f[f["kind"] == "persist_legacy"]
    assert list(legacy["EnvelopeSize"]) == [712_345_678, 905_112_000, 1_094_220_113]
    restore = f[f["kind"] == "restore"].iloc[0]
    assert restore["StateDataLen"] == 1_094_220_113 and pd.isna(restore["PostUnsafeVersion"])
    streaming = f[f["kind"] == "persist_streaming"]
    assert streaming["TempFileBytes"].dtype == "Int64" and streaming["PeakMemory"].min() == 412_000_000
    assert "instance" in f.columns
    assert result.skipped == 3 and result.skipped_reasons["customDimensions is not valid JSON"] == 1


def test_log_analytics_api_shape():
    result = L.parse_log_file(os.path.join(DATA, "loganalytics_apptraces.json"))
    assert result.source_format == "log-analytics-json"
    assert list(result.frame["kind"]) == ["persist_legacy", "persist_streaming", "state_restore_success"]
    assert result.frame.iloc[2]["Position"] == "063900000000000000000000000042"
    assert result.skipped_reasons == {"other event id 1004 (CatchUpStarted)": 1, "no message or customDimensions": 1}


def test_json_lines_and_clef(tmp_path):
    result = L.parse_log_file(os.path.join(DATA, "traces.jsonl"))
    assert result.source_format == "json-lines"
    assert list(result.frame["kind"]) == ["restore", "persist_streaming", "integrity_guard_blocked_persist"]
    assert result.skipped_reasons == {"invalid JSON line": 1, "JSON line is not an object": 1}
    assert "SourceContext" not in result.frame.columns
    # the same rows as a JSON array, gzipped, and a truncated array
    rows = [json.loads(line) for line in open(os.path.join(DATA, "traces.jsonl")) if line.startswith('{"')]
    p = tmp_path / "traces.json.gz"
    p.write_bytes(gzip.compress(json.dumps(rows).encode()))
    assert len(L.parse_log_file(str(p)).frame) == 3
    text = json.dumps(rows)
    cut = tmp_path / "cut.json"
    cut.write_text(text[: text.rindex("{") + 10])
    truncated = L.parse_log_file(str(cut))
    assert len(truncated.frame) == 2 and truncated.skipped == 1


def test_tsv_with_utf16_bom(tmp_path):
    msg = L.render_template(SPEC_LEGACY, LEGACY_VALUES)
    p = tmp_path / "excel.txt"
    p.write_bytes(("TimeGenerated\tMessage\n2026-02-25 10:00:00\t" + msg + "\n").encode("utf-16"))
    result = L.parse_log_file(str(p))
    assert list(result.frame["kind"]) == ["persist_legacy"]


@pytest.mark.parametrize("content", [b"\x00\x01\x02binary\xff" * 50, b"hello\nthis is just text\n", b"   \n",
                                     b'{"a": 1}', b"[1, 2, 3]", b"\xff\xfe\x00"])
def test_not_an_export_raises_a_clear_error(tmp_path, content):
    p = tmp_path / "thing.csv"
    p.write_bytes(content)
    with pytest.raises(SekiopsError) as err:
        L.parse_log_file(str(p))
    assert str(p) in str(err.value) or "export" in str(err.value)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_table_prints_events_and_summary(capsys):
    assert main(["logs", os.path.join(DATA, "appinsights_traces.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["time", "eventId", "kind", "projectorName", "values"]
    assert len(out) == 1 + 10 + 1
    assert "StreamingPersist" not in out[-2] and "TempFileBytes=1109000000" in out[-2]
    assert out[-1].startswith("# parsed 10 events, skipped 3 lines: ")
    assert "customDimensions is not valid JSON (1)" in out[-1]


def test_cli_json_and_csv(capsys):
    assert main(["logs", os.path.join(DATA, "loganalytics_apptraces.json"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"events", "skipped", "skippedReasons"}
    assert doc["skipped"] == 2 and doc["parsed"] == 3
    first = doc["events"][0]
    assert first == {"time": "2026-02-25T10:00:00.123Z", "eventId": 1017, "kind": "persist_legacy",
                     "projectorName": "OrderSummaryProjector", "EventsProcessed": 52000, "SafeVersion": 51990,
                     "UnsafeVersion": 52000, "EnvelopeSize": 48211000, "SafeThreshold": "02/25/2026 09:59:40",
                     "instance": "r1"}
    assert main(["logs", os.path.join(DATA, "traces.jsonl"), "--format", "csv", "--kind", "restore"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("time,eventId,kind,projectorName,")
    assert len(lines) == 3 and lines[1].split(",")[2] == "restore"
    assert lines[-1].startswith("# parsed 3 events (1 shown), skipped 2 lines")


def test_cli_not_an_export_exits_2_with_one_error_line(tmp_path, capsys):
    p = tmp_path / "core.bin"
    p.write_bytes(bytes(range(256)) * 10)
    assert main(["logs", str(p)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "core.bin" in err[0]
    assert main(["logs", str(tmp_path / "missing.csv")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# --- container memory -------------------------------------------------------------------------


def test_container_memory_wide_export_with_preamble():
    result = L.parse_container_memory(os.path.join(DATA, "container_memory.csv"))
    f = result.frame
    assert list(f.columns) == ["time", "working_set_bytes", "memory_percent", "restarts"]
    assert len(f) == 12 and f["working_set_bytes"].max() == 4.2e9
    assert f.loc[f["restarts"] == 1, "working_set_bytes"].iloc[0] == 0.9e9
    assert result.skipped_reasons == {"preamble line before the CSV header": 2, "row without a memory value": 1,
                                      "row without a readable time": 1}


def test_container_memory_long_azure_metrics_prefers_maximum():
    f = L.parse_container_memory(os.path.join(DATA, "azuremetrics_long.csv")).frame
    assert len(f) == 6
    assert f["working_set_bytes"].max() == 4.2e9  # Maximum, not Average
    assert math.isclose(f["memory_percent"].iloc[-1], 97.8)
    assert (f["restarts"] == 0).all()


@pytest.mark.parametrize("header,value,expect_col,expect", [
    ("timestamp,Average", "3500000000", "working_set_bytes", 3.5e9),
    ("timestamp,Average", "87.5", "memory_percent", 87.5),
    ("TimeGenerated,Memory Working Set (MiB)", "2048", "working_set_bytes", 2048 * 2**20),
    ("time,MemoryPercentage,RestartCount", "55.0,2", "memory_percent", 55.0),
])
def test_container_memory_column_spellings(tmp_path, header, value, expect_col, expect):
    p = tmp_path / "m.csv"
    p.write_text(f"{header}\n2026-02-25T10:00:00Z,{value}\n")
    f = L.parse_container_memory(str(p)).frame
    assert f[expect_col].iloc[0] == expect


def test_container_memory_rest_api_json(tmp_path):
    doc = {"value": [{"name": {"value": "WorkingSetBytes"}, "unit": "Bytes", "timeseries": [{"data": [
        {"timeStamp": "2026-02-25T10:00:00Z", "average": 1.0e9, "maximum": 1.5e9},
        {"timeStamp": "2026-02-25T10:01:00Z", "average": 2.0e9, "maximum": 2.5e9}]}]}]}
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps(doc))
    f = L.parse_container_memory(str(p)).frame
    assert list(f["working_set_bytes"]) == [1.5e9, 2.5e9]


def test_cli_metrics_import(capsys):
    assert main(["metrics-import", os.path.join(DATA, "container_memory.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["time", "working_set_bytes", "memory_percent", "restarts"]
    assert out[-1].startswith("# parsed 12 samples, skipped 4 lines") and "peak working set 4200000000" in out[-1]
    assert main(["metrics-import", os.path.join(DATA, "container_memory.csv"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["peakWorkingSetBytes"] == 4200000000 and doc["restarts"] == 1 and len(doc["samples"]) == 12


def test_event_ids_of_other_categories_are_not_sekibans():
    rows = [{"timestamp": "2026-02-25T10:00:00Z", "message": "Executed DbCommand (3ms)",
             "customDimensions": {"EventId": "1003", "CategoryName": "Microsoft.EntityFrameworkCore.Database.Command"}},
            {"timestamp": "2026-02-25T10:00:00Z", "message": "anything",
             "customDimensions": {"EventId": "1003", "CategoryName": "Sekiban.Dcb.Orleans.Grains.MultiProjectionGrain",
                                  "ProjectorName": "P"}}]
    result = L.parse_log_records(rows)
    assert list(result.frame["kind"]) == ["state_restore_failed"]
    assert result.skipped_reasons == {"not a Sekiban snapshot event": 1}
