/* libortseal: open ortseal sealed models and blobs from C, with no Python (docs/format.md).
 *
 * Conventions (libsodium/age style): explicit lengths, no global state, every call returns an
 * ortseal_code and fills the caller's ortseal_error (which may be NULL) with a message naming what failed.
 * Nothing here prints, aborts or writes plaintext to disk (large models' tensors go to 0600 files on tmpfs in a
 * private folder, removed once ORT has them: ortseal_route). Buffers the library returns hold plaintext or
 * keys: release them with ortseal_free, which zeroizes them first.
 */
#ifndef ORTSEAL_H
#define ORTSEAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(ORTSEAL_BUILDING_SHARED)
#define ORTSEAL_API __declspec(dllexport)
#elif defined(__GNUC__)
#define ORTSEAL_API __attribute__((visibility("default")))
#else
#define ORTSEAL_API
#endif

/* What failed, for a program to branch on (the Python exception of the same name in parentheses). */
typedef enum ortseal_code {
    ORTSEAL_OK = 0,
    ORTSEAL_E_FORMAT = 1,        /* not an ortseal file, unsupported version, malformed (FormatError) */
    ORTSEAL_E_TAMPERED = 2,      /* authentication failed, untrusted signer, length mismatch (TamperedError) */
    ORTSEAL_E_ROLLBACK = 3,      /* release below the caller's minimum (RollbackError, a kind of tampered) */
    ORTSEAL_E_KEY_NOT_FOUND = 4, /* no content key with the blob's id, missing passphrase (KeyNotFoundError) */
    ORTSEAL_E_UNSAFE_OPTION = 5, /* a session option that writes plaintext (UnsafeOptionError) */
    ORTSEAL_E_IO = 6,            /* a file could not be opened or read */
    ORTSEAL_E_MISUSE = 7,        /* bad arguments (NULL where a value is needed, wrong sizes) */
    ORTSEAL_E_NOMEM = 8,         /* out of memory */
    ORTSEAL_E_RUNTIME = 9        /* ONNX Runtime or OpenSSL refused (message has its text) */
} ortseal_code;

#define ORTSEAL_ERROR_MESSAGE_SIZE 512
typedef struct ortseal_error {
    ortseal_code code;
    char message[ORTSEAL_ERROR_MESSAGE_SIZE];
} ortseal_error;

/* The name of a code ("format", "tampered", ...). */
ORTSEAL_API const char *ortseal_code_name(ortseal_code code);

/* Zeroize then free a buffer the library returned (len: its length; 0 frees without wiping). */
ORTSEAL_API void ortseal_free(void *buffer, size_t len);

/* ---- keysets (docs/format.md "Keyset file v1") ------------------------------------------------- */
typedef struct ortseal_keyset ortseal_keyset;

/* Content-key callback (mirrors KeySet.from_provider): write the 32-byte key named key_id to key_out and
 * return 1, return 0 if unknown, or a negative value for an error (KEY_NOT_FOUND); any other return value
 * (a length, say) is refused as KEY_NOT_FOUND too, and key_out is wiped. When it is called:
 *  - a signed blob or signed model: only after the Ed25519 signature verified with a key this keyset trusts
 *    (and, for a blob inside a model, after the signed manifest's digest matched), so the key id it gets was
 *    committed by the signer, never chosen by a forged file;
 *  - an unsigned (MAC) model, or an unsigned blob or engine under a keyset that allows unsigned content: to
 *    check the MAC or decrypt at all, so the key id comes from bytes not yet authenticated (anyone who can
 *    write the file chooses it): treat key_id as untrusted input (it is 1 to 64 printable ASCII characters).
 * A keyset that requires signatures never calls it for an unsigned or untrusted file. It is called each time
 * a key is needed (no caching: cache in the callback), from the thread that opens the model or blob, or from
 * ORT's threads for the engine cache: make it safe to call from any of them. */
