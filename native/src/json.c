#define __USE_MINGW_ANSI_STDIO 1
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wipe(void *p, size_t n);

typedef struct { const char *p, *end; int depth; } reader;

static void skip_ws(reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static bool put_utf8(char *out, size_t *o, uint32_t cp) {
    if (cp < 0x80) out[(*o)++] = (char)cp;
    else if (cp < 0x800) { out[(*o)++] = (char)(0xC0 | cp >> 6); out[(*o)++] = (char)(0x80 | (cp & 63)); }
    else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | cp >> 12); out[(*o)++] = (char)(0x80 | (cp >> 6 & 63));
        out[(*o)++] = (char)(0x80 | (cp & 63));
    } else if (cp < 0x110000) {
        out[(*o)++] = (char)(0xF0 | cp >> 18); out[(*o)++] = (char)(0x80 | (cp >> 12 & 63));
        out[(*o)++] = (char)(0x80 | (cp >> 6 & 63)); out[(*o)++] = (char)(0x80 | (cp & 63));
    } else return false;
    return true;
}

static bool hex4(const char *p, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return false;
        *v = *v << 4 | (uint32_t)d;
    }
    return true;
}

/* Parses a string at r->p (on the opening quote); the decoded form is never longer than the text. */
static bool parse_string(reader *r, char **out, size_t *out_len) {
    const char *start = ++r->p;
    size_t cap = 0;
    while (r->p < r->end && *r->p != '"') {
        if (*r->p == '\\') r->p++;
        r->p++;
    }
    if (r->p >= r->end) return false;
    cap = (size_t)(r->p - start) + 1;
    char *s = malloc(cap);
    if (!s) return false;
    size_t o = 0;
    for (const char *q = start; q < r->p;) {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20) goto bad;
        if (c != '\\') { s[o++] = (char)c; q++; continue; }
        q++;
        switch (*q++) {
        case '"': s[o++] = '"'; break;
        case '\\': s[o++] = '\\'; break;
        case '/': s[o++] = '/'; break;
        case 'b': s[o++] = '\b'; break;
        case 'f': s[o++] = '\f'; break;
        case 'n': s[o++] = '\n'; break;
        case 'r': s[o++] = '\r'; break;
        case 't': s[o++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (r->p - q < 4 || !hex4(q, &cp)) goto bad;
            q += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && r->p - q >= 6 && q[0] == '\\' && q[1] == 'u' && hex4(q + 2, &lo) &&
                lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                q += 6;
            }
            if (cp >= 0xD800 && cp < 0xE000) goto bad; /* a lone surrogate is no text */
            if (!put_utf8(s, &o, cp)) goto bad;
            break;
        }
        default: goto bad;
        }
    }
    r->p++;
    s[o] = '\0';
    *out = s;
    *out_len = o;
    return true;
bad:
    wipe(s, cap);
    free(s);
    return false;
}

static json *parse_value(reader *r);

static bool push(json *j, json *item, char *key, size_t key_len) {
    if ((j->count & (j->count - 1)) == 0 || j->count == 0) { /* grow at powers of two */
        size_t cap = j->count ? j->count * 2 : 4;
        json **items = realloc(j->items, cap * sizeof *items);
        if (!items) return false;
        j->items = items;
        if (j->type == J_OBJECT) {
            char **keys = realloc(j->keys, cap * sizeof *keys);
            if (!keys) return false;
            j->keys = keys;
            size_t *lens = realloc(j->key_lens, cap * sizeof *lens);
            if (!lens) return false;
            j->key_lens = lens;
        }
    }
    j->items[j->count] = item;
    if (j->type == J_OBJECT) { j->keys[j->count] = key; j->key_lens[j->count] = key_len; }
    j->count++;
    return true;
}

