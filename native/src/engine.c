/* The engine-cache vault (as ortseal/tensorrt/vault.py): native callbacks behind the keyless shim's
 * decrypt/encrypt. Engines are sealed blobs bound to the cache file's name (context
 * "ortseal/trt-engine/v2\0" || name), stamped with the vault's release, signed, written atomically; opening
 * checks the file kind, length, context, release and signature (purpose "engine") before the content key
 * is fetched. Vaults are registered per cache folder; the shim's calls are routed by the path ORT passes.
 * The registry is the one piece of global state: the shim calls back into this process without a handle. */
#define __USE_MINGW_ANSI_STDIO 1
#include "internal.h"
#include "os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTEXT_PREFIX "ortseal/trt-engine/v2"
#define ENGINE_SUFFIX ".engine.encrypted"
#define PURPOSE "engine"
#define MAX_VAULTS 64
#define DIR_CAP 4096

typedef int (*shim_decrypt_cb)(void *user, const char *path, char *buf, size_t *size);
typedef int (*shim_encrypt_cb)(void *user, const char *path, const char *data, size_t size);
typedef int (*shim_register_fn)(shim_decrypt_cb, shim_encrypt_cb, void *);
typedef void (*shim_unregister_fn)(void);

typedef struct vault {
    char dir[DIR_CAP];
    const ortseal_keyset *ks;
    uint64_t release, min_release;
    ortseal_log_fn log;
    void *log_user;
} vault;

static vault vaults[MAX_VAULTS];
static size_t n_vaults;
static shim_unregister_fn shim_unregister;

static void say(const vault *v, int level, const char *fmt, const char *path, const char *message) {
    if (!v->log) return;
    char line[ORTSEAL_ERROR_MESSAGE_SIZE + DIR_CAP + 100];
    snprintf(line, sizeof line, fmt, path, message);
    v->log(v->log_user, level, line);
}

/* A refusal logged as ortseal/tensorrt/vault.py logs it: "<path>: <Python error class>: <message>". */
static void say_failed(const vault *v, const char *what, const char *path, const ortseal_error *err) {
    static const char *const PYTHON_ERRORS[] = {"OK", "FormatError", "TamperedError", "RollbackError", "KeyNotFoundError",
                                                "UnsafeOptionError", "OSError", "ValueError", "MemoryError", "OrtsealError"};
    char line[ORTSEAL_ERROR_MESSAGE_SIZE + 40];
    unsigned code = (unsigned)err->code < sizeof PYTHON_ERRORS / sizeof *PYTHON_ERRORS ? (unsigned)err->code : 9;
    snprintf(line, sizeof line, "%s: %s", PYTHON_ERRORS[code], err->message);
    say(v, ORTSEAL_LOG_ERROR, what, path, line);
}

static bool vault_for(const char *path, vault *out) {
    char dir[DIR_CAP];
    if (!os_parent_dir(path, dir, sizeof dir)) return false;
    bool found = false;
    os_registry_lock();
    for (size_t i = 0; i < n_vaults && !found; i++)
        if (strcmp(vaults[i].dir, dir) == 0) { *out = vaults[i]; found = true; }
    os_registry_unlock();
    return found;
}

/* What stale cleanup removes (ortseal/tensorrt/provider.py: remove_stale_temps(cache, "*.engine.encrypted")):
 * the names os_write_atomic and Python's atomic_writer give temp files of engines, the glob
 * ".*.engine.encrypted.*.tmp" (or ".new"), matched as fnmatch does. */
static os_temp_kind engine_temp_kind(const char *name) {
    size_t n = strlen(name), tail = 4; /* ".tmp" / ".new" */
    if (name[0] != '.' || n < 1 + sizeof ENGINE_SUFFIX + tail) return OS_NOT_TEMP;
    os_temp_kind kind = strcmp(name + n - tail, ".tmp") == 0 ? OS_TEMP_LOCKED
                      : strcmp(name + n - tail, ".new") == 0 ? OS_TEMP_NEW : OS_NOT_TEMP;
    /* ENGINE_SUFFIX "." somewhere after the leading dot, ending at or before the tail */
    for (const char *p = name + 1; kind && (p = strstr(p, ENGINE_SUFFIX ".")); p++)
        if ((size_t)(p - name) + sizeof ENGINE_SUFFIX <= n - tail) return kind;
    return OS_NOT_TEMP;
}

