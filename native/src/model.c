/* Opening a sealed model, format v3 (docs/format.md "Opening a sealed model"), in the spec's order:
 *   read once -> seal record on the raw bytes (signature before any parse) -> metadata and manifest ->
 *   trust scope, release, name -> one walk recording every sealed and plain external tensor's place and
 *   checking it against the manifest -> data files opened once, blobs opened against the manifest's
 *   digests, plain tensors hashed -> only then the plain model is written, in memory (large tensors: in RAM
 *   files, filled as they are checked; a refusal removes them with their folder).
 * The plain model ORT gets: every Unseal node replaced by its tensor (an initializer, a sparse initializer
 * or a Constant), blobs and ortseal.like.* tensors removed; tensors above INLINE_MAX bytes are external
 * data in one in-memory "file" (the weights arena) handed to ORT with AddExternalInitializersFromFilesInMemory,
 * so the model proto stays small (models over 2 GiB work). Measured (docs/benchmarks.md): ORT copies those
 * bytes into the session, as its header documents, so ortseal_session_create wipes the arena right after;
 * AddExternalInitializers (OrtValues) copies too, and inline raw_data would add protobuf's own copy.
 * So models with SMALL_MODEL_BYTES of such tensors or more take the route of ortseal/model/open.py
 * instead: each one decrypted into its own 0600 file in a private RAM folder (os.h, os_ram_*), several at
 * once, which ORT is given as its external-data folder and reads without the second copy; the folder goes
 * as soon as the session exists (docs/sealed-models.md "The route and its trade-offs"). */
#define __USE_MINGW_ANSI_STDIO 1
#include "internal.h"
#include "json.h"
#include "os.h"
#include "pb.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_FORMAT_VERSION 3
#define MANIFEST_KEY "ortseal.manifest"
#define RECORD_KEY "ortseal.signature"
#define MANIFEST_FORMAT "ortseal-model-manifest"
#define BODY_LABEL "ortseal v3 model"
#define SIGNATURE_LABEL "ortseal v3 model signature"
#define MAC_LABEL "ortseal v3 model mac"
#define MAC_KEY_INFO "ortseal v3 model mac key"
#define TENSOR_CONTEXT_LABEL "ortseal/tensor/v3"
#define DOMAIN "ai.ortseal"
#define LIKE_PREFIX "ortseal.like."
#define SIGNED_RECORD_SIZE 137
#define UNSIGNED_RECORD_SIZE 79
#define RESEAL "re-seal the original model with this ortseal: ortseal seal ORIGINAL.onnx -o SEALED.onnx --keys KEYS"
#define INLINE_MAX (64u << 10)
#define ARENA_ALIGN 64
#define MAX_MANIFEST_BYTES (64u << 20)
#define ORTSEAL_WEIGHTS_FILE "ortseal-weights.bin"
/* ORT refuses in-memory-file tensors over 2 GiB ("embedded initializer data" limit, measured with 1.32):
 * those go to ORT as OrtValues (AddExternalInitializers), their TensorProto a placeholder naming this file. */
#define ORTSEAL_VALUES_FILE "ortseal-values.bin"
#define MAX_FILE_TENSOR ((1ull << 31) - 1)
#define MAX_VALUES 256
#define SMALL_MODEL_BYTES (16u << 20) /* models with fewer bytes of large tensors open in memory (as open.py) */
#define COPY_CHUNK (1u << 20)          /* plain external tensors: read, hashed and written a MiB at a time */

/* ONNX field numbers (onnx.proto) */
enum { MODEL_IR = 1, MODEL_OPSET = 8, MODEL_GRAPH = 7, MODEL_METADATA = 14, MODEL_FUNCTIONS = 25 };
enum { GRAPH_NODE = 1, GRAPH_INITIALIZER = 5, GRAPH_INPUT = 11, GRAPH_SPARSE_INITIALIZER = 15 };
enum { FN_NAME = 1, FN_NODE = 7, FN_OPSET = 9, FN_DOMAIN = 10, FN_OVERLOAD = 13 };
enum { NODE_INPUT = 1, NODE_OUTPUT = 2, NODE_NAME = 3, NODE_OP = 4, NODE_ATTR = 5, NODE_DOMAIN = 7 };
enum { ATTR_NAME = 1, ATTR_I = 3, ATTR_S = 4, ATTR_T = 5, ATTR_G = 6, ATTR_INTS = 8, ATTR_TENSORS = 10,
       ATTR_GRAPHS = 11, ATTR_TYPE = 20, ATTR_SPARSE = 22, ATTR_SPARSES = 23 };
enum { ATYPE_TENSOR = 4, ATYPE_GRAPH = 5, ATYPE_GRAPHS = 10, ATYPE_SPARSE = 11 };
enum { T_DIMS = 1, T_TYPE = 2, T_NAME = 8, T_RAW = 9, T_EXTERNAL = 13, T_LOCATION = 14 };
enum { SP_VALUES = 1, SP_INDICES = 2, SP_DIMS = 3 };
enum { TYPE_UINT8 = 2, TYPE_STRING = 8 };
enum { ENC_RAW, ENC_TENSOR_PROTO, ENC_SPARSE };

static const uint8_t ELEMENT_BITS[29] = {0, 32, 8, 8, 16, 16, 32, 64, 0, 8, 16, 64, 32, 64, 64, 128,
                                         16, 8, 8, 8, 8, 4, 4, 4, 8, 2, 2, 6, 6};

typedef struct model_value { char *name; int32_t dtype; int64_t *shape; size_t rank; uint64_t offset, len; } model_value;

typedef struct ext_ref { char location[256]; uint64_t offset, length; bool has_length; } ext_ref;

typedef struct sealed_t {
    const uint8_t *node, *blob_at; /* the Unseal node and the blob's initializer or Constant node, as stored */
    pb_span blob;                  /* the blob TensorProto */
    pb_span name, blob_name;
    bool constant;
    int32_t dtype;
    int64_t *shape;
    size_t rank;
    int encoding;
    uint64_t payload_bytes;
    char *identity;
    uint64_t arena_offset;
    uint32_t file;             /* 1 + n: opened into the RAM file t<n>.bin; 0: in the arena */
    const uint8_t *digest_hex; /* the manifest's */
} sealed_t;

typedef struct external_t {
    const uint8_t *at; /* the initializer as stored */
    pb_span tensor;
    ext_ref ref;
    uint64_t arena_offset;
    uint32_t file; /* as sealed_t's */
} external_t;

typedef struct manifest_entry { const char *identity; size_t len; uint8_t digest[32]; uint64_t bytes; bool used; } manifest_entry;
typedef struct manifest_external { const char *location; uint64_t offset, length; uint8_t sha256[32]; } manifest_external;

typedef struct opener {
    const ortseal_keyset *ks;
    ortseal_error *err;
    const uint8_t *data;
    size_t body_len;
    int64_t ir_version;
    json *manifest_doc;
    const char *model_name, *seal_id, *key_id;
    uint64_t release;
    manifest_entry *entries; size_t n_entries;
    manifest_external *mexternal; size_t n_mexternal;
    sealed_t *sealed; size_t n_sealed, cap_sealed;
    external_t *externals; size_t n_externals, cap_externals;
    uint8_t *arena; size_t arena_len;
    os_dir *dir;
    model_value *values; size_t n_values;
    struct { char name[256]; os_file *f; uint64_t size; } files[16];
    size_t n_files;
    ortseal_route route;
    os_ram *ram; /* the private RAM folder large tensors are opened into, or NULL: memory */
} opener;

struct ortseal_model {
    uint8_t *proto; size_t proto_len;
    uint8_t *arena; size_t arena_len;
    model_value values[MAX_VALUES];
    size_t n_values;
    char *name;
    uint64_t release;
    size_t n_sealed;
    os_ram *ram;
};

/* ---- small readers ---------------------------------------------------------------------------- */

static bool span_str(pb_span s, char *out, size_t cap) {
    if (s.len >= cap || (s.len && memchr(s.p, 0, s.len))) return false; /* an empty span may have p NULL */
    if (s.len) memcpy(out, s.p, s.len);
    out[s.len] = '\0';
    return true;
}

static bool starts_with(pb_span s, const char *prefix) {
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.p, prefix, n) == 0;
}

static bool contains(pb_span s, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= s.len; i++)
        if (memcmp(s.p + i, needle, n) == 0) return true;
    return false;
}

static bool spans_eq(pb_span a, pb_span b) { return a.len == b.len && (!a.len || memcmp(a.p, b.p, a.len) == 0); }

typedef struct node_info {
    pb_span inputs[3], outputs[2], name, op, domain;
    size_t n_inputs, n_outputs;
} node_info;

static bool read_node(pb_span node, node_info *n) {
    memset(n, 0, sizeof *n);
    pb_reader r = pb_open(node);
    pb_field f;
    while (pb_next(&r, &f)) {
        if (f.number == NODE_INPUT && f.wire == PB_LEN) { if (n->n_inputs < 3) n->inputs[n->n_inputs] = f.data; n->n_inputs++; }
        else if (f.number == NODE_OUTPUT && f.wire == PB_LEN) { if (n->n_outputs < 2) n->outputs[n->n_outputs] = f.data; n->n_outputs++; }
        else if (f.number == NODE_NAME && f.wire == PB_LEN) n->name = f.data;
        else if (f.number == NODE_OP && f.wire == PB_LEN) n->op = f.data;
        else if (f.number == NODE_DOMAIN && f.wire == PB_LEN) n->domain = f.data;
    }
    return !r.bad;
}

static bool is_unseal(const node_info *n) { return pb_span_eq(n->domain, DOMAIN) && pb_span_eq(n->op, "Unseal"); }

static bool is_constant(const node_info *n) {
    return pb_span_eq(n->op, "Constant") && (n->domain.len == 0 || pb_span_eq(n->domain, "ai.onnx")) && n->n_outputs == 1;
}

typedef struct attr_info { pb_span name, s, t, g, sparse; int64_t i, type; bool has_i, has_s; } attr_info;

static bool read_attr(pb_span a, attr_info *out) {
    memset(out, 0, sizeof *out);
    pb_reader r = pb_open(a);
    pb_field f;
    while (pb_next(&r, &f)) {
        if (f.number == ATTR_NAME && f.wire == PB_LEN) out->name = f.data;
        else if (f.number == ATTR_I && f.wire == PB_VARINT) { out->i = (int64_t)f.varint; out->has_i = true; }
        else if (f.number == ATTR_S && f.wire == PB_LEN) { out->s = f.data; out->has_s = true; }
        else if (f.number == ATTR_T && f.wire == PB_LEN) out->t = f.data;
        else if (f.number == ATTR_G && f.wire == PB_LEN) out->g = f.data;
        else if (f.number == ATTR_SPARSE && f.wire == PB_LEN) out->sparse = f.data;
        else if (f.number == ATTR_TYPE && f.wire == PB_VARINT) out->type = (int32_t)(uint32_t)f.varint; /* enum: int32 */
    }
    return !r.bad;
}

