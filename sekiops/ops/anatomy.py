"""Payload anatomy: where the bytes of one snapshot's projector state are, by JSON path.

The payload (the decoded projector state JSON, possibly gigabytes) is walked as a stream and
never held: :func:`sekiops.pipeline.restore.open_payload_stream` gunzips it chunk by chunk and a
vectorised scanner (numpy) tokenises each 4 MiB chunk:

1. real quotes (an even run of backslashes before them), hence string spans;
2. structural characters ``{}[],:`` outside strings, and literal runs (numbers, true/false/null);
3. nesting depth by a cumulative sum.

Python sees only the tokens above the deepest reported level: a small state machine attributes
raw byte spans to JSON paths (``$``, ``$.customers``, ``$.customers[]``, ``$.customers[].orders``
...) for levels < ``depth``. The values at level ``depth`` (usually the bulk: every member of every
aggregate) are attributed with numpy: key/value alternation per parent, value spans, member keys
grouped by a 64-bit hash of their raw bytes (checked against the bytes), then one Python step per
distinct (parent path, key). Everything deeper (max depth, string lengths, item counts of the
deepest containers) is computed on the token arrays. Memory is bounded by the chunk size.

Attribution is by raw JSON bytes measured as stream offsets: a value's bytes are the span from
its first to its last byte (escapes and whitespace inside included), a member's key bytes the span
from its key's opening quote to the value. So the root's bytes plus the whitespace around it equal
the payload size exactly (``total_bytes``), and a container's bytes are its children's plus its
own punctuation and keys (``overhead``).

Why not ijson: ijson (even its yajl2 C backend) yields decoded events without stream offsets, so
its byte attribution could only be an estimate (escapes, whitespace and number spellings are
gone), and Python has to touch every event. On a 100 MB payload (13 M events) iterating
``ijson.parse`` with the least bookkeeping an anatomy needs took about 1.7x as long as this
scanner's whole, exact walk at depth 3 (``benchmark_backends`` measures both on any file).

Objects used as dictionaries (aggregate ids as keys) would explode the path list: when an object
path has more than ``max_keys`` distinct keys, its children are folded into one ``*`` child.

Library::

    from sekiops.ops.anatomy import anatomy, walk
    report = anatomy(state, blob, projector_name="CustomerDirectory", depth=3, top=20,
                     progress=lambda done, total: ...)
    report.to_frame()        # one row per path
    report.to_dict()         # JSON-able

``walk(stream, ...)`` does the same for any readable binary stream of JSON.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import json
import time
from typing import BinaryIO, Callable

from ..errors import CorruptSnapshotError, UsageError
from ..streams import iter_chunks

CHUNK = 4 * 1024 * 1024
DEFAULT_DEPTH = 3
DEFAULT_TOP = 20
DEFAULT_MAX_KEYS = 200
PREFIX_CHARS = 60
KEY_CAP = 256

T_OBJ, T_EOBJ, T_ARR, T_EARR, T_COMMA, T_COLON, T_STR, T_NUM, T_BOOL, T_NULL = range(1, 11)
TYPE_NAMES = {T_OBJ: "object", T_ARR: "array", T_STR: "string", T_NUM: "number", T_BOOL: "boolean",
              T_NULL: "null"}

_LUT = None


def _luts():
    global _LUT
    if _LUT is None:
        import numpy as np

        typ = np.full(256, T_NUM, np.uint8)
        for ch, code in ((b"{", T_OBJ), (b"}", T_EOBJ), (b"[", T_ARR), (b"]", T_EARR), (b",", T_COMMA),
                         (b":", T_COLON), (b'"', T_STR), (b"t", T_BOOL), (b"f", T_BOOL), (b"n", T_NULL)):
            typ[ch[0]] = code
        delta = np.zeros(16, np.int32)
        delta[T_OBJ] = delta[T_ARR] = 1
        delta[T_EOBJ] = delta[T_EARR] = -1
        _LUT = (typ, delta)
    return _LUT


# --- tokenizer ------------------------------------------------------------------------------------


def _prefix_parity(mask, np):
    """Running XOR of a bool array (bit i = parity of mask[0..i]), 64 bits at a time: pack the bits,
    prefix-XOR inside each word by shifts, carry the word parities, unpack."""
    n = mask.size
    packed = np.packbits(mask, bitorder="little")
    pad = (-packed.size) % 8
    if pad:
        packed = np.concatenate((packed, np.zeros(pad, np.uint8)))
    w = packed.view(np.uint64).copy()
    for shift in (1, 2, 4, 8, 16, 32):
        w ^= w << np.uint64(shift)
    top = (w >> np.uint64(63)).astype(np.uint8)
    carry = np.bitwise_xor.accumulate(top)
    carry_in = np.zeros(carry.size, np.uint64)
    carry_in[1:] = carry[:-1]
    w ^= np.uint64(0) - carry_in
    return np.unpackbits(w.view(np.uint8), bitorder="little", count=n).view(bool)


class _Batch:
    __slots__ = ("pos", "end", "typ", "lvl", "buf", "base", "carry_text")

    def __init__(self, pos, end, typ, lvl, buf, base, carry_text):
        self.pos, self.end, self.typ, self.lvl = pos, end, typ, lvl
        self.buf, self.base, self.carry_text = buf, base, carry_text

    def text(self, pos: int, end: int, cap: int) -> bytes:
        """Raw content bytes of the string token at ``pos`` (without quotes), at most ``cap``."""
        if pos >= self.base:
            s = pos - self.base + 1
            e = end - 1 - self.base
            if e - s > cap:
                e = s + cap
            return self.buf[s:e]
        return self.carry_text[:max(0, min(cap, end - pos - 2))]


class Tokenizer:
    """Chunked, vectorised JSON tokenizer with absolute offsets (see the module docstring)."""

    def __init__(self):
        self.base = 0
        self.depth = 0
        self.max_depth = 0
        self.in_str = False
        self.str_start = 0
        self.str_text = b""
        self.bs_carry = 0
        self.in_lit = False
        self.lit_start = 0
        self.lit_kind = T_NUM

    def feed(self, buf: bytes) -> _Batch:
        import numpy as np

        typlut, delta_lut = _luts()
        a = np.frombuffer(buf, np.uint8)
        n = a.size
        base = self.base
        s0 = self.in_str
        if not n:
            return _Batch(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8),
                          np.zeros(0, np.int32), buf, base, b"")

        # 1. real quotes: not preceded by an odd run of backslashes (which may begin in an
        #    earlier chunk: bs_carry)
        isq = a == 34
        bpos = np.flatnonzero(a == 92) if (a == 92).any() else None
        if bpos is not None or (s0 and self.bs_carry):
            qpos = np.flatnonzero(isq)
            if qpos.size:
                if bpos is not None:
                    k = np.searchsorted(bpos, qpos)
                    km1 = np.maximum(k - 1, 0)
                    adjacent = (k > 0) & (bpos[km1] == qpos - 1)
                    runkey = bpos - np.arange(bpos.size)
                    first = np.searchsorted(runkey, runkey[km1], "left")
                    run = np.where(adjacent, k - first, 0)
                    touches = np.where(adjacent, bpos[first] == 0, qpos == 0)
                else:
                    run = np.zeros(qpos.size, np.int64)
                    touches = qpos == 0
                if s0 and self.bs_carry:
                    run = run + np.where(touches, self.bs_carry, 0)
                isq[qpos[(run & 1) == 1]] = False

        # 2. inside-string parity: 1 from an opening quote (included) to its closing quote (excluded)
        ins = _prefix_parity(isq, np)
        if s0:
            ins = ~ins
        out = ~ins
        folded = a | 0x20  # '[' -> '{', ']' -> '}'
        structural = (a == 44) | (a == 58) | (folded == 123) | (folded == 125)
        lit = out & ~structural & ~isq & (a > 32)
        in_str_end = bool(ins[-1])

        # 3. token starts: structural characters and opening quotes outside strings, literal run starts
        starts = lit.copy()
        starts[1:] &= ~lit[:-1]
        if self.in_lit:
            starts[0] = False
        tokmask = (structural & out) | (isq & ins) | starts
        rel = np.flatnonzero(tokmask)
        typ = typlut[a[rel]]
        closes = np.flatnonzero(isq & out)
        lends = lit.copy()
        lends[:-1] &= ~lit[1:]
        lend = np.flatnonzero(lends)

        carried = None  # (pos, end, typ): a token begun in an earlier chunk that ends here
        carry_text = b""
        if s0 and closes.size:
            c = int(closes[0])
            closes = closes[1:]
            carry_text = self.str_text
            if len(carry_text) < KEY_CAP:
                carry_text += buf[:min(c, KEY_CAP - len(carry_text))]
            carried = (self.str_start, base + c + 1, T_STR)
        lit_goes_on = False
        if self.in_lit:
            if lit[0]:
                e0 = int(lend[0])
                lend = lend[1:]
                if e0 == n - 1:
                    lit_goes_on = True  # the same literal spans this whole chunk
                else:
                    carried = (self.lit_start, base + e0 + 1, self.lit_kind)
            else:
                carried = (self.lit_start, base, self.lit_kind)
        # an unfinished string or literal at the end waits for the next chunk
        new_str = in_str_end and (not s0 or bool(isq.any()))
        new_lit = (not in_str_end) and bool(lit[-1]) and not lit_goes_on
        tail = None
        if new_str or new_lit:
            tail = int(rel[-1])
            rel = rel[:-1]
            typ = typ[:-1]
            if new_lit:
                lend = lend[:-1]
        pos = rel.astype(np.int64)
        pos += base
        end = pos + 1
        is_str = typ == T_STR
        if closes.size:
            end[is_str] = closes + (base + 1)
        if lend.size:
            end[typ >= T_NUM] = lend + (base + 1)
        if carried is not None:
            pos = np.concatenate(([carried[0]], pos))
            end = np.concatenate(([carried[1]], end))
            typ = np.concatenate((np.array([carried[2]], np.uint8), typ))

        # 4. depth
        delta = delta_lut[typ]
        depth_after = np.cumsum(delta, dtype=np.int32)
        depth_after += self.depth
        lvl = depth_after - (delta == 1)
        if depth_after.size:
            if int(depth_after.min()) < 0:
                at = int(pos[int(np.argmin(depth_after))])
                raise CorruptSnapshotError(f"payload is not valid JSON: unbalanced close bracket at byte {at}")
            self.max_depth = max(self.max_depth, int(depth_after.max()))
            self.depth = int(depth_after[-1])

        # 5. carry to the next chunk
        if in_str_end:
            if new_str:
                self.str_start = base + tail
                self.str_text = buf[tail + 1:tail + 1 + KEY_CAP]
            elif len(self.str_text) < KEY_CAP:
                self.str_text += buf[:KEY_CAP - len(self.str_text)]
            if a[-1] == 92:
                runkey = bpos - np.arange(bpos.size)
                first = int(np.searchsorted(runkey, runkey[-1], "left"))
                run = bpos.size - first
                if bpos[first] == 0 and run == n and s0 and not new_str:
                    run += self.bs_carry
                self.bs_carry = run
            else:
                self.bs_carry = 0
        else:
            self.str_text = b""
            self.bs_carry = 0
        self.in_str = in_str_end
        if new_lit:
            self.lit_start = base + tail
            self.lit_kind = int(typlut[a[tail]])
        self.in_lit = lit_goes_on or new_lit
        self.base = base + n
        return _Batch(pos, end, typ, lvl, buf, base, carry_text)

    def finish(self) -> _Batch | None:
        import numpy as np

        if self.in_str:
            raise CorruptSnapshotError(f"payload is not valid JSON: unterminated string from byte {self.str_start}")
        batch = None
        if self.in_lit:
            batch = _Batch(np.array([self.lit_start], np.int64), np.array([self.base], np.int64),
                           np.array([self.lit_kind], np.uint8), np.array([self.depth], np.int64), b"",
                           self.base, b"")
            self.in_lit = False
        if self.depth != 0:
            raise CorruptSnapshotError(f"payload is not valid JSON: {self.depth} bracket(s) left open at the end "
                                       f"(byte {self.base})")
        return batch


# --- the path tree -------------------------------------------------------------------------------


class _Node:
    __slots__ = ("seg", "parent", "level", "count", "bytes", "key_bytes", "types", "children", "item", "wild",
                 "members", "containers", "max_items", "max_value", "keys_folded", "uid", "forward")

    _next_uid = 0

    def __init__(self, seg, parent, level):
        _Node._next_uid += 1
        self.uid = _Node._next_uid
        self.forward = None  # set when folded into a '*' node: where its numbers went
        self.seg = seg
        self.parent = parent
        self.level = level
        self.count = 0
        self.bytes = 0
        self.key_bytes = 0
        self.types = [0] * 11
        self.children: dict = {}
        self.item: _Node | None = None
        self.wild: _Node | None = None
        self.members = 0        # items (arrays) / members (objects) over all containers here
        self.containers = 0
        self.max_items = 0
        self.max_value = 0
        self.keys_folded = 0

    def child(self, key: bytes, max_keys: int) -> "_Node":
        if self.wild is not None:
            self.keys_folded += 1
            return self.wild
        node = self.children.get(key)
        if node is None:
            if len(self.children) >= max_keys:
                self.wild = _fold(list(self.children.values()), self, self.level + 1)
                self.keys_folded = len(self.children) + 1
                self.children = {}
                return self.wild
            node = self.children[key] = _Node(key, self, self.level + 1)
        return node

    def item_child(self) -> "_Node":
        node = self.item
        if node is None:
            node = self.item = _Node(b"[]", self, self.level + 1)
        return node


def _fold(nodes: list, parent, level) -> _Node:
    star = _Node(b"*", parent, level)
    for n in nodes:
        _merge(star, n)
    return star


def _live(node: _Node) -> _Node:
    """The node that now holds ``node``'s numbers (itself unless it was folded into '*')."""
    while node.forward is not None:
        node = node.forward
    return node


