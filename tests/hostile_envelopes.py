"""A corpus of malformed snapshot envelopes (StateData / record-level blob bytes).

``CASES`` is a list of ``(id, data, description)``.  Every case is bytes that a reader must refuse
with ``sekiops.errors.SekiopsError`` (a message naming where the bytes came from), quickly and in
bounded memory -- never another exception type, never a hang, never a silent success.

Import it as ``from hostile_envelopes import CASES`` (pytest puts tests/ on sys.path; tests/ is
not a package) or ``from tests.hostile_envelopes import CASES`` (from the repository root).
The module only needs the standard library; building the corpus takes well under a second and
about 6 MB of memory (the gzip bombs are built from repeated members, never materialised).

``UNSAFE_KEY_ENVELOPES`` are well-formed envelopes whose payload blob key must not be followed
(``..``, absolute, other projector...): the envelope layer may accept them, a restore must refuse
them.  They are not in ``CASES``.
"""

from __future__ import annotations

import base64
import gzip
import json

__all__ = ["CASES", "UNSAFE_KEY_ENVELOPES", "good_inline", "good_offloaded"]

SLUI = "063904064000000000000000000001"  # a 30-digit SortableUniqueId
GUID = "0e5c2f4a-8c1b-4f5e-9d3a-1b2c3d4e5f60"
SHA = "ab" * 32


def _meta(**over) -> dict:
    meta = {
        "multiProjectionPayloadType": "App.Projections.OrderSummary",
        "projectorName": "OrderSummary",
        "projectorVersion": "1.0.0",
        "lastSortableUniqueId": SLUI,
        "lastEventId": GUID,
        "version": 42,
        "isCatchedUp": True,
        "isSafeState": True,
    }
    meta.update(over)
    return meta