/* The value tensor of a Constant node, or an empty span. */
static pb_span constant_value(pb_span node) {
    pb_reader r = pb_open(node);
    pb_field f;
    pb_span none = {0};
    while (pb_next(&r, &f)) {
        attr_info a;
        if (f.number == NODE_ATTR && f.wire == PB_LEN && read_attr(f.data, &a) && pb_span_eq(a.name, "value") &&
            a.type == ATYPE_TENSOR)
            return a.t;
    }
    return none;
}

/* Repeated int64 field `number` of message m, packed or not. */
static bool read_ints(pb_span m, uint32_t number, int64_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    pb_reader r = pb_open(m);
    pb_field f;
    while (pb_next(&r, &f)) {
        if (f.number != number) continue;
        pb_reader packed = pb_open(f.data);
        uint64_t one = f.varint;
        for (;;) {
            if (f.wire == PB_LEN) {
                /* a packed run: varints back to back */
                if (packed.p >= packed.end) break;
                uint64_t v = 0;
                int shift = 0;
                for (;; shift += 7) {
                    if (packed.p >= packed.end || shift >= 64) { free(*out); *out = NULL; return false; }
                    uint8_t b = *packed.p++;
                    v |= (uint64_t)(b & 0x7F) << shift;
                    if (!(b & 0x80)) break;
                }
                one = v;
            } else if (f.wire != PB_VARINT) { free(*out); *out = NULL; return false; }
            if (*n == cap) {
                cap = cap ? cap * 2 : 8;
                if (cap > (1u << 20)) { free(*out); *out = NULL; return false; }
                int64_t *p = realloc(*out, cap * sizeof *p);
                if (!p) { free(*out); *out = NULL; return false; }
                *out = p;
            }
            (*out)[(*n)++] = (int64_t)one;
            if (f.wire == PB_VARINT) break;
        }
    }
    return !r.bad;
}

/* int32 and enum fields (data_type, data_location, AttributeProto.type) keep the low 32 bits of their
 * varint, as protobuf reads them (and so ORT and onnx): compared on 64 bits, 2^32 + 1 would not be
 * EXTERNAL here but would be to ORT. */
typedef struct tensor_info { pb_span name, raw; int64_t type; bool external; pb_span ext[3]; } tensor_info;

static bool read_tensor(pb_span t, tensor_info *out) {
    memset(out, 0, sizeof *out);
    pb_reader r = pb_open(t);
    pb_field f;
    size_t ext_fields = 0;
    (void)ext_fields;
    while (pb_next(&r, &f)) {
        if (f.number == T_NAME && f.wire == PB_LEN) out->name = f.data;
        else if (f.number == T_TYPE && f.wire == PB_VARINT) out->type = (int32_t)(uint32_t)f.varint;
        else if (f.number == T_RAW && f.wire == PB_LEN) out->raw = f.data;
        else if (f.number == T_LOCATION && f.wire == PB_VARINT) out->external = (uint32_t)f.varint == 1;
    }
    return !r.bad;
}

/* The external-data entry of a tensor: a file name inside the model's folder, integer offset and length. */
static ortseal_code read_ext_ref(opener *o, pb_span t, pb_span name, ext_ref *ref) {
    memset(ref, 0, sizeof *ref);
    pb_reader r = pb_open(t);
    pb_field f;
    bool has_location = false;
    while (pb_next(&r, &f)) {
        if (f.number != T_EXTERNAL || f.wire != PB_LEN) continue;
        pb_span key = {0}, value = {0};
        pb_reader e = pb_open(f.data);
        pb_field g;
        while (pb_next(&e, &g)) {
            if (g.number == 1 && g.wire == PB_LEN) key = g.data;
            else if (g.number == 2 && g.wire == PB_LEN) value = g.data;
        }
        char text[256];
        if (e.bad || !span_str(value, text, sizeof text))
            return FAIL(o->err, ORTSEAL_E_FORMAT, "tensor '%.*s' has a malformed external-data entry", (int)name.len, name.p);
        if (pb_span_eq(key, "location")) { strcpy(ref->location, text); has_location = true; }
        else if (pb_span_eq(key, "offset") || pb_span_eq(key, "length")) {
            char *end = NULL;
            unsigned long long v = strtoull(text, &end, 10);
            if (!text[0] || *end || text[0] == '-' || text[0] == '+' || v > (1ull << 62))
                return FAIL(o->err, ORTSEAL_E_FORMAT, "tensor '%.*s' has a non-integer external-data offset or length", (int)name.len, name.p);
            if (pb_span_eq(key, "offset")) ref->offset = v; else { ref->length = v; ref->has_length = true; }
        }
    }
    if (r.bad || !has_location || !ref->location[0] || strstr(ref->location, "..") || ref->location[0] == '/' ||
        strchr(ref->location, '\\') || strchr(ref->location, '/'))
        return FAIL(o->err, ORTSEAL_E_FORMAT, "tensor '%.*s' has an external-data location outside the model folder: '%s'",
                    (int)name.len, name.p, ref->location);
    return ORTSEAL_OK;
}

/* ---- tensor identity: RFC 8785 JSON {"dtype","name","scope","shape"} ------------------------------- */

