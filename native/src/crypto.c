/* The primitives of docs/format.md, all from OpenSSL 3's libcrypto (no hand-written cryptography). */
#include "internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

struct sha256_ctx { EVP_MD_CTX *md; };

sha256_ctx *sha256_new(void) {
    sha256_ctx *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->md = EVP_MD_CTX_new();
    if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c->md);
        free(c);
        return NULL;
    }
    return c;
}

void sha256_update(sha256_ctx *c, const void *data, size_t len) {
    if (c && len) EVP_DigestUpdate(c->md, data, len);
}

void sha256_final(sha256_ctx *c, uint8_t out[32]) {
    unsigned int n = 32;
    if (!c) { memset(out, 0, 32); return; }
    EVP_DigestFinal_ex(c->md, out, &n);
    EVP_MD_CTX_free(c->md);
    free(c);
}

void sha256(const void *data, size_t len, uint8_t out[32]) {
    unsigned int n = 32;
    EVP_Digest(len ? data : "", len, out, &n, EVP_sha256(), NULL);
}

bool hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len, const uint8_t *info,
                 size_t info_len, uint8_t out[32]) {
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf);
    if (!ctx) return false;
    /* RFC 5869: "salt = none" is HashLen zero bytes, which is what OpenSSL uses for an empty salt. */
    static const uint8_t zero_salt[32];
    OSSL_PARAM params[5], *p = params;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt_len ? (void *)salt : (void *)zero_salt,
                                             salt_len ? salt_len : sizeof zero_salt);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    *p = OSSL_PARAM_construct_end();
    bool ok = EVP_KDF_derive(ctx, out, 32, params) == 1;
    EVP_KDF_CTX_free(ctx);
    return ok;
}

bool hmac_sha256(const uint8_t key[32], const uint8_t *msg, size_t len, uint8_t out[32]) {
    unsigned int n = 32;
    return HMAC(EVP_sha256(), key, 32, msg, len, out, &n) != NULL;
}

struct gcm_ctx { EVP_CIPHER_CTX *enc, *dec; };

gcm_ctx *gcm_new(const uint8_t key[32]) {
    gcm_ctx *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->enc = EVP_CIPHER_CTX_new();
    g->dec = EVP_CIPHER_CTX_new();
    if (!g->enc || !g->dec || EVP_EncryptInit_ex(g->enc, EVP_aes_256_gcm(), NULL, key, NULL) != 1 ||
        EVP_DecryptInit_ex(g->dec, EVP_aes_256_gcm(), NULL, key, NULL) != 1) {
        gcm_free(g);
        return NULL;
    }
    return g;
}

void gcm_free(gcm_ctx *g) {
    if (!g) return;
    EVP_CIPHER_CTX_free(g->enc); /* OpenSSL cleanses the expanded key */
    EVP_CIPHER_CTX_free(g->dec);
    free(g);
}

/* GCM update lengths are int: feed large segments in pieces (segments are at most 2^26 bytes anyway). */
static bool gcm_update(EVP_CIPHER_CTX *c, bool enc, uint8_t *out, const uint8_t *in, size_t len) {
    while (len) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len, n = 0;
        if ((enc ? EVP_EncryptUpdate(c, out, &n, in, chunk) : EVP_DecryptUpdate(c, out, &n, in, chunk)) != 1)
            return false;
        in += chunk; out += chunk; len -= (size_t)chunk;
    }
    return true;
}

