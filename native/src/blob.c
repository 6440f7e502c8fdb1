/* Sealed blob v2 (docs/format.md "Sealed blob v2"): header, STREAM segments of AES-256-GCM, content
 * digest, Ed25519 signature. Constants carry the spec's names. */
#include "internal.h"
#include "os.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t MAGIC[8] = {'O', 'R', 'T', 'S', 'E', 'A', 'L', '\n'};
#define VERSION 2
#define ALGORITHM_AES256GCM_HKDF_SHA256_ED25519 1
#define FLAG_SIGNED 0x01
#define MAX_ID_LENGTH 64
#define SALT_SIZE 32
#define NONCE_PREFIX_SIZE 7
#define MIN_SEGMENT_SIZE (1u << 12)
#define MAX_SEGMENT_SIZE (1u << 26)
#define MAX_SEGMENTS (1ull << 32) /* the segment index is a u32 in the nonce */
#define MAX_RELEASE ((1ull << 63) - 1)
#define LAST_SEGMENT 0x01
#define LABEL(s) (const uint8_t *)(s), sizeof(s) /* the labels end in "\0": sizeof counts it */
#define CONTEXT_LABEL "ortseal v2 context"
#define BLOB_KEY_LABEL "ortseal v2 blob key"
#define CONTENT_LABEL "ortseal v2 content"
#define SIGNATURE_LABEL "ortseal v2 signature"
#define PURPOSE_BLOB "blob"

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static bool printable_id(const uint8_t *p, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x21 || p[i] > 0x7e) return false;
        out[i] = (char)p[i];
    }
    out[n] = '\0';
    return true;
}

ortseal_code blob_parse_header(const uint8_t *b, size_t len, blob_header *h, ortseal_error *err) {
    memset(h, 0, sizeof *h);
    if (len < 9 || memcmp(b, MAGIC, 8) != 0) return FAIL(err, ORTSEAL_E_FORMAT, "not an ortseal blob (bad magic)");
    if (b[8] == 1) return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob format v1 is refused (its signature did not cover the ciphertext); seal it again with this ortseal");
    if (b[8] != VERSION) return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob version %u is not supported: upgrade ortseal", b[8]);
    if (len < BLOB_FIXED_HEADER) return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob header is truncated");
    if (b[9] != ALGORITHM_AES256GCM_HKDF_SHA256_ED25519) return FAIL(err, ORTSEAL_E_FORMAT, "unknown sealed blob algorithm %u", b[9]);
    h->flags = b[10];
    if (h->flags & ~FLAG_SIGNED) return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob has unknown flags 0x%02x", h->flags);
    size_t kid_len = b[11], sid_len = b[103];
    if (kid_len < 1 || kid_len > MAX_ID_LENGTH) return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob key id length %zu is out of range", kid_len);
    if ((h->flags & FLAG_SIGNED) ? (sid_len < 1 || sid_len > MAX_ID_LENGTH) : sid_len != 0)
        return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob signer id length %zu does not fit its flags", sid_len);
    h->segment_size = (uint32_t)le(b + 12, 4);
    if (h->segment_size < MIN_SEGMENT_SIZE || h->segment_size > MAX_SEGMENT_SIZE)
        return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob segment size %u is out of range", h->segment_size);
    h->plaintext_length = le(b + 16, 8);
    h->release = le(b + 24, 8);
    if (h->release > MAX_RELEASE) return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob release is out of range");
    h->salt = b + 32;
    h->nonce_prefix = b + 64;
    h->context_digest = b + 71;
    h->header_len = BLOB_FIXED_HEADER + kid_len + sid_len;
    if (len < h->header_len) return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob header is truncated");
    if (!printable_id(b + BLOB_FIXED_HEADER, kid_len, h->key_id) ||
        !printable_id(b + BLOB_FIXED_HEADER + kid_len, sid_len, h->signer_id))
        return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob key or signer id is not printable ASCII");
    h->segments = h->plaintext_length ? (h->plaintext_length - 1) / h->segment_size + 1 : 1;
    if (h->segments > MAX_SEGMENTS) return FAIL(err, ORTSEAL_E_FORMAT, "sealed blob declares more than 2^32 segments");
    /* No overflow: plaintext_length < 2^32 * 2^26 and segments <= 2^32. */
    h->total_len = h->header_len + h->plaintext_length + GCM_TAG_SIZE * h->segments +
                   ((h->flags & FLAG_SIGNED) ? ED25519_SIG_SIZE : 0);
    return ORTSEAL_OK;
}