static bool jcs_string(pb_writer *w, const uint8_t *s, size_t n) {
    pb_put(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        char tmp[8];
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b" : c == '\f' ? "\\f"
                        : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
        if (esc) pb_put(w, esc, 2);
        else if (c < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", c); pb_put(w, tmp, 6); }
        else pb_put(w, &c, 1);
    }
    pb_put(w, "\"", 1);
    return !w->failed;
}

static char *tensor_identity(const char *scope, pb_span name, int64_t dtype, const int64_t *shape, size_t rank) {
    pb_writer w = {0};
    char num[32];
    snprintf(num, sizeof num, "{\"dtype\":%lld,\"name\":", (long long)dtype);
    pb_put(&w, num, strlen(num));
    jcs_string(&w, name.p, name.len);
    pb_put(&w, ",\"scope\":", 9);
    jcs_string(&w, (const uint8_t *)scope, strlen(scope));
    pb_put(&w, ",\"shape\":[", 10);
    for (size_t i = 0; i < rank; i++) {
        snprintf(num, sizeof num, i ? ",%lld" : "%lld", (long long)shape[i]);
        pb_put(&w, num, strlen(num));
    }
    pb_put(&w, "]}", 3); /* with the NUL */
    if (w.failed) { pb_writer_free(&w); return NULL; }
    return (char *)w.buf;
}

static bool raw_length(int64_t dtype, const int64_t *shape, size_t rank, uint64_t *out) {
    if (dtype < 1 || dtype > 28 || dtype == TYPE_STRING) return false;
    uint64_t n = 1;
    for (size_t i = 0; i < rank; i++) {
        if (shape[i] < 0 || (shape[i] && n > (UINT64_C(1) << 56) / (uint64_t)shape[i])) return false;
        n *= (uint64_t)shape[i];
    }
    *out = (n * ELEMENT_BITS[dtype] + 7) / 8; /* n < 2^56: no overflow */
    return true;
}

/* ---- the walk: every graph, subgraph and local function, in the order of docs/format.md ---------- */

static ortseal_code add_sealed(opener *o, sealed_t *st) {
    if (o->n_sealed == o->cap_sealed) {
        size_t cap = o->cap_sealed ? o->cap_sealed * 2 : 16;
        sealed_t *p = realloc(o->sealed, cap * sizeof *p);
        if (!p) return FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory");
        o->sealed = p;
        o->cap_sealed = cap;
    }
    o->sealed[o->n_sealed++] = *st;
    return ORTSEAL_OK;
}

static ortseal_code add_external(opener *o, external_t *e) {
    if (o->n_externals == o->cap_externals) {
        size_t cap = o->cap_externals ? o->cap_externals * 2 : 16;
        external_t *p = realloc(o->externals, cap * sizeof *p);
        if (!p) return FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory");
        o->externals = p;
        o->cap_externals = cap;
    }
    o->externals[o->n_externals++] = *e;
    return ORTSEAL_OK;
}

/* A tensor other than an initializer stored as external data is refused (docs/format.md). */
static bool tensor_is_external(pb_span t) {
    tensor_info ti;
    return read_tensor(t, &ti) && ti.external;
}

static bool sparse_is_external(pb_span sp) {
    pb_reader r = pb_open(sp);
    pb_field f;
    while (pb_next(&r, &f))
        if ((f.number == SP_VALUES || f.number == SP_INDICES) && f.wire == PB_LEN && tensor_is_external(f.data)) return true;
    return false;
}

static ortseal_code walk_body(opener *o, pb_span body, const char *scope, bool function, int depth);

/* The Unseal node's attributes, checked as ortseal/model/_graph.py sealed_in does. */
static ortseal_code read_unseal(opener *o, pb_span node, const node_info *n, const char *scope, sealed_t *st) {
    pb_reader r = pb_open(node);
    pb_field f;
    bool has_dtype = false, has_shape = false, has_tensor = false, has_payload = false;
    pb_span tensor = {0}, encoding = {0};
    int64_t payload = 0;
    while (pb_next(&r, &f)) {
        attr_info a;
        if (f.number != NODE_ATTR || f.wire != PB_LEN) continue;
        if (!read_attr(f.data, &a)) return FAIL(o->err, ORTSEAL_E_FORMAT, "an Unseal node is malformed");
        if (pb_span_eq(a.name, "graph_digest"))
            return FAIL(o->err, ORTSEAL_E_FORMAT, "this model was sealed by ortseal format v1, which is refused (its "
                        "signatures do not commit to the content); %s", RESEAL);
        if (pb_span_eq(a.name, "dtype")) {
            if (a.i < 1 || a.i > 28) return FAIL(o->err, ORTSEAL_E_FORMAT, "an Unseal node declares a data type that is not an ONNX tensor kind");
            st->dtype = (int32_t)a.i; /* the attribute is an int64: not truncated into range */
            has_dtype = true;
        }
        else if (pb_span_eq(a.name, "shape")) {
            free(st->shape);
            if (!read_ints(f.data, ATTR_INTS, &st->shape, &st->rank)) return FAIL(o->err, ORTSEAL_E_FORMAT, "an Unseal node's shape is malformed");
            has_shape = true;
        } else if (pb_span_eq(a.name, "tensor")) { tensor = a.s; has_tensor = true; }
        else if (pb_span_eq(a.name, "encoding")) encoding = a.s;
        else if (pb_span_eq(a.name, "payload_bytes")) { payload = a.i; has_payload = true; }
    }
    const int nl = (int)n->outputs[0].len;
    const char *np = (const char *)n->outputs[0].p;
    if (!has_dtype || !has_shape || !has_tensor)
        return FAIL(o->err, ORTSEAL_E_FORMAT, "Unseal node for '%.*s' lacks its dtype, shape or tensor attribute: the sealed model is damaged", nl, np);
    st->identity = tensor_identity(scope, n->outputs[0], st->dtype, st->shape, st->rank);
    if (!st->identity) return FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory");
    if (strlen(st->identity) != tensor.len || (tensor.len && memcmp(st->identity, tensor.p, tensor.len) != 0))
        return FAIL(o->err, ORTSEAL_E_FORMAT, "Unseal node for '%.*s': attributes do not match its tensor identity", nl, np);
    if (st->dtype < 1 || st->dtype > 28)
        return FAIL(o->err, ORTSEAL_E_FORMAT, "Unseal node for '%.*s' declares data type %d, which is not an ONNX tensor kind", nl, np, st->dtype);
    st->encoding = encoding.len == 0 || pb_span_eq(encoding, "raw") ? ENC_RAW
                 : pb_span_eq(encoding, "tensor_proto") ? ENC_TENSOR_PROTO
                 : pb_span_eq(encoding, "sparse_tensor_proto") ? ENC_SPARSE : -1;
    if (st->encoding < 0 || (st->encoding != ENC_SPARSE && (st->encoding == ENC_TENSOR_PROTO) != (st->dtype == TYPE_STRING)))
        return FAIL(o->err, ORTSEAL_E_FORMAT, "Unseal node for '%.*s': its encoding does not fit its data type", nl, np);
    if (st->encoding == ENC_RAW) {
        if (has_payload) return FAIL(o->err, ORTSEAL_E_FORMAT, "Unseal node for '%.*s': a raw payload's length follows from its shape", nl, np);
        if (!raw_length(st->dtype, st->shape, st->rank, &st->payload_bytes))
            return FAIL(o->err, ORTSEAL_E_FORMAT, "Unseal node for '%.*s' has a shape out of range", nl, np);
    } else {
        if (!has_payload || payload < 0)
            return FAIL(o->err, ORTSEAL_E_FORMAT, "Unseal node for '%.*s' declares no or a negative payload length", nl, np);
        st->payload_bytes = (uint64_t)payload;
    }
    return ORTSEAL_OK;
}

#define MAX_BODY_ITEMS (1u << 24)

static ortseal_code walk_body(opener *o, pb_span body, const char *scope, bool function, int depth) {
    if (depth > PB_MAX_DEPTH) return FAIL(o->err, ORTSEAL_E_FORMAT, "the model nests subgraphs deeper than %d", PB_MAX_DEPTH);
    uint32_t node_field = function ? FN_NODE : GRAPH_NODE;
    ortseal_code code = ORTSEAL_OK;
    /* The blobs an Unseal node may read: initializers of this graph, or Constant nodes' values. */
    pb_reader r = pb_open(body);
    pb_field f;
    size_t first_sealed = o->n_sealed;
    while (pb_next(&r, &f)) {
        if (f.number != node_field || f.wire != PB_LEN) continue;
        node_info n;
        if (!read_node(f.data, &n)) return FAIL(o->err, ORTSEAL_E_FORMAT, "the model is not valid ONNX (a node is malformed)");
        if (!is_unseal(&n)) continue;
        sealed_t st = {.node = f.whole.p};
        if (n.n_inputs != 2 || n.n_outputs != 1)
            return FAIL(o->err, ORTSEAL_E_FORMAT, "Unseal node '%.*s' does not read a sealed blob of its own graph", (int)n.name.len, n.name.p);
        st.name = n.outputs[0];
        st.blob_name = n.inputs[0];
        code = read_unseal(o, f.data, &n, scope, &st);
        if (!code) code = add_sealed(o, &st);
        if (code) { free(st.shape); free(st.identity); return code; }
    }
    if (r.bad) return FAIL(o->err, ORTSEAL_E_FORMAT, "the model is not valid ONNX (a graph is malformed)");
    /* find each one's blob */
    r = pb_open(body);
    while (pb_next(&r, &f)) {
        if (f.wire != PB_LEN) continue;
        pb_span tensor = {0}, name = {0};
        bool constant = false;
        if (!function && f.number == GRAPH_INITIALIZER) {
            tensor_info ti;
            if (!read_tensor(f.data, &ti)) return FAIL(o->err, ORTSEAL_E_FORMAT, "the model is not valid ONNX (an initializer is malformed)");
            tensor = f.data;
            name = ti.name;
        } else if (f.number == node_field) {
            node_info n;
            read_node(f.data, &n);
            if (!is_constant(&n)) continue;
            tensor = constant_value(f.data);
            name = n.outputs[0];
            constant = true;
            if (!tensor.p) continue;
        } else continue;
        for (size_t i = first_sealed; i < o->n_sealed; i++) {
            sealed_t *st = &o->sealed[i];
            if (!spans_eq(st->blob_name, name)) continue;
            if (st->blob.p) return FAIL(o->err, ORTSEAL_E_FORMAT, "sealed blob '%.*s' is defined twice", (int)name.len, name.p);
            st->blob = tensor;
            st->blob_at = f.whole.p;
            st->constant = constant;
        }
    }
    for (size_t i = first_sealed; i < o->n_sealed; i++) {
        sealed_t *st = &o->sealed[i];
        tensor_info ti;
        if (!st->blob.p) return FAIL(o->err, ORTSEAL_E_FORMAT, "Unseal node for '%.*s' does not read a sealed blob of its own graph", (int)st->name.len, st->name.p);
        read_tensor(st->blob, &ti);
        if (ti.type != TYPE_UINT8) return FAIL(o->err, ORTSEAL_E_FORMAT, "sealed blob '%.*s' is not uint8", (int)st->blob_name.len, st->blob_name.p);
    }
    /* plain external initializers, in order; no other external tensor */
    r = pb_open(body);
    while (pb_next(&r, &f)) {
        if (f.wire != PB_LEN) continue;
        if (!function && f.number == GRAPH_INITIALIZER) {
            tensor_info ti;
            read_tensor(f.data, &ti);
            if (!ti.external) continue;
            bool blob = false;
            for (size_t i = first_sealed; i < o->n_sealed && !blob; i++) blob = o->sealed[i].blob_at == f.whole.p;
            if (blob) continue;
            external_t e = {.at = f.whole.p, .tensor = f.data};
            if ((code = read_ext_ref(o, f.data, ti.name, &e.ref)) || (code = add_external(o, &e))) return code;
        } else if (!function && f.number == GRAPH_SPARSE_INITIALIZER) {
            if (sparse_is_external(f.data)) return FAIL(o->err, ORTSEAL_E_FORMAT, "a sealed model keeps only initializers as external data: one of its sparse tensors is external");
        } else if (f.number == node_field) {
            bool blob = false; /* a sealed Constant's blob may be external, as every blob may */
            for (size_t i = first_sealed; i < o->n_sealed && !blob; i++) blob = o->sealed[i].blob_at == f.whole.p;
            if (blob) continue;
            pb_reader a = pb_open(f.data);
            pb_field af;
            while (pb_next(&a, &af)) {
                if (af.number != NODE_ATTR || af.wire != PB_LEN) continue;
                pb_reader t = pb_open(af.data);
                pb_field tf;
                while (pb_next(&t, &tf)) {
                    bool ext = tf.wire == PB_LEN &&
                               (((tf.number == ATTR_T || tf.number == ATTR_TENSORS) && tensor_is_external(tf.data)) ||
                                ((tf.number == ATTR_SPARSE || tf.number == ATTR_SPARSES) && sparse_is_external(tf.data)));
                    if (ext) return FAIL(o->err, ORTSEAL_E_FORMAT, "a sealed model keeps only initializers as external data: one of its attribute tensors is external");
                }
            }
        }
    }
    /* then the subgraphs, in node and attribute order */
    r = pb_open(body);
    while (pb_next(&r, &f)) {
        if (f.number != node_field || f.wire != PB_LEN) continue;
        node_info n;
        read_node(f.data, &n);
        pb_span owner = n.name.len ? n.name : n.n_outputs ? n.outputs[0] : n.op;
        pb_reader a = pb_open(f.data);
        pb_field af;
        while (pb_next(&a, &af)) {
            attr_info at;
            if (af.number != NODE_ATTR || af.wire != PB_LEN || !read_attr(af.data, &at)) continue;
            if (at.type != ATYPE_GRAPH && at.type != ATYPE_GRAPHS) continue;
            size_t j = 0;
            pb_reader g = pb_open(af.data);
            pb_field gf;
            while (pb_next(&g, &gf)) {
                bool one = at.type == ATYPE_GRAPH && gf.number == ATTR_G, many = at.type == ATYPE_GRAPHS && gf.number == ATTR_GRAPHS;
                if ((!one && !many) || gf.wire != PB_LEN) continue;
                size_t len = strlen(scope) + owner.len + at.name.len + 32;
                char *sub = malloc(len);
                if (!sub) return FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory");
                if (one) snprintf(sub, len, "%s/%.*s.%.*s", scope, (int)owner.len, owner.p, (int)at.name.len, at.name.p);
                else snprintf(sub, len, "%s/%.*s.%.*s[%zu]", scope, (int)owner.len, owner.p, (int)at.name.len, at.name.p, j++);
                code = walk_body(o, gf.data, sub, false, depth + 1);
                free(sub);
                if (code) return code;
            }
        }
    }
    return ORTSEAL_OK;
}

static ortseal_code walk_model(opener *o) {
    pb_reader r = pb_open((pb_span){o->data, o->body_len});
    pb_field f;
    ortseal_code code;
    bool graph = false;
    while (pb_next(&r, &f)) {
        if (f.number == MODEL_GRAPH && f.wire == PB_LEN) {
            if (graph) return FAIL(o->err, ORTSEAL_E_FORMAT, "the model holds two graphs");
            graph = true;
            if ((code = walk_body(o, f.data, "", false, 0))) return code;
        }
    }
    r = pb_open((pb_span){o->data, o->body_len});
    while (pb_next(&r, &f)) {
        if (f.number != MODEL_FUNCTIONS || f.wire != PB_LEN) continue;
        pb_span name = {0}, domain = {0}, overload = {0};
        pb_reader fr = pb_open(f.data);
        pb_field ff;
        while (pb_next(&fr, &ff)) {
            if (ff.wire != PB_LEN) continue;
            if (ff.number == FN_NAME) name = ff.data;
            else if (ff.number == FN_DOMAIN) domain = ff.data;
            else if (ff.number == FN_OVERLOAD) overload = ff.data;
        }
        size_t len = name.len + domain.len + overload.len + 8;
        char *scope = malloc(len);
        if (!scope) return FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory");
        snprintf(scope, len, "fn:%.*s:%.*s%s%.*s", (int)domain.len, domain.p, (int)name.len, name.p,
                 overload.len ? ":" : "", (int)overload.len, overload.p);
        code = walk_body(o, f.data, scope, true, 0);
        free(scope);
        if (code) return code;
    }
    return r.bad ? FAIL(o->err, ORTSEAL_E_FORMAT, "the model is not valid ONNX") : ORTSEAL_OK;
}

/* ---- the seal record and the manifest ------------------------------------------------------------ */

typedef struct record { bool found, signed_; char signer[17]; uint8_t tag[64]; size_t size; } record;

static bool b64_chars(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '+' || p[i] == '/'))
            return false;
    return true;
}

