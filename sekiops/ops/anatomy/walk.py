"""The walk: tokens above the deepest reported level in Python, the leaves with numpy (:mod:`.leaves`).

A small state machine attributes raw byte spans to JSON paths for levels < ``depth``; the values
at level ``depth`` (usually the bulk: every member of every aggregate) are attributed with numpy.
Everything deeper (max depth, string lengths, item counts of the deepest containers) is computed
on the token arrays. Memory is bounded by the chunk size and the path budget, not the payload.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import BinaryIO

from ...errors import CorruptSnapshotError, UsageError
from ...streams import iter_chunks
from .leaves import inner_counts, leaves
from .report import Anatomy, build_report
from .strings import finish_candidate, resolve_strings
from .tokenizer import (
    CHUNK,
    DEFAULT_DEPTH,
    DEFAULT_MAX_KEYS,
    DEFAULT_MAX_PATHS,
    DEFAULT_TOP,
    KEY_CAP,
    T_ARR,
    T_COLON,
    T_COMMA,
    T_EARR,
    T_EOBJ,
    T_OBJ,
    T_STR,
    Batch,
    Tokenizer,
)
from .tree import live
from .walkstate import Frame, WalkState


def check_limits(depth: int, top: int, max_keys: int, max_paths: int) -> None:
    """Refuse limits that make no walk (before anything is opened or read)."""
    if depth < 1:
        raise UsageError(f"anatomy --depth must be at least 1, not {depth}")
    if top < 0:
        raise UsageError(f"anatomy --top must not be negative, not {top}")
    if max_keys < 1 or max_paths < 1:
        raise UsageError(f"anatomy --max-keys and --max-paths must be at least 1, not {max_keys} / {max_paths}")


def walk(stream: BinaryIO, *, depth: int = DEFAULT_DEPTH, top: int = DEFAULT_TOP, max_keys: int = DEFAULT_MAX_KEYS,
         max_paths: int = DEFAULT_MAX_PATHS, total: int | None = None,
         progress: Callable[[int, int | None], object] | None = None, chunk_size: int = CHUNK,
         source: dict | None = None, show_values: bool = False) -> Anatomy:
    """Walk the JSON read from ``stream``; see the package docstring.

    ``depth``: deepest path level reported (``$`` is 0, ``$.a`` 1, ``$.a[]`` 2 ...); ``top``: how
    many biggest strings and arrays; ``max_keys``: distinct keys of one object before they fold
    into ``*``; ``max_paths``: paths in all before new keys fold; ``total``: expected byte count
    (for ``progress(done, total)``, called after every chunk); ``show_values``: report the first
    characters of the biggest string values (stored data: off by default).
    """
    import numpy as np

    check_limits(depth, top, max_keys, max_paths)
    t0 = time.perf_counter()
    tok = Tokenizer()
    w = WalkState(depth, top, max_keys, max_paths)
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
        finish_candidate(w.strings, top, item, 0)
    if w.roots == 0 and done:
        raise CorruptSnapshotError("payload holds no JSON value")
    if w.roots > 1:
        raise CorruptSnapshotError("payload is not valid JSON: more than one top-level value")
    seconds = time.perf_counter() - t0
    return build_report(w.root, done, w.root_bytes, tok.max_depth, depth, w.strings, top, w.tokens, seconds,
                        source or {}, show_values=show_values)


def _process(batch: Batch, w: WalkState, np) -> None:
    typ, lvl, pos, end = batch.typ, batch.lvl, batch.pos, batch.end
    if not typ.size:
        return
    w.tokens += int(typ.size)
    depth, top = w.depth, w.top
    if w.waiting:
        nxt = int(typ[0])
        for item in w.waiting:
            finish_candidate(w.strings, top, item, nxt)
        w.waiting.clear()
    stack_at_start = list(w.stack)
    start_nodes = [f.node for f in w.stack] + ([w.pending.node] if w.pending is not None else [])

    # members of the containers at level depth-1 (their members are the leaves, never in Python)
    _, commas, anything = inner_counts(typ, lvl, pos, depth - 1, np)
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
    parents: list[Frame] = []  # frames opened at level depth-1 in this batch, in order
    sel = np.flatnonzero((lvl < depth) & (typ != T_COMMA) & (typ != T_COLON))
    try:
        _shallow(batch, w, sel, opens_by_level, parents, np)
    except (IndexError, AttributeError, TypeError) as exc:
        raise CorruptSnapshotError(f"payload is not valid JSON near byte {batch.base} ({type(exc).__name__})") from None
    carry_parent = stack_at_start[depth - 1] if len(stack_at_start) > depth - 1 else None

    # the leaves (level == depth), vectorised
    leaf_opens = leaves(batch, w, carry_parent, parents, np)
    opens_by_level[depth] = leaf_opens

    if cand is not None:
        resolve_strings(batch, cand, depth, top, w.strings, opens_by_level, start_nodes, w.ctx, w.waiting)
    last = []
    for j in range(max(0, typ.size - 2), typ.size):
        t = int(typ[j])
        last.append((t, batch.text(int(pos[j]), int(end[j]), KEY_CAP) if t == T_STR else None))
    w.ctx[:] = (w.ctx + last)[-2:]


def _shallow(batch, w: WalkState, sel, opens_by_level, parents, np) -> None:
    depth, max_keys, stack = w.depth, w.max_keys, w.stack
    P = batch.pos[sel].tolist()
    E = batch.end[sel].tolist()
    T = batch.typ[sel].tolist()
    L = batch.lvl[sel].tolist()
    text = batch.text
    leaf_parent = depth - 1
    for p, e, t, lv in zip(P, E, T, L, strict=True):
        if t == T_EOBJ or t == T_EARR:
            fr = stack.pop()
            node = fr.node
            if node.forward is not None:
                node = live(node)
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
                    pnode = live(pnode)
                node = pnode.child(parent.key, max_keys, w.budget)
                node.key_bytes += p - parent.key_start
                parent.expect_key = True
            else:
                pnode = parent.node
                if pnode.forward is not None:
                    pnode = live(pnode)
                node = pnode.item_child()
            parent.n += 1
        node.count += 1
        node.types[t] += 1
        if t == T_OBJ or t == T_ARR:
            fr = Frame(node, p, t == T_OBJ)
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