def _merge(into: _Node, n: _Node) -> None:
    n.forward = into
    into.count += n.count
    into.bytes += n.bytes
    into.key_bytes += n.key_bytes
    into.types = [x + y for x, y in zip(into.types, n.types)]
    into.members += n.members
    into.containers += n.containers
    into.max_items = max(into.max_items, n.max_items)
    into.max_value = max(into.max_value, n.max_value)
    into.keys_folded += n.keys_folded
    if n.item is not None:
        _merge(into.item_child(), n.item)
    if n.wild is not None or into.wild is not None:
        if into.wild is None:
            into.wild = _fold(list(into.children.values()), into, into.level + 1)
            into.children = {}
        for c in ([n.wild] if n.wild is not None else []) + list(n.children.values()):
            _merge(into.wild, c)
        return
    for key, c in n.children.items():
        target = into.children.get(key)
        if target is None:
            target = into.children[key] = _Node(key, into, into.level + 1)
        _merge(target, c)


def _key_text(raw: bytes) -> str:
    if b"\\" in raw:
        try:
            return json.loads(b'"' + raw + b'"')
        except ValueError:
            pass
    return raw.decode("utf-8", "replace")


_PLAIN_KEY = None


def _segment(seg: bytes) -> str:
    global _PLAIN_KEY
    if seg == b"[]":
        return "[]"
    if seg == b"*":
        return ".*"
    if _PLAIN_KEY is None:
        import re

        _PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")
    text = _key_text(seg)
    return "." + text if _PLAIN_KEY.match(text) else "[" + json.dumps(text, ensure_ascii=False) + "]"


