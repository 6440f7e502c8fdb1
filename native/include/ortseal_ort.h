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
 * read back with HasSessionConfigEntry/GetSessionConfigEntry): UNSAFE_OPTION naming the option. Options ORT
 * cannot show (EPs appended with typed AppendExecutionProvider_* calls, SetOptimizedModelFilePath) are not
 * seen here: give EP options as config entries (SessionOptionsAppendExecutionProvider) to have them checked. */
ORTSEAL_API ortseal_code ortseal_check_session_options(const OrtApi *api, const OrtSessionOptions *options,
                                                       ortseal_error *err);

/* Check options, then create the session from the opened model: CreateSessionFromArray with the weights
 * handed over with AddExternalInitializersFromFilesInMemory (or, for a model opened into a RAM folder, that
 * folder as session.model_external_initializers_file_folder_path) on a copy of options (CloneSessionOptions:
 * options is left as given, so one OrtSessionOptions serves any number of sessions, and it never points
 * at the freed weights). ORT copies them into the session (documented for that call), so on success the
 * model's plaintext is zeroized and freed at once (ortseal_model_drop_weights: the RAM folder is removed,
 * on failure too): m can be freed any time, and makes one session (a second call is ORTSEAL_E_MISUSE: open
 * the model again). */
ORTSEAL_API ortseal_code ortseal_session_create(const OrtApi *api, OrtEnv *env, ortseal_model *m,
                                                OrtSessionOptions *options, OrtSession **out, ortseal_error *err);

/* Number of refused options and the i-th one (name, kind "flag"/"path", provider or NULL): for tests. */
ORTSEAL_API size_t ortseal_refused_option_count(void);
ORTSEAL_API const char *ortseal_refused_option(size_t i, const char **provider, const char **kind);

#ifdef __cplusplus
}
#endif
#endif