ortseal_code ortseal_plaintext_size(const uint8_t *blob, size_t len, uint64_t *size, ortseal_error *err) {
    blob_header h;
    if (!blob || !size) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_plaintext_size needs a blob and size");
    ortseal_code code = blob_parse_header(blob, len, &h, err);
    if (!code) { *size = h.plaintext_length; clear_error(err); }
    return code;
}

static void context_digest(const void *ctx, size_t len, uint8_t out[32]) {
    sha256_ctx *c = sha256_new();
    sha256_update(c, CONTEXT_LABEL, sizeof CONTEXT_LABEL);
    sha256_update(c, ctx, len);
    sha256_final(c, out);
}

static bool blob_key(const uint8_t content_key[32], const uint8_t *salt, const uint8_t *ctx_digest, uint8_t out[32]) {
    uint8_t info[sizeof BLOB_KEY_LABEL + 32];
    memcpy(info, BLOB_KEY_LABEL, sizeof BLOB_KEY_LABEL);
    memcpy(info + sizeof BLOB_KEY_LABEL, ctx_digest, 32);
    return hkdf_sha256(content_key, 32, salt, SALT_SIZE, info, sizeof info, out);
}

static void segment_nonce(const uint8_t *prefix, uint64_t i, bool last, uint8_t nonce[12]) {
    memcpy(nonce, prefix, NONCE_PREFIX_SIZE);
    nonce[7] = (uint8_t)(i >> 24); nonce[8] = (uint8_t)(i >> 16); nonce[9] = (uint8_t)(i >> 8); nonce[10] = (uint8_t)i;
    nonce[11] = last ? LAST_SEGMENT : 0;
}

static void signature_message(const uint8_t digest[32], uint8_t msg[sizeof SIGNATURE_LABEL + 32]) {
    memcpy(msg, SIGNATURE_LABEL, sizeof SIGNATURE_LABEL);
    memcpy(msg + sizeof SIGNATURE_LABEL, digest, 32);
}

/* Segments are independent: their digests and their decryption run on every core (os_parallel), a batch
 * at a time, each task with its own AES-GCM context (EVP contexts are not shared between threads). */
typedef struct segment_work {
    const blob_header *h;
    const uint8_t *stored;   /* the stored segments of this batch, back to back */
    uint64_t first;          /* index of the batch's first segment */
    uint8_t (*digests)[32];  /* per segment of the batch */
    const uint8_t *key;      /* blob key, or NULL: hash only */
    const uint8_t *aad;
    uint8_t *out;            /* the plaintext, from segment out_first on */
    bool *ok;
    uint64_t out_first;
} segment_work;

static uint64_t segment_plain_len(const blob_header *h, uint64_t i) {
    return i + 1 < h->segments ? h->segment_size : h->plaintext_length - i * h->segment_size;
}

static void segment_task(void *ctx, size_t k) {
    const segment_work *w = ctx;
    uint64_t i = w->first + k, n = segment_plain_len(w->h, i);
    const uint8_t *stored = w->stored + k * ((uint64_t)w->h->segment_size + GCM_TAG_SIZE);
    if (w->digests) sha256(stored, (size_t)n + GCM_TAG_SIZE, w->digests[k]);
    if (!w->key) return;
    uint8_t nonce[12];
    segment_nonce(w->h->nonce_prefix, i, i + 1 == w->h->segments, nonce);
    gcm_ctx *g = gcm_new(w->key);
    w->ok[k] = g && gcm_decrypt(g, nonce, w->aad, w->h->header_len, stored, (size_t)n, stored + n,
                                w->out + (i - w->out_first) * (uint64_t)w->h->segment_size);
    gcm_free(g);
}

#define BATCH_SEGMENTS 64

/* content_digest = SHA-256(label || header || SHA-256(stored segment_i)...) over the bytes as stored. */
static void content_digest(const uint8_t *blob, const blob_header *h, uint8_t out[32]) {
    sha256_ctx *c = sha256_new();
    sha256_update(c, CONTENT_LABEL, sizeof CONTENT_LABEL);
    sha256_update(c, blob, h->header_len);
    uint8_t digests[BATCH_SEGMENTS][32];
    for (uint64_t first = 0; first < h->segments; first += BATCH_SEGMENTS) {
        size_t n = (size_t)(h->segments - first < BATCH_SEGMENTS ? h->segments - first : BATCH_SEGMENTS);
        segment_work w = {h, blob + h->header_len + first * ((uint64_t)h->segment_size + GCM_TAG_SIZE), first, digests,
                          NULL, NULL, NULL, NULL, 0};
        os_parallel(n, segment_task, &w);
        for (size_t k = 0; k < n; k++) sha256_update(c, digests[k], 32);
    }
    sha256_final(c, out);
}

