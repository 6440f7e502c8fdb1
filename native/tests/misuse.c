/* Malformed calls into libortseal's engine-cache and option-check API, each printed as "<case> <code name>"
 * (the shim's callbacks: "<case> <return value>"), for tests/test_attack_cvault.py: NULLs, empty and huge
 * strings, a file given as the cache folder, a library that is not the shim. Never a crash.
 *   ortseal_misuse_host KEYSET SHIM CACHE_DIR */
#include "ortseal.h"
#include "ortseal_ort.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void say(const char *what, ortseal_code code) { printf("%s %s\n", what, ortseal_code_name(code)); }

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const char *keyfile = argv[1], *shim = argv[2], *dir = argv[3];
    ortseal_error e = {0};
    const char *null_key[] = {NULL, "trt_dump_subgraphs"}, *null_key_values[] = {"0", "1"};
    const char *dump[] = {"trt_dump_subgraphs"}, *null_value[] = {NULL};
    say("provider-null", ortseal_check_provider_options(NULL, NULL, NULL, 0, NULL, &e));
    say("keys-null-n5", ortseal_check_provider_options("TensorRT", NULL, NULL, 5, NULL, &e));
    say("null-key", ortseal_check_provider_options("TensorRT", null_key, null_key_values, 2, NULL, &e));
    say("null-value", ortseal_check_provider_options("TensorRT", dump, null_value, 1, NULL, &e));
    say("err-null", ortseal_check_provider_options("TensorRT", dump, null_key_values + 1, 1, NULL, NULL));
    say("session-null", ortseal_check_session_options(NULL, NULL, &e));
    say("create-null", ortseal_session_create(NULL, NULL, NULL, NULL, NULL, &e));
    ortseal_keyset *ks = NULL;
    ortseal_code code = ortseal_keyset_load(keyfile, NULL, 0, &ks, &e);
    if (code) { say("keyset", code); return 1; }
    size_t huge_len = 70000;
    char *huge = malloc(huge_len + 1);
    memset(huge, 'a', huge_len);
    huge[0] = '/';
    huge[huge_len] = '\0';
    say("register-null", ortseal_engine_cache_register(NULL, NULL, NULL, 0, 0, NULL, NULL, &e));
    say("register-empty-folder", ortseal_engine_cache_register(shim, "", ks, 0, 0, NULL, NULL, &e));
    say("register-huge-folder", ortseal_engine_cache_register(shim, huge, ks, 0, 0, NULL, NULL, &e));
    say("register-file-as-folder", ortseal_engine_cache_register(shim, keyfile, ks, 0, 0, NULL, NULL, &e));
    say("register-missing-shim", ortseal_engine_cache_register("/nonexistent/shim.so", dir, ks, 0, 0, NULL, NULL, &e));
    say("register-libc-as-shim", ortseal_engine_cache_register("libc.so.6", dir, ks, 0, 0, NULL, NULL, &e));
    say("verify-null", ortseal_engine_verify(NULL, NULL, 0, &e));
    say("verify-folder", ortseal_engine_verify(dir, ks, 0, &e));
    say("verify-huge", ortseal_engine_verify(huge, ks, 0, &e));
    say("register", ortseal_engine_cache_register(shim, dir, ks, 0, 0, NULL, NULL, &e));
    /* the shim's callbacks with the odd arguments a buggy caller could pass */
    void *lib = dlopen(shim, RTLD_NOW);
    int (*dec)(const char *, char *, size_t *) = (int (*)(const char *, char *, size_t *))dlsym(lib, "decrypt");
    int (*enc)(const char *, const char *, size_t) = (int (*)(const char *, const char *, size_t))dlsym(lib, "encrypt");
    if (!dec || !enc) return 1;
    size_t size = 0;
    char path[8192], small[16];
    printf("decrypt-null %d\n", dec(NULL, NULL, &size));
    printf("decrypt-null-size %d\n", dec("x", NULL, NULL));
    printf("decrypt-empty %d\n", dec("", NULL, &size));
    printf("decrypt-huge %d\n", dec(huge, NULL, &size));
    snprintf(path, sizeof path, "%s/", dir);
    printf("encrypt-folder-path %d\n", enc(path, "abc", 3));
    printf("encrypt-empty %d\n", enc("", "abc", 3));
    int n = snprintf(path, sizeof path, "%s/", dir);
    memset(path + n, 'e', 250);
    path[n + 250] = '\0';
    printf("encrypt-long-name %d\n", enc(path, "abc", 3));
    snprintf(path, sizeof path, "%s/x.engine", dir);
    printf("encrypt-null-data %d\n", enc(path, NULL, 5));
    printf("encrypt-zero %d\n", enc(path, "", 0));
    size = 0;
    printf("decrypt-zero-size %d\n", dec(path, NULL, &size));
    size = sizeof small;
    printf("decrypt-wrong-size %d\n", dec(path, small, &size));
    ortseal_engine_cache_unregister_all();
    ortseal_keyset_free(ks);
    free(huge);
    return 0;
}
