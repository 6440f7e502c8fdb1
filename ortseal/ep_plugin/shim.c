/* ortseal engine-cache shim. Spec and rationale: ortseal_shim.h and docs/tensorrt.md. */
#define _POSIX_C_SOURCE 200809L
#include "ortseal_shim.h"

#include <pthread.h>
#include <stdio.h>

#define EXPORT __attribute__((visibility("default")))

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static ortseal_decrypt_callback decrypt_cb = NULL;
static ortseal_encrypt_callback encrypt_cb = NULL;
static void* cb_user = NULL;

EXPORT int ortseal_shim_abi_version(void) { return ORTSEAL_SHIM_ABI_VERSION; }

EXPORT int ortseal_shim_register(ortseal_decrypt_callback decrypt_fn, ortseal_encrypt_callback encrypt_fn,
                                 void* user) {
    if (decrypt_fn == NULL) return 0;
    pthread_rwlock_wrlock(&lock);
    decrypt_cb = decrypt_fn;
    encrypt_cb = encrypt_fn;
    cb_user = user;
    pthread_rwlock_unlock(&lock);
    return 1;
}

EXPORT void ortseal_shim_unregister(void) {
    pthread_rwlock_wrlock(&lock);
    decrypt_cb = NULL;
    encrypt_cb = NULL;
    cb_user = NULL;
    pthread_rwlock_unlock(&lock);
}

static void refuse(const char* what, const char* path) {
    fprintf(stderr, "ortseal shim: no %s callback registered in this process; refusing to %s %s\n", what, what,
            path ? path : "(null)");
}

/* The read lock is held during a callback so that unregister waits for calls in flight. */
EXPORT int decrypt(const char* path, char* buf, size_t* size) {
    int ok = 0;
    if (path == NULL || size == NULL) return 0;
    pthread_rwlock_rdlock(&lock);
    if (decrypt_cb != NULL) ok = decrypt_cb(cb_user, path, buf, size) != 0;
    else refuse("decrypt", path);
    pthread_rwlock_unlock(&lock);
    return ok;
}

EXPORT int encrypt(const char* path, char* data, size_t size) {
    int ok = 0;
    if (path == NULL || (data == NULL && size != 0)) return 0;
    pthread_rwlock_rdlock(&lock);
    if (encrypt_cb != NULL) ok = encrypt_cb(cb_user, path, data, size) != 0;
    else refuse("encrypt", path);
    pthread_rwlock_unlock(&lock);
    return ok;
}
