"""The biggest strings: candidates by length per chunk, their paths resolved from the open containers."""

from __future__ import annotations

import bisect
import heapq

from .tokenizer import KEY_CAP, PREFIX_CHARS, T_COLON, T_STR
from .tree import key_text, live, path_of, segment


def enclosing(p: int, level: int, opens_by_level, start_nodes):
    """The node of the container at ``level`` that encloses position ``p``."""
    opens = opens_by_level[level]
    i = bisect.bisect_left(opens, (p,)) - 1
    if i >= 0:
        return opens[i][1]
    if level < len(start_nodes):
        return start_nodes[level]
    return None


def resolve_strings(batch, cand, depth, top, strings, opens_by_level, start_nodes, ctx, pending):
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

    for i, length in zip(*cand, strict=True):
        if len(strings) >= top and length <= strings[0][0]:
            continue
        p, e, lv = int(pos[i]), int(end[i]), int(lvl[i])
        raw = batch.text(p, e, PREFIX_CHARS * 6)
        prefix = key_text(raw)[:PREFIX_CHARS] if raw else ""
        if lv == 0:
            push(strings, top, (length, p, "$", "value", prefix))
            continue
        node = enclosing(p, min(lv - 1, depth), opens_by_level, start_nodes)
        base_path = (path_of(live(node)) if node is not None else "$?") + ("…" if lv - 1 > depth else "")
        prv, _ = before(i, 1)
        prv2, key = before(i, 2)
        if prv == T_COLON and prv2 == T_STR and key is not None:
            seg = segment(key)
        elif prv == T_COLON:
            seg = ".?"
        else:
            seg = None  # an array item, or a key: decided by the next token
        item = [length, p, base_path, seg, prefix]
        if i + 1 < n:
            finish_candidate(strings, top, item, int(typ[i + 1]))
        else:
            pending.append(item)


def finish_candidate(strings, top, item, nxt: int) -> None:
    length, p, base_path, seg, prefix = item
    if seg is not None:
        push(strings, top, (length, p, base_path + seg, "value", prefix))
    elif nxt == T_COLON:
        push(strings, top, (length, p, base_path, "key", prefix))
    else:
        push(strings, top, (length, p, base_path + "[]", "value", prefix))


def push(strings, top, item) -> None:
    if len(strings) < top:
        heapq.heappush(strings, item)
    elif item[0] > strings[0][0]:
        heapq.heappushpop(strings, item)