static void removed_stale(void *ctx, const char *name) {
    say(ctx, ORTSEAL_LOG_WARNING, "ortseal: removed %s/%s, left by an engine writer that was killed", ((const vault *)ctx)->dir, name);
}

/* context = CONTEXT_PREFIX "\0" || the file's name */
static size_t engine_context(const char *path, char *out, size_t cap) {
    const char *name = os_base_name(path);
    size_t n = strlen(name);
    if (sizeof CONTEXT_PREFIX + n > cap) return 0;
    memcpy(out, CONTEXT_PREFIX, sizeof CONTEXT_PREFIX);
    memcpy(out + sizeof CONTEXT_PREFIX, name, n);
    return sizeof CONTEXT_PREFIX + n;
}

static ortseal_code engine_size(const char *path, uint64_t *size, ortseal_error *err) {
    os_buffer head = {0};
    uint64_t file_size = 0;
    blob_header h;
    ortseal_code code = os_read_engine(path, true, &head, &file_size, err);
    if (!code) code = blob_parse_header(head.data, head.len, &h, err);
    if (!code && h.total_len != file_size)
        code = FAIL(err, ORTSEAL_E_TAMPERED, "engine file length (%llu bytes) does not match its header (%llu): truncated or damaged",
                    (unsigned long long)file_size, (unsigned long long)h.total_len);
    if (!code) *size = h.plaintext_length;
    os_buffer_free(&head);
    return code;
}

/* Read the engine whole once, check everything on those bytes, decrypt into out (exactly out_len bytes). */
static ortseal_code open_engine(const char *path, const vault *v, uint8_t *out, size_t out_len, ortseal_error *err) {
    os_buffer file = {0};
    uint64_t file_size = 0;
    blob_header h;
    char context[DIR_CAP + 64];
    size_t context_len = engine_context(path, context, sizeof context);
    ortseal_code code = os_read_engine(path, false, &file, &file_size, err);
    if (!code) code = blob_parse_header(file.data, file.len, &h, err);
    if (!code && h.total_len != file.len)
        code = FAIL(err, ORTSEAL_E_TAMPERED, "engine file length (%zu bytes) does not match its header (%llu): truncated or damaged",
                    file.len, (unsigned long long)h.total_len);
    if (!code && h.plaintext_length != out_len)
        code = FAIL(err, ORTSEAL_E_TAMPERED, "ORT's buffer is %zu bytes but the engine holds %llu: the file changed after the size query",
                    out_len, (unsigned long long)h.plaintext_length);
    if (!code) code = blob_open_into(v->ks, file.data, file.len, context, context_len, v->min_release, NULL, PURPOSE, out, out_len, err);
    os_buffer_free(&file);
    return code;
}

ortseal_code ortseal_engine_verify(const char *path, const ortseal_keyset *ks, uint64_t min_release, ortseal_error *err) {
    if (!path || !ks) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_engine_verify needs a path and a keyset");
    vault v = {.ks = ks, .min_release = min_release};
    uint64_t size = 0;
    ortseal_code code = engine_size(path, &size, err);
    uint8_t *buf = code ? NULL : xcalloc((size_t)size, 1);
    if (!code && !buf) code = FAIL(err, ORTSEAL_E_NOMEM, "out of memory");
    if (!code) code = open_engine(path, &v, buf, (size_t)size, err);
    if (buf) ortseal_free(buf, (size_t)size);
    if (!code) clear_error(err);
    return code;
}

/* The callbacks never fail into ORT: a refusal is logged (when the host asked for logs) and returns 0. */
static int on_decrypt(void *user, const char *path, char *buf, size_t *size) {
    vault v;
    ortseal_error err = {0};
    if (!path || !size) return 0;
    if (!vault_for(path, &v)) return 0;
    uint64_t n = 0;
    ortseal_code code = buf ? open_engine(path, &v, (uint8_t *)buf, *size, &err) : engine_size(path, &n, &err);
    if (code) { say_failed(&v, "ortseal: refusing to open TensorRT engine %s: %s", path, &err); return 0; }
    if (!buf) *size = (size_t)n;
    return 1;
}

