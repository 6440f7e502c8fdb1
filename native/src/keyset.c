/* Keyset file v1 (docs/format.md "Keyset file v1"), key providers and trust scopes, as ortseal/keys.py. */
#define __USE_MINGW_ANSI_STDIO 1
#include "internal.h"
#include "json.h"
#include "os.h"

#include <stdlib.h>
#include <string.h>

#define KEYSET_FORMAT "ortseal-keyset"
#define KEYSET_VERSION 1
#define WRAP_AAD "ortseal keyset v1"
#define SCRYPT_MIN_N (1u << 15)
#define SCRYPT_MAX_N (1u << 18) /* a file may demand at most 256 MiB and ~1.3 s of scrypt work */
#define SCRYPT_R 8
#define SCRYPT_P 1
#define MAX_KEY_ID 64
#define MAX_KEYSET_FILE (1u << 20)

typedef struct content_key { char id[MAX_KEY_ID + 1]; uint8_t key[32]; } content_key;
typedef struct signer {
    char id[17];
    uint8_t public_key[32];
    uint8_t seed[32]; /* when held here */
    ortseal_sign_fn fn; /* when held outside */
    void *user;
} signer;
/* A scope constraint is a list of patterns (one must match); a key trusted by several keysets merged
 * carries each one's constraint, and every constraint must accept the purpose (KeySet.merge). */
typedef struct constraint { char **patterns; size_t n; } constraint;
typedef struct trusted {
    char id[17];
    uint8_t public_key[32];
    constraint *constraints;
    size_t n_constraints; /* 0: every purpose */
} trusted;
typedef struct provider { ortseal_content_key_fn fn; void *user; } provider;

struct ortseal_keyset {
    content_key *content; size_t n_content;
    signer *signers; size_t n_signers;
    trusted *trust; size_t n_trust;
    provider *providers; size_t n_providers;
    char seal_key_id[MAX_KEY_ID + 1];
    bool allow_unsigned;
};

void signer_id_of(const uint8_t pub[32], char out[17]) {
    uint8_t digest[32];
    sha256(pub, 32, digest);
    hex_encode(digest, 8, out);
}

static bool valid_key_id(const char *id, size_t len) {
    if (len == 0 || len > MAX_KEY_ID) return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e) return false;
    return true;
}

#define GROW(arr, n) grow((void **)&(arr), (n), sizeof *(arr))
static bool grow(void **arr, size_t n, size_t size) {
    void *p = realloc(*arr, (n + 1) * size);
    if (!p) return false;
    memset((char *)p + n * size, 0, size);
    *arr = p;
    return true;
}

static void free_constraint(constraint *c) {
    for (size_t i = 0; i < c->n; i++) free(c->patterns[i]);
    free(c->patterns);
}

void ortseal_keyset_free(ortseal_keyset *ks) {
    if (!ks) return;
    wipe(ks->content, ks->n_content * sizeof *ks->content);
    free(ks->content);
    wipe(ks->signers, ks->n_signers * sizeof *ks->signers);
    free(ks->signers);
    for (size_t i = 0; i < ks->n_trust; i++) {
        for (size_t k = 0; k < ks->trust[i].n_constraints; k++) free_constraint(&ks->trust[i].constraints[k]);
        free(ks->trust[i].constraints);
    }
    free(ks->trust);
    free(ks->providers);
    free(ks);
}

static trusted *find_trusted(const ortseal_keyset *ks, const char *id) {
    for (size_t i = 0; i < ks->n_trust; i++)
        if (strcmp(ks->trust[i].id, id) == 0) return &ks->trust[i];
    return NULL;
}

static trusted *add_trusted(ortseal_keyset *ks, const uint8_t pub[32]) {
    char id[17];
    signer_id_of(pub, id);
    trusted *t = find_trusted(ks, id);
    if (t) return t;
    if (!GROW(ks->trust, ks->n_trust)) return NULL;
    t = &ks->trust[ks->n_trust++];
    memcpy(t->id, id, 17);
    memcpy(t->public_key, pub, 32);
    return t;
}