def _path(node: _Node) -> str:
    parts = []
    while node is not None and node.parent is not None:
        parts.append(_segment(node.seg))
        node = node.parent
    return "$" + "".join(reversed(parts))


# --- results -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Anatomy:
    """Where the bytes are. ``paths`` rows: path, depth, count, bytes, share, keyBytes, overhead,
    types, items (arrays: items over all arrays at the path; objects: members), containers,
    maxItems, maxValueBytes, keysFolded."""

    total_bytes: int
    root_bytes: int
    max_depth: int
    depth: int
    paths: list
    biggest_strings: list
    large_arrays: list
    tokens: int
    seconds: float
    source: dict = dataclasses.field(default_factory=dict)

    @property
    def throughput_mb_s(self) -> float:
        return round(self.total_bytes / 1e6 / self.seconds, 2) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"totalBytes": self.total_bytes, "rootBytes": self.root_bytes,
                "outsideRootBytes": self.total_bytes - self.root_bytes, "maxDepth": self.max_depth,
                "depth": self.depth, "seconds": round(self.seconds, 3), "throughputMBps": self.throughput_mb_s,
                "tokens": self.tokens, "source": self.source, "paths": self.paths,
                "biggestStrings": self.biggest_strings, "largeArrays": self.large_arrays}

    def to_frame(self):
        import pandas as pd

        cols = ["path", "depth", "count", "bytes", "share", "keyBytes", "overhead", "types", "items",
                "containers", "maxItems", "maxValueBytes", "keysFolded"]
        return pd.DataFrame.from_records(self.paths, columns=cols)

    def strings_frame(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.biggest_strings,
                                         columns=["path", "role", "length", "offset", "prefix"])

    def arrays_frame(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.large_arrays,
                                         columns=["path", "arrays", "items", "maxItems", "bytes"])

    def table(self, limit: int = 60) -> str:
        """A plain-text report (the CLI's ``--format table``)."""
        lines = [f"total {self.total_bytes:,} bytes (root value {self.root_bytes:,}), max depth {self.max_depth}, "
                 f"{self.seconds:.2f} s ({self.throughput_mb_s} MB/s)"]
        if self.source:
            s = self.source
            lines.append(f"snapshot {s.get('where', '')}  envelope {s.get('envelope_location')} "
                         f"{s.get('envelope_format')}, payload {s.get('payload_location')} "
                         f"(gzip {s.get('payload_gzip')})")
        lines.append("")
        rows = self.paths[:limit]
        w = max([len("path")] + [len("  " * r["depth"] + r["path"]) for r in rows])
        lines.append(f"{'path'.ljust(w)}  {'bytes':>14}  {'share':>6}  {'count':>10}  {'items':>10}  types")
        for r in rows:
            name = ("  " * r["depth"] + r["path"]).ljust(w)
            items = "" if r["items"] is None else f"{r['items']:,}"
            lines.append(f"{name}  {r['bytes']:>14,}  {r['share'] * 100:5.1f}%  {r['count']:>10,}  {items:>10}  "
                         f"{','.join(f'{k}:{v}' for k, v in r['types'].items())}")
        if len(self.paths) > limit:
            lines.append(f"... {len(self.paths) - limit} more paths (--format json for all)")
        if self.biggest_strings:
            lines.append("")
            lines.append("biggest strings:")
            for s in self.biggest_strings:
                lines.append(f"  {s['length']:>14,}  {s['path']}  {s['role']}  {s['prefix']!r}")
        if self.large_arrays:
            lines.append("")
            lines.append("largest arrays (by items in one array):")
            for a in self.large_arrays:
                lines.append(f"  {a['maxItems']:>14,}  {a['path']}  ({a['arrays']:,} arrays, {a['items']:,} items)")
        return "\n".join(lines)