static json *parse_container(reader *r, json_type type) {
    json *j = calloc(1, sizeof *j);
    if (!j || ++r->depth > JSON_MAX_DEPTH) { free(j); return NULL; }
    j->type = type;
    char close = type == J_ARRAY ? ']' : '}';
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) { r->p++; r->depth--; return j; }
    for (;;) {
        char *key = NULL;
        size_t key_len = 0;
        skip_ws(r);
        if (type == J_OBJECT) {
            if (r->p >= r->end || *r->p != '"' || !parse_string(r, &key, &key_len)) goto bad;
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') { free(key); goto bad; }
            r->p++;
        }
        json *item = parse_value(r);
        if (!item || !push(j, item, key, key_len)) { json_free(item); free(key); goto bad; }
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') { r->p++; continue; }
        if (r->p < r->end && *r->p == close) { r->p++; break; }
        goto bad;
    }
    r->depth--;
    return j;
bad:
    json_free(j);
    return NULL;
}

static json *parse_value(reader *r) {
    skip_ws(r);
    if (r->p >= r->end) return NULL;
    char c = *r->p;
    if (c == '{') return parse_container(r, J_OBJECT);
    if (c == '[') return parse_container(r, J_ARRAY);
    json *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    if (c == '"') {
        j->type = J_STRING;
        if (!parse_string(r, &j->str, &j->len)) { free(j); return NULL; }
        return j;
    }
    static const struct { const char *word; json_type type; } words[] = {
        {"null", J_NULL}, {"false", J_FALSE}, {"true", J_TRUE}};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i].word);
        if ((size_t)(r->end - r->p) >= n && memcmp(r->p, words[i].word, n) == 0) {
            r->p += n;
            j->type = words[i].type;
            return j;
        }
    }
    /* number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
    const char *s = r->p;
    if (r->p < r->end && *r->p == '-') r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') { free(j); return NULL; }
    if (*r->p == '0') r->p++;
    else while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') { free(j); return NULL; }
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') { free(j); return NULL; }
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    j->type = J_NUMBER;
    j->len = (size_t)(r->p - s);
    j->str = malloc(j->len + 1);
    if (!j->str) { free(j); return NULL; }
    memcpy(j->str, s, j->len);
    j->str[j->len] = '\0';
    return j;
}

json *json_parse(const char *text, size_t len) {
    reader r = {text, text + len, 0};
    json *j = parse_value(&r);
    skip_ws(&r);
    if (j && r.p != r.end) { json_free(j); return NULL; }
    return j;
}

void json_free(json *j) {
    if (!j) return;
    for (size_t i = 0; i < j->count; i++) {
        json_free(j->items[i]);
        if (j->keys) { wipe(j->keys[i], j->key_lens[i]); free(j->keys[i]); }
    }
    free(j->items);
    free(j->keys);
    free(j->key_lens);
    if (j->str) { wipe(j->str, j->len); free(j->str); }
    free(j);
}

const json *json_get(const json *obj, const char *key) {
    if (!obj || obj->type != J_OBJECT) return NULL;
    size_t n = strlen(key);
    const json *found = NULL;
    for (size_t i = 0; i < obj->count; i++) /* Python keeps the last of duplicate keys */
        if (obj->key_lens[i] == n && memcmp(obj->keys[i], key, n) == 0) found = obj->items[i];
    return found;
}

bool json_is_string(const json *j) { return j && j->type == J_STRING; }

bool json_int(const json *j, int64_t min, int64_t max, int64_t *out) {
    if (!j || j->type != J_NUMBER || strpbrk(j->str, ".eE") || j->len > 20) return false;
    char *end = NULL;
    long long v = strtoll(j->str, &end, 10);
    if (*end || v < min || v > max) return false;
    *out = v;
    return true;
}

