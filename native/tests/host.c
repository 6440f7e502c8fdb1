/* A command-line host over libortseal's C API, driven by tests/test_native*.py.
 *   ortseal_host unseal KEYSET PASSPHRASE|- CONTEXT MIN_RELEASE BLOB_FILE OUT_FILE
 *   ortseal_host seal KEYSET PASSPHRASE|- CONTEXT RELEASE SIGN(0|1) IN_FILE OUT_FILE
 *   ortseal_host keyset KEYSET PASSPHRASE|- [SIGNER PURPOSE]...    (prints "trusts SIGNER PURPOSE 0|1")
 *   ortseal_host merge-unseal KEYSET1 KEYSET2 CONTEXT MIN_RELEASE BLOB_FILE OUT_FILE
 *   ortseal_host model KEYSET PASSPHRASE|- MIN_RELEASE MODEL OUT_FOLDER [MODEL_NAME]
 *       (test only: writes the opened model and its weights to OUT_FOLDER to compare them)
 *   ortseal_host engine-save KEYSET SHIM CACHE_DIR NAME IN_FILE RELEASE
 *   ortseal_host engine-load KEYSET SHIM CACHE_DIR NAME OUT_FILE MIN_RELEASE
 *       (register the C vault, then call the shim's encrypt/decrypt by name, as ORT's TensorRT EP does)
 *   ortseal_host engine-clean KEYSET SHIM CACHE_DIR
 *       (register the C vault only: its stale cleanup of the folder runs, logged to stderr)
 *   ortseal_host model-bytes KEYSET MIN_RELEASE MODEL FOLDER|- OUT_FOLDER [MODEL_NAME]
 *       (the model read into memory here, opened with ortseal_model_open_bytes / _open_ex; FOLDER: its data files)
 *   ortseal_host provider-model MODE KEY_ID KEY_HEX SIGNER_PUB_HEX MODEL OUT_FOLDER
 *       (content keys from a host callback, ortseal_keyset_from_provider; MODE: ok, unknown (returns 0),
 *        fail (returns -1), length (writes the key, returns 32), short (writes 16 bytes, returns 16),
 *        partial (writes 16 bytes, returns 1))
 *   ortseal_host hsm-engine-save KEY_ID KEY_HEX SIGNER_PUB_HEX SEED_HEX|fail SHIM CACHE_DIR NAME IN_FILE RELEASE
 *       (content key from a callback, engines signed through ortseal_keyset_add_signer by a callback that
 *        signs with the Ed25519 seed SEED_HEX, or fails)
 * The model commands open in memory (their output is the in-memory weights file) unless $ORTSEAL_HOST_ROUTE
 * is "ram" (ORTSEAL_ROUTE_RAM_FOLDER) or "auto": then "folder PATH" is printed too, the weights being there.
 * Prints "ok ..." or "error <code name>: <message>" and exits with the status code. */
#include "ortseal.h"

#include <dlfcn.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ortseal_route host_route(void) {
    const char *route = getenv("ORTSEAL_HOST_ROUTE");
    if (route && strcmp(route, "ram") == 0) return ORTSEAL_ROUTE_RAM_FOLDER;
    if (route && strcmp(route, "auto") == 0) return ORTSEAL_ROUTE_AUTO;
    return ORTSEAL_ROUTE_MEMORY;
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    *len = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    return buf;
}

static int spit(const char *path, const uint8_t *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    size_t n = fwrite(data, 1, len, f);
    fclose(f);
    return n != len;
}

static int report(ortseal_code code, const ortseal_error *err) {
    if (code) printf("error %s: %s\n", ortseal_code_name(code), err->message);
    else printf("ok\n");
    return (int)code;
}

static void log_to_stderr(void *user, int level, const char *message) {
    fprintf(stderr, "%s %s\n", level == ORTSEAL_LOG_INFO ? "INFO" : level == ORTSEAL_LOG_ERROR ? "ERROR" : "WARNING", message);
}

/* argv: SHIM CACHE_DIR NAME FILE NUMBER (a release to save with, or the minimum release to load). */
static int engine_with(ortseal_keyset *ks, int save, char **argv) {
    ortseal_error err = {0};
    uint64_t number = strtoull(argv[4], NULL, 10);
    ortseal_code code = ortseal_engine_cache_register(argv[0], argv[1], ks, save ? number : 0, save ? 0 : number,
                                                      log_to_stderr, NULL, &err);
    if (code) { ortseal_keyset_free(ks); return report(code, &err); }
    void *shim = dlopen(argv[0], RTLD_NOW);
    int (*dec)(const char *, char *, size_t *) = (int (*)(const char *, char *, size_t *))dlsym(shim, "decrypt");
    int (*enc)(const char *, char *, size_t) = (int (*)(const char *, char *, size_t))dlsym(shim, "encrypt");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", argv[1], argv[2]);
    int ok;
    if (save) {
        size_t len = 0;
        uint8_t *data = slurp(argv[3], &len);
        ok = data && enc(path, (char *)data, len);
        free(data);
    } else {
        size_t size = 0;
        ok = dec(path, NULL, &size);
        char *buf = ok ? malloc(size ? size : 1) : NULL;
        ok = ok && buf && dec(path, buf, &size);
        if (ok) spit(argv[3], (const uint8_t *)buf, size);
        free(buf);
    }
    ortseal_engine_cache_unregister_all();
    ortseal_keyset_free(ks);
    if (!ok) { printf("error tampered: the shim refused the engine (see the log)\n"); return ORTSEAL_E_TAMPERED; }
    return report(ORTSEAL_OK, &err);
}