static bool add_constraint(trusted *t, const char *const *patterns, const size_t *lens, size_t n) {
    if (!GROW(t->constraints, t->n_constraints)) return false;
    constraint *c = &t->constraints[t->n_constraints++];
    c->patterns = calloc(n, sizeof *c->patterns);
    if (!c->patterns) return false;
    for (size_t i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : strlen(patterns[i]);
        if (!(c->patterns[i] = malloc(len + 1))) return false;
        memcpy(c->patterns[i], patterns[i], len);
        c->patterns[i][len] = '\0';
        c->n++;
    }
    return true;
}

int ortseal_scope_matches(const char *pattern, const char *purpose) {
    /* literal text in which '*' matches any run (none included); the leftmost match of each literal run
     * between stars is optimal when only '*' is special. */
    const char *star = strchr(pattern, '*');
    size_t plen = strlen(purpose);
    if (!star) return strcmp(pattern, purpose) == 0;
    size_t head = (size_t)(star - pattern);
    const char *last = strrchr(pattern, '*');
    size_t tail = strlen(last + 1);
    if (plen < head + tail || strncmp(purpose, pattern, head) != 0 || strcmp(purpose + plen - tail, last + 1) != 0)
        return 0;
    size_t at = head, end = plen - tail;
    const char *part = star + 1;
    while (part <= last) {
        const char *next = strchr(part, '*');
        size_t n = (size_t)(next - part);
        bool found = false;
        for (size_t k = at; n == 0 || k + n <= end; k++) {
            if (n == 0 || memcmp(purpose + k, part, n) == 0) { at = k + n; found = true; break; }
        }
        if (!found) return 0;
        part = next + 1;
    }
    return 1;
}

static bool trusted_for(const trusted *t, const char *purpose) {
    for (size_t k = 0; k < t->n_constraints; k++) {
        bool any = false;
        for (size_t i = 0; i < t->constraints[k].n && !any; i++)
            any = ortseal_scope_matches(t->constraints[k].patterns[i], purpose);
        if (!any) return false;
    }
    return true;
}

const uint8_t *keyset_trusted_key(const ortseal_keyset *ks, const char *signer_id, const char *purpose) {
    const trusted *t = ks ? find_trusted(ks, signer_id) : NULL;
    return t && trusted_for(t, purpose) ? t->public_key : NULL;
}

const uint8_t *keyset_public_key(const ortseal_keyset *ks, const char *signer_id) {
    const trusted *t = ks ? find_trusted(ks, signer_id) : NULL;
    return t ? t->public_key : NULL;
}

int ortseal_keyset_trusts(const ortseal_keyset *ks, const char *signer_id, const char *purpose) {
    return ks && signer_id && purpose && keyset_trusted_key(ks, signer_id, purpose) != NULL;
}

bool keyset_allows_unsigned(const ortseal_keyset *ks) { return ks->allow_unsigned; }

bool keyset_content_key(const ortseal_keyset *ks, const char *key_id, uint8_t out[32], ortseal_error *err,
                        ortseal_code *code) {
    for (size_t i = 0; i < ks->n_content; i++)
        if (strcmp(ks->content[i].id, key_id) == 0) { memcpy(out, ks->content[i].key, 32); return true; }
    for (size_t i = 0; i < ks->n_providers; i++) {
        wipe(out, 32); /* a callback that writes less than 32 bytes leaves zeros, not stack bytes */
        int got = ks->providers[i].fn(ks->providers[i].user, key_id, out);
        if (got == 1) return true;
        if (got < 0 || got > 1) {
            /* A provider returning a length (16, 32) rather than 1 is refused: the contract has no short key. */
            wipe(out, 32);
            if (got < 0) *code = FAIL(err, ORTSEAL_E_KEY_NOT_FOUND, "the key provider failed for content key id '%s'", key_id);
            else *code = FAIL(err, ORTSEAL_E_KEY_NOT_FOUND, "the key provider returned %d for content key id '%s': a "
                              "provider returns 1 (the 32-byte key written), 0 (unknown) or a negative value (error)",
                              got, key_id);
            return false;
        }
    }
    wipe(out, 32);
    *code = FAIL(err, ORTSEAL_E_KEY_NOT_FOUND,
                 "no content key with id '%s' in this keyset; load the keyset the blob was sealed with", key_id);
    return false;
}

