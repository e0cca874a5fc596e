"""Payload anatomy (issue 6): exact raw-byte attribution by JSON path, streamed, any chunking."""

from __future__ import annotations

import io
import itertools
import json
import random
import uuid

import pytest

from sekiops.blob import open_blob_store
from sekiops.errors import CorruptSnapshotError
from sekiops.ops.anatomy import anatomy, walk
from sekiops.ops.anatomy.tree import segment as _segment
from sekiops.state import open_state_store
from test_inventory import BACKENDS, backend_stores, embedded_urls, persist_json, run_cli, state_json

# --- a slow, obviously-correct reference ------------------------------------------------------------

WS = b" \t\r\n"


def _ws(data: bytes, i: int) -> int:
    while i < len(data) and data[i] in WS:
        i += 1
    return i


def _string_end(data: bytes, i: int) -> int:
    j = i + 1
    while data[j] != 0x22:
        j += 2 if data[j] == 0x5C else 1
    return j + 1


def _value(data: bytes, i: int):
    """(type, start, end, children): children = [(raw key or None, key_start, child)]."""
    c = data[i]
    if c == 0x7B or c == 0x5B:
        is_obj = c == 0x7B
        close = 0x7D if is_obj else 0x5D
        kids = []
        j = _ws(data, i + 1)
        if data[j] == close:
            return ("object" if is_obj else "array", i, j + 1, kids)
        while True:
            key = ks = None
            if is_obj:
                ks = j
                ke = _string_end(data, j)
                key = data[j + 1:ke - 1]
                j = _ws(data, ke)
                assert data[j] == 0x3A
                j = _ws(data, j + 1)
            child = _value(data, j)
            kids.append((key, ks, child))
            j = _ws(data, child[2])
            if data[j] == close:
                return ("object" if is_obj else "array", i, j + 1, kids)
            assert data[j] == 0x2C
            j = _ws(data, j + 1)
    if c == 0x22:
        return ("string", i, _string_end(data, i), [])
    j = i
    while j < len(data) and data[j] not in WS and data[j] not in b",:]}":
        j += 1
    word = data[i:j]
    kind = "boolean" if word in (b"true", b"false") else "null" if word == b"null" else "number"
    return (kind, i, j, [])


def reference(data: bytes, depth: int) -> dict:
    stats: dict = {}
    strings: list = []
    max_depth = [0]

    def visit(v, path: str, level: int, key_bytes: int):
        kind, start, end, kids = v
        if kind in ("object", "array"):
            max_depth[0] = max(max_depth[0], level + 1)
        if kind == "string":
            strings.append(end - start - 2)
        if level <= depth:
            s = stats.setdefault(path, {"count": 0, "bytes": 0, "keyBytes": 0, "types": {}, "items": 0,
                                        "maxItems": 0})
            s["count"] += 1
            s["bytes"] += end - start
            s["keyBytes"] += key_bytes
            s["types"][kind] = s["types"].get(kind, 0) + 1
            if kind in ("object", "array"):
                s["items"] += len(kids)
                s["maxItems"] = max(s["maxItems"], len(kids))
        for key, ks, child in kids:
            if key is not None:
                strings.append(len(key))
                seg = _segment(key)
                visit(child, path + seg, level + 1, child[1] - ks)
            else:
                visit(child, path + "[]", level + 1, 0)

    i = _ws(data, 0)
    root = _value(data, i)
    visit(root, "$", 0, 0)
    return {"paths": stats, "maxDepth": max_depth[0], "rootBytes": root[2] - root[1],
            "strings": sorted(strings, reverse=True)}


def summarize(report) -> dict:
    out = {}
    for r in report.paths:
        out[r["path"]] = {"count": r["count"], "bytes": r["bytes"], "keyBytes": r["keyBytes"], "types": r["types"],
                          "items": r["items"] or 0, "maxItems": r["maxItems"] or 0}
    return out


def random_doc(rng: random.Random, level: int = 0):
    r = rng.random()
    if level > 5 or r < 0.3:
        return rng.choice([rng.randint(-10**9, 10**9), rng.random() * 1e6, True, False, None, random_text(rng),
                           -0.0, 1.5e-9, ""])
    if r < 0.65:
        return {random_text(rng): random_doc(rng, level + 1) for _ in range(rng.randint(0, 6))}
    return [random_doc(rng, level + 1) for _ in range(rng.randint(0, 6))]


