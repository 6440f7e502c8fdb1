/* ortseal engine-cache shim. Spec and rationale: ortseal_shim.h and docs/tensorrt.md. */
#define _POSIX_C_SOURCE 200809L
#include "ortseal_shim.h"

#include <pthread.h>
#include <stdio.h>

#define EXPORT __attribute__((visibility("default")))

/* Calls in flight hold a reader count; unregister waits for it to reach zero. A waiting unregister
 * blocks new calls (writer preference), so a steady stream of decrypt calls cannot starve it. Built
 * from a mutex and a condition variable only: symbols every glibc since 2.3 exports. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static unsigned long calls_in_flight = 0;
static unsigned long writers_waiting = 0;
static ortseal_decrypt_callback decrypt_cb = NULL;
static ortseal_encrypt_callback encrypt_cb = NULL;
static void* cb_user = NULL;

static void writer_enter(void) {
    pthread_mutex_lock(&mu);
    writers_waiting++;
    while (calls_in_flight > 0) pthread_cond_wait(&changed, &mu);
}

static void writer_leave(void) {
    writers_waiting--;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&mu);
}

/* Takes a snapshot of the callbacks and counts the call in flight. */
static void call_enter(ortseal_decrypt_callback* d, ortseal_encrypt_callback* e, void** user) {
    pthread_mutex_lock(&mu);
    while (writers_waiting > 0) pthread_cond_wait(&changed, &mu);
    calls_in_flight++;
    *d = decrypt_cb;
    *e = encrypt_cb;
    *user = cb_user;
    pthread_mutex_unlock(&mu);
}

static void call_leave(void) {
    pthread_mutex_lock(&mu);
    if (--calls_in_flight == 0) pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&mu);
}

EXPORT int ortseal_shim_abi_version(void) { return ORTSEAL_SHIM_ABI_VERSION; }

EXPORT int ortseal_shim_register(ortseal_decrypt_callback decrypt_fn, ortseal_encrypt_callback encrypt_fn,
                                 void* user) {
    if (decrypt_fn == NULL) return 0;
    writer_enter();
    decrypt_cb = decrypt_fn;
    encrypt_cb = encrypt_fn;
    cb_user = user;
    writer_leave();
    return 1;
}

EXPORT void ortseal_shim_unregister(void) {
    writer_enter();
    decrypt_cb = NULL;
    encrypt_cb = NULL;
    cb_user = NULL;
    writer_leave();
}

static void refuse(const char* what, const char* path) {
    fprintf(stderr, "ortseal shim: no %s callback registered in this process; refusing to %s %s\n", what, what,
            path ? path : "(null)");
}

EXPORT int decrypt(const char* path, char* buf, size_t* size) {
    ortseal_decrypt_callback d;
    ortseal_encrypt_callback e;
    void* user;
    int ok = 0;
    if (path == NULL || size == NULL) return 0;
    call_enter(&d, &e, &user);
    if (d != NULL) ok = d(user, path, buf, size) != 0;
    else refuse("decrypt", path);
    call_leave();
    return ok;
}

EXPORT int encrypt(const char* path, char* data, size_t size) {
    ortseal_decrypt_callback d;
    ortseal_encrypt_callback e;
    void* user;
    int ok = 0;
    if (path == NULL || (data == NULL && size != 0)) return 0;
    call_enter(&d, &e, &user);
    if (e != NULL) ok = e(user, path, data, size) != 0;
    else refuse("encrypt", path);
    call_leave();
    return ok;
}