ortseal_code keyset_sealing_key(const ortseal_keyset *ks, char id[65], uint8_t key[32], ortseal_error *err) {
    if (!ks->seal_key_id[0])
        return FAIL(err, ORTSEAL_E_KEY_NOT_FOUND, "this keyset has no content key to seal with (a public-only "
                    "keyset can verify but not seal; a provider keyset needs seal_key_id)");
    ortseal_code code = ORTSEAL_OK;
    memcpy(id, ks->seal_key_id, sizeof ks->seal_key_id);
    return keyset_content_key(ks, ks->seal_key_id, key, err, &code) ? ORTSEAL_OK : code;
}

bool keyset_signer_id(const ortseal_keyset *ks, char id[17]) {
    if (!ks->n_signers) return false;
    memcpy(id, ks->signers[0].id, 17);
    return true;
}

ortseal_code keyset_sign(const ortseal_keyset *ks, const uint8_t *msg, size_t len, char id[17], uint8_t sig[64],
                         ortseal_error *err) {
    if (!ks->n_signers) return FAIL(err, ORTSEAL_E_KEY_NOT_FOUND, "this keyset has no signing key");
    const signer *s = &ks->signers[0];
    memcpy(id, s->id, 17);
    bool ok = s->fn ? s->fn(s->user, msg, len, sig) == 0 : ed25519_sign_seed(s->seed, msg, len, sig);
    if (ok && !ed25519_verify(s->public_key, msg, len, sig)) ok = false; /* a callback signing with another key */
    return ok ? ORTSEAL_OK : FAIL(err, ORTSEAL_E_RUNTIME, "signing with key %s failed", s->id);
}

static ortseal_keyset *keyset_new(void) { return calloc(1, sizeof(ortseal_keyset)); }

ortseal_code ortseal_keyset_from_provider(ortseal_content_key_fn fn, void *user, const char *seal_key_id,
                                          ortseal_keyset **out, ortseal_error *err) {
    if (!out || !fn) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_keyset_from_provider needs a callback and out");
    *out = NULL;
    if (seal_key_id && !valid_key_id(seal_key_id, strlen(seal_key_id)))
        return FAIL(err, ORTSEAL_E_MISUSE, "seal_key_id must be 1 to 64 printable ASCII characters");
    ortseal_keyset *ks = keyset_new();
    if (!ks || !GROW(ks->providers, 0)) { ortseal_keyset_free(ks); return FAIL(err, ORTSEAL_E_NOMEM, "out of memory"); }
    ks->providers[ks->n_providers++] = (provider){fn, user};
    if (seal_key_id) strcpy(ks->seal_key_id, seal_key_id);
    *out = ks;
    clear_error(err);
    return ORTSEAL_OK;
}

ortseal_code ortseal_keyset_add_signer(ortseal_keyset *ks, const uint8_t public_key[32], ortseal_sign_fn fn,
                                       void *user, ortseal_error *err) {
    if (!ks || !public_key || !fn) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_keyset_add_signer needs a keyset, key and callback");
    if (!GROW(ks->signers, ks->n_signers) || !add_trusted(ks, public_key)) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    signer *s = &ks->signers[ks->n_signers++];
    memcpy(s->public_key, public_key, 32);
    signer_id_of(public_key, s->id);
    s->fn = fn;
    s->user = user;
    clear_error(err);
    return ORTSEAL_OK;
}

ortseal_code ortseal_keyset_trust(ortseal_keyset *ks, const uint8_t public_key[32], const char *const *scope,
                                  size_t n, ortseal_error *err) {
    if (!ks || !public_key || (n && !scope)) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_keyset_trust needs a keyset and key");
    for (size_t i = 0; i < n; i++)
        if (!scope[i] || !scope[i][0]) return FAIL(err, ORTSEAL_E_MISUSE, "a trust scope pattern must not be empty");
    trusted *t = add_trusted(ks, public_key);
    if (!t || (n && !add_constraint(t, scope, NULL, n))) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    clear_error(err);
    return ORTSEAL_OK;
}