/* Decrypt every segment of an in-memory blob in parallel; false on any tag failure. */
static bool decrypt_all(const uint8_t *blob, const blob_header *h, const uint8_t key[32], uint8_t *out) {
    bool ok[BATCH_SEGMENTS], all = true;
    for (uint64_t first = 0; all && first < h->segments; first += BATCH_SEGMENTS) {
        size_t n = (size_t)(h->segments - first < BATCH_SEGMENTS ? h->segments - first : BATCH_SEGMENTS);
        segment_work w = {h, blob + h->header_len + first * ((uint64_t)h->segment_size + GCM_TAG_SIZE), first, NULL,
                          key, blob, out, ok, 0};
        os_parallel(n, segment_task, &w);
        for (size_t k = 0; k < n; k++) all = all && ok[k];
    }
    return all;
}

ortseal_code blob_open_into(const ortseal_keyset *ks, const uint8_t *blob, size_t len, const void *context,
                            size_t context_len, uint64_t min_release, const uint8_t *expected_digest,
                            const char *purpose, uint8_t *out, size_t out_cap, ortseal_error *err) {
    blob_header h;
    ortseal_code code = blob_parse_header(blob, len, &h, err); /* 1 */
    if (code) return code;
    if (h.total_len != len) /* 2 */
        return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob length %zu differs from the %llu its header declares (truncated or extended)",
                    len, (unsigned long long)h.total_len);
    if (out_cap < h.plaintext_length) return FAIL(err, ORTSEAL_E_MISUSE, "output buffer too small for the blob");
    uint8_t ctx[32];
    context_digest(context, context_len, ctx);
    if (!ct_equal(ctx, h.context_digest, 32)) /* 3 */
        return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob was sealed for another context");
    if (h.release < min_release) /* 4 */
        return FAIL(err, ORTSEAL_E_ROLLBACK, "sealed blob release %llu is below the minimum %llu (an older release put in place of a newer one?)",
                    (unsigned long long)h.release, (unsigned long long)min_release);
    /* 5: the commitment, before any content key is asked for. */
    uint8_t digest[32], committed[32];
    content_digest(blob, &h, digest);
    if (expected_digest) {
        memcpy(committed, expected_digest, 32);
    } else if (!keyset_allows_unsigned(ks)) {
        if (!(h.flags & FLAG_SIGNED)) return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob is not signed and this keyset requires signatures");
        const uint8_t *pub = keyset_trusted_key(ks, h.signer_id, purpose);
        if (!pub) return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob is signed by key %s, which this keyset does not trust for '%s'", h.signer_id, purpose);
        uint8_t msg[sizeof SIGNATURE_LABEL + 32];
        signature_message(digest, msg);
        if (!ed25519_verify(pub, msg, sizeof msg, blob + len - ED25519_SIG_SIZE))
            return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob signature does not verify");
        memcpy(committed, digest, 32);
    } else {
        memcpy(committed, digest, 32);
    }
    if (!ct_equal(digest, committed, 32))
        return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob content digest differs from the one its signed manifest names");
    uint8_t content_key[32], key[32];
    if (!keyset_content_key(ks, h.key_id, content_key, err, &code)) return code; /* 6 */
    bool ok = blob_key(content_key, h.salt, h.context_digest, key);
    wipe(content_key, 32);
    if (!ok) return FAIL(err, ORTSEAL_E_RUNTIME, "HKDF failed");
    /* 7: decrypt. The digest above was computed over the same bytes in memory we own (read once), so
     * there is no second read for a file to change under. */
    ok = decrypt_all(blob, &h, key, out);
    wipe(key, 32);
    if (!ok) {
        wipe(out, h.plaintext_length);
        return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob failed authentication (a segment was altered)");
    }
    clear_error(err);
    return ORTSEAL_OK;
}

