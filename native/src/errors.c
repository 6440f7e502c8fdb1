/* Status codes and messages: every failure fills the caller's ortseal_error; nothing is printed. */
#define __USE_MINGW_ANSI_STDIO 1 /* C99 printf on Windows (mingw-w64) */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ortseal_code set_error(ortseal_error *err, ortseal_code code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void clear_error(ortseal_error *err) {
    if (err) {
        err->code = ORTSEAL_OK;
        err->message[0] = '\0';
    }
}

const char *ortseal_code_name(ortseal_code code) {
    switch (code) {
    case ORTSEAL_OK: return "ok";
    case ORTSEAL_E_FORMAT: return "format";
    case ORTSEAL_E_TAMPERED: return "tampered";
    case ORTSEAL_E_ROLLBACK: return "rollback";
    case ORTSEAL_E_KEY_NOT_FOUND: return "key_not_found";
    case ORTSEAL_E_UNSAFE_OPTION: return "unsafe_option";
    case ORTSEAL_E_IO: return "io";
    case ORTSEAL_E_MISUSE: return "misuse";
    case ORTSEAL_E_NOMEM: return "nomem";
    case ORTSEAL_E_RUNTIME: return "runtime";
    }
    return "unknown";
}

void ortseal_free(void *buffer, size_t len) {
    if (!buffer) return;
    wipe(buffer, len);
    free(buffer);
}

void *xcalloc(size_t n, size_t size) { return calloc(n ? n : 1, size ? size : 1); }
