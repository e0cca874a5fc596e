/*
 * Is a byte stream exactly one JSON text (RFC 8259)? A validating state machine that builds
 * nothing, fed in chunks of any size (tokens, escapes and UTF-8 sequences may be split anywhere),
 * in constant memory (one bit per nesting level, at most JV_MAX_DEPTH levels).
 *
 * Loaded by sekiops/pipeline/jsoncheck.py through ctypes (no Python API here: ctypes releases
 * the GIL around every call). It accepts exactly what Python's json.loads(data.decode("utf-8"))
 * accepts, minus NaN/Infinity: RFC 8259 grammar, whitespace = space, tab, LF, CR; strings with
 * no control characters, the JSON escapes, \uXXXX with any four hex digits (lone surrogate
 * escapes included, as Python and libyajl accept them); strict UTF-8 (Unicode Table 3-7: no
 * overlong forms, no encoded surrogates, nothing above U+10FFFF). That is stricter than
 * libyajl, which lets overlong and surrogate encodings through. tests/test_jsoncheck.py holds
 * it to Python's json and libyajl on a corpus and on random documents, split at every offset.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define JV_MAX_DEPTH (1u << 20)

/* grammar states */
enum { G_VALUE, G_VALUE_OR_CLOSE, G_KEY_OR_CLOSE, G_KEY, G_COLON, G_AFTER, G_DONE };
/* lexical states (inside a token) */
enum { L_NONE, L_STR, L_ESC, L_HEX, L_UTF8, L_NUM, L_LIT };
/* number states */
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_EXP, N_EXP_SIGN, N_EXPD };

/* error codes (jsoncheck.py words them) */
enum {
    JV_OK = 0, JV_E_VALUE = 1, JV_E_KEY = 2, JV_E_COLON = 3, JV_E_AFTER_OBJECT = 4, JV_E_AFTER_ARRAY = 5,
    JV_E_TRAILING = 6, JV_E_ESCAPE = 7, JV_E_HEX = 8, JV_E_CONTROL = 9, JV_E_UTF8 = 10, JV_E_NUMBER = 11,
    JV_E_LITERAL = 12, JV_E_DEPTH = 13, JV_E_TRUNCATED = 14, JV_E_VALUE_OR_CLOSE = 15, JV_E_KEY_OR_CLOSE = 16
};

typedef struct {
    uint64_t base;      /* stream offset of the current chunk's first byte */
    uint64_t err_at;
    int err;
    int g, lex, num, key, hex_left, utf8_left;
    unsigned char utf8_lo, utf8_hi; /* allowed range of the next continuation byte */
    const char *lit; int lit_left;
    uint32_t depth;
    unsigned char stack[JV_MAX_DEPTH / 8]; /* bit set: object, clear: array */
} jv_state;

/* 1: a byte a string can hold as is (printable ASCII but '"' and '\\') */
static unsigned char PLAIN[256];
static unsigned char HEX[256];

/* filled once when the library is loaded, before any thread can call jv_feed */
__attribute__((constructor)) static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        PLAIN[c] = (c >= 0x20 && c < 0x80 && c != '"' && c != '\\');
        HEX[c] = ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
    }
}

jv_state *jv_new(void) {
    jv_state *s = (jv_state *)calloc(1, sizeof(jv_state));
    if (s) s->g = G_VALUE;
    return s;
}

void jv_free(jv_state *s) { free(s); }

int jv_error(const jv_state *s, uint64_t *at) {
    if (at) *at = s->err_at;
    return s->err;
}

uint32_t jv_max_depth(void) { return JV_MAX_DEPTH; }


static inline int is_ws(unsigned char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* Start of a UTF-8 sequence (lead byte >= 0x80): how many continuation bytes, and the range of
   the first one. Returns 0 for a byte that cannot start a sequence. */
static inline int utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80; *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) return 1;
    if (c == 0xE0) { *lo = 0xA0; return 2; }
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return 2;
    if (c == 0xED) { *hi = 0x9F; return 2; }
    if (c == 0xF0) { *lo = 0x90; return 3; }
    if (c >= 0xF1 && c <= 0xF3) return 3;
    if (c == 0xF4) { *hi = 0x8F; return 3; }
    return 0;
}

/* Skip plain string bytes from p; returns the first byte that is not one (or end). */
static inline const unsigned char *scan_plain(const unsigned char *p, const unsigned char *end) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        /* signed compare: bytes >= 0x80 are negative, so they count as "below 0x20" too */
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                 _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(m);
        if (mask) return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && PLAIN[*p]) p++;
    return p;
}