ortseal_code ortseal_keyset_merge(ortseal_keyset *dst, const ortseal_keyset *src, ortseal_error *err) {
    if (!dst || !src || dst == src) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_keyset_merge needs two keysets");
    for (size_t i = 0; i < src->n_content; i++) {
        bool have = false;
        for (size_t k = 0; k < dst->n_content; k++) have |= strcmp(dst->content[k].id, src->content[i].id) == 0;
        if (have) continue;
        if (!GROW(dst->content, dst->n_content)) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
        dst->content[dst->n_content++] = src->content[i];
    }
    for (size_t i = 0; i < src->n_signers; i++) {
        if (!GROW(dst->signers, dst->n_signers)) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
        dst->signers[dst->n_signers++] = src->signers[i];
    }
    for (size_t i = 0; i < src->n_trust; i++) {
        const trusted *s = &src->trust[i];
        trusted *t = add_trusted(dst, s->public_key);
        if (!t) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
        for (size_t k = 0; k < s->n_constraints; k++)
            if (!add_constraint(t, (const char *const *)s->constraints[k].patterns, NULL, s->constraints[k].n))
                return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < src->n_providers; i++) {
        if (!GROW(dst->providers, dst->n_providers)) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
        dst->providers[dst->n_providers++] = src->providers[i];
    }
    if (!dst->seal_key_id[0]) memcpy(dst->seal_key_id, src->seal_key_id, sizeof dst->seal_key_id);
    dst->allow_unsigned = dst->allow_unsigned && src->allow_unsigned;
    clear_error(err);
    return ORTSEAL_OK;
}

/* ---- the file ------------------------------------------------------------------------------------ */

static ortseal_code b64_field(const json *obj, const char *key, const char *what, uint8_t **out, size_t *len,
                              ortseal_error *err) {
    const json *v = json_get(obj, key);
    if (!json_is_string(v) || !b64_decode(v->str, v->len, out, len))
        return FAIL(err, ORTSEAL_E_FORMAT, "keyset: %s is not valid base64", what);
    return ORTSEAL_OK;
}

static bool is_list_of_objects(const json *v) {
    if (!v || v->type != J_ARRAY) return false;
    for (size_t i = 0; i < v->count; i++)
        if (v->items[i]->type != J_OBJECT) return false;
    return true;
}

static ortseal_code read_trusted(ortseal_keyset *ks, const json *list, ortseal_error *err) {
    for (size_t i = 0; i < list->count; i++) {
        const json *e = list->items[i], *id = json_get(e, "id"), *scope = json_get(e, "scope");
        uint8_t *pub = NULL;
        size_t n = 0;
        ortseal_code code = b64_field(e, "public", "public key", &pub, &n, err);
        if (code) return code;
        char want[17] = "";
        if (n == 32) signer_id_of(pub, want);
        bool ok = n == 32 && json_is_string(id) && strcmp(id->str, want) == 0 && id->len == 16;
        if (n != 32) { free(pub); return FAIL(err, ORTSEAL_E_FORMAT, "keyset: a public key is not 32 bytes"); }
        if (!ok) { free(pub); return FAIL(err, ORTSEAL_E_FORMAT, "keyset key id '%s' does not match its key",
                                         json_is_string(id) ? id->str : "?"); }
        if (find_trusted(ks, want)) { free(pub); return FAIL(err, ORTSEAL_E_FORMAT, "keyset lists a key id twice"); }
        trusted *t = add_trusted(ks, pub);
        free(pub);
        if (!t) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
        if (scope) {
            if (scope->type != J_ARRAY || scope->count == 0)
                return FAIL(err, ORTSEAL_E_FORMAT, "keyset: a trust scope is a non-empty list of purpose patterns");
            const char **patterns = calloc(scope->count, sizeof *patterns);
            size_t *lens = calloc(scope->count, sizeof *lens);
            bool good = patterns && lens;
            for (size_t k = 0; good && k < scope->count; k++) {
                const json *p = scope->items[k];
                good = json_is_string(p) && p->len > 0 && strlen(p->str) == p->len;
                if (good) { patterns[k] = p->str; lens[k] = p->len; }
            }
            good = good && add_constraint(t, patterns, lens, scope->count);
            free(patterns);
            free(lens);
            if (!good) return FAIL(err, ORTSEAL_E_FORMAT, "keyset: a trust scope is a non-empty list of purpose patterns");
        }
    }
    return ORTSEAL_OK;
}

