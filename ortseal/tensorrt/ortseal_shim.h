/* ortseal engine-cache shim: the library ONNX Runtime's TensorRT EP loads through
 * trt_engine_decryption_lib_path. It holds no key and no cryptography: it forwards ORT's
 * decrypt/encrypt calls to callbacks that the host process registers, and refuses (returns 0)
 * when none is registered. See docs/tensorrt.md. */
#ifndef ORTSEAL_SHIM_H
#define ORTSEAL_SHIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ORTSEAL_SHIM_ABI_VERSION 1

/* Same contract as ORT's decrypt: buf == NULL asks for the plaintext size in *size; otherwise
 * fill buf (*size bytes). Return non-zero on success, 0 on failure. */
typedef int (*ortseal_decrypt_callback)(void* user, const char* path, char* buf, size_t* size);
/* Same contract as ORT's encrypt: seal data (size bytes) and write it to path. Non-zero on success. */
typedef int (*ortseal_encrypt_callback)(void* user, const char* path, const char* data, size_t size);

/* Register this process's callbacks (replacing any); encrypt may be NULL. Returns 1, or 0 if decrypt is NULL. */
int ortseal_shim_register(ortseal_decrypt_callback decrypt, ortseal_encrypt_callback encrypt, void* user);
/* Remove the callbacks; waits for calls in flight, so the callbacks may be freed afterwards.
 * Must not be called from inside a callback. */
void ortseal_shim_unregister(void);
int ortseal_shim_abi_version(void);

/* ORT's ABI (tensorrt_execution_provider.cc): looked up by name with dlsym. */
int decrypt(const char* path, char* buf, size_t* size);
int encrypt(const char* path, char* data, size_t size);

#ifdef __cplusplus
}
#endif

#endif
