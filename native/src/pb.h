/* A protobuf wire-format reader and writer limited to what the sealed-model format needs.
 *
 * Why our own and not libprotobuf or protobuf-c: opening reads a handful of fields of ModelProto, GraphProto,
 * NodeProto, AttributeProto and TensorProto and copies every other field through byte for byte; that is a
 * few hundred lines over spans of the bytes we already hold (no copy, no generated code, no second ABI to
 * ship beside ORT's own protobuf), bounded in nesting (PB_MAX_DEPTH) and in what it allocates. A full
 * library would parse, and re-serialize, everything. */
#ifndef ORTSEAL_PB_H
#define ORTSEAL_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PB_MAX_DEPTH 64 /* graphs nested in graphs (If/Loop bodies) deeper than this are refused */

enum { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_I32 = 5 };

typedef struct pb_span { const uint8_t *p; size_t len; } pb_span;
typedef struct pb_reader { const uint8_t *p, *end; bool bad; } pb_reader;

typedef struct pb_field {
    uint32_t number;
    int wire;
    uint64_t varint; /* PB_VARINT, PB_I64, PB_I32 */
    pb_span data;    /* PB_LEN */
    pb_span whole;   /* the field as stored: tag included */
} pb_field;

/* An absent field is the empty span {NULL, 0}: NULL + 0 is undefined in C, so it is not computed. */
static inline pb_reader pb_open(pb_span s) { pb_reader r = {s.p, s.p ? s.p + s.len : s.p, false}; return r; }
/* The next field; false at the end or on malformed bytes (then r->bad). */
bool pb_next(pb_reader *r, pb_field *f);
bool pb_span_eq(pb_span s, const char *text);

typedef struct pb_writer { uint8_t *buf; size_t len, cap; bool failed; } pb_writer;
void pb_put(pb_writer *w, const void *data, size_t len);
void pb_put_varint(pb_writer *w, uint64_t v);
void pb_put_tag(pb_writer *w, uint32_t number, int wire);
void pb_put_bytes(pb_writer *w, uint32_t number, const void *data, size_t len); /* a PB_LEN field */
void pb_put_uint(pb_writer *w, uint32_t number, uint64_t v);
size_t pb_varint_size(uint64_t v);
/* Start a length-delimited field whose length is not known yet; pb_end patches it in. */
size_t pb_begin(pb_writer *w, uint32_t number);
void pb_end(pb_writer *w, size_t mark);
void pb_writer_free(pb_writer *w);

#endif