def random_text(rng: random.Random) -> str:
    parts = ["a", "key", "\\", '"', "\\\\", '\\"', "é", "漢", "😀", "{", "}", "[", "]", ",", ":", " ", "\n", "+",
             "x" * rng.randint(1, 30)]
    return "".join(rng.choice(parts) for _ in range(rng.randint(0, 7)))


def encode(rng: random.Random, doc) -> bytes:
    data = json.dumps(doc, indent=rng.choice([None, None, 1, 3]), ensure_ascii=rng.random() < 0.5,
                      separators=rng.choice([None, (",", ":")])).encode()
    if rng.random() < 0.3:
        data = b" \n\t" + data + b"\r\n "
    return data


# --- tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_walk_matches_reference_for_any_chunking(seed):
    rng = random.Random(seed)
    for _ in range(30):
        data = encode(rng, random_doc(rng))
        depth = rng.randint(1, 5)
        ref = reference(data, depth)
        chunks = (1, 2, 3, 7, 64, 1 << 20) if len(data) < 400 else (5, 13, 64, 1000, 1 << 20)
        for chunk in chunks:
            rep = walk(io.BytesIO(data), depth=depth, top=5, max_keys=10**6, chunk_size=chunk)
            assert rep.total_bytes == len(data)
            assert rep.root_bytes == ref["rootBytes"]
            assert rep.max_depth == ref["maxDepth"]
            assert summarize(rep) == ref["paths"], (chunk, data[:300])
            assert [s["length"] for s in rep.biggest_strings] == ref["strings"][:5]


def test_tokenizer_escapes_across_chunk_boundaries():
    # a quote preceded by backslash runs of every length, split at every position
    doc = {"k" + "\\" * n: "v" + "\\" * m + '"' + "\\" * n for n in range(6) for m in range(3)}
    data = json.dumps(doc).encode()
    ref = reference(data, 3)
    for chunk in range(1, 12):
        rep = walk(io.BytesIO(data), depth=3, chunk_size=chunk, max_keys=10**6)
        assert summarize(rep) == ref["paths"]


def test_total_and_overhead_add_up():
    data = json.dumps({"a": [{"x": 1, "y": "two"}, {"x": 3}], "b": {"c": None}}, indent=2).encode() + b"\n\n"
    rep = walk(io.BytesIO(data), depth=4)
    assert rep.total_bytes == len(data) and rep.root_bytes == len(data) - 2
    rows = {r["path"]: r for r in rep.paths}
    root = rows["$"]
    kids = [r for r in rep.paths if r["depth"] == 1]
    assert root["bytes"] == root["overhead"] + sum(k["bytes"] + k["keyBytes"] for k in kids)
    assert rows["$.a"]["items"] == 2 and rows["$.a[]"]["count"] == 2 and rows["$.a[].x"]["count"] == 2
    assert rows["$.a[]"]["items"] == 3  # members over both objects
    assert sum(r["share"] for r in kids) <= 1.0


def test_dictionaries_fold_into_a_wildcard():
    doc = {"byId": {str(uuid.uuid4()): {"name": f"n{i}", "v": i} for i in range(500)}, "meta": {"n": 500}}
    data = json.dumps(doc).encode()
    rep = walk(io.BytesIO(data), depth=3, max_keys=50)
    rows = {r["path"]: r for r in rep.paths}
    assert rows["$.byId.*"]["count"] == 500
    assert rows["$.byId.*.name"]["count"] == 500 and rows["$.byId.*.v"]["types"] == {"number": 500}
    assert rows["$.byId"]["keysFolded"] >= 450
    assert len([p for p in rows if p.startswith("$.byId")]) == 4
    assert rows["$.byId"]["bytes"] == (rows["$.byId"]["overhead"] + rows["$.byId.*"]["bytes"]
                                       + rows["$.byId.*"]["keyBytes"])


