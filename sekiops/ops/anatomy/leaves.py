"""The values at the deepest reported level, attributed with numpy: key/value alternation per
parent, value spans, member keys grouped by a 64-bit hash of their raw bytes (checked against the
bytes), then one Python step per distinct (parent path, key)."""

from __future__ import annotations

from ...errors import CorruptSnapshotError
from .tokenizer import T_ARR, T_BOOL, T_COLON, T_COMMA, T_EARR, T_EOBJ, T_NULL, T_NUM, T_OBJ, T_STR
from .tree import live
from .walkstate import KEY_WIDTH, Pending, WalkState


def key_groups(rows, lengths, np):
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


def inner_counts(typ, lvl, pos, level: int, np):
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


def leaves(batch, w: WalkState, carry_parent, parents, np) -> list:
    """Attribute the values at level ``depth`` (members of the level depth-1 containers) with numpy.

    Returns [(open position, node)] of the level-depth containers opened here (for string paths).
    """
    depth = w.depth
    typ, lvl, pos, end = batch.typ, batch.lvl, batch.pos, batch.end
    li = np.flatnonzero((lvl == depth) & (typ != T_COMMA) & (typ != T_COLON))
    # item counts of the level-depth containers (their insides are level depth+1)
    dopens, dcommas, danything = inner_counts(typ, lvl, pos, depth, np)
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
        node = live(pend.node)
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
    a = np.frombuffer(batch.buf, np.uint8)
    # keys in this chunk, short enough, with KEY_WIDTH bytes after their quote: compared by numpy
    at = lp[key_tokens] - batch.base + 1
    fast = (at >= 1) & (klen <= KEY_WIDTH) & (at + KEY_WIDTH <= a.size)
    names: dict = {}
    if fast.any():
        starts = at[fast]
        cols = np.arange(KEY_WIDTH)
        # KEY_WIDTH bytes a key from a sliding view of the chunk: no int64 index grid (8x the rows)
        rows = np.lib.stride_tricks.sliding_window_view(a, KEY_WIDTH)[starts]
        rows[cols[None, :] >= klen[fast][:, None]] = 0
        inv = key_groups(np.ascontiguousarray(rows), klen[fast], np)
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
    live_nodes = [live(f.node) if f is not None else None for f in frames]
    uids = np.array([n.uid if n is not None else -1 for n in live_nodes], np.int64)
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
        parent_node = live_nodes[int(ownerv[j]) + 1]
        assert parent_node is not None, "a value's owner is an open container"
        if not in_obj[j]:
            node = parent_node.item_child()
        else:
            if carried_key[j]:
                key = carry_parent.key
            else:
                t = int(key_li[j])
                key = batch.text(int(lp[t]), int(le[t]), 1 << 30)
            node = parent_node.child(key, w.max_keys, w.budget)
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
        w.pending = Pending(int(vstart[j]), nodes[int(g[j])])
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