typedef int (*ortseal_content_key_fn)(void *user, const char *key_id, uint8_t key_out[32]);
/* Signing callback: write Ed25519(private key, message) to signature_out; return 0 on success. */
typedef int (*ortseal_sign_fn)(void *user, const uint8_t *message, size_t message_len, uint8_t signature_out[64]);

/* Load a keyset file (passphrase NULL for a plain file; a protected file then gives KEY_NOT_FOUND). */
ORTSEAL_API ortseal_code ortseal_keyset_load(const char *path, const char *passphrase, size_t passphrase_len,
                                             ortseal_keyset **out, ortseal_error *err);
ORTSEAL_API ortseal_code ortseal_keyset_from_json(const char *json, size_t json_len, const char *passphrase,
                                                  size_t passphrase_len, ortseal_keyset **out, ortseal_error *err);
/* An empty keyset whose content keys come from fn (seal_key_id: the key new blobs are sealed with, or NULL). */
ORTSEAL_API ortseal_code ortseal_keyset_from_provider(ortseal_content_key_fn fn, void *user, const char *seal_key_id,
                                                      ortseal_keyset **out, ortseal_error *err);
/* Add a signer held outside the library (HSM, TPM, KMS): its public key and a callback that signs. The first
 * signer signs; it is trusted for every purpose unless a trusted entry with its id scopes it. */
ORTSEAL_API ortseal_code ortseal_keyset_add_signer(ortseal_keyset *ks, const uint8_t public_key[32],
                                                   ortseal_sign_fn fn, void *user, ortseal_error *err);
/* Trust a public key, for the purposes matching one of scope[0..n) (n = 0: every purpose). Trusting a key
 * already trusted narrows it (the scopes are intersected), as KeySet.merge does. */
ORTSEAL_API ortseal_code ortseal_keyset_trust(ortseal_keyset *ks, const uint8_t public_key[32],
                                              const char *const *scope, size_t n, ortseal_error *err);
/* Merge src into dst as KeySet.merge(dst, src): content keys and providers added (dst's lead), trust
 * intersected, unsigned allowed only if both allow it. */
ORTSEAL_API ortseal_code ortseal_keyset_merge(ortseal_keyset *dst, const ortseal_keyset *src, ortseal_error *err);
ORTSEAL_API void ortseal_keyset_free(ortseal_keyset *ks);
/* 1 if the keyset trusts signer_id (16 hex) for purpose, else 0. */
ORTSEAL_API int ortseal_keyset_trusts(const ortseal_keyset *ks, const char *signer_id, const char *purpose);
/* 1 if the pattern matches the purpose under the scope grammar ("*" only is special). */
ORTSEAL_API int ortseal_scope_matches(const char *pattern, const char *purpose);

/* ---- sealed blobs (docs/format.md "Sealed blob v2") -------------------------------------------- */
#define ORTSEAL_MAX_HEADER_SIZE 232
#define ORTSEAL_DEFAULT_SEGMENT_SIZE (1u << 20)

/* Open a signed (or, with an allow_unsigned keyset, unsigned) blob for purpose "blob". On success *out
 * holds *out_len plaintext bytes (free with ortseal_free(*out, *out_len)); on failure *out is NULL. */
ORTSEAL_API ortseal_code ortseal_unseal(const ortseal_keyset *ks, const uint8_t *blob, size_t blob_len,
                                        const void *context, size_t context_len, uint64_t min_release,
                                        uint8_t **out, size_t *out_len, ortseal_error *err);
/* Seal with the keyset's first content key, signed by its first signer when sign is nonzero. */
ORTSEAL_API ortseal_code ortseal_seal(const ortseal_keyset *ks, const uint8_t *plaintext, size_t plaintext_len,
                                      const void *context, size_t context_len, uint64_t release, int sign,
                                      uint8_t **out, size_t *out_len, ortseal_error *err);
