/* libortseal with ONNX Runtime's C API: create an OrtSession from a sealed model with the opened weights in
 * memory or in the model's private RAM folder (ortseal_route), never on a disk. Include after onnxruntime_c_api.h (any ORT release with API version >= 18: the C API is
 * ABI-stable, so an older header works with a newer libonnxruntime). */
#ifndef ORTSEAL_ORT_H
#define ORTSEAL_ORT_H

#include "ortseal.h"

#include <onnxruntime_c_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Refuse session options that would make ORT or an EP write plaintext (the table of ortseal/_policy.py,
 * read back with HasSessionConfigEntry/GetSessionConfigEntry): UNSAFE_OPTION naming the option. That covers
 * session config entries and the options of EPs appended with SessionOptionsAppendExecutionProvider (by name:
 * OpenVINO, QNN, CoreML, VitisAI, NvTensorRtRtx, MIGraphX, ...) or SessionOptionsAppendExecutionProvider_V2
 * (plugin EPs), which ORT stores as "ep.<provider>.<option>" entries, OpenVINO's load_config among them (refused
 * when it names CACHE_DIR at any depth, in any case, or is not a JSON object). What ORT cannot show is not seen here:
 *  - SetOptimizedModelFilePath: ortseal_session_create forces it off (see there);
 *  - options of EPs appended with the typed calls (SessionOptionsAppendExecutionProvider_TensorRT(_V2),
 *    _CUDA(_V2), _OpenVINO(_V2), _MIGraphX, _ROCM, _CANN, _Dnnl, the OrtSessionOptionsAppendExecutionProvider_*
 *    exports): ORT keeps them inside the EP factory, out of reach. Check them yourself with
 *    ortseal_check_provider_options before you append (the same keys and values you give
 *    UpdateTensorRTProviderOptions, for instance), or append by name so that this check sees them.
 * Profiling (EnableProfiling) is allowed: op timings and shapes, no tensor data. */
ORTSEAL_API ortseal_code ortseal_check_session_options(const OrtApi *api, const OrtSessionOptions *options,
                                                       ortseal_error *err);

/* Check a provider's options against the same table before appending the EP to the session options with a
 * typed call ORT cannot read back (provider: "TensorrtExecutionProvider" or "TensorRT", "OpenVINO", ...;
 * keys/values: n option strings, as UpdateTensorRTProviderOptions takes them). For TensorRT also the engine
 * cache rule: trt_engine_cache_enable only with trt_engine_decryption_enable, and decryption only with
 * trt_engine_decryption_lib_path equal to shim_path (ortseal's shim, sealed with
 * ortseal_engine_cache_register; NULL: no decryption library allowed), and with no options (n = 0: an EP made
 * from a device id alone) the ORT_TENSORRT_* environment variables the EP then reads; for OpenVINO also the
 * OV_ENABLE_*_TRACING variables its runtime reads and a load_config naming CACHE_DIR. UNSAFE_OPTION naming the
 * option or variable; MISUSE for a provider name ONNX Runtime does not ship (a misspelt name would check nothing:
 * the name is compared in any case, with or without "ExecutionProvider", nothing else is forgiven). */
ORTSEAL_API ortseal_code ortseal_check_provider_options(const char *provider, const char *const *keys,
                                                        const char *const *values, size_t n, const char *shim_path,
                                                        ortseal_error *err);

/* Check options, then create the session from the opened model: CreateSessionFromArray with the weights
 * handed over with AddExternalInitializersFromFilesInMemory (or, for a model opened into a RAM folder, that
 * folder as session.model_external_initializers_file_folder_path) on a copy of options (CloneSessionOptions:
 * options is left as given, so one OrtSessionOptions serves any number of sessions, and it never points
 * at the freed weights). ORT copies them into the session (documented for that call), so on success the
 * model's plaintext is zeroized and freed at once (ortseal_model_drop_weights: the RAM folder is removed,
 * on failure too): m can be freed any time, and makes one session (a second call is ORTSEAL_E_MISUSE: open
 * the model again). In that copy the optimized-model path is set to empty, which turns ORT's saving of the
 * optimized model (the weights in plaintext) off: a path the host gave SetOptimizedModelFilePath is ignored
 * for sealed models, nothing is written there (options itself keeps it, for the host's other sessions). */
ORTSEAL_API ortseal_code ortseal_session_create(const OrtApi *api, OrtEnv *env, ortseal_model *m,
                                                OrtSessionOptions *options, OrtSession **out, ortseal_error *err);

/* Number of refused options and the i-th one (name, kind "flag"/"path", provider or NULL): for tests. */
ORTSEAL_API size_t ortseal_refused_option_count(void);
ORTSEAL_API const char *ortseal_refused_option(size_t i, const char **provider, const char **kind);

#ifdef __cplusplus
}
#endif
#endif