static ortseal_code read_secrets(ortseal_keyset *ks, const json *secret, ortseal_error *err) {
    if (!secret || secret->type != J_OBJECT) return FAIL(err, ORTSEAL_E_FORMAT, "keyset secrets must be an object");
    const json *content = json_get(secret, "content_keys"), *signing = json_get(secret, "signing_keys");
    if ((content && !is_list_of_objects(content)) || (signing && !is_list_of_objects(signing)))
        return FAIL(err, ORTSEAL_E_FORMAT, "keyset content_keys and signing_keys must be lists of objects");
    for (size_t i = 0; content && i < content->count; i++) {
        const json *id = json_get(content->items[i], "id");
        if (!json_is_string(id) || !valid_key_id(id->str, id->len))
            return FAIL(err, ORTSEAL_E_FORMAT, "keyset: a content key id must be 1 to 64 printable ASCII characters");
        for (size_t k = 0; k < ks->n_content; k++)
            if (strcmp(ks->content[k].id, id->str) == 0) return FAIL(err, ORTSEAL_E_FORMAT, "keyset lists a content key id twice");
        uint8_t *key = NULL;
        size_t n = 0;
        ortseal_code code = b64_field(content->items[i], "key", "content key", &key, &n, err);
        if (code) return code;
        if (n != 32 || !GROW(ks->content, ks->n_content)) {
            ortseal_free(key, n);
            return FAIL(err, n != 32 ? ORTSEAL_E_FORMAT : ORTSEAL_E_NOMEM, "keyset: content key '%s' must be 32 bytes", id->str);
        }
        content_key *c = &ks->content[ks->n_content++];
        memcpy(c->id, id->str, id->len + 1);
        memcpy(c->key, key, 32);
        ortseal_free(key, n);
    }
    for (size_t i = 0; signing && i < signing->count; i++) {
        const json *id = json_get(signing->items[i], "id");
        uint8_t *seed = NULL;
        size_t n = 0;
        ortseal_code code = b64_field(signing->items[i], "private", "signing key", &seed, &n, err);
        if (code) return code;
        if (n != 32 || !GROW(ks->signers, ks->n_signers)) {
            ortseal_free(seed, n);
            return FAIL(err, ORTSEAL_E_FORMAT, "keyset: a signing key must be a 32-byte Ed25519 seed");
        }
        signer *s = &ks->signers[ks->n_signers];
        memcpy(s->seed, seed, 32);
        ortseal_free(seed, n);
        if (!ed25519_public_from_seed(s->seed, s->public_key)) return FAIL(err, ORTSEAL_E_RUNTIME, "Ed25519 failed");
        signer_id_of(s->public_key, s->id);
        if (!json_is_string(id) || strcmp(id->str, s->id) != 0 || id->len != 16) {
            wipe(s, sizeof *s);
            return FAIL(err, ORTSEAL_E_FORMAT, "keyset key id '%s' does not match its key", json_is_string(id) ? id->str : "?");
        }
        for (size_t k = 0; k < ks->n_signers; k++)
            if (strcmp(ks->signers[k].id, s->id) == 0) { wipe(s, sizeof *s); return FAIL(err, ORTSEAL_E_FORMAT, "keyset lists a key id twice"); }
        ks->n_signers++;
        /* its own signing keys: trusted, for any purpose unless a trusted entry scoped them */
        if (!find_trusted(ks, s->id) && !add_trusted(ks, s->public_key)) return FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    }
    if (ks->n_content) strcpy(ks->seal_key_id, ks->content[0].id);
    return ORTSEAL_OK;
}

