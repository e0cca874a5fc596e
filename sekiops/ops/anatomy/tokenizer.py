"""A chunked, vectorised JSON tokenizer with absolute stream offsets (numpy).

Per chunk: real quotes (an even run of backslashes before them), hence string spans; structural
characters ``{}[],:`` outside strings and literal runs (numbers, true/false/null); nesting depth
by a cumulative sum. A :class:`Batch` holds the chunk's tokens (start, end, type, level); strings,
literals and escapes that span chunks are carried to the next one. Memory per chunk is a small
multiple of the chunk size: temporaries are dropped as soon as they are used.
"""

from __future__ import annotations

from ...errors import CorruptSnapshotError

#: Bytes tokenised at a time. The walk's memory is a small multiple of it (~16 bytes a byte at the
#: peak): 512 KiB adds ~8 MB to the process and walks as fast as 4 MiB did (the per-chunk Python work
#: is amortised); 4 MiB chunks cost ~70 MB (measured on a 150 MB state, fresh processes' VmHWM).
CHUNK = 512 * 1024
DEFAULT_DEPTH = 3
DEFAULT_TOP = 20
DEFAULT_MAX_KEYS = 200
#: Paths (tree nodes) at most; beyond, new keys fold into '*' (a walk's memory must not follow the data).
DEFAULT_MAX_PATHS = 5000
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


class Batch:
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

    def feed(self, buf: bytes) -> Batch:
        import numpy as np

        typlut, delta_lut = _luts()
        a = np.frombuffer(buf, np.uint8)
        n = a.size
        base = self.base
        s0 = self.in_str
        if not n:
            return Batch(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8),
                          np.zeros(0, np.int32), buf, base, b"")

        # 1. real quotes: not preceded by an odd run of backslashes (which may begin in an
        #    earlier chunk: bs_carry). Per-byte arrays are dropped as soon as they are used: they, not
        #    the tokens, set the walk's peak memory (a few bytes per input byte).
        isq = a == 34
        backslash = a == 92
        bpos = np.flatnonzero(backslash) if backslash.any() else None
        del backslash
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
        any_quote = bool(isq.any())

        # 2. inside-string parity: 1 from an opening quote (included) to its closing quote (excluded)
        ins = _prefix_parity(isq, np)
        if s0:
            np.logical_not(ins, out=ins)
        in_str_end = bool(ins[-1])
        structural = a == 44
        structural |= a == 58
        folded = a | 0x20  # '[' -> '{', ']' -> '}'
        structural |= folded == 123
        structural |= folded == 125
        del folded
        lit = a > 32
        lit &= ~ins
        lit &= ~structural
        lit &= ~isq

        # 3. token starts: structural characters and opening quotes outside strings, literal run starts
        tokmask = structural
        tokmask &= ~ins
        del structural
        tokmask[1:] |= lit[1:] & ~lit[:-1]
        if lit[0] and not self.in_lit:
            tokmask[0] = True
        tokmask |= isq & ins
        rel = np.flatnonzero(tokmask)
        del tokmask
        typ = typlut[a[rel]]
        isq &= ~ins
        del ins
        closes = np.flatnonzero(isq)  # closing quotes (outside strings once they are read)
        del isq
        lit_first, lit_last = bool(lit[0]), bool(lit[-1])
        lit[:-1] &= ~lit[1:]
        lend = np.flatnonzero(lit)  # last byte of each literal run
        del lit

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
            if lit_first:
                e0 = int(lend[0])
                lend = lend[1:]
                if e0 == n - 1:
                    lit_goes_on = True  # the same literal spans this whole chunk
                else:
                    carried = (self.lit_start, base + e0 + 1, self.lit_kind)
            else:
                carried = (self.lit_start, base, self.lit_kind)
        # an unfinished string or literal at the end waits for the next chunk
        new_str = in_str_end and (not s0 or any_quote)
        new_lit = (not in_str_end) and lit_last and not lit_goes_on
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
                assert tail is not None  # set above for a string that goes on
                self.str_start = base + tail
                self.str_text = buf[tail + 1:tail + 1 + KEY_CAP]
            elif len(self.str_text) < KEY_CAP:
                self.str_text += buf[:KEY_CAP - len(self.str_text)]
            if a[-1] == 92:
                assert bpos is not None  # the last byte is a backslash
                runkey = bpos - np.arange(bpos.size)
                run_start = int(np.searchsorted(runkey, runkey[-1], "left"))
                run_len = bpos.size - run_start
                if bpos[run_start] == 0 and run_len == n and s0 and not new_str:
                    run_len += self.bs_carry
                self.bs_carry = run_len
            else:
                self.bs_carry = 0
        else:
            self.str_text = b""
            self.bs_carry = 0
        self.in_str = in_str_end
        if new_lit:
            assert tail is not None  # set above for a literal that goes on
            self.lit_start = base + tail
            self.lit_kind = int(typlut[a[tail]])
        self.in_lit = lit_goes_on or new_lit
        self.base = base + n
        return Batch(pos, end, typ, lvl, buf, base, carry_text)

    def finish(self) -> Batch | None:
        import numpy as np

        if self.in_str:
            raise CorruptSnapshotError(f"payload is not valid JSON: unterminated string from byte {self.str_start}")
        batch = None
        if self.in_lit:
            batch = Batch(np.array([self.lit_start], np.int64), np.array([self.base], np.int64),
                           np.array([self.lit_kind], np.uint8), np.array([self.depth], np.int64), b"",
                           self.base, b"")
            self.in_lit = False
        if self.depth != 0:
            raise CorruptSnapshotError(f"payload is not valid JSON: {self.depth} bracket(s) left open at the end "
                                       f"(byte {self.base})")
        return batch