/* The record at the end of the raw bytes (no protobuf parse: its layout is fixed). */
static record read_record(const uint8_t *d, size_t len) {
    static const uint8_t signed_head[] = "\x72\x86\x01\x0a\x11" RECORD_KEY "\x12\x71" "ed25519:";
    static const uint8_t unsigned_head[] = "\x72\x4d\x0a\x11" RECORD_KEY "\x12\x38" "hmac-sha256:";
    record rec = {0};
    size_t sh = sizeof signed_head - 1, uh = sizeof unsigned_head - 1;
    if (len > SIGNED_RECORD_SIZE && memcmp(d + len - SIGNED_RECORD_SIZE, signed_head, sh) == 0) {
        const uint8_t *v = d + len - SIGNED_RECORD_SIZE + sh; /* 16 hex ":" 86 b64 "==" */
        bool hex = true;
        for (int i = 0; i < 16; i++) hex &= (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f');
        uint8_t *sig = NULL;
        size_t n = 0;
        if (hex && v[16] == ':' && b64_chars(v + 17, 86) && v[103] == '=' && v[104] == '=' &&
            b64_decode((const char *)v + 17, 88, &sig, &n) && n == 64) {
            rec.found = rec.signed_ = true;
            memcpy(rec.signer, v, 16);
            memcpy(rec.tag, sig, 64);
            rec.size = SIGNED_RECORD_SIZE;
        }
        free(sig);
        if (rec.found) return rec;
    }
    if (len > UNSIGNED_RECORD_SIZE && memcmp(d + len - UNSIGNED_RECORD_SIZE, unsigned_head, uh) == 0) {
        const uint8_t *v = d + len - UNSIGNED_RECORD_SIZE + uh; /* 43 b64 "=" */
        uint8_t *tag = NULL;
        size_t n = 0;
        if (b64_chars(v, 43) && v[43] == '=' && b64_decode((const char *)v, 44, &tag, &n) && n == 32) {
            rec.found = true;
            memcpy(rec.tag, tag, 32);
            rec.size = UNSIGNED_RECORD_SIZE;
        }
        free(tag);
    }
    return rec;
}

static void body_digest(const uint8_t *body, size_t len, uint8_t out[32]) {
    sha256_ctx *c = sha256_new();
    sha256_update(c, BODY_LABEL, sizeof BODY_LABEL);
    sha256_update(c, body, len);
    sha256_final(c, out);
}

static bool hex32(const json *j, uint8_t out[32]) {
    if (!json_is_string(j) || j->len != 64) return false;
    for (size_t i = 0; i < 64; i++)
        if (!((j->str[i] >= '0' && j->str[i] <= '9') || (j->str[i] >= 'a' && j->str[i] <= 'f'))) return false;
    return hex_decode(j->str, 64, out);
}

static ortseal_code read_manifest(opener *o, pb_span text) {
    ortseal_error *err = o->err;
    if (text.len > MAX_MANIFEST_BYTES) return FAIL(err, ORTSEAL_E_FORMAT, "the model manifest is too large");
    json *doc = o->manifest_doc = json_parse((const char *)text.p, text.len);
    const json *format = json_get(doc, "format"), *version = json_get(doc, "version");
    int64_t v = 0, release = 0;
    if (!json_is_string(format) || strcmp(format->str, MANIFEST_FORMAT) != 0)
        return FAIL(err, ORTSEAL_E_FORMAT, "the model's ortseal manifest is not a manifest");
    if (!json_int(version, INT64_MIN, INT64_MAX, &v) || v != MODEL_FORMAT_VERSION)
        return FAIL(err, ORTSEAL_E_FORMAT, "this model was sealed by ortseal model format v%lld, which this ortseal refuses "
                    "(it reads v3: the signature covers the whole file); %s", (long long)v, RESEAL);
    const json *model = json_get(doc, "model"), *seal_id = json_get(doc, "seal_id"), *key_id = json_get(doc, "key_id");
    bool seal_ok = json_is_string(seal_id) && seal_id->len == 32;
    for (size_t i = 0; seal_ok && i < 32; i++)
        seal_ok = (seal_id->str[i] >= '0' && seal_id->str[i] <= '9') || (seal_id->str[i] >= 'a' && seal_id->str[i] <= 'f');
    if (!json_is_string(model) || !model->len || strlen(model->str) != model->len ||
        !json_int(json_get(doc, "release"), 0, INT64_MAX, &release) || !seal_ok)
        return FAIL(err, ORTSEAL_E_FORMAT, "the model manifest has a malformed model, release or seal id");
    bool kid_ok = json_is_string(key_id) && key_id->len >= 1 && key_id->len <= 64;
    for (size_t i = 0; kid_ok && i < key_id->len; i++) kid_ok = key_id->str[i] >= 0x21 && key_id->str[i] <= 0x7e;
    if (!kid_ok) return FAIL(err, ORTSEAL_E_FORMAT, "the model manifest has a malformed key id");
    o->model_name = model->str;
    o->seal_id = seal_id->str;
    o->key_id = key_id->str;
    o->release = (uint64_t)release;
    const json *tensors = json_get(doc, "tensors"), *external = json_get(doc, "external");
    if (!tensors || tensors->type != J_ARRAY || !external || external->type != J_ARRAY)
        return FAIL(err, ORTSEAL_E_FORMAT, "the model's ortseal manifest is malformed (tensors, external)");
    o->entries = calloc(tensors->count ? tensors->count : 1, sizeof *o->entries);
    o->mexternal = calloc(external->count ? external->count : 1, sizeof *o->mexternal);
    if (!o->entries || !o->mexternal) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < tensors->count; i++) {
        const json *e = tensors->items[i], *t = json_get(e, "tensor");
        manifest_entry *m = &o->entries[i];
        int64_t bytes;
        if (!json_is_string(t) || !hex32(json_get(e, "digest"), m->digest) || !json_int(json_get(e, "bytes"), 0, INT64_MAX, &bytes))
            return FAIL(err, ORTSEAL_E_FORMAT, "the model manifest has a malformed or repeated tensor entry");
        m->identity = t->str;
        m->len = t->len;
        m->bytes = (uint64_t)bytes;
        for (size_t k = 0; k < i; k++)
            if (o->entries[k].len == m->len && memcmp(o->entries[k].identity, m->identity, m->len) == 0)
                return FAIL(err, ORTSEAL_E_FORMAT, "the model manifest has a malformed or repeated tensor entry");
        o->n_entries++;
    }
    for (size_t i = 0; i < external->count; i++) {
        const json *e = external->items[i], *loc = json_get(e, "location");
        manifest_external *m = &o->mexternal[i];
        int64_t off, len;
        if (!json_is_string(loc) || !json_int(json_get(e, "offset"), 0, INT64_MAX, &off) ||
            !json_int(json_get(e, "length"), 0, INT64_MAX, &len) || !hex32(json_get(e, "sha256"), m->sha256))
            return FAIL(err, ORTSEAL_E_FORMAT, "the model manifest has a malformed external tensor entry");
        m->location = loc->str;
        m->offset = (uint64_t)off;
        m->length = (uint64_t)len;
        o->n_mexternal++;
    }
    return ORTSEAL_OK;
}

/* The top-level metadata entries (a shallow read of ModelProto: no graph is parsed here). */
static ortseal_code read_metadata(opener *o, const record *rec, pb_span *manifest) {
    pb_reader r = pb_open((pb_span){o->data, o->body_len + rec->size});
    pb_field f;
    size_t n_manifests = 0, n_records = 0;
    bool last_is_record = false;
    o->ir_version = 0;
    while (pb_next(&r, &f)) {
        if (f.number == MODEL_IR && f.wire == PB_VARINT) o->ir_version = (int64_t)f.varint;
        if (f.number != MODEL_METADATA || f.wire != PB_LEN) continue;
        pb_span key = {0}, value = {0};
        pb_reader e = pb_open(f.data);
        pb_field g;
        while (pb_next(&e, &g)) {
            if (g.number == 1 && g.wire == PB_LEN) key = g.data;
            else if (g.number == 2 && g.wire == PB_LEN) value = g.data;
        }
        if (e.bad) return FAIL(o->err, ORTSEAL_E_FORMAT, "the model is not valid ONNX (a metadata entry is malformed)");
        last_is_record = pb_span_eq(key, RECORD_KEY);
        if (last_is_record) n_records++;
        if (pb_span_eq(key, MANIFEST_KEY)) { n_manifests++; *manifest = value; }
    }
    if (r.bad) return FAIL(o->err, ORTSEAL_E_FORMAT, "the model is not valid ONNX");
    if (n_records && (!rec->found || n_records != 1 || !last_is_record))
        return FAIL(o->err, ORTSEAL_E_TAMPERED, "the sealed model file was rewritten after sealing: its seal record is no "
                    "longer the last thing in the file");
    if (!rec->found) {
        /* Not sealed by format v3: say which (a refusal path; the graph is parsed only to name it). */
        ortseal_code code = walk_model(o);
        if (code) return code;
        if (!o->n_sealed) return FAIL(o->err, ORTSEAL_E_FORMAT, "the model holds no sealed tensor (it is not sealed by ortseal)");
        if (n_manifests == 1 && contains(*manifest, "\"version\":2"))
            return FAIL(o->err, ORTSEAL_E_FORMAT, "this model was sealed by ortseal model format v2, which is refused (its "
                        "signature does not cover the whole file); %s", RESEAL);
        return FAIL(o->err, ORTSEAL_E_FORMAT, "the model holds Unseal nodes but does not end with an ortseal v3 seal record: "
                    "it was damaged, edited, or sealed by an older ortseal; %s", RESEAL);
    }
    if (n_manifests != 1) return FAIL(o->err, ORTSEAL_E_FORMAT, "the sealed model does not hold exactly one ortseal manifest");
    return ORTSEAL_OK;
}