/* The secrets of a protected file: scrypt(passphrase) opens AES-GCM bound to the readable policy. */
static ortseal_code unwrap(const json *wrapped, const json *trusted_list, bool allow_unsigned, const char *phrase,
                           size_t phrase_len, json **secret, ortseal_error *err) {
    *secret = NULL;
    if (phrase_len == 0)
        return FAIL(err, ORTSEAL_E_KEY_NOT_FOUND, "the passphrase given is empty; this keyset needs its passphrase");
    if (!wrapped || wrapped->type != J_OBJECT) return FAIL(err, ORTSEAL_E_FORMAT, "keyset wrapped_secrets must be an object");
    const json *kdf = json_get(wrapped, "kdf"), *cipher = json_get(wrapped, "cipher");
    if (!json_is_string(kdf) || strcmp(kdf->str, "scrypt") || !json_is_string(cipher) || strcmp(cipher->str, "AES-256-GCM"))
        return FAIL(err, ORTSEAL_E_FORMAT, "keyset wraps its secrets with an unknown kdf or cipher");
    int64_t n, r, p;
    if (!json_int(json_get(wrapped, "n"), INT64_MIN, INT64_MAX, &n) || !json_int(json_get(wrapped, "r"), INT64_MIN, INT64_MAX, &r) ||
        !json_int(json_get(wrapped, "p"), INT64_MIN, INT64_MAX, &p))
        return FAIL(err, ORTSEAL_E_FORMAT, "keyset scrypt parameters must be integers");
    if (n < SCRYPT_MIN_N || n > SCRYPT_MAX_N || (n & (n - 1)) || r != SCRYPT_R || p != SCRYPT_P)
        return FAIL(err, ORTSEAL_E_FORMAT, "keyset asks for scrypt n=%lld, r=%lld, p=%lld; accepted: n a power of two in "
                    "[2**15, 2**18], r=8, p=1", (long long)n, (long long)r, (long long)p);
    uint8_t *salt = NULL, *nonce = NULL, *ct = NULL, *pt = NULL;
    size_t salt_len = 0, nonce_len = 0, ct_len = 0;
    char *aad = NULL;
    size_t aad_len = 0, aad_cap = 0;
    uint8_t key[32];
    ortseal_code code = b64_field(wrapped, "salt", "salt", &salt, &salt_len, err);
    if (!code) code = b64_field(wrapped, "nonce", "nonce", &nonce, &nonce_len, err);
    if (!code) code = b64_field(wrapped, "ciphertext", "ciphertext", &ct, &ct_len, err);
    if (!code && (salt_len < 16 || nonce_len != 12))
        code = FAIL(err, ORTSEAL_E_FORMAT, "keyset wrapped_secrets salt or nonce has the wrong size");
    if (!code && ct_len < 16) code = FAIL(err, ORTSEAL_E_TAMPERED, "cannot unwrap keyset: wrong passphrase, or the file was altered");
    if (code) goto done;
    /* aad = "ortseal keyset v1" || json.dumps({"trusted_keys": [...], "allow_unsigned": true?}, sort_keys=True) */
    {
        json policy = {.type = J_OBJECT};
        char *keys[2] = {"trusted_keys", "allow_unsigned"};
        size_t lens[2] = {12, 14};
        json yes = {.type = J_TRUE};
        json *items[2] = {(json *)trusted_list, &yes};
        policy.keys = keys; policy.key_lens = lens; policy.items = items;
        policy.count = allow_unsigned ? 2 : 1;
        json empty = {.type = J_ARRAY};
        if (!trusted_list) items[0] = &empty;
        bool ok = (aad = malloc(64)) != NULL;
        if (ok) { aad_cap = 64; memcpy(aad, WRAP_AAD, sizeof WRAP_AAD - 1); aad_len = sizeof WRAP_AAD - 1; }
        if (!ok || !json_dump_python_sorted(&policy, &aad, &aad_len, &aad_cap)) {
            code = FAIL(err, ORTSEAL_E_FORMAT, "keyset trusted_keys cannot be bound to its secrets");
            goto done;
        }
    }
    if (!scrypt32((const uint8_t *)phrase, phrase_len, salt, salt_len, (uint64_t)n, (uint32_t)r, (uint32_t)p, key)) {
        code = FAIL(err, ORTSEAL_E_NOMEM, "scrypt failed (out of memory?)");
        goto done;
    }
    gcm_ctx *g = gcm_new(key);
    pt = xcalloc(ct_len - 16 + 1, 1);
    bool opened = g && pt && gcm_decrypt(g, nonce, (const uint8_t *)aad, aad_len, ct, ct_len - 16, ct + ct_len - 16, pt);
    gcm_free(g);
    if (!opened) { code = FAIL(err, ORTSEAL_E_TAMPERED, "cannot unwrap keyset: wrong passphrase, or the file was altered"); goto done; }
    if (!(*secret = json_parse((const char *)pt, ct_len - 16)))
        code = FAIL(err, ORTSEAL_E_FORMAT, "keyset wrapped secrets are not valid JSON");
done:
    wipe(key, sizeof key);
    if (pt) ortseal_free(pt, ct_len - 16 + 1);
    free(salt); free(nonce); free(ct); free(aad);
    return code;
}