static int on_encrypt(void *user, const char *path, const char *data, size_t size) {
    vault v;
    ortseal_error err = {0};
    if (!path || (!data && size) || !vault_for(path, &v)) return 0;
    char context[DIR_CAP + 64], signer[17], line[64];
    size_t context_len = engine_context(path, context, sizeof context);
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    bool sign = keyset_signer_id(v.ks, signer);
    ortseal_code code = ortseal_seal(v.ks, (const uint8_t *)data, size, context, context_len, v.release, sign, &blob, &blob_len, &err);
    if (!code) code = os_write_atomic(path, blob, blob_len, &err);
    free(blob); /* ciphertext */
    if (code) { say_failed(&v, "ortseal: could not seal TensorRT engine %s: %s", path, &err); return 0; }
    snprintf(line, sizeof line, "%zu bytes, release %llu", size, (unsigned long long)v.release);
    say(&v, ORTSEAL_LOG_INFO, "ortseal: sealed TensorRT engine %s (%s)", path, line);
    return 1;
}

ortseal_code ortseal_engine_cache_register(const char *shim_path, const char *cache_dir, const ortseal_keyset *ks,
                                           uint64_t release, uint64_t min_release, ortseal_log_fn log, void *log_user,
                                           ortseal_error *err) {
    if (!shim_path || !cache_dir || !ks) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_engine_cache_register needs the shim, a cache folder and a keyset");
    /* engines written with ks must open again with it (vault.py check_can_write) */
    char id[65], signer[17];
    uint8_t key[32];
    ortseal_code code = keyset_sealing_key(ks, id, key, err);
    wipe(key, sizeof key);
    if (code) return code;
    if (!keyset_allows_unsigned(ks) && !keyset_signer_id(ks, signer))
        return FAIL(err, ORTSEAL_E_MISUSE, "this keyset verifies signatures but cannot sign, so an engine written with it could never "
                    "be opened again; give the engine cache a keyset with a signing key");
    vault v = {.ks = ks, .release = release, .min_release = min_release, .log = log, .log_user = log_user};
    if (!os_canonical_dir(cache_dir, v.dir, sizeof v.dir)) return FAIL(err, ORTSEAL_E_IO, "the cache folder %s does not exist or is not a folder", cache_dir);
    /* as tensorrt_provider does: temp files of writers that were killed go, live writers' stay (Python's too) */
    os_remove_stale_temps(v.dir, engine_temp_kind, removed_stale, &v);
    shim_register_fn reg = (shim_register_fn)os_library_symbol(shim_path, "ortseal_shim_register", err);
    shim_unregister_fn unreg = (shim_unregister_fn)os_library_symbol(shim_path, "ortseal_shim_unregister", err);
    if (!reg || !unreg) return ORTSEAL_E_IO;
    os_registry_lock();
    size_t i = 0;
    while (i < n_vaults && strcmp(vaults[i].dir, v.dir) != 0) i++;
    if (i < n_vaults && vaults[i].ks != ks) {
        os_registry_unlock();
        return FAIL(err, ORTSEAL_E_MISUSE, "engine cache %s is already sealed with another keyset in this process; give each keyset its own cache folder", v.dir);
    }
    if (i == MAX_VAULTS) { os_registry_unlock(); return FAIL(err, ORTSEAL_E_MISUSE, "at most %d engine cache folders", MAX_VAULTS); }
    vaults[i] = v; /* the same keyset again: its latest release settings apply */
    if (i == n_vaults) n_vaults++;
    shim_unregister = unreg;
    os_registry_unlock();
    if (!reg(on_decrypt, on_encrypt, NULL)) return FAIL(err, ORTSEAL_E_RUNTIME, "the shim refused the callbacks");
    clear_error(err);
    return ORTSEAL_OK;
}

void ortseal_engine_cache_unregister_all(void) {
    os_registry_lock();
    shim_unregister_fn unreg = shim_unregister;
    n_vaults = 0;
    os_registry_unlock();
    if (unreg) unreg(); /* waits for calls in flight */
}