def test_biggest_strings_have_paths_and_prefixes():
    doc = {"small": "x", "nested": {"deep": {"deeper": [{"blob": "B" * 5000}]}}, "list": ["A" * 3000],
           "K" * 2000: 1}
    data = json.dumps(doc).encode()
    for chunk in (5, 1 << 20):
        rep = walk(io.BytesIO(data), depth=2, top=3, chunk_size=chunk, show_values=True)
        s = rep.biggest_strings
        assert [x["length"] for x in s] == [5000, 3000, 2000]
        assert s[0]["path"] == "$.nested.deep….blob" and s[0]["prefix"] == "B" * 60
        assert s[1]["path"] == "$.list[]" and s[1]["role"] == "value"
        assert s[2]["role"] == "key" and s[2]["path"] == "$"
    arrays = {a["path"]: a for a in rep.large_arrays}
    assert arrays["$.list"]["maxItems"] == 1


def test_stored_values_are_not_shown_unless_asked():
    """Structure, not data: the biggest values keep path, length and offset, not their characters."""
    doc = {"customers": [{"email": "aiko.sato@example.co.jp", "note": "N" * 500}], "K" * 300: 1}
    data = json.dumps(doc).encode()
    hidden = walk(io.BytesIO(data), top=5)
    by_length = {x["length"]: x for x in hidden.biggest_strings}
    assert (by_length[500]["path"], by_length[500]["role"], by_length[500]["prefix"]) == ("$.customers[].note",
                                                                                         "value", None)
    assert by_length[300]["role"] == "key" and by_length[300]["prefix"] == "K" * 60  # keys are structure
    assert by_length[len("aiko.sato@example.co.jp")]["prefix"] is None
    text = json.dumps(hidden.to_dict()) + hidden.table()
    assert "aiko" not in text and "NNNN" not in text and "--show-values" in hidden.table()
    assert hidden.to_dict()["valuesShown"] is False
    shown = walk(io.BytesIO(data), top=5, show_values=True)
    assert "aiko.sato@example.co.jp" in json.dumps(shown.to_dict()) and shown.values_shown


def test_paths_are_bounded_however_many_keys_the_data_has():
    """Dictionaries nested in dictionaries: the path tree stops growing at max_paths (memory follows the
    budget, not the data), and the bytes still add up."""
    doc = {f"a{i}": {f"b{j}": {f"c{k}": k for k in range(30)} for j in range(30)} for i in range(30)}
    data = json.dumps(doc).encode()
    rep = walk(io.BytesIO(data), depth=3, max_keys=10**6, max_paths=200)
    assert len(rep.paths) <= 2 * 200
    assert rep.paths[0]["bytes"] == len(data)
    assert sum(r["keysFolded"] for r in rep.paths) > 0
    full = walk(io.BytesIO(data), depth=3, max_keys=10**6, max_paths=10**6)
    assert len(full.paths) == 1 + 30 + 900 + 27000


def test_anatomys_own_benchmark_runs_on_a_small_file(tmp_path):
    from sekiops.ops.bench.anatomy import benchmark_backends

    path = tmp_path / "state.json"
    path.write_bytes(state_json(2000, seed=9))
    out = benchmark_backends(str(path))
    assert out["bytes"] == path.stat().st_size and out["scanner_exact_total"] is True
    assert out["scanner_seconds"] > 0
    assert "ijson_basic_parse_seconds" in out or out["ijson"] == "not installed"


@pytest.mark.parametrize("bad", [b'{"a": "unterminated', b'{"a": [1, 2}', b'{"a": 1}}', b'[1, 2', b'{1: 2}',
                                 b'{"a": 1} {"b": 2}'])
def test_invalid_json_is_a_corrupt_snapshot(bad):
    with pytest.raises(CorruptSnapshotError):
        walk(io.BytesIO(bad))


def test_scalar_and_empty_documents():
    assert walk(io.BytesIO(b" 12345 ")).root_bytes == 5
    assert walk(io.BytesIO(b'"abc"')).paths[0]["types"] == {"string": 1}
    empty = walk(io.BytesIO(b""))
    assert empty.total_bytes == 0 and empty.paths == []