ortseal_code ortseal_keyset_from_json(const char *text, size_t len, const char *passphrase, size_t passphrase_len,
                                      ortseal_keyset **out, ortseal_error *err) {
    if (!out || (!text && len)) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_keyset_from_json needs text and out");
    *out = NULL;
    json *doc = json_parse(text, len), *secret = NULL;
    ortseal_keyset *ks = NULL;
    ortseal_code code = ORTSEAL_OK;
    if (!doc) { code = FAIL(err, ORTSEAL_E_FORMAT, "keyset is not valid JSON"); goto done; }
    const json *format = json_get(doc, "format"), *version = json_get(doc, "version");
    int64_t v = 0;
    if (!json_is_string(format) || strcmp(format->str, KEYSET_FORMAT) != 0) {
        code = FAIL(err, ORTSEAL_E_FORMAT, "not an ortseal keyset (missing \"format\": \"ortseal-keyset\")");
        goto done;
    }
    if (!json_int(version, KEYSET_VERSION, KEYSET_VERSION, &v)) {
        code = FAIL(err, ORTSEAL_E_FORMAT, "keyset version is not supported (this ortseal reads 1)");
        goto done;
    }
    const json *trusted_list = json_get(doc, "trusted_keys"), *allow = json_get(doc, "allow_unsigned");
    if (trusted_list && !is_list_of_objects(trusted_list)) { code = FAIL(err, ORTSEAL_E_FORMAT, "keyset trusted_keys must be a list of objects"); goto done; }
    if (allow && allow->type != J_TRUE && allow->type != J_FALSE) { code = FAIL(err, ORTSEAL_E_FORMAT, "keyset allow_unsigned must be true or false"); goto done; }
    if (!(ks = keyset_new())) { code = FAIL(err, ORTSEAL_E_NOMEM, "out of memory"); goto done; }
    ks->allow_unsigned = allow && allow->type == J_TRUE;
    if (trusted_list && (code = read_trusted(ks, trusted_list, err))) goto done;
    const json *wrapped = json_get(doc, "wrapped_secrets");
    if (wrapped) {
        if (!passphrase) {
            code = FAIL(err, ORTSEAL_E_KEY_NOT_FOUND, "this keyset is passphrase-protected: pass its passphrase");
            goto done;
        }
        if ((code = unwrap(wrapped, trusted_list, ks->allow_unsigned, passphrase, passphrase_len, &secret, err))) goto done;
        code = read_secrets(ks, secret, err);
    } else {
        code = read_secrets(ks, doc, err);
    }
done:
    json_free(doc);
    json_free(secret);
    if (code) ortseal_keyset_free(ks);
    else { *out = ks; clear_error(err); }
    return code;
}

ortseal_code ortseal_keyset_load(const char *path, const char *passphrase, size_t passphrase_len,
                                 ortseal_keyset **out, ortseal_error *err) {
    if (!path || !out) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_keyset_load needs a path and out");
    *out = NULL;
    os_buffer file = {0};
    ortseal_code code = os_read_regular(path, MAX_KEYSET_FILE, &file, err);
    if (code) return code;
    code = ortseal_keyset_from_json((const char *)file.data, file.len, passphrase, passphrase_len, out, err);
    os_buffer_free(&file);
    return code;
}