static ortseal_code check_seal(opener *o, const char *model_name, uint64_t min_release) {
    ortseal_error *err = o->err;
    record rec = read_record(o->data, o->body_len);
    o->body_len -= rec.found ? rec.size : 0;
    uint8_t digest[32];
    body_digest(o->data, o->body_len, digest);
    if (rec.found && rec.signed_) {
        /* Verify first: a signature over the raw bytes, before any protobuf or JSON is parsed. */
        const uint8_t *pub = keyset_public_key(o->ks, rec.signer);
        uint8_t msg[sizeof SIGNATURE_LABEL + 32];
        memcpy(msg, SIGNATURE_LABEL, sizeof SIGNATURE_LABEL);
        memcpy(msg + sizeof SIGNATURE_LABEL, digest, 32);
        if (!pub) return FAIL(err, ORTSEAL_E_TAMPERED, "the model is signed by '%s', which this keyset does not trust", rec.signer);
        if (!ed25519_verify(pub, msg, sizeof msg, rec.tag))
            return FAIL(err, ORTSEAL_E_TAMPERED, "the model's signature by '%s' does not verify: the model file was altered after sealing", rec.signer);
    }
    pb_span manifest = {0};
    ortseal_code code = read_metadata(o, &rec, &manifest);
    if (!code) code = read_manifest(o, manifest);
    if (code) return code;
    if (rec.signed_) {
        char purpose[300];
        snprintf(purpose, sizeof purpose, "model:%s", o->model_name);
        if (strlen(o->model_name) > 290 || !keyset_trusted_key(o->ks, rec.signer, purpose))
            return FAIL(err, ORTSEAL_E_TAMPERED, "the model '%s' is signed by '%s', which this keyset does not trust for '%s'",
                        o->model_name, rec.signer, purpose);
    } else {
        if (!keyset_allows_unsigned(o->ks))
            return FAIL(err, ORTSEAL_E_TAMPERED, "the model '%s' is unsigned, but this keyset requires a signature from a trusted key", o->model_name);
        uint8_t content_key[32], mac_key[32], tag[32], msg[sizeof MAC_LABEL + 32];
        if (!keyset_content_key(o->ks, o->key_id, content_key, err, &code)) return code;
        bool ok = hkdf_sha256(content_key, 32, NULL, 0, (const uint8_t *)MAC_KEY_INFO, sizeof MAC_KEY_INFO, mac_key);
        wipe(content_key, 32);
        memcpy(msg, MAC_LABEL, sizeof MAC_LABEL);
        memcpy(msg + sizeof MAC_LABEL, digest, 32);
        ok = ok && hmac_sha256(mac_key, msg, sizeof msg, tag);
        wipe(mac_key, 32);
        if (!ok || !ct_equal(tag, rec.tag, 32))
            return FAIL(err, ORTSEAL_E_TAMPERED, "the unsigned model's MAC does not verify: the model file was altered after "
                        "sealing, or this is not the content key it was sealed with");
    }
    if (o->release < min_release)
        return FAIL(err, ORTSEAL_E_ROLLBACK, "the model '%s' is release %llu, older than the minimum release %llu this "
                    "deployment accepts (an older model put in place of a newer one?)", o->model_name,
                    (unsigned long long)o->release, (unsigned long long)min_release);
    if (model_name && strcmp(model_name, o->model_name) != 0)
        return FAIL(err, ORTSEAL_E_TAMPERED, "this is the publisher's model '%s', not '%s': another signed model was put in its place",
                    o->model_name, model_name);
    return ORTSEAL_OK;
}

/* Step 5: the sealed tensors are exactly those the manifest names, each once, with the size its shape
 * gives; the plain external tensors exactly those it lists, in order, where it says. */
static ortseal_code check_structure(opener *o) {
    ortseal_code code = walk_model(o);
    if (code) return code;
    if (!o->n_sealed || o->n_sealed != o->n_entries)
        return FAIL(o->err, ORTSEAL_E_TAMPERED, "the model's sealed tensors differ from those its manifest names");
    for (size_t i = 0; i < o->n_sealed; i++) {
        sealed_t *st = &o->sealed[i];
        size_t len = strlen(st->identity);
        manifest_entry *m = NULL;
        for (size_t k = 0; k < o->n_entries && !m; k++)
            if (o->entries[k].len == len && memcmp(o->entries[k].identity, st->identity, len) == 0) m = &o->entries[k];
        if (!m || m->used) return FAIL(o->err, ORTSEAL_E_TAMPERED, "the model's sealed tensors differ from those its manifest names");
        m->used = true;
        st->digest_hex = m->digest;
        if (m->bytes != st->payload_bytes)
            return FAIL(o->err, ORTSEAL_E_TAMPERED, "sealed tensor '%.*s': the manifest's size differs from its shape's", (int)st->name.len, st->name.p);
    }
    if (o->n_externals != o->n_mexternal)
        return FAIL(o->err, ORTSEAL_E_TAMPERED, "the model's plain external tensors differ from those its manifest lists");
    for (size_t i = 0; i < o->n_externals; i++) {
        const ext_ref *r = &o->externals[i].ref;
        const manifest_external *m = &o->mexternal[i];
        if (strcmp(r->location, m->location) || r->offset != m->offset || !r->has_length || r->length != m->length)
            return FAIL(o->err, ORTSEAL_E_TAMPERED, "plain external tensor %zu is not where the manifest says", i);
    }
    return ORTSEAL_OK;
}

/* ---- step 6: data files, blobs, plain external tensors --------------------------------------------- */

static ortseal_code data_file(opener *o, const char *location, os_file **f, uint64_t *size) {
    for (size_t i = 0; i < o->n_files; i++)
        if (strcmp(o->files[i].name, location) == 0) { *f = o->files[i].f; *size = o->files[i].size; return ORTSEAL_OK; }
    if (o->n_files == sizeof o->files / sizeof o->files[0])
        return FAIL(o->err, ORTSEAL_E_FORMAT, "the model names more than %zu data files", sizeof o->files / sizeof o->files[0]);
    ortseal_code code = os_open_in(o->dir, location, f, size, o->err); /* opened once: regular, no link followed */
    if (code) return code;
    strcpy(o->files[o->n_files].name, location);
    o->files[o->n_files].f = *f;
    o->files[o->n_files].size = *size;
    o->n_files++;
    return ORTSEAL_OK;
}

typedef struct span_source { os_file *f; uint64_t offset; } span_source;

static ortseal_code read_span(void *src, uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err) {
    span_source *s = src;
    return os_pread(s->f, buf, len, s->offset + offset, err);
}