def test_progress_reports_bytes_read():
    data = state_json(3000, seed=3)
    seen = []
    rep = walk(io.BytesIO(data), chunk_size=64 * 1024, total=len(data), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(data), len(data)) and len(seen) > 3
    assert all(a[0] < b[0] for a, b in itertools.pairwise(seen))
    assert rep.total_bytes == len(data)


def test_snapshot_anatomy_in_every_storage_combination(tmp_path):
    state_url, blob_url = embedded_urls(tmp_path)
    state, blob = open_state_store(state_url), open_blob_store(blob_url)
    data = state_json(400, seed=11)
    persist_json(state, blob, "Inline", "1", data)
    persist_json(state, blob, "Rec", "1", data, record_threshold=1000)
    persist_json(state, blob, "Pay", "1", data, payload_threshold=1000)
    persist_json(state, blob, "Both", "1", data, payload_threshold=1000, record_threshold=100)
    persist_json(state, blob, "Raw", "1", data, compress=False)
    expected = summarize(walk(io.BytesIO(data), depth=4))
    for name in ("Inline", "Rec", "Pay", "Both", "Raw"):
        seen = []
        rep = anatomy(state, blob, projector_name=name, depth=4,
                      progress=lambda d, t, seen=seen: seen.append((d, t)))
        assert rep.total_bytes == len(data) and summarize(rep) == expected
        assert seen[-1] == (len(data), len(data))
        assert rep.source["payload_location"] == ("blob" if name in ("Pay", "Both") else "inline")
        assert rep.source["envelope_location"] == ("blob" if name in ("Rec", "Both") else "inline")
        assert rep.to_frame()["bytes"].iloc[0] == len(data)
    state.close()


def test_a_10_mb_state_across_many_chunks_counts_every_customer():
    """Speed and memory are the benchmark's (sekiops bench --ops restore,anatomy); this checks the sums."""
    data = state_json(45_000, seed=5)
    rep = walk(io.BytesIO(data), chunk_size=256 * 1024)
    assert rep.total_bytes == len(data)
    rows = {r["path"]: r for r in rep.paths}
    assert rows["$.customers"]["items"] == 45_000 and rows["$.customers[]"]["count"] == 45_000
    assert rows["$.customers[].id"]["types"] == {"string": 45_000}
    assert rows["$"]["bytes"] == len(data)
    same = walk(io.BytesIO(data), chunk_size=4 << 20)
    assert summarize(same) == summarize(rep) and same.tokens == rep.tokens


@pytest.mark.parametrize("kind", BACKENDS)
def test_cli_anatomy(kind, request, tmp_path, capsys):
    with backend_stores(request, kind, tmp_path) as (state_url, blob_url, open_state, blob):
        state = open_state()
        data = state_json(300, seed=12)
        persist_json(state, blob, "Both", "1", data, payload_threshold=1000, record_threshold=100)
        persist_json(state, blob, "Both", "2", state_json(10, seed=1), events=5)
        code, out, err = run_cli(["anatomy", "--state", state_url, "--blob", blob_url, "--projector", "Both",
                                  "--depth", "3", "--top", "4", "--format", "json"], capsys)
        assert code == 0, err
        rep = json.loads(out)
        assert rep["totalBytes"] == len(data)  # newest active version = most EventsProcessed
        paths = {p["path"]: p for p in rep["paths"]}
        assert paths["$.customers"]["items"] == 300 and paths["$"]["bytes"] == len(data)
        assert len(rep["biggestStrings"]) == 4
        assert all(s["prefix"] is None for s in rep["biggestStrings"] if s["role"] == "value")
        code, out, err = run_cli(["anatomy", "--state", state_url, "--blob", blob_url, "--projector", "Both",
                                  "--top", "4", "--format", "json", "--show-values"], capsys)
        assert code == 0, err
        assert any(s["prefix"] for s in json.loads(out)["biggestStrings"] if s["role"] == "value")
        code, out, err = run_cli(["anatomy", "--state", state_url, "--blob", blob_url, "--projector", "Both",
                                  "--version", "2", "--progress"], capsys)
        assert code == 0 and "$.customers[]" in out and "anatomy:" in err
        code, out, err = run_cli(["anatomy", "--state", state_url, "--blob", blob_url, "--projector", "Nope"],
                                 capsys)
        assert code == 2 and err.startswith("error: ")