# --- the walk ------------------------------------------------------------------------------------


class _Frame:
    __slots__ = ("node", "start", "is_obj", "expect_key", "key", "key_start", "n")

    def __init__(self, node, start, is_obj):
        self.node = node
        self.start = start
        self.is_obj = is_obj
        self.expect_key = is_obj
        self.key = None
        self.key_start = 0
        self.n = 0


class _Pending:
    """A container at the deepest tracked level whose close is in a later chunk."""

    __slots__ = ("start", "node", "commas", "nonempty")

    def __init__(self, start, node):
        self.start = start
        self.node = node
        self.commas = 0
        self.nonempty = False


class _Walk:
    """Everything the walk carries from one chunk to the next."""

    def __init__(self, depth: int, top: int, max_keys: int):
        self.depth = depth
        self.top = top
        self.max_keys = max_keys
        self.root = _Node(b"$", None, 0)
        self.stack: list[_Frame] = []   # open containers at levels < depth
        self.roots = 0
        self.root_bytes = 0
        self.member_counts: dict[int, list] = {}  # level depth-1 container start -> [commas, nonempty]
        self.pending: _Pending | None = None      # open container at level depth
        self.strings: list = []   # min-heap of (length, offset, path, role, prefix)
        self.ctx: list = []       # (type, key text) of the last two tokens seen
        self.waiting: list = []   # string candidates waiting for their next token
        self.tokens = 0


KEY_WIDTH = 48  # keys up to this many raw bytes are grouped by numpy; longer ones in Python


def walk(stream: BinaryIO, *, depth: int = DEFAULT_DEPTH, top: int = DEFAULT_TOP, max_keys: int = DEFAULT_MAX_KEYS,
         total: int | None = None, progress: Callable[[int, int | None], object] | None = None,
         chunk_size: int = CHUNK, source: dict | None = None) -> Anatomy:
    """Walk the JSON read from ``stream``; see the module docstring.

    ``depth``: deepest path level reported (``$`` is 0, ``$.a`` 1, ``$.a[]`` 2 ...); ``top``: how
    many biggest strings and arrays; ``total``: expected byte count (for ``progress(done, total)``,
    called after every chunk).
    """
    import numpy as np

    if depth < 1:
        raise UsageError("anatomy depth must be at least 1")
    if top < 0:
        raise UsageError("anatomy --top must not be negative")
    t0 = time.perf_counter()
    tok = Tokenizer()
    w = _Walk(depth, top, max_keys)
    done = 0
    for data in iter_chunks(stream, chunk_size):
        _process(tok.feed(bytes(data)), w, np)
        done += len(data)
        if progress is not None:
            progress(done, total)
    last = tok.finish()
    if last is not None:
        _process(last, w, np)
    for item in w.waiting:
        _finish_candidate(w.strings, top, item, 0)
    if w.roots == 0 and done:
        raise CorruptSnapshotError("payload holds no JSON value")
    if w.roots > 1:
        raise CorruptSnapshotError("payload is not valid JSON: more than one top-level value")
    seconds = time.perf_counter() - t0
    return _result(w.root, done, w.root_bytes, tok.max_depth, depth, w.strings, top, w.tokens, seconds,
                   source or {})


def _key_groups(rows, lengths, np):
    """Group ids of fixed-width key rows (zero-padded raw bytes + length): a 64-bit hash, checked
    against the rows themselves (a collision falls back to an exact, slower grouping)."""
    words = rows.view(np.uint64)  # KEY_WIDTH is a multiple of 8
    h = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for c in range(words.shape[1]):
        h ^= words[:, c]
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.ravel()
    rep = first[inv]
    if (rows == rows[rep]).all() and (lengths == lengths[rep]).all():
        return inv
    rec = np.empty(rows.shape[0], dtype=[("l", np.int64), ("k", f"V{rows.shape[1]}")])
    rec["l"] = lengths
    rec["k"] = rows.view(f"V{rows.shape[1]}").ravel()
    return np.unique(rec, return_inverse=True)[1].ravel()