/* The plaintext size a blob declares (needs its first ORTSEAL_MAX_HEADER_SIZE bytes, or all of a shorter one). */
ORTSEAL_API ortseal_code ortseal_plaintext_size(const uint8_t *blob, size_t len, uint64_t *size, ortseal_error *err);

/* ---- sealed models (docs/format.md "Sealed model v3") ------------------------------------------ */
typedef struct ortseal_model ortseal_model;

/* Read (once) and verify a sealed model and its data files, then open every sealed tensor (into memory, or by
 * ORTSEAL_ROUTE_AUTO's rule into a private RAM folder: ortseal_route below). min_release: refuse older
 * releases (ROLLBACK). The result holds a plain ONNX model in memory. */
ORTSEAL_API ortseal_code ortseal_model_open(const char *path, const ortseal_keyset *ks, uint64_t min_release,
                                            ortseal_model **out, ortseal_error *err);
/* The same for a model held in memory (data files, if any, are looked up in folder; NULL: none allowed). */
ORTSEAL_API ortseal_code ortseal_model_open_bytes(const uint8_t *bytes, size_t len, const char *folder,
                                                  const ortseal_keyset *ks, uint64_t min_release,
                                                  ortseal_model **out, ortseal_error *err);
/* Everything in one call: a path, or bytes (with the folder of their data files, or NULL); model_name:
 * refuse a model whose manifest names another (NULL: any). */
ORTSEAL_API ortseal_code ortseal_model_open_ex(const char *path, const uint8_t *bytes, size_t len, const char *folder,
                                               const ortseal_keyset *ks, uint64_t min_release, const char *model_name,
                                               ortseal_model **out, ortseal_error *err);
/* Where the opened weights wait for ORT (docs/sealed-models.md "The route and its trade-offs"). */
typedef enum ortseal_route {
    /* As the Python kit: a model with 16 MiB or more of tensors above 64 KiB opens them, several at once, into
     * 0600 files (one per tensor) in a fresh private folder on tmpfs/ramfs, which ORT reads without copying
     * them a second time (peak memory ~1x instead of ~2x); the folder is removed as soon as the session is
     * created (or the model freed, or the open refused). Its base folder, checked on the open descriptor
     * (this user's, mode 0700, on tmpfs or ramfs, no folder above it another user could replace):
     * $ORTSEAL_RUNTIME_DIR (refused with UNSAFE_OPTION if it fails a check; "none": memory always),
     * else $XDG_RUNTIME_DIR, else /dev/shm/ortseal-<uid> (made 0700). Smaller models, no usable base, or no
     * room there: memory. On Windows (no tmpfs; a temp file can reach the disk): memory always. */
    ORTSEAL_ROUTE_AUTO = 0,
    /* Never a file: the weights are decrypted into memory and ORT copies them (higher peak memory). */
    ORTSEAL_ROUTE_MEMORY = 1,
    /* The RAM folder whatever the model's size (for its tensors over 64 KiB whose blobs are in data files:
     * a model with none opens in memory); IO if no base folder can hold them (Windows, or
     * ORTSEAL_RUNTIME_DIR=none), UNSAFE_OPTION if $ORTSEAL_RUNTIME_DIR fails a check. */
    ORTSEAL_ROUTE_RAM_FOLDER = 2
} ortseal_route;

/* ortseal_model_open_ex with the route chosen (the other calls take ORTSEAL_ROUTE_AUTO). */
ORTSEAL_API ortseal_code ortseal_model_open_route(const char *path, const uint8_t *bytes, size_t len, const char *folder,
                                                  const ortseal_keyset *ks, uint64_t min_release, const char *model_name,
                                                  ortseal_route route, ortseal_model **out, ortseal_error *err);
/* The private RAM folder holding the large tensors as t<N>.bin files (the opened model's external data:
 * give it to ORT as the session config entry session.model_external_initializers_file_folder_path, as
 * ortseal_session_create does), or NULL when the weights are in memory. Valid until the weights are dropped. */
