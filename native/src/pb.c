#include "pb.h"

#include <stdlib.h>
#include <string.h>

void wipe(void *p, size_t n);

static bool read_varint(pb_reader *r, uint64_t *v) {
    uint64_t out = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return false;
        uint8_t b = *r->p++;
        out |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) { *v = out; return true; }
    }
    return false;
}

bool pb_next(pb_reader *r, pb_field *f) {
    if (r->bad || r->p >= r->end) return false;
    const uint8_t *start = r->p;
    uint64_t tag;
    if (!read_varint(r, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF) goto bad;
    f->number = (uint32_t)(tag >> 3);
    f->wire = (int)(tag & 7);
    f->varint = 0;
    f->data.p = NULL;
    f->data.len = 0;
    switch (f->wire) {
    case PB_VARINT:
        if (!read_varint(r, &f->varint)) goto bad;
        break;
    case PB_I64:
        if (r->end - r->p < 8) goto bad;
        for (int i = 7; i >= 0; i--) f->varint = f->varint << 8 | r->p[i];
        r->p += 8;
        break;
    case PB_I32:
        if (r->end - r->p < 4) goto bad;
        for (int i = 3; i >= 0; i--) f->varint = f->varint << 8 | r->p[i];
        r->p += 4;
        break;
    case PB_LEN: {
        uint64_t n;
        if (!read_varint(r, &n) || n > (uint64_t)(r->end - r->p)) goto bad;
        f->data.p = r->p;
        f->data.len = (size_t)n;
        r->p += n;
        break;
    }
    default: goto bad; /* groups are not used by ONNX */
    }
    f->whole.p = start;
    f->whole.len = (size_t)(r->p - start);
    return true;
bad:
    r->bad = true;
    return false;
}

bool pb_span_eq(pb_span s, const char *text) {
    size_t n = strlen(text);
    return s.len == n && memcmp(s.p, text, n) == 0;
}

void pb_put(pb_writer *w, const void *data, size_t len) {
    if (w->failed || !len) return;
    if (w->len + len > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + len) cap *= 2;
        /* not realloc: the old block may hold plaintext, which must be wiped before it is freed */
        uint8_t *b = malloc(cap);
        if (!b) { w->failed = true; return; }
        if (w->buf) { memcpy(b, w->buf, w->len); wipe(w->buf, w->cap); free(w->buf); }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, len);
    w->len += len;
}

size_t pb_varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

void pb_put_varint(pb_writer *w, uint64_t v) {
    uint8_t b[10];
    size_t n = 0;
    do {
        b[n++] = (uint8_t)((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v);
    pb_put(w, b, n);
}

void pb_put_tag(pb_writer *w, uint32_t number, int wire) { pb_put_varint(w, (uint64_t)number << 3 | (uint64_t)wire); }

void pb_put_bytes(pb_writer *w, uint32_t number, const void *data, size_t len) {
    pb_put_tag(w, number, PB_LEN);
    pb_put_varint(w, len);
    pb_put(w, data, len);
}

void pb_put_uint(pb_writer *w, uint32_t number, uint64_t v) {
    pb_put_tag(w, number, PB_VARINT);
    pb_put_varint(w, v);
}

/* Reserve 5 bytes for the length (messages here stay under 2^35); pb_end writes a padded varint. */
size_t pb_begin(pb_writer *w, uint32_t number) {
    pb_put_tag(w, number, PB_LEN);
    size_t mark = w->len;
    static const uint8_t pad[5] = {0x80, 0x80, 0x80, 0x80, 0x00};
    pb_put(w, pad, 5);
    return mark;
}

void pb_end(pb_writer *w, size_t mark) {
    if (w->failed) return;
    uint64_t n = w->len - mark - 5;
    if (n >> 35) { w->failed = true; return; }
    for (int i = 0; i < 5; i++) w->buf[mark + i] = (uint8_t)(((n >> (7 * i)) & 0x7F) | (i < 4 ? 0x80 : 0));
}

void pb_writer_free(pb_writer *w) {
    wipe(w->buf, w->cap);
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}