def _dump(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def good_inline(**inline_over) -> dict:
    payload = gzip.compress(b'{"orders":3}', mtime=0)
    inline = {"payloadJson": None, "payloadBase64": base64.b64encode(payload).decode("ascii")}
    inline.update(_meta())
    inline.update({"originalSizeBytes": 12, "compressedSizeBytes": len(payload)})
    inline.update(inline_over)
    return {"isOffloaded": False, "inlineState": inline, "offloadedState": None}


def good_offloaded(**off_over) -> dict:
    off = {"offloadKey": f"OrderSummary/{SHA}.bin", "storageProvider": "AzureBlobStorage"}
    off.update(_meta())
    off.update({"payloadLength": 100, "originalSizeBytes": 1000, "compressedSizeBytes": 100})
    off.update(off_over)
    return {"isOffloaded": True, "inlineState": None, "offloadedState": off}


GOOD_INLINE = _dump(good_inline())
GOOD_OFFLOADED = _dump(good_offloaded())

# A valid envelope that is exactly 1 MiB long and whose last scalar is far from its end
# (so a reader has no reason to look past the closing brace before checking the gzip trailer).
_MIB = 1 << 20


def _exact_mib_envelope() -> bytes:
    head = b'{"isOffloaded":false,"offloadedState":null,"inlineState":{"payloadBase64":"'
    mid = b'","projectorName":"'
    tail = b'"}}'
    b64_len = (_MIB - len(head) - len(mid) - len(tail) - 100) // 4 * 4
    pad = _MIB - len(head) - len(mid) - len(tail) - b64_len
    data = head + b"A" * b64_len + mid + b"P" * pad + tail
    assert len(data) == _MIB
    json.loads(data)
    return data


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _bomb(prefix: bytes, fill: bytes, mib: int) -> bytes:
    """gzip(prefix) + mib x gzip(1 MiB of fill): a multi-member gzip that inflates to ~mib MiB."""
    member = _gz(fill * (_MIB // len(fill)))
    return (_gz(prefix) if prefix else b"") + member * mib


def _inline_with(**over) -> bytes:
    return _dump(good_inline(**over))


def _offloaded_with(**over) -> bytes:
    return _dump(good_offloaded(**over))


def _build() -> list[tuple[str, bytes, str]]:
    cases: list[tuple[str, bytes, str]] = []

    def add(case_id: str, data: bytes, description: str) -> None:
        assert isinstance(data, bytes)
        cases.append((case_id, data, description))

    # --- empty / not JSON / not an object --------------------------------------------------------
    add("empty", b"", "empty input")
    add("whitespace-only", b" \r\n\t ", "only whitespace")
    add("single-brace", b"{", "a lone opening brace")
    add("top-array", b"[" + GOOD_INLINE + b"]", "a JSON array at the top level")
    add("top-string", b'"isOffloaded"', "a JSON string at the top level")
    add("top-number", b"42", "a JSON number at the top level")
    add("top-null", b"null", "JSON null at the top level")
    add("top-true", b"true", "JSON true at the top level")
    add("empty-object", b"{}", "an object with neither inlineState nor offloadedState")
    add("not-json-text", b"Sekiban snapshot", "plain text")
    add("single-quotes", b"{'isOffloaded':false}", "single-quoted JSON (not JSON)")
    add("js-comment", b"// c\n" + GOOD_INLINE, "a comment before the document")
    add("trailing-comma", GOOD_INLINE[:-1] + b",}", "a trailing comma in the top object")
    add("missing-colon", b'{"isOffloaded" false}', "missing ':'")
    add("missing-comma", b'{"isOffloaded":false "inlineState":null}', "missing ','")
    add("unquoted-key", b"{isOffloaded:false}", "unquoted property name")
    add("bad-literal-tru", b'{"isOffloaded":tru,"inlineState":null}', "truncated literal")
    add("bad-literal-True", b'{"isOffloaded":True}', "capitalised literal")
    add("nan-literal", _inline_with().replace(b'"version":42', b'"version":NaN'), "NaN is not JSON")
    add("infinity-literal", _inline_with().replace(b'"version":42', b'"version":Infinity'),
        "Infinity is not JSON")

    # --- truncated JSON ----------------------------------------------------------------------------
    b64_start = GOOD_INLINE.index(b'"payloadBase64":"') + len(b'"payloadBase64":"')
    add("truncated-in-first-key", GOOD_INLINE[:5], "cut inside the first property name")
    add("truncated-after-colon", GOOD_INLINE[: GOOD_INLINE.index(b":") + 1], "cut after the first ':'")
    add("truncated-in-base64", GOOD_INLINE[: b64_start + 8], "cut inside payloadBase64 (on a 4-char boundary)")
    add("truncated-in-base64-odd", GOOD_INLINE[: b64_start + 7], "cut inside payloadBase64 (mid group)")
    add("truncated-last-brace", GOOD_INLINE[:-1], "the closing brace is missing")
    add("truncated-offloaded", GOOD_OFFLOADED[: len(GOOD_OFFLOADED) // 2], "offloaded envelope cut in half")
    with_escape = _inline_with(payloadBase64=None, payloadJson="PLACEHOLDER").replace(b"PLACEHOLDER", b"\\u00")
    add("truncated-in-escape", with_escape[: with_escape.index(b"\\u00") + 4],
        "cut inside a \\u escape of payloadJson")

    # --- bad Base64 ---------------------------------------------------------------------------------
    add("base64-bad-char", _inline_with(payloadBase64="YWJj!A=="), "'!' is not Base64")
    add("base64-urlsafe", _inline_with(payloadBase64="-_-_"), "URL-safe alphabet is not standard Base64")
    add("base64-space", _inline_with(payloadBase64="YWJj YWJj"), "a space inside Base64")
    add("base64-newline-escape", _inline_with(payloadBase64="YWJj\nYWJj"), "an escaped newline inside Base64")
    add("base64-nul-escape", _inline_with(payloadBase64="YWJj\u0000"), "an escaped NUL inside Base64")
    add("base64-len-2", _inline_with(payloadBase64="YQ"), "unpadded Base64 (length 2)")
    add("base64-len-3-pad", _inline_with(payloadBase64="YQ="), "Base64 with one '=' too few")
    add("base64-len-5", _inline_with(payloadBase64="YWJjZ"), "Base64 length 5")
    add("base64-triple-pad", _inline_with(payloadBase64="Y==="), "three '=' in a group")
    add("base64-only-pad", _inline_with(payloadBase64="===="), "only padding")
    add("base64-pad-first", _inline_with(payloadBase64="=YWJ"), "padding at the start")
    add("base64-pad-in-middle",
        b'{"inlineState":{"payloadBase64":"YQ==YWJj"},"isOffloaded":false,"offloadedState":null}',
        "padding in the middle of the string, then more Base64")
    add("base64-pad-in-middle-long",
        b'{"inlineState":{"payloadBase64":"' + b"AAAA" * 300 + b'YQ==' + b"AAAA" * 300
        + b'"},"isOffloaded":false,"offloadedState":null}',
        "padding in the middle of a long string, then more Base64")
    add("base64-non-ascii-escape", _inline_with(payloadBase64="YWJj\u00e9"), "an escaped non-ASCII char")
    add("base64-bad-escape", _inline_with().replace(b'"payloadBase64":"', b'"payloadBase64":"\\q'),
        "an invalid escape in payloadBase64")

    # --- wrong JSON types, field by field -------------------------------------------------------
    add("type-isOffloaded-string", _dump({**good_inline(), "isOffloaded": "false"}), "isOffloaded is a string")
    add("type-isOffloaded-number", _dump({**good_inline(), "isOffloaded": 0}), "isOffloaded is a number")
    add("type-inlineState-array", _dump({**good_inline(), "inlineState": []}), "inlineState is an array")
    add("type-inlineState-string", _dump({**good_inline(), "inlineState": "x"}), "inlineState is a string")
    add("type-inlineState-number", _dump({**good_inline(), "inlineState": 1}), "inlineState is a number")
    add("type-offloadedState-string", _dump({**good_offloaded(), "offloadedState": "key"}),
        "offloadedState is a string")
    add("type-offloadedState-array", _dump({**good_offloaded(), "offloadedState": [1]}),
        "offloadedState is an array")
    for field, bad in (
        ("payloadBase64", 123), ("payloadBase64", True), ("payloadBase64", {"a": 1}), ("payloadBase64", ["YQ=="]),
        ("payloadJson", 5), ("payloadJson", {"a": 1}),
        ("version", "42"), ("version", True), ("version", 1.5), ("version", [42]),
        ("projectorName", 5), ("projectorVersion", ["1"]), ("lastSortableUniqueId", 63904064),
        ("lastEventId", {"g": 1}), ("multiProjectionPayloadType", False),
        ("isCatchedUp", "true"), ("isSafeState", 1),
        ("originalSizeBytes", "10"), ("compressedSizeBytes", [1]),
    ):
        over = {field: bad}
        if field == "payloadJson":
            over["payloadBase64"] = None
        add(f"type-inline-{field}-{type(bad).__name__}", _inline_with(**over),
            f"inlineState.{field} is a {type(bad).__name__}")
    for field, bad in (
        ("offloadKey", 5), ("offloadKey", ["k"]), ("storageProvider", 7), ("payloadLength", "100"),
        ("payloadLength", 1.25), ("version", "42"), ("projectorVersion", 1), ("isSafeState", "no"),
    ):
        add(f"type-offloaded-{field}-{type(bad).__name__}", _offloaded_with(**{field: bad}),
            f"offloadedState.{field} is a {type(bad).__name__}")

    # --- impossible combinations -------------------------------------------------------------------
    add("offloaded-without-state", _dump({"isOffloaded": True, "inlineState": None, "offloadedState": None}),
        "isOffloaded true with offloadedState null")
    add("offloaded-missing-state", b'{"isOffloaded":true}', "isOffloaded true with no offloadedState at all")
    add("offloaded-with-only-inline", _dump({**good_inline(), "isOffloaded": True}),
        "isOffloaded true, only an inlineState")
    add("both-states-null", _dump({"isOffloaded": False, "inlineState": None, "offloadedState": None}),
        "both states null")
    add("both-states-null-no-flag", b'{"inlineState":null,"offloadedState":null}', "both null, no isOffloaded")
    add("inline-flag-only-offloaded", _dump({**good_offloaded(), "isOffloaded": False}),
        "isOffloaded false but only an offloadedState")
    add("offload-key-null", _offloaded_with(offloadKey=None), "offloadedState.offloadKey null")
    add("offload-key-empty", _offloaded_with(offloadKey=""), "offloadedState.offloadKey empty")
    add("offload-key-missing",
        _dump({"isOffloaded": True, "inlineState": None,
               "offloadedState": {k: v for k, v in good_offloaded()["offloadedState"].items() if k != "offloadKey"}}),
        "offloadedState without offloadKey")

    # --- duplicate keys ----------------------------------------------------------------------------
    add("dup-top", b'{"isOffloaded":false,"isOffloaded":true,' + GOOD_INLINE[1:], "isOffloaded twice")
    add("dup-top-case", b'{"IsOffloaded":true,' + GOOD_INLINE[1:], "isOffloaded and IsOffloaded")
    add("dup-inline-state", GOOD_INLINE[:-1] + b',"inlineState":null}', "inlineState twice")
    add("dup-inline-state-case", GOOD_INLINE[:-1] + b',"InlineState":null}', "inlineState and InlineState")
    add("dup-base64", _inline_with().replace(b'"payloadJson":null', b'"payloadBase64":"YWJj"'),
        "payloadBase64 twice")
    add("dup-base64-case", _inline_with().replace(b'"payloadJson":null', b'"PayloadBase64":"YWJj"'),
        "payloadBase64 and PayloadBase64")
    add("dup-offload-key-case",
        _offloaded_with().replace(b'"storageProvider"', b'"OffloadKey":"x/y.bin","storageProvider"'),
        "offloadKey and OffloadKey")
    add("dup-version", _inline_with().replace(b'"version":42', b'"version":42,"version":43'), "version twice")

    # --- nesting, sizes, numbers ------------------------------------------------------------------
    add("deep-objects-10000", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "10,000 nested objects")
    add("deep-arrays-10000", b'{"isOffloaded":false,"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        "10,000 nested arrays in an unknown property")
    add("deep-in-inline", _inline_with(extra=0).replace(b'"extra":0', b'"extra":' + b"[" * 10_000),
        "10,000 unclosed arrays inside inlineState")
    add("long-array", b'{"x":[' + b"0," * 100_001 + b'0],' + GOOD_INLINE[1:], "an array of 100,002 numbers")
    add("huge-number-exp", _inline_with().replace(b'"version":42', b'"version":1e999'),
        "version 1e999 (overflows a double)")
    add("huge-number-neg-exp", _inline_with().replace(b'"compressedSizeBytes":', b'"compressedSizeBytes":-1e999,"x":'),
        "compressedSizeBytes -1e999")
    add("huge-number-digits", _inline_with().replace(b'"version":42', b'"version":' + b"9" * 60), "a 60-digit version")
    add("huge-number-int64", _inline_with().replace(b'"version":42', b'"version":9223372036854775808'),
        "version 2^63 (beyond Int64)")
    add("huge-payload-length", _offloaded_with(payloadLength=10**30), "payloadLength 10^30")
    add("negative-version", _inline_with(version=-1), "version -1")
    add("negative-original-size", _inline_with(originalSizeBytes=-5), "originalSizeBytes -5")
    add("negative-compressed-size", _inline_with(compressedSizeBytes=-1), "compressedSizeBytes -1")
    add("negative-payload-length", _offloaded_with(payloadLength=-100), "payloadLength -100")
    add("number-leading-zero", _inline_with().replace(b'"version":42', b'"version":042'), "a leading zero")
    add("number-plus", _inline_with().replace(b'"version":42', b'"version":+42'), "a leading '+'")
    add("number-dot", _inline_with().replace(b'"version":42', b'"version":42.'), "'42.'")
    add("big-string-projector-name", _inline_with(projectorName="N" * (2 << 20)),
        "a 2 MB projectorName")
    add("big-string-offload-key", _offloaded_with(offloadKey="k" * (2 << 20)), "a 2 MB offloadKey")
    add("big-string-key", b'{"' + b"k" * (2 << 20) + b'":1}', "a 2 MB property name")

    # --- bytes that are not JSON text -------------------------------------------------------------
    add("nul-first", b"\x00" + GOOD_INLINE, "a NUL byte before the document")
    add("nul-in-key", GOOD_INLINE.replace(b'"isOffloaded"', b'"isOff\x00loaded"'), "a raw NUL inside a key")
    add("nul-in-value", _inline_with(projectorName="Order\x00Summary").replace(b"\\u0000", b"\x00"),
        "a raw NUL inside projectorName")
    add("nul-in-base64", _inline_with().replace(b'"payloadBase64":"', b'"payloadBase64":"\x00'),
        "a raw NUL inside payloadBase64")
    add("nul-between-tokens", GOOD_INLINE.replace(b",", b",\x00", 1), "a NUL where whitespace may be")
    add("control-in-key", GOOD_INLINE.replace(b'"isOffloaded"', b'"is\nOffloaded"'), "a raw newline in a key")
    add("non-utf8-first", b"\xff\xfe" + GOOD_INLINE, "bytes FF FE before the document (not UTF-8 JSON)")
    add("utf16-envelope", GOOD_INLINE.decode("ascii").encode("utf-16-le"), "the envelope in UTF-16")
    add("non-utf8-in-key", GOOD_INLINE.replace(b'"isOffloaded"', b'"isOff\xc3loaded"'), "invalid UTF-8 in a key")
    add("non-utf8-in-value", _inline_with(projectorName="X").replace(b'"projectorName":"X"',
        b'"projectorName":"\xed\xa0\x80"'), "UTF-8-encoded surrogate (invalid) in projectorName")
    add("non-utf8-in-base64", _inline_with().replace(b'"payloadBase64":"', b'"payloadBase64":"\xe9'),
        "a Latin-1 byte inside payloadBase64")
    add("invalid-escape-key", GOOD_INLINE.replace(b'"isOffloaded"', b'"is\\xOffloaded"'), "'\\x' escape in a key")
    add("invalid-escape-payload-json",
        _inline_with(payloadBase64=None, payloadJson="PLACEHOLDER").replace(b"PLACEHOLDER", b'{\\q}'),
        "'\\q' escape in payloadJson")
    add("short-u-escape-payload-json",
        _inline_with(payloadBase64=None, payloadJson="PLACEHOLDER").replace(b"PLACEHOLDER", b'\\u12"x'),
        "a \\u escape with two hex digits in payloadJson")

    # --- trailing data ---------------------------------------------------------------------------
    add("trailing-garbage", GOOD_INLINE + b"garbage", "text after the document")
    add("trailing-second-doc", GOOD_INLINE + GOOD_INLINE, "two documents back to back")
    add("trailing-nul", GOOD_INLINE + b"\x00", "a NUL after the document")
    add("trailing-brace", GOOD_OFFLOADED + b"}", "an extra closing brace")

    # --- v9 (gzip) envelopes -----------------------------------------------------------------------
    v9 = _gz(GOOD_INLINE)
    add("v9-magic-only", b"\x1f\x8b", "only the gzip magic")
    add("v9-header-only", v9[:10], "a gzip header and nothing else")
    add("v9-truncated-half", v9[: len(v9) // 2], "a v9 envelope cut in half")
    add("v9-corrupt-deflate", v9[:12] + bytes(b ^ 0x55 for b in v9[12:20]) + v9[20:], "corrupt deflate data")
    add("v9-bad-crc", v9[:-8] + bytes([v9[-8] ^ 0xFF]) + v9[-7:], "a wrong CRC-32 in the trailer")
    add("v9-bad-isize", v9[:-4] + bytes([v9[-4] ^ 0x01]) + v9[-3:], "a wrong ISIZE in the trailer")
    add("v9-bad-method", v9[:2] + b"\x07" + v9[3:], "compression method 7 in the gzip header")
    add("v9-not-json", _gz(b"this is not JSON"), "gzip of plain text")
    add("v9-empty", _gz(b""), "gzip of nothing")
    add("v9-of-v9", _gz(v9), "gzip of a gzip envelope (double compressed)")
    add("v9-of-truncated-json", _gz(GOOD_INLINE[:-3]), "gzip of truncated JSON")
    add("v9-trailing-garbage", v9 + b"garbage!", "text after the gzip member")
    exact = _exact_mib_envelope()
    exact_gz = _gz(exact)
    add("v9-1mib-no-trailer", exact_gz[:-8], "a 1 MiB v9 envelope whose gzip trailer (CRC, ISIZE) is missing")
    add("v9-1mib-half-trailer", exact_gz[:-4], "a 1 MiB v9 envelope without its ISIZE")
    add("v9-1mib-trailing-garbage", exact_gz + b"garbage!", "a 1 MiB v9 envelope followed by garbage")
    add("v9-bomb-zeros", _bomb(b"", b"\x00", 1024), "1 GiB of NUL bytes in 1 MB of gzip")
    add("v9-bomb-whitespace", _bomb(b"", b" ", 256), "256 MiB of spaces in 260 KB of gzip, then nothing")
    add("v9-bomb-base64", _bomb(b'{"isOffloaded":false,"inlineState":{"payloadBase64":"', b"A", 64),
        "64 MiB of 'A' in an unterminated payloadBase64, from 70 KB of gzip")
    return cases


CASES: list[tuple[str, bytes, str]] = _build()


def _unsafe_keys() -> list[tuple[str, bytes, str]]:
    out = []
    for case_id, key, description in (
        ("dotdot", "../../etc/passwd", "a key leaving the blob root"),
        ("dotdot-inner", f"OrderSummary/../Other/{SHA}.bin", "a '..' segment inside the key"),
        ("absolute", "/etc/passwd", "an absolute key"),
        ("backslash", "OrderSummary\\..\\x.bin", "backslashes"),
        ("drive", "C:/Windows/win.ini", "a drive letter"),
        ("other-projector", f"OtherProjector/{SHA}.bin", "another projector's blob"),
        ("control", "OrderSummary/\x01.bin", "a control character"),
    ):
        out.append((case_id, _offloaded_with(offloadKey=key), description))
    return out


UNSAFE_KEY_ENVELOPES: list[tuple[str, bytes, str]] = _unsafe_keys()

_ids = [c[0] for c in CASES]
assert len(_ids) == len(set(_ids)), "duplicate case ids"
