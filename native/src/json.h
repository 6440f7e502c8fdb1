/* A small bounded JSON reader (RFC 8259) for the keyset file and the model manifest: a tree of values,
 * strings decoded to UTF-8, numbers kept as their text (the formats use integers only). */
#ifndef ORTSEAL_JSON_H
#define ORTSEAL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { J_NULL, J_FALSE, J_TRUE, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } json_type;

typedef struct json {
    json_type type;
    char *str;          /* J_STRING: decoded UTF-8 (NUL-terminated; len may include NULs); J_NUMBER: its text */
    size_t len;
    struct json **items; /* J_ARRAY / J_OBJECT values */
    char **keys;         /* J_OBJECT keys, decoded */
    size_t *key_lens;
    size_t count;
} json;

#define JSON_MAX_DEPTH 32

/* NULL if text is not one valid JSON value (trailing garbage, depth beyond JSON_MAX_DEPTH, bad UTF-8 escapes). */
json *json_parse(const char *text, size_t len);
void json_free(json *j); /* wipes strings: keyset secrets pass through here */
const json *json_get(const json *obj, const char *key); /* NULL if absent or not an object */
bool json_is_string(const json *j);
/* An integer in [min, max] written without fraction or exponent. */
bool json_int(const json *j, int64_t min, int64_t max, int64_t *out);
/* Python's json.dumps(value, sort_keys=True) with the default separators and ensure_ascii: the bytes the
 * keyset's wrapped secrets are bound to. Appends to *buf (malloc'd, grown). */
bool json_dump_python_sorted(const json *j, char **buf, size_t *len, size_t *cap);

#endif
