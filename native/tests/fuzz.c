/* A libFuzzer target over everything libortseal parses from untrusted bytes (built by ORTSEAL_FUZZ=ON with
 * clang, -fsanitize=fuzzer,address,undefined; run by tests/test_native_hardening.py). The first input byte
 * picks the parser, the rest is its input:
 *   0  ortseal_model_open_bytes (data files looked up in $ORTSEAL_FUZZ_FOLDER)
 *   1  ortseal_unseal (context "fuzz")
 *   2  ortseal_keyset_from_json (passphrase "fuzz": a protected file runs scrypt within the spec's bounds)
 *   3  ortseal_plaintext_size
 * Keysets: $ORTSEAL_FUZZ_KEYSETS, a ':'-separated list of keyset files; each input is opened with each, so
 * an allow_unsigned keyset takes mutations past the signature into the manifest and tensor parsers.
 * Every call must return a code; anything else (a crash, a sanitizer report, a leak) is a finding. A code of
 * OK on mutated bytes is not a finding by itself (an unsigned keyset accepts unsigned edits by design). */
#include "ortseal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYSETS 4
static ortseal_keyset *keysets[MAX_KEYSETS];
static size_t n_keysets;
static const char *folder;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    folder = getenv("ORTSEAL_FUZZ_FOLDER");
    const char *list = getenv("ORTSEAL_FUZZ_KEYSETS");
    char *copy = list ? strdup(list) : NULL;
    for (char *path = copy ? strtok(copy, ":") : NULL; path && n_keysets < MAX_KEYSETS; path = strtok(NULL, ":")) {
        ortseal_error err;
        if (ortseal_keyset_load(path, NULL, 0, &keysets[n_keysets], &err)) {
            fprintf(stderr, "fuzz: cannot load keyset %s: %s\n", path, err.message);
            abort();
        }
        n_keysets++;
    }
    free(copy);
    if (!n_keysets) {
        fprintf(stderr, "fuzz: set ORTSEAL_FUZZ_KEYSETS to one or more keyset files\n");
        abort();
    }
    return 0;
}

static void check(ortseal_code code, const ortseal_error *err) {
    if (code < ORTSEAL_OK || code > ORTSEAL_E_RUNTIME || (code && !err->message[0])) {
        fprintf(stderr, "fuzz: code %d with message '%s'\n", (int)code, err->message);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t which = data[0] % 4, *in = data + 1;
    size_t len = size - 1;
    ortseal_error err;
    if (which == 2) {
        ortseal_keyset *ks = NULL;
        memset(&err, 0, sizeof err);
        ortseal_code code = ortseal_keyset_from_json((const char *)in, len, "fuzz", 4, &ks, &err);
        check(code, &err);
        ortseal_keyset_free(ks);
        return 0;
    }
    if (which == 3) {
        uint64_t n;
        memset(&err, 0, sizeof err);
        check(ortseal_plaintext_size(in, len, &n, &err), &err);
        return 0;
    }
    for (size_t k = 0; k < n_keysets; k++) {
        memset(&err, 0, sizeof err);
        if (which == 0) {
            ortseal_model *m = NULL;
            ortseal_code code = ortseal_model_open_bytes(in, len, folder, keysets[k], 0, &m, &err);
            check(code, &err);
            if (!code) {
                size_t model_len, weights_len;
                const char *file;
                const uint8_t *model = ortseal_model_bytes(m, &model_len);
                const uint8_t *weights = ortseal_model_weights(m, &file, &weights_len);
                volatile uint8_t sink = 0; /* touch both ends: ASan checks the lengths handed back */
                if (model_len) sink ^= model[0] ^ model[model_len - 1];
                if (weights && weights_len) sink ^= weights[0] ^ weights[weights_len - 1];
                (void)sink;
            }
            ortseal_model_free(m);
        } else {
            uint8_t *out = NULL;
            size_t out_len = 0;
            ortseal_code code = ortseal_unseal(keysets[k], in, len, "fuzz", 4, 0, &out, &out_len, &err);
            check(code, &err);
            if (!code && out_len) { volatile uint8_t sink = out[out_len - 1]; (void)sink; }
            ortseal_free(out, out_len);
        }
    }
    return 0;
}

#ifdef ORTSEAL_FUZZ_REPLAY
/* Without libFuzzer (gcc): run each file named on the command line once, under the sanitizers. */
int main(int argc, char **argv) {
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { perror(argv[i]); return 2; }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
        size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
        fclose(f);
        LLVMFuzzerTestOneInput(buf, got);
        free(buf);
    }
    return 0;
}
#endif