ortseal_code ortseal_unseal(const ortseal_keyset *ks, const uint8_t *blob, size_t blob_len, const void *context,
                            size_t context_len, uint64_t min_release, uint8_t **out, size_t *out_len,
                            ortseal_error *err) {
    if (!out || !out_len || !ks || !blob || (!context && context_len))
        return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_unseal needs a keyset, blob, context and out");
    *out = NULL;
    *out_len = 0;
    blob_header h;
    ortseal_code code = blob_parse_header(blob, blob_len, &h, err);
    if (code) return code;
    if (h.total_len != blob_len) /* before allocating anything from header values */
        return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob length %zu differs from the %llu its header declares (truncated or extended)",
                    blob_len, (unsigned long long)h.total_len);
    uint8_t *buf = xcalloc((size_t)h.plaintext_length, 1);
    if (!buf) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    code = blob_open_into(ks, blob, blob_len, context, context_len, min_release, NULL, PURPOSE_BLOB, buf,
                          (size_t)h.plaintext_length, err);
    if (code) { ortseal_free(buf, (size_t)h.plaintext_length); return code; }
    *out = buf;
    *out_len = (size_t)h.plaintext_length;
    return ORTSEAL_OK;
}

ortseal_code ortseal_seal(const ortseal_keyset *ks, const uint8_t *pt, size_t len, const void *context,
                          size_t context_len, uint64_t release, int sign, uint8_t **out, size_t *out_len,
                          ortseal_error *err) {
    if (!out || !out_len || !ks || (!pt && len) || (!context && context_len))
        return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_seal needs a keyset, plaintext, context and out");
    *out = NULL;
    *out_len = 0;
    if (release > MAX_RELEASE) return FAIL(err, ORTSEAL_E_MISUSE, "release must be at most 2^63-1");
    char key_id[65];
    uint8_t content_key[32], key[32];
    ortseal_code code = keyset_sealing_key(ks, key_id, content_key, err);
    if (code) return code;
    char signer[17] = ""; /* the header names the signer before anything is signed */
    if (sign && !keyset_signer_id(ks, signer)) {
        wipe(content_key, 32);
        return FAIL(err, ORTSEAL_E_KEY_NOT_FOUND, "this keyset has no signing key (seal unsigned, or load the publisher's keyset)");
    }
    uint32_t seg = ORTSEAL_DEFAULT_SEGMENT_SIZE;
    uint64_t segments = len ? (len - 1) / seg + 1 : 1;
    size_t kid_len = strlen(key_id), sid_len = sign ? 16 : 0, header_len = BLOB_FIXED_HEADER + kid_len + sid_len;
    size_t total = header_len + len + GCM_TAG_SIZE * segments + (sign ? ED25519_SIG_SIZE : 0);
    uint8_t *b = xcalloc(total, 1);
    if (!b) { wipe(content_key, 32); return FAIL(err, ORTSEAL_E_NOMEM, "out of memory"); }
    memcpy(b, MAGIC, 8);
    b[8] = VERSION;
    b[9] = ALGORITHM_AES256GCM_HKDF_SHA256_ED25519;
    b[10] = sign ? FLAG_SIGNED : 0;
    b[11] = (uint8_t)kid_len;
    put_le(b + 12, seg, 4);
    put_le(b + 16, len, 8);
    put_le(b + 24, release, 8);
    bool ok = random_bytes(b + 32, SALT_SIZE + NONCE_PREFIX_SIZE); /* salt and nonce prefix: always fresh */
    context_digest(context, context_len, b + 71);
    b[103] = (uint8_t)sid_len;
    memcpy(b + BLOB_FIXED_HEADER, key_id, kid_len);
    memcpy(b + BLOB_FIXED_HEADER + kid_len, signer, sid_len);
    ok = ok && blob_key(content_key, b + 32, b + 71, key);
    wipe(content_key, 32);
    gcm_ctx *g = ok ? gcm_new(key) : NULL;
    wipe(key, 32);
    uint8_t *at = b + header_len;
    for (uint64_t i = 0; g && ok && i < segments; i++) {
        size_t n = i + 1 < segments ? seg : len - i * seg;
        uint8_t nonce[12];
        segment_nonce(b + 64, i, i + 1 == segments, nonce);
        ok = gcm_encrypt(g, nonce, b, header_len, pt + i * seg, n, at, at + n);
        at += n + GCM_TAG_SIZE;
    }
    gcm_free(g);
    if (!g || !ok) { free(b); return FAIL(err, ORTSEAL_E_RUNTIME, "AES-GCM failed"); }
    if (sign) {
        blob_header h;
        uint8_t digest[32], msg[sizeof SIGNATURE_LABEL + 32];
        blob_parse_header(b, total, &h, NULL);
        content_digest(b, &h, digest);
        signature_message(digest, msg);
        if ((code = keyset_sign(ks, msg, sizeof msg, signer, at, err))) { free(b); return code; }
    }
    *out = b;
    *out_len = total;
    clear_error(err);
    return ORTSEAL_OK;
}