def _inner_counts(typ, lvl, pos, level: int, np):
    """Per container at ``level`` opened in this batch (in order), and for the one open at the
    batch start (index 0): commas directly inside and whether anything is inside."""
    inner = lvl == level + 1
    opens = pos[((typ == T_OBJ) | (typ == T_ARR)) & (lvl == level)]
    if not inner.any():
        return opens, None, None
    owner = np.searchsorted(opens, pos[inner]) - 1
    commas = np.bincount(owner + 1, weights=typ[inner] == T_COMMA, minlength=opens.size + 1)
    anything = np.bincount(owner + 1, minlength=opens.size + 1) > 0
    return opens, commas, anything


def _process(batch: _Batch, w: _Walk, np) -> None:
    typ, lvl, pos, end = batch.typ, batch.lvl, batch.pos, batch.end
    if not typ.size:
        return
    w.tokens += int(typ.size)
    depth, top = w.depth, w.top
    if w.waiting:
        nxt = int(typ[0])
        for item in w.waiting:
            _finish_candidate(w.strings, top, item, nxt)
        w.waiting.clear()
    stack_at_start = list(w.stack)
    start_nodes = [f.node for f in w.stack] + ([w.pending.node] if w.pending is not None else [])

    # members of the containers at level depth-1 (their members are the leaves, never in Python)
    _, commas, anything = _inner_counts(typ, lvl, pos, depth - 1, np)
    if commas is not None:
        opens = pos[((typ == T_OBJ) | (typ == T_ARR)) & (lvl == depth - 1)].tolist()
        keys = [w.stack[depth - 1].start if len(w.stack) > depth - 1 else None] + opens
        for i in np.flatnonzero(anything).tolist():
            k = keys[i]
            if k is None:
                continue
            c = w.member_counts.get(k)
            if c is None:
                w.member_counts[k] = [int(commas[i]), True]
            else:
                c[0] += int(commas[i])
                c[1] = True

    # biggest strings: candidates by length (paths resolved after both passes)
    cand = None
    if top:
        sidx = np.flatnonzero(typ == T_STR)
        if sidx.size:
            lens = end[sidx] - pos[sidx] - 2
            floor = w.strings[0][0] if len(w.strings) >= top else -1
            keep = lens > floor
            if keep.any():
                sidx, lens = sidx[keep], lens[keep]
                if sidx.size > top:
                    part = np.argpartition(lens, -top)[-top:]
                    sidx, lens = sidx[part], lens[part]
                cand = (sidx.tolist(), lens.tolist())

    # the shallow pass (levels < depth) in Python
    opens_by_level: list[list] = [[] for _ in range(depth + 1)]
    parents: list[_Frame] = []  # frames opened at level depth-1 in this batch, in order
    sel = np.flatnonzero((lvl < depth) & (typ != T_COMMA) & (typ != T_COLON))
    try:
        _shallow(batch, w, sel, opens_by_level, parents, np)
    except (IndexError, AttributeError, TypeError) as exc:
        raise CorruptSnapshotError(f"payload is not valid JSON near byte {batch.base} ({type(exc).__name__})") from None
    carry_parent = stack_at_start[depth - 1] if len(stack_at_start) > depth - 1 else None

    # the leaves (level == depth), vectorised
    leaf_opens = _leaves(batch, w, carry_parent, parents, np)
    opens_by_level[depth] = leaf_opens

    if cand is not None:
        _strings(batch, cand, depth, top, w.strings, opens_by_level, start_nodes, w.ctx, w.waiting)
    last = []
    for j in range(max(0, typ.size - 2), typ.size):
        t = int(typ[j])
        last.append((t, batch.text(int(pos[j]), int(end[j]), KEY_CAP) if t == T_STR else None))
    w.ctx[:] = (w.ctx + last)[-2:]


def _shallow(batch, w: _Walk, sel, opens_by_level, parents, np) -> None:
    depth, max_keys, stack = w.depth, w.max_keys, w.stack
    P = batch.pos[sel].tolist()
    E = batch.end[sel].tolist()
    T = batch.typ[sel].tolist()
    L = batch.lvl[sel].tolist()
    text = batch.text
    leaf_parent = depth - 1
    for p, e, t, lv in zip(P, E, T, L):
        if t == T_EOBJ or t == T_EARR:
            fr = stack.pop()
            node = fr.node
            if node.forward is not None:
                node = _live(node)
            span = e - fr.start
            node.bytes += span
            if lv == leaf_parent:
                c = w.member_counts.pop(fr.start, None)
                n = 0 if c is None else (c[0] + 1 if c[1] else 0)
            else:
                n = fr.n
            node.members += n
            if n > node.max_items:
                node.max_items = n
            if span > node.max_value:
                node.max_value = span
            if lv == 0:
                w.root_bytes = span
            continue
        if lv == 0:
            node = w.root
            w.roots += 1
        else:
            parent = stack[-1]
            if parent.is_obj:
                if parent.expect_key:
                    if t != T_STR:
                        raise CorruptSnapshotError(f"payload is not valid JSON: expected a property name at byte {p}")
                    parent.key = text(p, e, KEY_CAP)
                    parent.key_start = p
                    parent.expect_key = False
                    continue
                pnode = parent.node
                if pnode.forward is not None:
                    pnode = _live(pnode)
                node = pnode.child(parent.key, max_keys)
                node.key_bytes += p - parent.key_start
                parent.expect_key = True
            else:
                pnode = parent.node
                if pnode.forward is not None:
                    pnode = _live(pnode)
                node = pnode.item_child()
            parent.n += 1
        node.count += 1
        node.types[t] += 1
        if t == T_OBJ or t == T_ARR:
            fr = _Frame(node, p, t == T_OBJ)
            stack.append(fr)
            node.containers += 1
            opens_by_level[lv].append((p, node))
            if lv == leaf_parent:
                parents.append(fr)
        else:
            span = e - p
            node.bytes += span
            if span > node.max_value:
                node.max_value = span
            if lv == 0:
                w.root_bytes = span