static int engine(char **argv) {
    ortseal_error err = {0};
    ortseal_keyset *ks = NULL;
    ortseal_code code = ortseal_keyset_load(argv[2], NULL, 0, &ks, &err);
    if (code) return report(code, &err);
    return engine_with(ks, strcmp(argv[1], "engine-save") == 0, argv + 3);
}

static int unhex(const char *hex, uint8_t *out, size_t n) {
    if (strlen(hex) != 2 * n) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return 0;
        out[i] = (uint8_t)v;
    }
    return 1;
}

/* A content key held by the host (a KMS, a TPM): the callback of ortseal_keyset_from_provider. */
typedef struct key_source { const char *mode; const char *id; uint8_t key[32]; } key_source;

static int provide_key(void *user, const char *key_id, uint8_t key_out[32]) {
    const key_source *s = user;
    if (strcmp(s->mode, "fail") == 0) return -1;
    if (strcmp(s->mode, "unknown") == 0 || strcmp(key_id, s->id) != 0) return 0;
    int part = strcmp(s->mode, "short") == 0 || strcmp(s->mode, "partial") == 0;
    memcpy(key_out, s->key, part ? 16 : 32);
    if (strcmp(s->mode, "short") == 0) return 16;
    return strcmp(s->mode, "length") == 0 ? 32 : 1;
}

/* A signing key held by the host (an HSM): the callback of ortseal_keyset_add_signer, Ed25519 through OpenSSL. */
static int sign_with_seed(void *user, const uint8_t *message, size_t message_len, uint8_t signature_out[64]) {
    EVP_PKEY *key = user;
    if (!key) return 1; /* "fail": the HSM refused */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = 64;
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestSign(ctx, signature_out, &n, message, message_len) == 1 && n == 64;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : 1;
}

static ortseal_code provider_keyset(const char *mode, const char *id, const char *key_hex, key_source *src,
                                    ortseal_keyset **ks, ortseal_error *err) {
    src->mode = mode;
    src->id = id;
    if (!unhex(key_hex, src->key, 32)) {
        snprintf(err->message, sizeof err->message, "KEY_HEX must be 64 hex digits");
        return ORTSEAL_E_MISUSE;
    }
    return ortseal_keyset_from_provider(provide_key, src, id, ks, err);
}

static ortseal_code load(const char *path, const char *phrase, ortseal_keyset **ks, ortseal_error *err) {
    int none = strcmp(phrase, "-") == 0;
    return ortseal_keyset_load(path, none ? NULL : phrase, none ? 0 : strlen(phrase), ks, err);
}