ortseal_code blob_open_stream(const ortseal_keyset *ks, blob_reader read, void *src, uint64_t blob_len,
                              const void *context, size_t context_len, const uint8_t expected_digest[32],
                              const blob_dest *dest, ortseal_error *err) {
    uint8_t header[ORTSEAL_MAX_HEADER_SIZE];
    size_t head_len = blob_len < sizeof header ? (size_t)blob_len : sizeof header;
    blob_header h;
    ortseal_code code = read(src, header, head_len, 0, err);
    if (!code) code = blob_parse_header(header, head_len, &h, err); /* 1 */
    if (code) return code;
    if (h.total_len != blob_len) /* 2 */
        return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob length %llu differs from the %llu its header declares (truncated or extended)",
                    (unsigned long long)blob_len, (unsigned long long)h.total_len);
    if (dest->out && dest->out_cap < h.plaintext_length) return FAIL(err, ORTSEAL_E_MISUSE, "output buffer too small for the blob");
    uint8_t ctx[32];
    context_digest(context, context_len, ctx);
    if (!ct_equal(ctx, h.context_digest, 32)) return FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob was sealed for another context"); /* 3 */
    /* 4: a blob in a model carries the model's release in its manifest; 5: the commitment is the manifest's */
    uint8_t content_key[32], key[32];
    if (dest->content_key) memcpy(content_key, dest->content_key, 32);
    else if (!keyset_content_key(ks, h.key_id, content_key, err, &code)) return code; /* 6 */
    bool ok = blob_key(content_key, h.salt, h.context_digest, key);
    wipe(content_key, 32);
    /* a batch of stored segments read at once (they are contiguous), then hashed and decrypted in parallel */
    size_t per = (size_t)(h.segments > 1 ? h.segment_size : h.plaintext_length) + GCM_TAG_SIZE;
    size_t batch = dest->serial ? 2 : os_cores() * 2; /* serial: 2 MiB buffers, measured best of 1, 2, 4, 16 */
    if (batch > BATCH_SEGMENTS) batch = BATCH_SEGMENTS;
    while (batch > 1 && per * batch > (64u << 20)) batch--;
    uint8_t *scratch = ok ? malloc(per * batch) : NULL; /* ciphertext */
    uint8_t *plain = scratch && !dest->out ? malloc(per * batch) : NULL; /* a batch of plaintext, for dest->write */
    sha256_ctx *digest = scratch && (dest->out || plain) ? sha256_new() : NULL;
    if (!digest) { wipe(key, 32); free(scratch); free(plain); return FAIL(err, ORTSEAL_E_NOMEM, "out of memory"); }
    sha256_update(digest, CONTENT_LABEL, sizeof CONTENT_LABEL);
    sha256_update(digest, header, h.header_len);
    /* 7: each stored segment read once, hashed and decrypted in the same pass */
    uint8_t digests[BATCH_SEGMENTS][32];
    bool seg_ok[BATCH_SEGMENTS];
    uint64_t at = h.header_len;
    for (uint64_t first = 0; ok && !code && first < h.segments; first += batch) {
        size_t n = (size_t)(h.segments - first < batch ? h.segments - first : batch);
        uint64_t bytes = 0, plain_bytes = 0;
        for (size_t k = 0; k < n; k++) plain_bytes += segment_plain_len(&h, first + k);
        bytes = plain_bytes + n * GCM_TAG_SIZE;
        if ((code = read(src, scratch, (size_t)bytes, at, err))) break;
        segment_work w = {&h, scratch, first, digests, key, header, plain ? plain : dest->out, seg_ok, plain ? first : 0};
        if (dest->serial) for (size_t k = 0; k < n; k++) segment_task(&w, k);
        else os_parallel(n, segment_task, &w);
        for (size_t k = 0; k < n; k++) { sha256_update(digest, digests[k], 32); ok = ok && seg_ok[k]; }
        if (ok && plain) code = dest->write(dest->dst, plain, (size_t)plain_bytes, first * (uint64_t)h.segment_size, err);
        at += bytes;
    }
    wipe(key, 32);
    uint8_t got[32];
    sha256_final(digest, got);
    free(scratch);
    if (plain) ortseal_free(plain, per * batch);
    if (!code && !ok) code = FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob failed authentication (a segment was altered)");
    if (!code && !ct_equal(got, expected_digest, 32))
        code = FAIL(err, ORTSEAL_E_TAMPERED, "sealed blob content does not match its signed digest (rewritten by a content-key holder, or changed while it was read)");
    if (code) { if (dest->out) wipe(dest->out, (size_t)h.plaintext_length); return code; }
    clear_error(err);
    return ORTSEAL_OK;
}