/* Fail at p: record the error and where (the state's fields are saved by the caller's macro). */
#define FAIL(code) do { s->err = (code); s->err_at = s->base + (uint64_t)(p - buf); SAVE(); return -1; } while (0)
#define SAVE() do { s->g = g; s->lex = lex; s->num = num; s->key = key; s->depth = depth; } while (0)
#define VALUE_DONE() (g = depth ? G_AFTER : G_DONE)
#define TOP_IS_OBJECT() ((s->stack[(depth - 1) >> 3] >> ((depth - 1) & 7)) & 1)

int jv_feed(jv_state *s, const unsigned char *buf, size_t len) {
    /* the state lives in locals while a chunk is scanned (writes to the bit stack could alias the
       struct's fields and force reloads), saved back on the way out */
    const unsigned char *p = buf, *const end = buf + len;
    int g = s->g, lex = s->lex, num = s->num, key = s->key;
    uint32_t depth = s->depth;
    unsigned char c;
    if (s->err) return -1;
    switch (lex) {
    case L_STR: goto str;
    case L_ESC: goto esc;
    case L_HEX: goto hex;
    case L_UTF8: goto utf8;
    case L_NUM: goto number;
    case L_LIT: goto lit;
    default: break;
    }
after_value:
    if (g == G_AFTER && p + 1 < end && *p == ',') {
        if (TOP_IS_OBJECT()) {
            if (p[1] == '"') { p += 2; key = 1; goto str; }
            p++;
            g = G_KEY;
        } else {
            p++;
            g = G_VALUE;
        }
    }
token:
    while (p < end && is_ws(*p)) p++;
    if (p == end) goto out;
    c = *p;
    switch (g) {
    case G_VALUE_OR_CLOSE:
        if (c == ']') { depth--; p++; VALUE_DONE(); goto after_value; }
        /* fall through */
    case G_VALUE:
        switch (c) {
        case '"': p++; key = 0; goto str;
        case '{':
        case '[':
            if (depth >= JV_MAX_DEPTH) FAIL(JV_E_DEPTH);
            if (c == '{') s->stack[depth >> 3] |= (unsigned char)(1u << (depth & 7));
            else s->stack[depth >> 3] &= (unsigned char)~(1u << (depth & 7));
            depth++;
            g = c == '{' ? G_KEY_OR_CLOSE : G_VALUE_OR_CLOSE;
            p++;
            goto token;
        case '-': num = N_MINUS; p++; goto number;
        case '0': num = N_ZERO; p++; goto number;
        case 't': s->lit = "rue"; s->lit_left = 3; p++; goto lit;
        case 'f': s->lit = "alse"; s->lit_left = 4; p++; goto lit;
        case 'n': s->lit = "ull"; s->lit_left = 3; p++; goto lit;
        default:
            if (c >= '1' && c <= '9') { num = N_INT; p++; goto number; }
            FAIL(g == G_VALUE_OR_CLOSE ? JV_E_VALUE_OR_CLOSE : JV_E_VALUE);
        }
    case G_KEY_OR_CLOSE:
        if (c == '}') { depth--; p++; VALUE_DONE(); goto after_value; }
        if (c == '"') { p++; key = 1; goto str; }
        FAIL(JV_E_KEY_OR_CLOSE);
    case G_KEY:
        if (c == '"') { p++; key = 1; goto str; }
        FAIL(JV_E_KEY);
    case G_COLON:
        if (c == ':') { p++; g = G_VALUE; goto token; }
        FAIL(JV_E_COLON);
    case G_AFTER:
        if (TOP_IS_OBJECT()) {
            if (c == ',') { p++; g = G_KEY; goto token; }
            if (c == '}') { depth--; p++; VALUE_DONE(); goto after_value; }
            FAIL(JV_E_AFTER_OBJECT);
        }
        if (c == ',') { p++; g = G_VALUE; goto token; }
        if (c == ']') { depth--; p++; VALUE_DONE(); goto after_value; }
        FAIL(JV_E_AFTER_ARRAY);
    default: /* G_DONE */
        FAIL(JV_E_TRAILING);
    }

str:
    lex = L_STR;
    p = scan_plain(p, end);
    if (p == end) goto out;
    c = *p;
    if (c == '"') {
        p++;
        lex = L_NONE;
        if (!key) { VALUE_DONE(); goto after_value; }
        /* a key: the colon and the value's first byte usually follow at once */
        if (p + 1 < end && *p == ':') {
            p++;
            g = G_VALUE;
            if (*p == '"') { p++; key = 0; goto str; }
            goto token;
        }
        g = G_COLON;
        goto token;
    }
    if (c == '\\') { p++; goto esc; }
    if (c < 0x20) FAIL(JV_E_CONTROL);
    s->utf8_left = utf8_lead(c, &s->utf8_lo, &s->utf8_hi);
    if (!s->utf8_left) FAIL(JV_E_UTF8);
    p++;
utf8:
    lex = L_UTF8;
    while (s->utf8_left) {
        if (p == end) goto out;
        c = *p;
        if (c < s->utf8_lo || c > s->utf8_hi) FAIL(JV_E_UTF8);
        p++;
        s->utf8_lo = 0x80; s->utf8_hi = 0xBF;
        s->utf8_left--;
    }
    goto str;

esc:
    lex = L_ESC;
    if (p == end) goto out;
    c = *p;
    if (c == 'u') { p++; s->hex_left = 4; goto hex; }
    if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
        p++;
        goto str;
    }
    FAIL(JV_E_ESCAPE);