def _leaves(batch, w: _Walk, carry_parent, parents, np) -> list:
    """Attribute the values at level ``depth`` (members of the level depth-1 containers) with numpy.

    Returns [(open position, node)] of the level-depth containers opened here (for string paths).
    """
    depth = w.depth
    typ, lvl, pos, end = batch.typ, batch.lvl, batch.pos, batch.end
    li = np.flatnonzero((lvl == depth) & (typ != T_COMMA) & (typ != T_COLON))
    # item counts of the level-depth containers (their insides are level depth+1)
    dopens, dcommas, danything = _inner_counts(typ, lvl, pos, depth, np)
    if dcommas is not None and w.pending is not None:
        w.pending.commas += int(dcommas[0])
        w.pending.nonempty = w.pending.nonempty or bool(danything[0])
    if not li.size:
        return []
    lt, lp, le = typ[li], pos[li], end[li]
    is_close = (lt == T_EOBJ) | (lt == T_EARR)
    first = 0
    if w.pending is not None:
        if not is_close[0]:
            raise CorruptSnapshotError(f"payload is not valid JSON near byte {int(lp[0])}")
        pend = w.pending
        span = int(le[0]) - pend.start
        n = pend.commas + 1 if pend.nonempty else 0
        node = _live(pend.node)
        node.bytes += span
        node.max_value = max(node.max_value, span)
        node.members += n
        node.max_items = max(node.max_items, n)
        w.pending = None
        first = 1
    k = np.flatnonzero(~is_close)
    k = k[k >= first]
    if not k.size:
        return []
    # parents: -1 = the level depth-1 container open at the start of this batch
    ppos = pos[((typ == T_OBJ) | (typ == T_ARR)) & (lvl == depth - 1)]
    if ppos.size != len(parents):
        raise CorruptSnapshotError(f"payload is not valid JSON near byte {batch.base}")
    frames = [carry_parent] + parents
    owner = np.searchsorted(ppos, lp[k]) - 1
    if carry_parent is None and owner.size and owner[0] < 0:
        raise CorruptSnapshotError(f"payload is not valid JSON near byte {int(lp[k[0]])}")
    obj = np.array([f.is_obj if f is not None else False for f in frames], bool)[owner + 1]
    # in an object, non-close leaf tokens alternate key, value, key, value ...
    newg = np.empty(k.size, bool)
    newg[0] = True
    newg[1:] = owner[1:] != owner[:-1]
    idx = np.arange(k.size)
    rank = idx - np.maximum.accumulate(np.where(newg, idx, 0))
    carried_value = bool(carry_parent is not None and carry_parent.is_obj and not carry_parent.expect_key)
    offset = np.where(owner == -1, 1 if carried_value else 0, 0)
    iskey = obj & (((rank + offset) & 1) == 0)
    if (iskey & (lt[k] != T_STR)).any():
        bad = int(lp[k[np.argmax(iskey & (lt[k] != T_STR))]])
        raise CorruptSnapshotError(f"payload is not valid JSON: expected a property name at byte {bad}")
    isval = ~iskey
    vi = np.flatnonzero(isval)               # positions in k of the values
    vk = k[vi]                               # positions in li
    vt = lt[vk]
    vstart = lp[vk]
    vend = le[vk].copy()
    container = (vt == T_OBJ) | (vt == T_ARR)
    nxt = vk + 1
    has_close = nxt < li.size
    closes_ok = container & has_close
    vend[closes_ok] = le[nxt[closes_ok]]
    pending_idx = np.flatnonzero(container & ~has_close)  # at most one: the last leaf token
    # keys: the token before each object value in the same parent, or the parent's carried key
    in_obj = obj[vi]
    kpos_in_k = vi - 1
    carried_key = in_obj & (rank[vi] == 0)
    keyed = in_obj & ~carried_key
    key_li = np.where(keyed, k[np.maximum(kpos_in_k, 0)], -1)
    kstart = np.where(keyed, lp[np.maximum(key_li, 0)], vstart)
    if carried_key.any():
        kstart[carried_key] = carry_parent.key_start
    # group ids: (parent, key bytes); keys up to KEY_WIDTH bytes compared by numpy
    ownerv = owner[vi]
    keyid = np.full(vk.size, -1, np.int64)
    kl = np.flatnonzero(keyed)
    key_tokens = key_li[kl]
    klen = le[key_tokens] - lp[key_tokens] - 2
    in_buf = lp[key_tokens] >= batch.base
    fast = in_buf & (klen <= KEY_WIDTH)
    names: dict = {}
    if fast.any():
        a = np.frombuffer(batch.buf, np.uint8)
        starts = lp[key_tokens[fast]] - batch.base + 1
        cols = np.arange(KEY_WIDTH)
        gather = np.minimum(starts[:, None] + cols, a.size - 1)
        rows = a[gather]
        rows[cols[None, :] >= klen[fast][:, None]] = 0
        inv = _key_groups(np.ascontiguousarray(rows), klen[fast], np)
        keyid[kl[fast]] = inv.ravel()
        base_id = int(inv.max()) + 1 if inv.size else 0
    else:
        base_id = 0
    slow = kl[~fast]
    for j in slow.tolist():
        t = int(key_li[j])
        raw = batch.text(int(lp[t]), int(le[t]), 1 << 30)
        keyid[j] = names.setdefault(raw, base_id + len(names))
    carried = np.flatnonzero(carried_key)
    if carried.size:
        keyid[carried] = names.setdefault(carry_parent.key, base_id + len(names))
    live = [_live(f.node) if f is not None else None for f in frames]
    uids = np.array([n.uid if n is not None else -1 for n in live], np.int64)
    _, uid_rank = np.unique(uids, return_inverse=True)
    parent_group = uid_rank.ravel()[ownerv + 1]
    span = vend - vstart
    span[pending_idx] = 0
    combined = parent_group.ravel().astype(np.int64) * (base_id + len(names) + 2) + (keyid + 1)
    groups, rep, g = np.unique(combined, return_index=True, return_inverse=True)
    g = g.ravel()
    G = groups.size
    count = np.bincount(g, minlength=G)
    nbytes = np.bincount(g, weights=span, minlength=G)
    kbytes = np.bincount(g, weights=vstart - kstart, minlength=G)
    types = np.bincount(g * 16 + vt, minlength=G * 16).reshape(G, 16)
    maxspan = np.zeros(G, np.int64)
    np.maximum.at(maxspan, g, span)
    # members of the level-depth containers that opened and closed here
    items = np.zeros(vk.size, np.int64)
    if container.any():
        if dcommas is not None:
            cnt = (dcommas[1:] + danything[1:]).astype(np.int64)  # per container opened in this batch
            items_c = cnt[np.searchsorted(dopens, vstart[container])]
        else:
            items_c = np.zeros(int(container.sum()), np.int64)
        items[container] = items_c
    items[pending_idx] = 0
    isum = np.bincount(g, weights=items, minlength=G)
    imax = np.zeros(G, np.int64)
    if container.any():
        np.maximum.at(imax, g, items)
    # one Python step per group: find (or create) the node and add the group's numbers
    nodes = []
    for gi in range(G):
        j = int(rep[gi])
        parent_node = live[int(ownerv[j]) + 1]
        if not in_obj[j]:
            node = parent_node.item_child()
        else:
            if carried_key[j]:
                key = carry_parent.key
            else:
                t = int(key_li[j])
                key = batch.text(int(lp[t]), int(le[t]), 1 << 30)
            node = parent_node.child(key, w.max_keys)
        node.count += int(count[gi])
        node.bytes += int(nbytes[gi])
        node.key_bytes += int(kbytes[gi])
        row = types[gi]
        for code in (T_OBJ, T_ARR, T_STR, T_NUM, T_BOOL, T_NULL):
            if row[code]:
                node.types[code] += int(row[code])
        node.containers += int(row[T_OBJ] + row[T_ARR])
        node.members += int(isum[gi])
        node.max_items = max(node.max_items, int(imax[gi]))
        node.max_value = max(node.max_value, int(maxspan[gi]))
        nodes.append(node)
    if pending_idx.size:
        j = int(pending_idx[0])
        w.pending = _Pending(int(vstart[j]), nodes[int(g[j])])
        if dcommas is not None and dopens.size and dopens[-1] == vstart[j]:
            w.pending.commas = int(dcommas[-1])
            w.pending.nonempty = bool(danything[-1])
    # the parent still open at the end of the batch: is its next leaf token a key or a value?
    last_parent = w.stack[depth - 1] if len(w.stack) > depth - 1 else None
    if last_parent is not None and last_parent.is_obj:
        mine = np.flatnonzero(owner == (len(parents) - 1 if parents and parents[-1] is last_parent else -1))
        if mine.size and (last_parent is carry_parent or (parents and parents[-1] is last_parent)):
            j = int(mine[-1])
            if iskey[j]:
                t = int(k[j])
                last_parent.key = batch.text(int(lp[t]), int(le[t]), 1 << 30)
                last_parent.key_start = int(lp[t])
                last_parent.expect_key = False
            else:
                last_parent.expect_key = True
    out = []
    if container.any():
        ci = np.flatnonzero(container)
        for j in ci.tolist():
            out.append((int(vstart[j]), nodes[int(g[j])]))
    return out


