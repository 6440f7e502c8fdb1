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
 * Prints "ok ..." or "error <code name>: <message>" and exits with the status code. */
#include "ortseal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    fprintf(stderr, "%s %s\n", level ? "ERROR" : "INFO", message);
}

static int engine(int argc, char **argv) {
    ortseal_error err = {0};
    ortseal_keyset *ks = NULL;
    ortseal_code code = ortseal_keyset_load(argv[2], NULL, 0, &ks, &err);
    int save = strcmp(argv[1], "engine-save") == 0;
    uint64_t number = strtoull(argv[7], NULL, 10);
    if (!code) code = ortseal_engine_cache_register(argv[3], argv[4], ks, save ? number : 0, save ? 0 : number,
                                                    log_to_stderr, NULL, &err);
    if (code) { ortseal_keyset_free(ks); return report(code, &err); }
    void *shim = dlopen(argv[3], RTLD_NOW);
    int (*dec)(const char *, char *, size_t *) = (int (*)(const char *, char *, size_t *))dlsym(shim, "decrypt");
    int (*enc)(const char *, char *, size_t) = (int (*)(const char *, char *, size_t))dlsym(shim, "encrypt");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", argv[4], argv[5]);
    int ok;
    if (save) {
        size_t len = 0;
        uint8_t *data = slurp(argv[6], &len);
        ok = data && enc(path, (char *)data, len);
        free(data);
    } else {
        size_t size = 0;
        ok = dec(path, NULL, &size);
        char *buf = ok ? malloc(size ? size : 1) : NULL;
        ok = ok && buf && dec(path, buf, &size);
        if (ok) spit(argv[6], (const uint8_t *)buf, size);
        free(buf);
    }
    ortseal_engine_cache_unregister_all();
    ortseal_keyset_free(ks);
    if (!ok) { printf("error tampered: the shim refused the engine (see the log)\n"); return ORTSEAL_E_TAMPERED; }
    return report(ORTSEAL_OK, &err);
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
    if ((strcmp(cmd, "engine-save") == 0 || strcmp(cmd, "engine-load") == 0) && argc == 8) return engine(argc, argv);
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
    if (strcmp(cmd, "model") == 0 && argc >= 7) {
        /* test only: the opened model and its weights written out so the test can compare every tensor */
        if ((code = load(argv[2], argv[3], &ks, &err))) return report(code, &err);
        ortseal_model *m = NULL;
        const char *name = argc >= 8 ? argv[7] : NULL;
        code = ortseal_model_open_ex(argv[5], NULL, 0, NULL, ks, strtoull(argv[4], NULL, 10), name, &m, &err);
        if (!code) {
            size_t len = 0, wlen = 0;
            const char *file = NULL;
            const uint8_t *proto = ortseal_model_bytes(m, &len), *weights = ortseal_model_weights(m, &file, &wlen);
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[6], file);
            char model_path[4096];
            snprintf(model_path, sizeof model_path, "%s/opened.onnx", argv[6]);
            spit(model_path, proto, len);
            spit(path, weights, wlen);
            printf("sealed %zu name %s release %llu\n", ortseal_model_sealed_tensors(m), ortseal_model_name(m),
                   (unsigned long long)ortseal_model_release(m));
        }
        ortseal_model_free(m);
        ortseal_keyset_free(ks);
        return report(code, &err);
    }
    return 100;
}