hex:
    lex = L_HEX;
    while (s->hex_left) {
        if (p == end) goto out;
        if (!HEX[*p]) FAIL(JV_E_HEX);
        p++;
        s->hex_left--;
    }
    goto str;

lit:
    lex = L_LIT;
    while (s->lit_left) {
        if (p == end) goto out;
        if (*p != (unsigned char)*s->lit) FAIL(JV_E_LITERAL);
        p++;
        s->lit++;
        s->lit_left--;
    }
    lex = L_NONE;
    VALUE_DONE();
    goto after_value; /* "truex": the next token's check refuses the x */

number:
    lex = L_NUM;
    for (;;) {
        if (p == end) goto out;
        c = *p;
        switch (num) {
        case N_MINUS:
            if (c == '0') num = N_ZERO;
            else if (c >= '1' && c <= '9') num = N_INT;
            else FAIL(JV_E_NUMBER);
            p++;
            continue;
        case N_INT:
            while (p < end && *p >= '0' && *p <= '9') p++;
            if (p == end) goto out;
            c = *p;
            /* fall through */
        case N_ZERO:
            if (c == '.') { num = N_DOT; p++; continue; }
            if (c == 'e' || c == 'E') { num = N_EXP; p++; continue; }
            if (c >= '0' && c <= '9') FAIL(JV_E_NUMBER); /* 01 */
            goto number_done;
        case N_DOT:
            if (c >= '0' && c <= '9') { num = N_FRAC; p++; continue; }
            FAIL(JV_E_NUMBER);
        case N_FRAC:
            while (p < end && *p >= '0' && *p <= '9') p++;
            if (p == end) goto out;
            c = *p;
            if (c == 'e' || c == 'E') { num = N_EXP; p++; continue; }
            goto number_done;
        case N_EXP:
            if (c == '+' || c == '-') { num = N_EXP_SIGN; p++; continue; }
            /* fall through */
        case N_EXP_SIGN:
            if (c >= '0' && c <= '9') { num = N_EXPD; p++; continue; }
            FAIL(JV_E_NUMBER);
        default: /* N_EXPD */
            while (p < end && *p >= '0' && *p <= '9') p++;
            if (p == end) goto out;
            goto number_done;
        }
    }
number_done:
    /* p is at the byte after the number (not consumed): a delimiter, or an error there */
    lex = L_NONE;
    VALUE_DONE();
    c = *p;
    if (!(is_ws(c) || c == ',' || c == ']' || c == '}')) FAIL(g == G_DONE ? JV_E_TRAILING : JV_E_NUMBER);
    goto after_value;

out:
    SAVE();
    s->base += len;
    return 0;
}

/* The end of the input: complete only after one whole value. */
int jv_finish(jv_state *s) {
    if (s->err) return -1;
    if (s->lex == L_NUM && (s->num == N_ZERO || s->num == N_INT || s->num == N_FRAC || s->num == N_EXPD)) {
        s->lex = L_NONE;
        s->g = s->depth ? G_AFTER : G_DONE;
    }
    if (s->lex != L_NONE || s->g != G_DONE) {
        s->err = JV_E_TRUNCATED;
        s->err_at = s->base;
        return -1;
    }
    return 0;
}