def _enclosing(p: int, level: int, opens_by_level, start_nodes):
    """The node of the container at ``level`` that encloses position ``p``."""
    opens = opens_by_level[level]
    i = bisect.bisect_left(opens, (p,)) - 1
    if i >= 0:
        return opens[i][1]
    if level < len(start_nodes):
        return start_nodes[level]
    return None


def _strings(batch, cand, depth, top, strings, opens_by_level, start_nodes, ctx, pending):
    """Resolve the paths of this batch's biggest-string candidates.

    ``ctx``: (type, key text) of the previous batch's last two tokens; ``pending``: candidates
    that were the last token of their batch, waiting for the next token (a ':' makes them keys).
    """
    typ, lvl, pos, end = batch.typ, batch.lvl, batch.pos, batch.end
    n = typ.size

    def before(i, k):  # (type, text) of the token k places before token i
        j = i - k
        if j >= 0:
            t = int(typ[j])
            return t, (batch.text(int(pos[j]), int(end[j]), KEY_CAP) if t == T_STR else None)
        j = len(ctx) + j
        return ctx[j] if j >= 0 else (0, None)

    for i, length in zip(*cand):
        if len(strings) >= top and length <= strings[0][0]:
            continue
        p, e, lv = int(pos[i]), int(end[i]), int(lvl[i])
        raw = batch.text(p, e, PREFIX_CHARS * 6)
        prefix = _key_text(raw)[:PREFIX_CHARS] if raw else ""
        if lv == 0:
            _push(strings, top, (length, p, "$", "value", prefix))
            continue
        node = _enclosing(p, min(lv - 1, depth), opens_by_level, start_nodes)
        base_path = (_path(_live(node)) if node is not None else "$?") + ("…" if lv - 1 > depth else "")
        prv, _ = before(i, 1)
        prv2, key = before(i, 2)
        if prv == T_COLON and prv2 == T_STR and key is not None:
            seg = _segment(key)
        elif prv == T_COLON:
            seg = ".?"
        else:
            seg = None  # an array item, or a key: decided by the next token
        item = [length, p, base_path, seg, prefix]
        if i + 1 < n:
            _finish_candidate(strings, top, item, int(typ[i + 1]))
        else:
            pending.append(item)


