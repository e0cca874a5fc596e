"""The JSON check's two validators -- sekiops' own (``_jsonvalid.c``, the default when built) and
libyajl -- held to Python's strict json parser and to each other.

Every verdict must equal ``json.loads(data.decode("utf-8"))`` (no NaN/Infinity, no BOM), however
the bytes are split into chunks; the native validator's error offsets must name the offending
byte. Documents come from a hand-written corpus (grammar corners, UTF-8 corners) and from
hypothesis: random JSON values, serialised, then mutated byte by byte.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sekiops.errors import BadInputError
from sekiops.pipeline import jsoncheck

NATIVE = jsoncheck._load_native() is not None
YAJL = jsoncheck._load_yajl() is not None
BACKENDS = [pytest.param("native", marks=pytest.mark.skipif(not NATIVE, reason="_jsonvalid not built")),
            pytest.param("yajl", marks=pytest.mark.skipif(not YAJL, reason="no libyajl"))]


def verdict(doc: bytes, backend: str, steps=(1 << 20,)) -> tuple[bool, int | None]:
    """(accepted, error offset) -- the same for every chunking, else the test fails here (libyajl: the
    same verdict; its offset moves when a token is split, since it buffers partial tokens)."""
    seen = set()
    for step in steps:
        os.environ["SEKIOPS_JSONCHECK"] = backend
        try:
            c = jsoncheck.JsonChecker("doc")
        finally:
            del os.environ["SEKIOPS_JSONCHECK"]
        assert c.backend == backend
        try:
            for k in range(0, len(doc), step):
                c.feed(doc[k:k + step])
            c.finish()
            seen.add((True, None))
        except BadInputError as exc:
            at = str(exc).rsplit("(at byte ", 1)[1].split(")")[0].replace(",", "")
            seen.add((False, int(at) if backend == "native" else -1))
        finally:
            c.close()
    assert len(seen) == 1, (doc[:60], seen)
    return seen.pop()


def yajl_leniency(doc: bytes) -> bool:
    """What libyajl accepts and JSON does not: invalid UTF-8 in strings (overlong forms, encoded
    surrogates, lead bytes F5-FF), and vertical tab / form feed as whitespace."""
    try:
        doc.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return b"\x0b" in doc or b"\x0c" in doc


def python_says(doc: bytes) -> bool:
    if doc.startswith(b"\xef\xbb\xbf"):
        return False
    try:
        json.loads(doc.decode("utf-8"), parse_constant=lambda name: 1 / 0)
        return True
    except (ValueError, UnicodeDecodeError, ZeroDivisionError, RecursionError):
        return False


GOOD = json.dumps({"customers": [{"id": i, "name": "Zoë 東京 \U0001F600", "tags": ["a", "b"], "balance": -12.5e3,
                                  "ok": True, "none": None} for i in range(300)], "esc": "\"\\/\b\f\n\r\t\u0001"},
                  ensure_ascii=False).encode()

CORPUS = [
    GOOD, b"[]", b"{}", b'""', b'"x"', b"0", b"-0", b"-1.5e-3", b"1E+2", b"1e2", b"123456789012345678901234567890",
    b"true", b"false", b"null", b" \t\r\n[1]\r\n\t ", b'{"a":[{"b":[1,{"c":null}]}]}', b'"\\u00e9\\ud83d\\ude00"',
    b'"\\ud800"', b'"\\uDFFF x"', b"[" * 500 + b"]" * 500, b'{"a":{"b":{"c":{}}}}', b'[1,[2,[3,[]]]]',
    "é".encode(), '"é€\U0010FFFF"'.encode(), b'"\x7f"',
    # refused
    b"", b"   ", b"[1,]", b"{,}", b'{"a"}', b'{"a":}', b'{"a":1,}', b"01", b"-01", b"1.", b".5", b"+1", b"-",
    b"1e", b"1e+", b"1.e3", b"[1 2]", b"tru", b"nul", b"truex", b"[truefalse]", b"[1x]", b"1 2", b"{}{}", b"[]]",
    b"]", b"}", b"[}", b"{]", b'{"a" 1}', b'{1:2}', b"'a'", b'"\\x"', b'"\\u12"', b'"\\u12G4"', b'"a\tb"',
    b'"a\nb"', b'"\x00"', b'"abc', b'"\\', b"NaN", b"Infinity", b"-Infinity", b"[NaN]", b"\xef\xbb\xbf[]",
    b'"caf\xe9"', b'"\xc0\x80"', b'"\xc1\xbf"', b'"\xe0\x80\x80"', b'"\xe0\x9f\xbf"', b'"\xed\xa0\x80"',
    b'"\xed\xbf\xbf"', b'"\xf0\x80\x80\x80"', b'"\xf4\x90\x80\x80"', b'"\xf5\x80\x80\x80"', b'"\xff"', b'"\x80"',
    b'"\xe2\x82"', b'"\xe2\x82\xac', b"\xc3\xa9", b"[\xc3\xa9]", b"[1]\x00", b"{\"a\":1}x", b"\x89PNG",
    b"[" * 500 + b"]" * 499,
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_corpus_agrees_with_python_json_for_every_chunking(backend):
    for doc in CORPUS:
        ok, at = verdict(doc, backend, steps=(1, 2, 3, 7, 1 << 20))
        expected = python_says(doc)
        if backend == "yajl" and ok and not expected and yajl_leniency(doc):
            continue  # the reason native is the default
        assert ok == expected, (backend, doc[:60], at)
        if not ok:
            assert 0 <= at <= len(doc) or backend == "yajl"


@pytest.mark.skipif(not NATIVE, reason="_jsonvalid not built")
@pytest.mark.parametrize("doc,at,words", [
    (b'{"a": NaN}', 6, "expected a value"),
    (b"[1,2,]", 5, "expected a value"),
    (b'{"a":1,}', 7, "key"),
    (b'{"a" 1}', 5, "':'"),
    (b"[1 2]", 3, "',' or ']'"),
    (b'{"a":1 "b":2}', 7, "',' or '}'"),
    (b"[] []", 3, "second document"),
    (b'"a\\qb"', 3, "escape"),
    (b'"\\u12x4"', 5, "\\u"),
    (b'"a\x01"', 2, "control character"),
    (b'"caf\xe9!"', 5, "invalid UTF-8"),
    (b'"\xed\xa0\x80"', 2, "invalid UTF-8"),
    (b"[01]", 2, "invalid number"),
    (b"[tru]", 4, "literal"),
    (b'{"a":[1,', 8, "truncated"),
    (b"", 0, "empty"),
])
def test_native_names_the_offending_byte(doc, at, words):
    for step in (1, 4, 1 << 20):
        os.environ["SEKIOPS_JSONCHECK"] = "native"
        try:
            c = jsoncheck.JsonChecker("doc")
        finally:
            del os.environ["SEKIOPS_JSONCHECK"]
        with pytest.raises(BadInputError) as err:
            for k in range(0, len(doc), step):
                c.feed(doc[k:k + step])
            c.finish()
        assert f"(at byte {at:,})" in str(err.value) and words in str(err.value), str(err.value)


def test_native_refuses_nesting_past_its_bound_in_bounded_memory():
    if not NATIVE:
        pytest.skip("_jsonvalid not built")
    depth = jsoncheck._load_native().jv_max_depth()
    os.environ["SEKIOPS_JSONCHECK"] = "native"
    try:
        c = jsoncheck.JsonChecker("doc")
    finally:
        del os.environ["SEKIOPS_JSONCHECK"]
    chunk = b"[" * (1 << 16)
    with pytest.raises(BadInputError, match=f"deeper than {depth:,} levels.*at byte {depth:,}"):
        for _ in range(depth // len(chunk) + 1):
            c.feed(chunk)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=25)


@settings(max_examples=int(os.environ.get("SEKIOPS_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from(["set", "ins", "del"])),
                      max_size=3), step=st.integers(1, 9))
def test_random_documents_and_their_mutants_agree_with_python_json(value, ascii_only, indent, edits, step):
    doc = bytearray(json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode("utf-8", "surrogatepass"))
    for pos, byte, op in edits:
        i = pos % (len(doc) + 1)
        if op == "ins" or i == len(doc):
            doc.insert(i, byte)
        elif op == "set":
            doc[i] = byte
        else:
            del doc[i]
    doc = bytes(doc)
    expected = python_says(doc)
    for backend in [b.values[0] for b in BACKENDS if not b.marks[0].args[0]]:
        ok, _ = verdict(doc, backend, steps=(step, 1 << 20))
        if backend == "yajl" and ok and not expected and yajl_leniency(doc):
            continue
        assert ok == expected, (backend, doc[:80])