static bool emit(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = (*cap ? *cap : 256);
        while (c < *len + n + 1) c *= 2;
        char *b = realloc(*buf, c);
        if (!b) return false;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

/* Decode one UTF-8 code point (the parser only produces valid UTF-8 from escapes; raw bytes may be anything:
 * an invalid byte is emitted as \u00XX-free replacement would differ from Python, so it fails). */
static bool next_cp(const unsigned char *s, size_t n, size_t *i, uint32_t *cp) {
    unsigned char c = s[*i];
    int extra = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
    if (extra < 0 || *i + (size_t)extra >= n + (extra ? 0 : 1)) return false;
    *cp = extra ? c & (0x3F >> extra) : c;
    for (int k = 1; k <= extra; k++) {
        if ((s[*i + k] & 0xC0) != 0x80) return false;
        *cp = *cp << 6 | (s[*i + k] & 0x3F);
    }
    *i += (size_t)extra + 1;
    return true;
}

static bool dump_string(const char *s, size_t n, char **buf, size_t *len, size_t *cap) {
    if (!emit(buf, len, cap, "\"", 1)) return false;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        char tmp[16];
        if (!next_cp((const unsigned char *)s, n, &i, &cp)) return false;
        const char *esc = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '\n' ? "\\n" : cp == '\r' ? "\\r"
                        : cp == '\t' ? "\\t" : cp == '\b' ? "\\b" : cp == '\f' ? "\\f" : NULL;
        if (esc) { if (!emit(buf, len, cap, esc, strlen(esc))) return false; continue; }
        if (cp >= 0x20 && cp < 0x7F) { tmp[0] = (char)cp; if (!emit(buf, len, cap, tmp, 1)) return false; continue; }
        if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
        } else snprintf(tmp, sizeof tmp, "\\u%04x", cp);
        if (!emit(buf, len, cap, tmp, strlen(tmp))) return false;
    }
    return emit(buf, len, cap, "\"", 1);
}

static int cmp_keys(const json *obj, size_t a, size_t b) {
    size_t n = obj->key_lens[a] < obj->key_lens[b] ? obj->key_lens[a] : obj->key_lens[b];
    int c = memcmp(obj->keys[a], obj->keys[b], n); /* UTF-8 byte order is code point order */
    return c ? c : (obj->key_lens[a] > obj->key_lens[b]) - (obj->key_lens[a] < obj->key_lens[b]);
}

bool json_dump_python_sorted(const json *j, char **buf, size_t *len, size_t *cap) {
    switch (j->type) {
    case J_NULL: return emit(buf, len, cap, "null", 4);
    case J_FALSE: return emit(buf, len, cap, "false", 5);
    case J_TRUE: return emit(buf, len, cap, "true", 4);
    case J_NUMBER: return !strpbrk(j->str, ".eE") && emit(buf, len, cap, j->str, j->len); /* ints only */
    case J_STRING: return dump_string(j->str, j->len, buf, len, cap);
    case J_ARRAY:
        if (!emit(buf, len, cap, "[", 1)) return false;
        for (size_t i = 0; i < j->count; i++)
            if ((i && !emit(buf, len, cap, ", ", 2)) || !json_dump_python_sorted(j->items[i], buf, len, cap)) return false;
        return emit(buf, len, cap, "]", 1);
    case J_OBJECT: {
        size_t *order = malloc((j->count ? j->count : 1) * sizeof *order);
        if (!order) return false;
        for (size_t i = 0; i < j->count; i++) order[i] = i;
        for (size_t i = 1; i < j->count; i++) /* insertion sort: objects here have a handful of keys */
            for (size_t k = i; k > 0 && cmp_keys(j, order[k - 1], order[k]) > 0; k--) {
                size_t t = order[k]; order[k] = order[k - 1]; order[k - 1] = t;
            }
        bool ok = emit(buf, len, cap, "{", 1);
        for (size_t i = 0; ok && i < j->count; i++) {
            size_t k = order[i];
            if (i > 0 && cmp_keys(j, order[i - 1], k) == 0) { ok = false; break; } /* duplicates: Python keeps one */
            ok = (!i || emit(buf, len, cap, ", ", 2)) && dump_string(j->keys[k], j->key_lens[k], buf, len, cap) &&
                 emit(buf, len, cap, ": ", 2) && json_dump_python_sorted(j->items[k], buf, len, cap);
        }
        free(order);
        return ok && emit(buf, len, cap, "}", 1);
    }
    }
    return false;
}