def _finish_candidate(strings, top, item, nxt: int) -> None:
    length, p, base_path, seg, prefix = item
    if seg is not None:
        _push(strings, top, (length, p, base_path + seg, "value", prefix))
    elif nxt == T_COLON:
        _push(strings, top, (length, p, base_path, "key", prefix))
    else:
        _push(strings, top, (length, p, base_path + "[]", "value", prefix))


def _push(strings, top, item) -> None:
    if len(strings) < top:
        heapq.heappush(strings, item)
    elif item[0] > strings[0][0]:
        heapq.heappushpop(strings, item)


def _result(root: _Node, total: int, root_bytes: int, max_depth: int, depth: int, strings, top, tokens, seconds,
            source) -> Anatomy:
    rows: list[dict] = []
    arrays: list[dict] = []

    def visit(node: _Node):
        kids = list(node.children.values())
        if node.wild is not None:
            kids.append(node.wild)
        if node.item is not None:
            kids.append(node.item)
        child_bytes = sum(k.bytes + k.key_bytes for k in kids)
        is_container = node.types[T_OBJ] + node.types[T_ARR] > 0
        types = {TYPE_NAMES[t]: c for t, c in enumerate(node.types) if c and t in TYPE_NAMES}
        rows.append({
            "path": _path(node), "depth": node.level, "count": node.count, "bytes": node.bytes,
            "share": round(node.bytes / total, 6) if total else 0.0, "keyBytes": node.key_bytes,
            "overhead": (node.bytes - child_bytes) if (is_container and node.level < depth) else None,
            "types": types, "items": node.members if is_container else None, "containers": node.containers,
            "maxItems": node.max_items if is_container else None, "maxValueBytes": node.max_value,
            "keysFolded": node.keys_folded})
        if node.types[T_ARR]:
            arrays.append({"path": _path(node), "arrays": node.types[T_ARR], "items": node.members,
                           "maxItems": node.max_items, "bytes": node.bytes})
        for k in sorted(kids, key=lambda k: -(k.bytes + k.key_bytes)):
            visit(k)

    if root.count:
        visit(root)
    biggest = [{"path": path, "role": role, "length": length, "offset": off, "prefix": prefix}
               for length, off, path, role, prefix in sorted(strings, key=lambda s: (-s[0], s[1]))]
    arrays.sort(key=lambda a: (-a["maxItems"], a["path"]))
    return Anatomy(total_bytes=total, root_bytes=root_bytes, max_depth=max_depth, depth=depth, paths=rows,
                   biggest_strings=biggest, large_arrays=arrays[:top] if top else [], tokens=tokens,
                   seconds=seconds, source=source)


# --- snapshots -----------------------------------------------------------------------------------


def anatomy(state, blob, *, projector_name: str, projector_version: str | None = None,
            depth: int = DEFAULT_DEPTH, top: int = DEFAULT_TOP, max_keys: int = DEFAULT_MAX_KEYS,
            include_tombstoned: bool = True, progress: Callable[[int, int | None], object] | None = None,
            row=None) -> Anatomy:
    """Walk one snapshot's payload (the newest active version unless ``projector_version``/``row``)."""
    from ..pipeline.restore import RestoreOptions, find_row, open_payload_stream

    if row is None:
        row = find_row(state, projector_name, projector_version, include_tombstoned=include_tombstoned)
    with open_payload_stream(state, blob, row, RestoreOptions(include_tombstoned=True)) as (stream, info):
        total = info.get("declared_original_size") or None
        source = dict(info)
        source["where"] = f"{state.location} {row.where}"
        source["events_processed"] = row.events_processed
        result = walk(stream, depth=depth, top=top, max_keys=max_keys, total=total, progress=progress,
                      source=source)
    if total and total != result.total_bytes:
        result.source.setdefault("warnings", []).append(
            f"payload has {result.total_bytes} bytes, envelope declares originalSizeBytes {total}")
    return result


def benchmark_backends(path: str, depth: int = DEFAULT_DEPTH) -> dict:
    """Seconds to walk a JSON file with this scanner vs. the cheapest ijson-based alternatives.

    ``ijson_basic_parse_seconds``: merely iterating ``ijson.basic_parse`` events (fastest backend,
    yajl2_c when built) -- a floor, with no attribution at all. ``ijson_parse_count_seconds``:
    ``ijson.parse`` (prefixes computed in C) plus the least an ijson anatomy must do per event
    (count events and string lengths per prefix, down to ``depth``); it still cannot measure raw
    bytes (escapes, whitespace, number spelling), so its byte totals would be estimates.
    """
    import os

    out = {"bytes": os.path.getsize(path), "depth": depth}
    with open(path, "rb") as f:
        t = time.perf_counter()
        rep = walk(f, depth=depth)
        out["scanner_seconds"] = round(time.perf_counter() - t, 3)
    out["scanner_MBps"] = round(out["bytes"] / 1e6 / out["scanner_seconds"], 1)
    out["scanner_exact_total"] = rep.total_bytes == out["bytes"]
    try:
        import ijson
    except ImportError:
        out["ijson"] = "not installed"
        return out
    out["ijson_backend"] = ijson.backend
    with open(path, "rb") as f:
        t = time.perf_counter()
        for _ev in ijson.basic_parse(f, use_float=True):
            pass
        out["ijson_basic_parse_seconds"] = round(time.perf_counter() - t, 3)
    counts: dict = {}
    sizes: dict = {}
    with open(path, "rb") as f:
        t = time.perf_counter()
        for prefix, event, value in ijson.parse(f, use_float=True):
            if prefix.count(".") < depth:
                counts[prefix] = counts.get(prefix, 0) + 1
                if event == "string":
                    sizes[prefix] = sizes.get(prefix, 0) + len(value) + 2
        out["ijson_parse_count_seconds"] = round(time.perf_counter() - t, 3)
    return out