bool gcm_encrypt(gcm_ctx *g, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                 size_t len, uint8_t *ct, uint8_t tag[16]) {
    int n = 0;
    uint8_t end[16];
    return EVP_EncryptInit_ex(g->enc, NULL, NULL, NULL, nonce) == 1 &&
           EVP_EncryptUpdate(g->enc, NULL, &n, aad, (int)aad_len) == 1 && gcm_update(g->enc, true, ct, pt, len) &&
           EVP_EncryptFinal_ex(g->enc, end, &n) == 1 &&
           EVP_CIPHER_CTX_ctrl(g->enc, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
}

bool gcm_decrypt(gcm_ctx *g, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                 size_t len, const uint8_t tag[16], uint8_t *pt) {
    int n = 0;
    uint8_t end[16];
    return EVP_DecryptInit_ex(g->dec, NULL, NULL, NULL, nonce) == 1 &&
           EVP_DecryptUpdate(g->dec, NULL, &n, aad, (int)aad_len) == 1 && gcm_update(g->dec, false, pt, ct, len) &&
           EVP_CIPHER_CTX_ctrl(g->dec, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) == 1 &&
           EVP_DecryptFinal_ex(g->dec, end, &n) == 1;
}

bool ed25519_verify(const uint8_t pub[32], const uint8_t *msg, size_t len, const uint8_t sig[64]) {
    EVP_PKEY *key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    EVP_MD_CTX *md = key ? EVP_MD_CTX_new() : NULL;
    bool ok = md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1 &&
              EVP_DigestVerify(md, sig, 64, msg, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return ok;
}

bool ed25519_sign_seed(const uint8_t seed[32], const uint8_t *msg, size_t len, uint8_t sig[64]) {
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_MD_CTX *md = key ? EVP_MD_CTX_new() : NULL;
    size_t n = 64;
    bool ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1 &&
              EVP_DigestSign(md, sig, &n, msg, len) == 1 && n == 64;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return ok;
}

bool ed25519_public_from_seed(const uint8_t seed[32], uint8_t pub[32]) {
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    size_t n = 32;
    bool ok = key && EVP_PKEY_get_raw_public_key(key, pub, &n) == 1 && n == 32;
    EVP_PKEY_free(key);
    return ok;
}

bool scrypt32(const uint8_t *pass, size_t pass_len, const uint8_t *salt, size_t salt_len, uint64_t n, uint32_t r,
              uint32_t p, uint8_t out[32]) {
    /* maxmem: 128 * r * n bytes plus slack; the caller bounds n to 2^18 (256 MiB) before calling. */
    return EVP_PBE_scrypt((const char *)pass, pass_len, salt, salt_len, n, r, p, 129ull * r * n + (1u << 20), out,
                          32) == 1;
}

/* OPENSSL_cleanse: a wipe the compiler cannot drop, at memset speed. */
void wipe(void *p, size_t n) {
    if (p && n) OPENSSL_cleanse(p, n);
}

bool random_bytes(uint8_t *out, size_t len) { return RAND_bytes(out, (int)len) == 1; }

bool ct_equal(const uint8_t *a, const uint8_t *b, size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }

void hex_encode(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool hex_decode(const char *in, size_t n_chars, uint8_t *out) {
    if (n_chars % 2) return false;
    for (size_t i = 0; i < n_chars / 2; i++) {
        int hi = hex_value(in[2 * i]), lo = hex_value(in[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(char c) {
    const char *at = c ? strchr(B64, c) : NULL;
    return at ? (int)(at - B64) : -1;
}

bool b64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len) {
    *out = NULL;
    if (len % 4) return false;
    size_t pad = len && in[len - 1] == '=' ? (len > 1 && in[len - 2] == '=' ? 2 : 1) : 0;
    uint8_t *buf = xcalloc(len / 4 * 3 + 1, 1);
    if (!buf) return false;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            bool padding = i + 4 == len && k >= 4 - (int)pad;
            v[k] = padding ? (in[i + k] == '=' ? 0 : -1) : b64_value(in[i + k]);
            if (v[k] < 0) { ortseal_free(buf, len / 4 * 3 + 1); return false; }
        }
        uint32_t word = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        buf[o++] = (uint8_t)(word >> 16);
        buf[o++] = (uint8_t)(word >> 8);
        buf[o++] = (uint8_t)word;
    }
    *out = buf;
    *out_len = o - pad;
    return true;
}

size_t b64_encode(const uint8_t *in, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t word = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = B64[word >> 18 & 63];
        out[o++] = B64[word >> 12 & 63];
        out[o++] = i + 1 < n ? B64[word >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? B64[word & 63] : '=';
    }
    out[o] = '\0';
    return o;
}