ORTSEAL_API const char *ortseal_model_folder(const ortseal_model *m);
/* The opened model as ONNX bytes, valid until ortseal_model_free. Tensors above 64 KiB are external data in
 * one in-memory file, *file_name, of ortseal_model_weights' bytes (give both to ORT's
 * AddExternalInitializersFromFilesInMemory; ortseal_session_create in ortseal_ort.h does). */
ORTSEAL_API const uint8_t *ortseal_model_bytes(const ortseal_model *m, size_t *len);
ORTSEAL_API const uint8_t *ortseal_model_weights(const ortseal_model *m, const char **file_name, size_t *len);
/* Tensors over 2 GiB (ORT refuses them from in-memory files): the i-th one's name, ONNX type, shape and
 * bytes, for AddExternalInitializers; its TensorProto in the model is a placeholder. */
ORTSEAL_API size_t ortseal_model_value_count(const ortseal_model *m);
ORTSEAL_API const uint8_t *ortseal_model_value(const ortseal_model *m, size_t i, const char **name, int32_t *onnx_type,
                                               const int64_t **shape, size_t *rank, size_t *len);
ORTSEAL_API const char *ortseal_model_name(const ortseal_model *m);
ORTSEAL_API uint64_t ortseal_model_release(const ortseal_model *m);
ORTSEAL_API size_t ortseal_model_sealed_tensors(const ortseal_model *m);
/* Zeroize and free the opened model's bytes and weights, and remove its RAM folder (name, release stay):
 * once ORT has its copy. */
ORTSEAL_API void ortseal_model_drop_weights(ortseal_model *m);
ORTSEAL_API void ortseal_model_free(ortseal_model *m);

/* ---- the TensorRT engine cache (docs/tensorrt.md) --------------------------------------------- */
/* Log callback, with the messages and levels of ortseal/tensorrt/vault.py's logger: ORTSEAL_LOG_INFO (an
 * engine sealed), ORTSEAL_LOG_ERROR (an engine refused, or not sealed), ORTSEAL_LOG_WARNING (a temp file a
 * killed writer left was removed). NULL: silent. */
#define ORTSEAL_LOG_INFO 0
#define ORTSEAL_LOG_ERROR 1
#define ORTSEAL_LOG_WARNING 2
typedef void (*ortseal_log_fn)(void *user, int level, const char *message);

/* Seal the TensorRT EP's engine cache in cache_dir with ks: loads the keyless shim at shim_path (the library
 * given to ORT as trt_engine_decryption_lib_path) and registers native callbacks with it. Engines written
 * get `release`; engines older than `min_release` are refused. ks must outlive the registration.
 * Engines are written as ortseal/_atomic.py writes them (temp ".<name>.<random>.new", locked, renamed to
 * ".tmp", then over the engine), and registering first removes the temp files killed writers left, by the
 * rules of its stale cleanup (this user's, unlocked, links not followed, ".new" only after 60 s), so C and
 * Python processes can share one cache folder without removing each other's writes in flight. IO when
 * cache_dir is not an existing folder. */
ORTSEAL_API ortseal_code ortseal_engine_cache_register(const char *shim_path, const char *cache_dir,
                                                       const ortseal_keyset *ks, uint64_t release,
                                                       uint64_t min_release, ortseal_log_fn log, void *log_user,
                                                       ortseal_error *err);
/* Remove every vault and the shim's callbacks (waits for calls in flight). */
ORTSEAL_API void ortseal_engine_cache_unregister_all(void);
/* Fully verify one sealed engine file (as `ortseal cache verify`). */
ORTSEAL_API ortseal_code ortseal_engine_verify(const char *path, const ortseal_keyset *ks, uint64_t min_release,
                                               ortseal_error *err);

#ifdef __cplusplus
}
#endif
#endif