static uint64_t align_up(uint64_t v) { return (v + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN; }

/* total + len, aligned, unless that passes 2^63 (the lengths are the signed manifest's, each within its
 * file, but their sum is not bounded: it must not wrap). */
static bool arena_add(uint64_t *total, uint64_t len) {
    if (len > (UINT64_C(1) << 63) - ARENA_ALIGN - *total) return false;
    *total = align_up(*total + len);
    return true;
}

/* Where a sealed tensor's blob is: inline in the model we hold (*f NULL, ti->raw), or a span of a data file
 * opened once; its header must name the manifest's key and size. */
static ortseal_code locate_blob(opener *o, sealed_t *st, tensor_info *ti, os_file **f, uint64_t *offset, uint64_t *blob_len) {
    read_tensor(st->blob, ti);
    ext_ref ref;
    uint64_t size = 0;
    ortseal_code code;
    *f = NULL;
    *offset = 0;
    *blob_len = ti->raw.len;
    if (ti->external) {
        if ((code = read_ext_ref(o, st->blob, st->blob_name, &ref)) || (code = data_file(o, ref.location, f, &size))) return code;
        *blob_len = ref.has_length ? ref.length : (ref.offset <= size ? size - ref.offset : 0);
        if (ref.offset > size || *blob_len > size - ref.offset)
            return FAIL(o->err, ORTSEAL_E_TAMPERED, "sealed tensor '%.*s': its data file '%s' is shorter than the tensor",
                        (int)st->name.len, st->name.p, ref.location);
        *offset = ref.offset;
    }
    uint8_t head[ORTSEAL_MAX_HEADER_SIZE];
    size_t head_len = *blob_len < sizeof head ? (size_t)*blob_len : sizeof head;
    blob_header h;
    ortseal_error inner = {0};
    if (*f) { if ((code = os_pread(*f, head, head_len, *offset, o->err))) return code; }
    else memcpy(head, ti->raw.p, head_len);
    if (blob_parse_header(head, head_len, &h, &inner) || strcmp(h.key_id, o->key_id) != 0 || h.plaintext_length != st->payload_bytes)
        return FAIL(o->err, ORTSEAL_E_TAMPERED, "sealed tensor '%.*s': its blob does not name the manifest's key and size", (int)st->name.len, st->name.p);
    return ORTSEAL_OK;
}

/* A tensor's blob context, "ortseal/tensor/v3\0" || seal_id || "\0" || identity (malloc'd). */
static char *tensor_context(const opener *o, const sealed_t *st, size_t *len) {
    size_t id_len = strlen(st->identity);
    *len = sizeof TENSOR_CONTEXT_LABEL + 32 + 1 + id_len;
    char *context = malloc(*len);
    if (!context) return NULL;
    memcpy(context, TENSOR_CONTEXT_LABEL, sizeof TENSOR_CONTEXT_LABEL);
    memcpy(context + sizeof TENSOR_CONTEXT_LABEL, o->seal_id, 32);
    context[sizeof TENSOR_CONTEXT_LABEL + 32] = '\0';
    memcpy(context + sizeof TENSOR_CONTEXT_LABEL + 33, st->identity, id_len);
    return context;
}

/* A blob's failure, named after its tensor (a malformed blob inside a signed model is tampering). */
static ortseal_code blob_failed(ortseal_error *err, ortseal_code code, const sealed_t *st, const ortseal_error *inner) {
    if (code == ORTSEAL_E_TAMPERED || code == ORTSEAL_E_ROLLBACK || code == ORTSEAL_E_FORMAT)
        return FAIL(err, code == ORTSEAL_E_FORMAT ? ORTSEAL_E_TAMPERED : code, "sealed tensor '%.*s': %s", (int)st->name.len, st->name.p, inner->message);
    return FAIL(err, code, "%s", inner->message);
}

/* The tensors opened into RAM files rather than the arena: large raw initializers (what the plain model
 * points to as external data) whose ciphertext is in a data file, and large plain external tensors. */
static bool sealed_to_file(const sealed_t *st) {
    tensor_info ti;
    return st->encoding == ENC_RAW && !st->constant && st->payload_bytes > INLINE_MAX && read_tensor(st->blob, &ti) && ti.external;
}

/* The route of this open (docs/sealed-models.md "The route and its trade-offs"): a RAM folder for
 * SMALL_MODEL_BYTES of large tensors or more (any size with ORTSEAL_ROUTE_RAM_FOLDER), else memory;
 * $ORTSEAL_RUNTIME_DIR is checked for small models too, so a misconfiguration shows at once. */
static ortseal_code choose_route(opener *o) {
    uint64_t weights = 0;
    for (size_t i = 0; i < o->n_sealed; i++) if (sealed_to_file(&o->sealed[i])) weights += o->sealed[i].payload_bytes;
    for (size_t i = 0; i < o->n_externals; i++) if (o->externals[i].ref.length > INLINE_MAX) weights += o->externals[i].ref.length;
    if (o->route == ORTSEAL_ROUTE_MEMORY) return ORTSEAL_OK;
    os_ram_mode mode = o->route == ORTSEAL_ROUTE_RAM_FOLDER ? OS_RAM_REQUIRED : weights >= SMALL_MODEL_BYTES ? OS_RAM_AUTO : OS_RAM_CHECK;
    if (!weights) mode = OS_RAM_CHECK; /* nothing to put in a file */
    ortseal_code code = os_ram_open(weights, mode, &o->ram, o->err);
    if (code || !o->ram) return code;
    uint32_t n = 0;
    for (size_t i = 0; i < o->n_sealed; i++) if (sealed_to_file(&o->sealed[i])) o->sealed[i].file = ++n;
    for (size_t i = 0; i < o->n_externals; i++) if (o->externals[i].ref.length > INLINE_MAX) o->externals[i].file = ++n;
    return ORTSEAL_OK;
}

/* ---- the RAM files: one per tensor, several filled at once ------------------------------------------
 * One file per tensor because writes into one tmpfs file are serialized by its inode lock, so page
 * allocation (the real cost of filling RAM) would run on one core; separate files fill in parallel. The
 * largest go first; a tensor's segments are decrypted in parallel only when there are fewer files than
 * cores. Everything a job needs (its data file, already opened; the content key) is fetched on the
 * opening thread first, so the key callback is called from that thread only. */
typedef struct file_job {
    sealed_t *st;          /* or */
    external_t *e;
    size_t index;          /* e's index in the manifest's externals */
    os_file *src, *dst;
    uint64_t src_offset, blob_len, size;
    char *context;
    size_t context_len;
    ortseal_code code;
    ortseal_error err;
} file_job;

typedef struct file_work {
    opener *o;
    file_job *jobs;
    size_t *order;         /* largest first */
    const uint8_t *content_key;
    bool serial;
    atomic_bool failed;
} file_work;

static ortseal_code write_sink(void *dst, const uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err) {
    return os_pwrite(dst, buf, len, offset, err);
}

static ortseal_code copy_plain(file_work *w, file_job *j) {
    uint8_t *chunk = malloc(COPY_CHUNK), digest[32];
    sha256_ctx *c = chunk ? sha256_new() : NULL;
    if (!c) { free(chunk); return FAIL(&j->err, ORTSEAL_E_NOMEM, "out of memory"); }
    ortseal_code code = ORTSEAL_OK;
    for (uint64_t at = 0; !code && at < j->size; at += COPY_CHUNK) {
        size_t n = j->size - at < COPY_CHUNK ? (size_t)(j->size - at) : COPY_CHUNK;
        if (!(code = os_pread(j->src, chunk, n, j->src_offset + at, &j->err))) {
            sha256_update(c, chunk, n);
            code = os_pwrite(j->dst, chunk, n, at, &j->err);
        }
    }
    sha256_final(c, digest);
    ortseal_free(chunk, COPY_CHUNK);
    if (!code && !ct_equal(digest, w->o->mexternal[j->index].sha256, 32))
        code = FAIL(&j->err, ORTSEAL_E_TAMPERED, "plain tensor %zu: the bytes in '%s' differ from those that were signed "
                    "(the data file was changed after sealing)", j->index, j->e->ref.location);
    return code;
}

static void fill_file(void *ctx, size_t k) {
    file_work *w = ctx;
    file_job *j = &w->jobs[w->order[k]];
    if (atomic_load(&w->failed)) { j->code = ORTSEAL_E_RUNTIME; return; } /* another job failed: the open is refused */
    char name[32];
    snprintf(name, sizeof name, "t%u.bin", (j->st ? j->st->file : j->e->file) - 1);
    ortseal_code code = os_ram_create(w->o->ram, name, &j->dst, &j->err);
    if (!code && j->st) {
        ortseal_error inner = {0};
        span_source src = {j->src, j->src_offset};
        blob_dest dest = {NULL, 0, write_sink, j->dst, w->content_key, w->serial};
        code = blob_open_stream(w->o->ks, read_span, &src, j->blob_len, j->context, j->context_len, j->st->digest_hex, &dest, &inner);
        if (code) code = blob_failed(&j->err, code, j->st, &inner);
    } else if (!code) {
        code = copy_plain(w, j);
    }
    os_close(j->dst);
    j->code = code;
    if (code) atomic_store(&w->failed, true);
}

static int larger_first(const void *a, const void *b, void *jobs) {
    const file_job *x = &((file_job *)jobs)[*(const size_t *)a], *y = &((file_job *)jobs)[*(const size_t *)b];
    return x->size < y->size ? 1 : x->size > y->size ? -1 : 0;
}

static void sort_jobs(size_t *order, size_t n, file_job *jobs) {
    for (size_t i = 1; i < n; i++) /* insertion sort: qsort_r is not portable, and n is small */
        for (size_t k = i; k > 0 && larger_first(&order[k - 1], &order[k], jobs) > 0; k--) {
            size_t t = order[k]; order[k] = order[k - 1]; order[k - 1] = t;
        }
}

/* *no_room: a file system ran out of room (the caller opens in memory instead). */
static ortseal_code fill_files(opener *o, bool *no_room) {
    *no_room = false;
    size_t n = 0;
    for (size_t i = 0; i < o->n_sealed; i++) n += o->sealed[i].file != 0;
    for (size_t i = 0; i < o->n_externals; i++) n += o->externals[i].file != 0;
    file_job *jobs = calloc(n ? n : 1, sizeof *jobs);
    size_t *order = calloc(n ? n : 1, sizeof *order);
    file_work w = {o, jobs, order, NULL, n >= os_cores(), false};
    uint8_t content_key[32];
    ortseal_code code = jobs && order ? ORTSEAL_OK : FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory");
    size_t k = 0;
    bool sealed = false;
    for (size_t i = 0; !code && i < o->n_sealed; i++) {
        sealed_t *st = &o->sealed[i];
        if (!st->file) continue;
        tensor_info ti;
        file_job *j = &jobs[k];
        j->st = st;
        j->size = st->payload_bytes;
        order[k] = k;
        k++;
        if ((code = locate_blob(o, st, &ti, &j->src, &j->src_offset, &j->blob_len))) break;
        if (!(j->context = tensor_context(o, st, &j->context_len))) code = FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory");
        sealed = true;
    }
    for (size_t i = 0; !code && i < o->n_externals; i++) {
        external_t *e = &o->externals[i];
        if (!e->file) continue;
        file_job *j = &jobs[k];
        uint64_t size;
        j->e = e;
        j->index = i;
        j->size = e->ref.length;
        j->src_offset = e->ref.offset;
        order[k] = k;
        k++;
        if ((code = data_file(o, e->ref.location, &j->src, &size))) break;
        if (e->ref.offset > size || e->ref.length > size - e->ref.offset)
            code = FAIL(o->err, ORTSEAL_E_TAMPERED, "a plain tensor's data file '%s' is shorter than the manifest says", e->ref.location);
    }
    /* every blob of a model names the manifest's key (locate_blob): fetched once, here */
    if (!code && sealed && keyset_content_key(o->ks, o->key_id, content_key, o->err, &code)) w.content_key = content_key;
    if (!code) {
        sort_jobs(order, n, jobs);
        os_parallel(n, fill_file, &w);
        for (size_t i = 0; i < n; i++) {
            if (!jobs[i].code || jobs[i].code == ORTSEAL_E_RUNTIME) continue; /* RUNTIME: skipped after another failed */
            *no_room = jobs[i].code == ORTSEAL_E_NOMEM && strstr(jobs[i].err.message, "RAM file") != NULL;
            code = FAIL(o->err, jobs[i].code, "%s", jobs[i].err.message);
            break;
        }
        for (size_t i = 0; !code && i < n; i++) /* only a skipped job left: should not happen */
            if (jobs[i].code) code = FAIL(o->err, ORTSEAL_E_RUNTIME, "opening the weights into RAM files failed");
    }
    wipe(content_key, sizeof content_key);
    for (size_t i = 0; jobs && i < n; i++) free(jobs[i].context);
    free(jobs);
    free(order);
    return code;
}

static ortseal_code open_in_arena(opener *o) {
    uint64_t total = 0;
    bool fits = true;
    for (size_t i = 0; i < o->n_sealed && fits; i++)
        if (!o->sealed[i].file) { o->sealed[i].arena_offset = total; fits = arena_add(&total, o->sealed[i].payload_bytes); }
    for (size_t i = 0; i < o->n_externals && fits; i++)
        if (!o->externals[i].file) { o->externals[i].arena_offset = total; fits = arena_add(&total, o->externals[i].ref.length); }
    if (!fits) return FAIL(o->err, ORTSEAL_E_FORMAT, "the model's tensors add up to more than 2^63 bytes");
    if (total > SIZE_MAX || !(o->arena = xcalloc((size_t)total, 1))) return FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory for %llu bytes of weights", (unsigned long long)total);
    o->arena_len = (size_t)total;
    ortseal_code code = ORTSEAL_OK;
    for (size_t i = 0; i < o->n_sealed && !code; i++) {
        sealed_t *st = &o->sealed[i];
        if (st->file) continue;
        tensor_info ti;
        os_file *f = NULL;
        uint64_t offset = 0, blob_len = 0;
        size_t n = 0;
        if ((code = locate_blob(o, st, &ti, &f, &offset, &blob_len))) break;
        char *context = tensor_context(o, st, &n);
        if (!context) { code = FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory"); break; }
        uint8_t *dst = o->arena + st->arena_offset;
        ortseal_error inner = {0};
        if (f) {
            span_source src = {f, offset};
            blob_dest dest = {dst, (size_t)st->payload_bytes, NULL, NULL, NULL, false};
            code = blob_open_stream(o->ks, read_span, &src, blob_len, context, n, st->digest_hex, &dest, &inner);
        } else {
            code = blob_open_into(o->ks, ti.raw.p, ti.raw.len, context, n, 0, st->digest_hex, NULL, dst, (size_t)st->payload_bytes, &inner);
        }
        free(context);
        if (code) code = blob_failed(o->err, code, st, &inner);
    }
    for (size_t i = 0; i < o->n_externals && !code; i++) {
        external_t *e = &o->externals[i];
        if (e->file) continue;
        os_file *f;
        uint64_t size;
        if ((code = data_file(o, e->ref.location, &f, &size))) break;
        if (e->ref.offset > size || e->ref.length > size - e->ref.offset) {
            code = FAIL(o->err, ORTSEAL_E_TAMPERED, "a plain tensor's data file '%s' is shorter than the manifest says", e->ref.location);
            break;
        }
        uint8_t *at = o->arena + e->arena_offset, digest[32];
        if ((code = os_pread(f, at, (size_t)e->ref.length, e->ref.offset, o->err))) break;
        sha256(at, (size_t)e->ref.length, digest);
        if (!ct_equal(digest, o->mexternal[i].sha256, 32))
            code = FAIL(o->err, ORTSEAL_E_TAMPERED, "plain tensor %zu: the bytes in '%s' differ from those that were signed "
                        "(the data file was changed after sealing)", i, e->ref.location);
    }
    return code;
}

static ortseal_code open_tensors(opener *o) {
    ortseal_code code = choose_route(o);
    if (!code) code = open_in_arena(o);
    bool no_room = false;
    if (!code && o->ram) code = fill_files(o, &no_room);
    if (code && no_room && o->route == ORTSEAL_ROUTE_AUTO) {
        /* the folder filled up meanwhile (a 64 MiB /dev/shm in a container): open in memory instead */
        os_ram_remove(o->ram);
        o->ram = NULL;
        for (size_t i = 0; i < o->n_sealed; i++) o->sealed[i].file = 0;
        for (size_t i = 0; i < o->n_externals; i++) o->externals[i].file = 0;
        ortseal_free(o->arena, o->arena_len);
        o->arena = NULL;
        o->arena_len = 0;
        code = open_in_arena(o);
    }
    return code;
}

/* ---- step 7: the plain model ORT gets ------------------------------------------------------------- */

static sealed_t *sealed_at_node(opener *o, const uint8_t *at) {
    for (size_t i = 0; i < o->n_sealed; i++) if (o->sealed[i].node == at) return &o->sealed[i];
    return NULL;
}

static sealed_t *sealed_at_blob(opener *o, const uint8_t *at) {
    for (size_t i = 0; i < o->n_sealed; i++) if (o->sealed[i].blob_at == at) return &o->sealed[i];
    return NULL;
}

static external_t *external_at(opener *o, const uint8_t *at) {
    for (size_t i = 0; i < o->n_externals; i++) if (o->externals[i].at == at) return &o->externals[i];
    return NULL;
}

/* file: 1 + n for the RAM file t<n>.bin (offset 0), 0 for the in-memory weights arena at offset. */
static void put_external_ref(pb_writer *w, uint32_t file_no, uint64_t offset, uint64_t length) {
    char num[32], ram_file[32];
    const char *file = length > MAX_FILE_TENSOR ? ORTSEAL_VALUES_FILE : ORTSEAL_WEIGHTS_FILE;
    if (file_no) {
        snprintf(ram_file, sizeof ram_file, "t%u.bin", file_no - 1);
        file = ram_file;
        offset = 0;
    }
    size_t m = pb_begin(w, T_EXTERNAL);
    pb_put_bytes(w, 1, "location", 8);
    pb_put_bytes(w, 2, file, strlen(file));
    pb_end(w, m);
    snprintf(num, sizeof num, "%llu", (unsigned long long)offset);
    m = pb_begin(w, T_EXTERNAL);
    pb_put_bytes(w, 1, "offset", 6);
    pb_put_bytes(w, 2, num, strlen(num));
    pb_end(w, m);
    snprintf(num, sizeof num, "%llu", (unsigned long long)length);
    m = pb_begin(w, T_EXTERNAL);
    pb_put_bytes(w, 1, "length", 6);
    pb_put_bytes(w, 2, num, strlen(num));
    pb_end(w, m);
    pb_put_uint(w, T_LOCATION, 1);
}

/* A sealed tensor's opened value as field `field` of the message being written: a dense TensorProto, or
 * (sparse) the SparseTensorProto payload. Large raw tensors point into the weights arena. */
static ortseal_code put_value(opener *o, pb_writer *w, uint32_t field, sealed_t *st, bool allow_external) {
    const uint8_t *payload = st->file ? NULL : o->arena + st->arena_offset; /* a RAM file's is not in memory */
    size_t n = (size_t)st->payload_bytes;
    if (st->encoding == ENC_RAW) {
        size_t m = pb_begin(w, field);
        for (size_t i = 0; i < st->rank; i++) pb_put_uint(w, T_DIMS, (uint64_t)st->shape[i]);
        pb_put_uint(w, T_TYPE, (uint64_t)st->dtype);
        pb_put_bytes(w, T_NAME, st->name.p, st->name.len);
        if (allow_external && n > INLINE_MAX) put_external_ref(w, st->file, st->arena_offset, n);
        else pb_put_bytes(w, T_RAW, payload, n);
        if (allow_external && n > MAX_FILE_TENSOR && !st->file) {
            if (!o->values || o->n_values == MAX_VALUES) { pb_end(w, m); return FAIL(o->err, ORTSEAL_E_FORMAT, "more than %d tensors over 2 GiB", MAX_VALUES); }
            model_value *v = &o->values[o->n_values];
            v->name = malloc(st->name.len + 1);
            v->shape = malloc((st->rank ? st->rank : 1) * sizeof *v->shape);
            if (!v->name || !v->shape) { free(v->name); free(v->shape); pb_end(w, m); return FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory"); }
            if (st->name.len) memcpy(v->name, st->name.p, st->name.len);
            v->name[st->name.len] = '\0';
            memcpy(v->shape, st->shape, st->rank * sizeof *v->shape);
            v->rank = st->rank;
            v->dtype = st->dtype;
            v->offset = st->arena_offset;
            v->len = n;
            o->n_values++;
        }
        pb_end(w, m);
        return ORTSEAL_OK;
    }
    /* Serialized payloads: check what they hold against the node's signed attributes, then restore the
     * name (cleared at sealing) by appending it: protobuf keeps the last value of a field and merges a
     * repeated embedded message into the first. */
    pb_span p = {payload, n};
    int64_t *dims = NULL;
    size_t rank = 0;
    tensor_info ti = {0};
    bool ok;
    if (st->encoding == ENC_TENSOR_PROTO) {
        ok = read_tensor(p, &ti) && read_ints(p, T_DIMS, &dims, &rank);
    } else {
        pb_span values = {0};
        pb_reader r = pb_open(p);
        pb_field f;
        while (pb_next(&r, &f)) if (f.number == SP_VALUES && f.wire == PB_LEN) values = f.data;
        ok = !r.bad && values.p && read_tensor(values, &ti) && read_ints(p, SP_DIMS, &dims, &rank);
    }
    ok = ok && ti.type == st->dtype && rank == st->rank && (!rank || memcmp(dims, st->shape, rank * sizeof *dims) == 0);
    free(dims);
    if (!ok) return FAIL(o->err, ORTSEAL_E_FORMAT, "sealed tensor '%.*s': its payload's type or shape is not the node's", (int)st->name.len, st->name.p);
    size_t m = pb_begin(w, field);
    pb_put(w, payload, n);
    if (st->encoding == ENC_TENSOR_PROTO) pb_put_bytes(w, T_NAME, st->name.p, st->name.len);
    else {
        size_t v = pb_begin(w, SP_VALUES);
        pb_put_bytes(w, T_NAME, st->name.p, st->name.len);
        pb_end(w, v);
    }
    pb_end(w, m);
    return ORTSEAL_OK;
}

static ortseal_code write_body(opener *o, pb_writer *w, pb_span body, bool function, int depth);

static bool node_has_subgraph(pb_span node) {
    pb_reader r = pb_open(node);
    pb_field f;
    while (pb_next(&r, &f)) {
        attr_info a;
        if (f.number == NODE_ATTR && f.wire == PB_LEN && read_attr(f.data, &a) && (a.type == ATYPE_GRAPH || a.type == ATYPE_GRAPHS))
            return true;
    }
    return false;
}

static ortseal_code write_node(opener *o, pb_writer *w, uint32_t field, pb_field *node, int depth) {
    if (!node_has_subgraph(node->data)) { pb_put(w, node->whole.p, node->whole.len); return ORTSEAL_OK; }
    size_t m = pb_begin(w, field);
    pb_reader r = pb_open(node->data);
    pb_field f;
    ortseal_code code = ORTSEAL_OK;
    while (!code && pb_next(&r, &f)) {
        attr_info a;
        if (f.number != NODE_ATTR || f.wire != PB_LEN || !read_attr(f.data, &a) || (a.type != ATYPE_GRAPH && a.type != ATYPE_GRAPHS)) {
            pb_put(w, f.whole.p, f.whole.len);
            continue;
        }
        size_t am = pb_begin(w, NODE_ATTR);
        pb_reader ar = pb_open(f.data);
        pb_field af;
        while (!code && pb_next(&ar, &af)) {
            if ((af.number == ATTR_G || af.number == ATTR_GRAPHS) && af.wire == PB_LEN) {
                size_t gm = pb_begin(w, af.number);
                code = write_body(o, w, af.data, false, depth + 1);
                pb_end(w, gm);
            } else pb_put(w, af.whole.p, af.whole.len);
        }
        pb_end(w, am);
    }
    pb_end(w, m);
    return code;
}

static void put_restored_input(pb_writer *w, const sealed_t *st) {
    size_t m = pb_begin(w, GRAPH_INPUT);
    pb_put_bytes(w, 1, st->name.p, st->name.len);
    size_t type = pb_begin(w, 2), tensor = pb_begin(w, 1);
    pb_put_uint(w, 1, (uint64_t)st->dtype);
    size_t shape = pb_begin(w, 2);
    for (size_t i = 0; i < st->rank; i++) {
        size_t d = pb_begin(w, 1);
        pb_put_uint(w, 1, (uint64_t)st->shape[i]);
        pb_end(w, d);
    }
    pb_end(w, shape);
    pb_end(w, tensor);
    pb_end(w, type);
    pb_end(w, m);
}

static bool is_ortseal_opset(pb_span opset) {
    pb_reader r = pb_open(opset);
    pb_field f;
    while (pb_next(&r, &f)) if (f.number == 1 && f.wire == PB_LEN) return pb_span_eq(f.data, DOMAIN);
    return false;
}

static ortseal_code write_body(opener *o, pb_writer *w, pb_span body, bool function, int depth) {
    uint32_t node_field = function ? FN_NODE : GRAPH_NODE;
    ortseal_code code = ORTSEAL_OK;
    /* the sealed tensors of this body (its own nodes, not its subgraphs') */
    sealed_t **local = NULL;
    size_t n_local = 0;
    pb_reader r = pb_open(body);
    pb_field f;
    while (pb_next(&r, &f)) {
        sealed_t *st = f.number == node_field ? sealed_at_node(o, f.whole.p) : NULL;
        if (!st) continue;
        sealed_t **p = realloc(local, (n_local + 1) * sizeof *p);
        if (!p) { free(local); return FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory"); }
        local = p;
        local[n_local++] = st;
    }
    r = pb_open(body);
    while (!code && pb_next(&r, &f)) {
        if (f.wire != PB_LEN) { pb_put(w, f.whole.p, f.whole.len); continue; }
        if (f.number == node_field) {
            sealed_t *st = sealed_at_node(o, f.whole.p);
            node_info n;
            read_node(f.data, &n);
            if (st) {
                if (st->constant) { /* Constant(value | sparse_value) named after its output, in the Unseal's place */
                    size_t m = pb_begin(w, node_field);
                    pb_put_bytes(w, NODE_OUTPUT, st->name.p, st->name.len);
                    pb_put_bytes(w, NODE_NAME, st->name.p, st->name.len);
                    pb_put_bytes(w, NODE_OP, "Constant", 8);
                    size_t a = pb_begin(w, NODE_ATTR);
                    bool sparse = st->encoding == ENC_SPARSE;
                    pb_put_bytes(w, ATTR_NAME, sparse ? "sparse_value" : "value", sparse ? 12 : 5);
                    pb_put_uint(w, ATTR_TYPE, sparse ? ATYPE_SPARSE : ATYPE_TENSOR);
                    code = put_value(o, w, sparse ? ATTR_SPARSE : ATTR_T, st, false);
                    pb_end(w, a);
                    pb_end(w, m);
                }
            } else if (sealed_at_blob(o, f.whole.p) || (is_constant(&n) && starts_with(n.outputs[0], LIKE_PREFIX))) {
                /* the blob's Constant, or a like tensor: gone */
            } else code = write_node(o, w, node_field, &f, depth);
        } else if (!function && f.number == GRAPH_INITIALIZER) {
            tensor_info ti;
            read_tensor(f.data, &ti);
            external_t *e = external_at(o, f.whole.p);
            if (sealed_at_blob(o, f.whole.p) || starts_with(ti.name, LIKE_PREFIX)) continue;
            if (!e) { pb_put(w, f.whole.p, f.whole.len); continue; }
            /* a plain external tensor, read and checked: every field but its external-data ones, then its bytes */
            size_t m = pb_begin(w, GRAPH_INITIALIZER);
            pb_reader t = pb_open(f.data);
            pb_field tf;
            while (pb_next(&t, &tf))
                if (tf.number != T_EXTERNAL && tf.number != T_LOCATION && tf.number != T_RAW) pb_put(w, tf.whole.p, tf.whole.len);
            if (e->ref.length > INLINE_MAX) put_external_ref(w, e->file, e->arena_offset, e->ref.length);
            else pb_put_bytes(w, T_RAW, o->arena + e->arena_offset, (size_t)e->ref.length);
            pb_end(w, m);
        } else if (!function && f.number == GRAPH_INPUT) {
            pb_span name = {0};
            pb_reader v = pb_open(f.data);
            pb_field vf;
            while (pb_next(&v, &vf)) if (vf.number == 1 && vf.wire == PB_LEN) name = vf.data;
            if (starts_with(name, LIKE_PREFIX)) continue;
            const sealed_t *blob_of = NULL;
            for (size_t i = 0; i < n_local && !blob_of; i++) if (spans_eq(local[i]->blob_name, name)) blob_of = local[i];
            if (!blob_of) pb_put(w, f.whole.p, f.whole.len);
            else if (o->ir_version < 4) put_restored_input(w, blob_of); /* its blob's place among the inputs */
        } else if (function && f.number == FN_OPSET && is_ortseal_opset(f.data)) {
            continue;
        } else pb_put(w, f.whole.p, f.whole.len);
    }
    for (size_t i = 0; !code && i < n_local; i++)
        if (!local[i]->constant)
            code = put_value(o, w, local[i]->encoding == ENC_SPARSE ? GRAPH_SPARSE_INITIALIZER : GRAPH_INITIALIZER, local[i], true);
    free(local);
    return code;
}

static ortseal_code write_model(opener *o, pb_writer *w) {
    pb_reader r = pb_open((pb_span){o->data, o->body_len});
    pb_field f;
    ortseal_code code = ORTSEAL_OK;
    while (!code && pb_next(&r, &f)) {
        if (f.number == MODEL_OPSET && f.wire == PB_LEN && is_ortseal_opset(f.data)) continue;
        if ((f.number == MODEL_GRAPH || f.number == MODEL_FUNCTIONS) && f.wire == PB_LEN) {
            size_t m = pb_begin(w, f.number);
            code = write_body(o, w, f.data, f.number == MODEL_FUNCTIONS, 0);
            pb_end(w, m);
        } else pb_put(w, f.whole.p, f.whole.len);
    }
    if (!code && w->failed) code = FAIL(o->err, ORTSEAL_E_NOMEM, "out of memory writing the opened model");
    return code;
}

/* ---- the API ----------------------------------------------------------------------------------- */

static void opener_free(opener *o) {
    for (size_t i = 0; i < o->n_sealed; i++) { free(o->sealed[i].shape); free(o->sealed[i].identity); }
    free(o->sealed);
    free(o->externals);
    free(o->entries);
    free(o->mexternal);
    json_free(o->manifest_doc);
    for (size_t i = 0; i < o->n_files; i++) os_close(o->files[i].f);
    if (o->arena) ortseal_free(o->arena, o->arena_len);
    os_ram_remove(o->ram); /* a refusal leaves no file or folder */
}

static ortseal_code open_model(const uint8_t *data, size_t len, os_dir *dir, const ortseal_keyset *ks, uint64_t min_release,
                               const char *model_name, ortseal_route route, ortseal_model **out, ortseal_error *err) {
    opener o = {.ks = ks, .err = err, .data = data, .body_len = len, .dir = dir, .route = route};
    pb_writer w = {0};
    ortseal_model *m = calloc(1, sizeof *m);
    if (!m) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    o.values = m->values;
    ortseal_code code = check_seal(&o, model_name, min_release); /* steps 2-4 */
    if (!code) code = check_structure(&o);                       /* 5 */
    if (!code) code = open_tensors(&o);                          /* 6 */
    if (!code) code = write_model(&o, &w);                       /* 7 */
    m->n_values = o.n_values;
    if (!code && !(m->name = strdup(o.model_name))) code = FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    if (code) {
        ortseal_model_free(m);
        pb_writer_free(&w);
        opener_free(&o);
        return code;
    }
    m->proto = w.buf;
    m->proto_len = w.len;
    m->arena = o.arena;
    m->arena_len = o.arena_len;
    m->release = o.release;
    m->n_sealed = o.n_sealed;
    m->ram = o.ram;
    o.arena = NULL;
    o.ram = NULL;
    opener_free(&o);
    *out = m;
    clear_error(err);
    return ORTSEAL_OK;
}

ortseal_code ortseal_model_open_route(const char *path, const uint8_t *bytes, size_t len, const char *folder,
                                      const ortseal_keyset *ks, uint64_t min_release, const char *model_name,
                                      ortseal_route route, ortseal_model **out, ortseal_error *err) {
    if (out) *out = NULL; /* on every failure, misuse too: a host may free what it got */
    if (!out || !ks || (!path && !bytes)) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_model_open needs a model, a keyset and out");
    if (route != ORTSEAL_ROUTE_AUTO && route != ORTSEAL_ROUTE_MEMORY && route != ORTSEAL_ROUTE_RAM_FOLDER)
        return FAIL(err, ORTSEAL_E_MISUSE, "unknown route %d", (int)route);
    os_buffer file = {0};
    os_dir *dir = NULL;
    ortseal_code code = path ? os_read_model(path, &file, &dir, err) : folder ? os_open_dir(folder, &dir, err) : ORTSEAL_OK;
    if (code) return code;
    code = open_model(path ? file.data : bytes, path ? file.len : len, dir, ks, min_release, model_name, route, out, err);
    os_buffer_free(&file);
    os_dir_close(dir);
    return code;
}

ortseal_code ortseal_model_open_ex(const char *path, const uint8_t *bytes, size_t len, const char *folder,
                                   const ortseal_keyset *ks, uint64_t min_release, const char *model_name,
                                   ortseal_model **out, ortseal_error *err) {
    return ortseal_model_open_route(path, bytes, len, folder, ks, min_release, model_name, ORTSEAL_ROUTE_AUTO, out, err);
}

ortseal_code ortseal_model_open(const char *path, const ortseal_keyset *ks, uint64_t min_release, ortseal_model **out,
                                ortseal_error *err) {
    return ortseal_model_open_ex(path, NULL, 0, NULL, ks, min_release, NULL, out, err);
}

ortseal_code ortseal_model_open_bytes(const uint8_t *bytes, size_t len, const char *folder, const ortseal_keyset *ks,
                                      uint64_t min_release, ortseal_model **out, ortseal_error *err) {
    if (!bytes) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_model_open_bytes needs bytes");
    return ortseal_model_open_ex(NULL, bytes, len, folder, ks, min_release, NULL, out, err);
}

const uint8_t *ortseal_model_bytes(const ortseal_model *m, size_t *len) { *len = m ? m->proto_len : 0; return m ? m->proto : NULL; }
const char *ortseal_model_name(const ortseal_model *m) { return m ? m->name : NULL; }
uint64_t ortseal_model_release(const ortseal_model *m) { return m ? m->release : 0; }
size_t ortseal_model_sealed_tensors(const ortseal_model *m) { return m ? m->n_sealed : 0; }

const char *ortseal_model_folder(const ortseal_model *m) { return m ? os_ram_path(m->ram) : NULL; }

const uint8_t *ortseal_model_weights(const ortseal_model *m, const char **file_name, size_t *len) {
    *file_name = ORTSEAL_WEIGHTS_FILE;
    *len = m ? m->arena_len : 0;
    return m ? m->arena : NULL;
}

void ortseal_model_drop_weights(ortseal_model *m) {
    if (!m) return;
    if (m->proto) ortseal_free(m->proto, m->proto_len);
    if (m->arena) ortseal_free(m->arena, m->arena_len);
    os_ram_remove(m->ram); /* the RAM files are unlinked: tmpfs frees their pages */
    m->ram = NULL;
    m->proto = m->arena = NULL;
    m->proto_len = m->arena_len = 0;
}

size_t ortseal_model_value_count(const ortseal_model *m) { return m ? m->n_values : 0; }

const uint8_t *ortseal_model_value(const ortseal_model *m, size_t i, const char **name, int32_t *onnx_type,
                                   const int64_t **shape, size_t *rank, size_t *len) {
    if (!m || i >= m->n_values || !m->arena) return NULL;
    const model_value *v = &m->values[i];
    *name = v->name;
    *onnx_type = v->dtype;
    *shape = v->shape;
    *rank = v->rank;
    *len = (size_t)v->len;
    return m->arena + v->offset;
}

void ortseal_model_free(ortseal_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_values; i++) { free(m->values[i].name); free(m->values[i].shape); }
    if (m->proto) ortseal_free(m->proto, m->proto_len);
    if (m->arena) ortseal_free(m->arena, m->arena_len);
    os_ram_remove(m->ram);
    free(m->name);
    free(m);
}