int main(int argc, char **argv) {
    ortseal_error err = {0};
    ortseal_keyset *ks = NULL;
    ortseal_code code;
    if (argc < 2) return 100;
    const char *cmd = argv[1];
    if ((strcmp(cmd, "engine-save") == 0 || strcmp(cmd, "engine-load") == 0) && argc == 8) return engine(argv);
    if (strcmp(cmd, "engine-clean") == 0 && argc == 5) {
        ortseal_error err = {0};
        ortseal_keyset *ks = NULL;
        ortseal_code code = ortseal_keyset_load(argv[2], NULL, 0, &ks, &err);
        if (!code) code = ortseal_engine_cache_register(argv[3], argv[4], ks, 0, 0, log_to_stderr, NULL, &err);
        ortseal_engine_cache_unregister_all();
        ortseal_keyset_free(ks);
        return report(code, &err);
    }
    if (strcmp(cmd, "hsm-engine-save") == 0 && argc == 11) {
        key_source src;
        uint8_t pub[32], seed[32];
        if (!unhex(argv[4], pub, 32)) return 101;
        EVP_PKEY *signing = NULL;
        if (strcmp(argv[5], "fail") != 0) {
            if (!unhex(argv[5], seed, 32)) return 101;
            if (!(signing = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32))) return 101;
        }
        code = provider_keyset("ok", argv[2], argv[3], &src, &ks, &err);
        if (!code) code = ortseal_keyset_add_signer(ks, pub, sign_with_seed, signing, &err);
        int rc = code ? report(code, &err) : engine_with(ks, 1, argv + 6);
        if (code) ortseal_keyset_free(ks);
        EVP_PKEY_free(signing);
        return rc;
    }
    if (strcmp(cmd, "keyset") == 0 && argc >= 4) {
        if ((code = load(argv[2], argv[3], &ks, &err))) return report(code, &err);
        for (int i = 4; i + 1 < argc; i += 2)
            printf("trusts %s %s %d\n", argv[i], argv[i + 1], ortseal_keyset_trusts(ks, argv[i], argv[i + 1]));
        ortseal_keyset_free(ks);
        return report(ORTSEAL_OK, &err);
    }
    if ((strcmp(cmd, "unseal") == 0 || strcmp(cmd, "merge-unseal") == 0) && argc == 8) {
        if (strcmp(cmd, "unseal") == 0) code = load(argv[2], argv[3], &ks, &err);
        else {
            ortseal_keyset *other = NULL;
            code = load(argv[2], "-", &ks, &err);
            if (!code) code = load(argv[3], "-", &other, &err);
            if (!code) code = ortseal_keyset_merge(ks, other, &err);
            ortseal_keyset_free(other);
        }
        if (code) { ortseal_keyset_free(ks); return report(code, &err); }
        size_t len = 0, out_len = 0;
        uint8_t *blob = slurp(argv[6], &len), *out = NULL;
        if (!blob) return 101;
        code = ortseal_unseal(ks, blob, len, argv[4], strlen(argv[4]), strtoull(argv[5], NULL, 10), &out, &out_len, &err);
        if (!code) spit(argv[7], out, out_len);
        ortseal_free(out, out_len);
        free(blob);
        ortseal_keyset_free(ks);
        return report(code, &err);
    }
    if (strcmp(cmd, "seal") == 0 && argc == 9) {
        if ((code = load(argv[2], argv[3], &ks, &err))) return report(code, &err);
        size_t len = 0, out_len = 0;
        uint8_t *pt = slurp(argv[7], &len), *out = NULL;
        if (!pt) return 101;
        code = ortseal_seal(ks, pt, len, argv[4], strlen(argv[4]), strtoull(argv[5], NULL, 10), atoi(argv[6]), &out,
                            &out_len, &err);
        if (!code) spit(argv[8], out, out_len);
        free(out);
        free(pt);
        ortseal_keyset_free(ks);
        return report(code, &err);
    }
    const char *out_folder = NULL;
    ortseal_model *m = NULL;
    key_source src;
    if (strcmp(cmd, "model") == 0 && argc >= 7) {
        /* test only: the opened model and its weights written out so the test can compare every tensor */
        if ((code = load(argv[2], argv[3], &ks, &err))) return report(code, &err);
        const char *name = argc >= 8 ? argv[7] : NULL;
        code = ortseal_model_open_route(argv[5], NULL, 0, NULL, ks, strtoull(argv[4], NULL, 10), name, host_route(), &m, &err);
        out_folder = argv[6];
    } else if (strcmp(cmd, "model-bytes") == 0 && (argc == 7 || argc == 8)) {
        if ((code = load(argv[2], "-", &ks, &err))) return report(code, &err);
        size_t len = 0;
        uint8_t *bytes = slurp(argv[4], &len);
        if (!bytes) return 101;
        const char *folder = strcmp(argv[5], "-") == 0 ? NULL : argv[5];
        uint64_t min_release = strtoull(argv[3], NULL, 10);
        code = ortseal_model_open_route(NULL, bytes, len, folder, ks, min_release, argc == 8 ? argv[7] : NULL, host_route(),
                                        &m, &err);
        free(bytes);
        out_folder = argv[6];
    } else if (strcmp(cmd, "provider-model") == 0 && argc == 8) {
        uint8_t pub[32];
        if (!unhex(argv[5], pub, 32)) return 101;
        code = provider_keyset(argv[2], argv[3], argv[4], &src, &ks, &err);
        if (!code) code = ortseal_keyset_trust(ks, pub, NULL, 0, &err);
        if (!code) code = ortseal_model_open(argv[6], ks, 0, &m, &err);
        out_folder = argv[7];
    }
    if (out_folder) {
        if (!code) {
            size_t len = 0, wlen = 0;
            const char *file = NULL;
            const uint8_t *proto = ortseal_model_bytes(m, &len), *weights = ortseal_model_weights(m, &file, &wlen);
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", out_folder, file);
            char model_path[4096];
            snprintf(model_path, sizeof model_path, "%s/opened.onnx", out_folder);
            spit(model_path, proto, len);
            spit(path, weights, wlen);
            printf("sealed %zu name %s release %llu", ortseal_model_sealed_tensors(m), ortseal_model_name(m),
                   (unsigned long long)ortseal_model_release(m));
            if (ortseal_model_folder(m)) printf(" folder %s", ortseal_model_folder(m));
            printf("\n");
        }
        ortseal_model_free(m);
        ortseal_keyset_free(ks);
        return report(code, &err);
    }
    return 100;
}
