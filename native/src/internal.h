/* Internal declarations shared by the library's modules (one job per module):
 *   errors.c   status codes and messages        crypto.c  OpenSSL 3 libcrypto primitives
 *   json.c     a small bounded JSON reader     keyset.c  keyset file v1, providers, trust scopes
 *   blob.c     sealed blob v2                  pb.c      protobuf wire-format reader/writer
 *   model.c    sealed model v3 opening         os_*.c    files (behind os.h)
 */
#ifndef ORTSEAL_INTERNAL_H
#define ORTSEAL_INTERNAL_H

#include "ortseal.h"

#include <stdarg.h>
#include <stdbool.h>

/* errors.c: set err (if not NULL) and return code. */
#if defined(__MINGW32__) /* errors.c uses mingw's C99 printf (__USE_MINGW_ANSI_STDIO): %zu, %llu */
#define ORTSEAL_PRINTF __attribute__((format(gnu_printf, 3, 4)))
#elif defined(__GNUC__)
#define ORTSEAL_PRINTF __attribute__((format(printf, 3, 4)))
#else
#define ORTSEAL_PRINTF
#endif
ortseal_code set_error(ortseal_error *err, ortseal_code code, const char *fmt, ...) ORTSEAL_PRINTF;
#define FAIL(err, code, ...) set_error((err), (code), __VA_ARGS__)
void clear_error(ortseal_error *err);
void wipe(void *p, size_t n);
void *xcalloc(size_t n, size_t size);

/* crypto.c */
#define SHA256_SIZE 32
#define ED25519_SIG_SIZE 64
#define ED25519_KEY_SIZE 32
#define GCM_TAG_SIZE 16
typedef struct sha256_ctx sha256_ctx;
sha256_ctx *sha256_new(void);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, uint8_t out[32]); /* frees c */
void sha256(const void *data, size_t len, uint8_t out[32]);
bool hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len, const uint8_t *info,
                 size_t info_len, uint8_t out[32]);
bool hmac_sha256(const uint8_t key[32], const uint8_t *msg, size_t len, uint8_t out[32]);
/* AES-256-GCM with a 12-byte nonce; decrypt returns false on a tag mismatch. */
typedef struct gcm_ctx gcm_ctx;
gcm_ctx *gcm_new(const uint8_t key[32]);
void gcm_free(gcm_ctx *g);
bool gcm_encrypt(gcm_ctx *g, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                 size_t len, uint8_t *ct, uint8_t tag[16]);
bool gcm_decrypt(gcm_ctx *g, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                 size_t len, const uint8_t tag[16], uint8_t *pt);
bool ed25519_verify(const uint8_t pub[32], const uint8_t *msg, size_t len, const uint8_t sig[64]);
bool ed25519_sign_seed(const uint8_t seed[32], const uint8_t *msg, size_t len, uint8_t sig[64]);
bool ed25519_public_from_seed(const uint8_t seed[32], uint8_t pub[32]);
bool scrypt32(const uint8_t *pass, size_t pass_len, const uint8_t *salt, size_t salt_len, uint64_t n, uint32_t r,
              uint32_t p, uint8_t out[32]);
bool random_bytes(uint8_t *out, size_t len);
bool ct_equal(const uint8_t *a, const uint8_t *b, size_t n);
void hex_encode(const uint8_t *in, size_t n, char *out); /* writes 2n chars + NUL */
bool hex_decode(const char *in, size_t n_chars, uint8_t *out);
/* Strict base64 with padding (Python's b64decode(validate=True)); *out is malloc'd. */
bool b64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len);
size_t b64_encode(const uint8_t *in, size_t n, char *out); /* out: 4*ceil(n/3)+1 */

/* keyset.c */
bool keyset_content_key(const ortseal_keyset *ks, const char *key_id, uint8_t out[32], ortseal_error *err,
                        ortseal_code *code);
/* The trusted public key signer_id for purpose, or NULL. */
/* The public key signer_id if trusted for any purpose (the scope is checked once the purpose is known). */
const uint8_t *keyset_public_key(const ortseal_keyset *ks, const char *signer_id);
const uint8_t *keyset_trusted_key(const ortseal_keyset *ks, const char *signer_id, const char *purpose);
bool keyset_allows_unsigned(const ortseal_keyset *ks);
/* Sign with the first signer: writes its id (16 hex + NUL) and the signature. */
ortseal_code keyset_sign(const ortseal_keyset *ks, const uint8_t *msg, size_t len, char id[17], uint8_t sig[64],
                         ortseal_error *err);
bool keyset_signer_id(const ortseal_keyset *ks, char id[17]);
ortseal_code keyset_sealing_key(const ortseal_keyset *ks, char id[65], uint8_t key[32], ortseal_error *err);
void signer_id_of(const uint8_t pub[32], char out[17]);

/* blob.c */
#define BLOB_FIXED_HEADER 104
typedef struct blob_header {
    uint8_t flags;
    uint32_t segment_size;
    uint64_t plaintext_length;
    uint64_t release;
    const uint8_t *salt, *nonce_prefix, *context_digest;
    char key_id[65], signer_id[65];
    size_t header_len;
    uint64_t segments;
    uint64_t total_len; /* what the blob's length must be */
} blob_header;
ortseal_code blob_parse_header(const uint8_t *blob, size_t len, blob_header *h, ortseal_error *err);
/* Open a blob into out (h->plaintext_length bytes, caller-owned). expected_digest: the commitment from a
 * signed manifest (then no signature is needed and purpose is unused); else the blob's own signature is
 * checked for purpose. out is zeroed on any failure. */
ortseal_code blob_open_into(const ortseal_keyset *ks, const uint8_t *blob, size_t len, const void *context,
                            size_t context_len, uint64_t min_release, const uint8_t *expected_digest,
                            const char *purpose, uint8_t *out, size_t out_cap, ortseal_error *err);
/* The same with the blob read through read(src, buf, len, offset) once, a batch of segments at a time
 * (bounded memory), for a blob whose commitment (expected_digest) a signed manifest gave. The plaintext
 * goes to dest: into dest->out, or (out NULL) a batch at a time through dest->write, from a buffer that
 * is wiped after (what was written must be discarded by the caller on failure: a RAM file it removes). */
typedef ortseal_code (*blob_reader)(void *src, uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err);
typedef ortseal_code (*blob_writer)(void *dst, const uint8_t *buf, size_t len, uint64_t offset, ortseal_error *err);
typedef struct blob_dest {
    uint8_t *out;
    size_t out_cap;
    blob_writer write;
    void *dst;
    const uint8_t *content_key; /* the content key, fetched by the caller (NULL: asked of ks here) */
    bool serial;                /* decrypt on this thread only (the caller runs blobs in parallel) */
} blob_dest;
ortseal_code blob_open_stream(const ortseal_keyset *ks, blob_reader read, void *src, uint64_t blob_len,
                              const void *context, size_t context_len, const uint8_t expected_digest[32],
                              const blob_dest *dest, ortseal_error *err);

#endif
