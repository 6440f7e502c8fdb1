/* Session creation through ORT's C API, and the refused-options table of ortseal/_policy.py (kept
 * equal to it by tests/test_native_session.py). */
#include "internal.h"
#include "ortseal_ort.h"

#include <stdio.h>

#include <stdlib.h>
#include <string.h>

typedef struct writer { const char *provider; const char *name; const char *kind; } writer;

/* provider NULL: a session config entry; otherwise a provider option, checked in its config-entry form. */
static const writer WRITERS[] = {
    {NULL, "ep.context_enable", "flag"},
    {NULL, "ep.context_file_path", "path"},
    {NULL, "ep.context_embed_mode", "path"},
    {NULL, "ep.context_model_external_initializers_file_name", "path"},
    {NULL, "session.debug_layout_transformation", "flag"},
    {NULL, "session.save_external_prepacked_constant_initializers", "flag"},
    {NULL, "session.optimized_model_external_initializers_file_name", "path"},
    {"TensorrtExecutionProvider", "trt_dump_subgraphs", "flag"},
    {"TensorrtExecutionProvider", "trt_dump_ep_context_model", "flag"},
    {"TensorrtExecutionProvider", "trt_ep_context_file_path", "path"},
    {"TensorrtExecutionProvider", "trt_weight_stripped_engine_enable", "flag"},
    {"NvTensorRTRTXExecutionProvider", "nv_dump_subgraphs", "flag"},
    {"NvTensorRTRTXExecutionProvider", "nv_runtime_cache_path", "path"},
    {"OpenVINOExecutionProvider", "cache_dir", "path"},
    {"OpenVINOExecutionProvider", "blob_dump_path", "path"},
    {"OpenVINOExecutionProvider", "use_compiled_network", "flag"},
    {"OpenVINOExecutionProvider", "export_ep_ctx_blob", "flag"},
    {"OpenVINOExecutionProvider", "dump_subgraphs", "path"},
    {"QNNExecutionProvider", "qnn_saver_path", "path"},
    {"QNNExecutionProvider", "dump_qnn_ir_dlc", "flag"},
    {"QNNExecutionProvider", "dump_json_qnn_graph", "flag"},
    {"QNNExecutionProvider", "dump_qnn_ep_input_graph", "flag"},
    {"QNNExecutionProvider", "qnn_context_cache_enable", "flag"},
    {"QNNExecutionProvider", "qnn_context_cache_path", "path"},
    {"CoreMLExecutionProvider", "ModelCacheDirectory", "path"},
    {"MIGraphXExecutionProvider", "migraphx_model_cache_dir", "path"},
    {"MIGraphXExecutionProvider", "migraphx_save_compiled_model", "flag"},
    {"MIGraphXExecutionProvider", "migraphx_save_model_path", "path"},
    {"MIGraphXExecutionProvider", "migraphx_dump_ep_context_model", "flag"},
    {"VitisAIExecutionProvider", "cache_dir", "path"},
};
#define N_WRITERS (sizeof WRITERS / sizeof WRITERS[0])

size_t ortseal_refused_option_count(void) { return N_WRITERS; }

const char *ortseal_refused_option(size_t i, const char **provider, const char **kind) {
    if (i >= N_WRITERS) return NULL;
    *provider = WRITERS[i].provider;
    *kind = WRITERS[i].kind;
    return WRITERS[i].name;
}

/* ortseal/_policy.py FALSE_VALUES: a flag is on unless it is one of these. */
static bool is_on(const char *kind, const char *value) {
    if (strcmp(kind, "path") == 0) return value[0] != '\0';
    static const char *const FALSE_VALUES[] = {"0", "false", "False", "FALSE", ""};
    for (size_t i = 0; i < 5; i++) if (strcmp(value, FALSE_VALUES[i]) == 0) return false;
    return true;
}

static void lower(char *s) { for (; *s; s++) if (*s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a'); }

/* The value of a config entry, or NULL when it was never set (malloc'd). */
static char *config_entry(const OrtApi *api, const OrtSessionOptions *so, const char *key) {
    int has = 0;
    OrtStatus *st = api->HasSessionConfigEntry(so, key, &has);
    if (st) { api->ReleaseStatus(st); return NULL; }
    if (!has) return NULL;
    size_t size = 0;
    st = api->GetSessionConfigEntry(so, key, NULL, &size);
    if (st) { api->ReleaseStatus(st); return NULL; }
    char *value = calloc(size + 1, 1);
    if (!value) return NULL;
    st = api->GetSessionConfigEntry(so, key, value, &size);
    if (st) { api->ReleaseStatus(st); free(value); return NULL; }
    return value;
}

ortseal_code ortseal_check_session_options(const OrtApi *api, const OrtSessionOptions *so, ortseal_error *err) {
    if (!api || !so) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_check_session_options needs the ORT API and options");
    for (size_t i = 0; i < N_WRITERS; i++) {
        const writer *w = &WRITERS[i];
        char keys[2][200];
        size_t n_keys = 1;
        if (!w->provider) snprintf(keys[0], sizeof keys[0], "%s", w->name);
        else {
            /* ep.<provider>.<option>, with the provider's full or short name ("openvino") in lower case */
            char full[100], brief[100];
            snprintf(full, sizeof full, "%s", w->provider);
            lower(full);
            snprintf(brief, sizeof brief, "%s", full);
            char *suffix = strstr(brief, "executionprovider");
            if (suffix) *suffix = '\0';
            snprintf(keys[0], sizeof keys[0], "ep.%s.%s", full, w->name);
            snprintf(keys[1], sizeof keys[1], "ep.%s.%s", brief, w->name);
            n_keys = 2;
        }
        for (size_t k = 0; k < n_keys; k++) {
            char *value = config_entry(api, so, keys[k]);
            bool on = value && is_on(w->kind, value);
            free(value);
            if (on) return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "the session option %s is refused for a sealed model: it makes ONNX "
                                "Runtime or an execution provider write the weights, a compiled model or an engine in "
                                "plaintext (docs/tensorrt.md, \"Options refused for sealed models\")", keys[k]);
        }
    }
    clear_error(err);
    return ORTSEAL_OK;
}

static ortseal_code ort_failed(const OrtApi *api, OrtStatus *st, const char *what, ortseal_error *err) {
    ortseal_code code = FAIL(err, ORTSEAL_E_RUNTIME, "%s: %s", what, api->GetErrorMessage(st));
    api->ReleaseStatus(st);
    return code;
}

static ortseal_code create_from(const OrtApi *api, OrtEnv *env, ortseal_model *m, OrtSessionOptions *so,
                                OrtSession **out, ortseal_error *err);

ortseal_code ortseal_session_create(const OrtApi *api, OrtEnv *env, ortseal_model *m, OrtSessionOptions *so,
                                    OrtSession **out, ortseal_error *err) {
    if (!api || !env || !m || !so || !out) return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_session_create needs api, env, model, options and out");
    *out = NULL;
    size_t proto_len = 0;
    if (!ortseal_model_bytes(m, &proto_len))
        return FAIL(err, ORTSEAL_E_MISUSE, "this opened model already made a session, which wiped its plaintext: open the "
                    "model again for another session");
    ortseal_code code = ortseal_check_session_options(api, so, err);
    if (code && ortseal_model_folder(m)) ortseal_model_drop_weights(m); /* RAM files go on every path (below) */
    if (code) return code;
    /* The in-memory weights and OrtValues go into a copy of the host's options: ORT keeps what
     * AddExternalInitializers* is given by pointer inside the options, and the weights are freed below, so
     * added to the host's own options they would be read again, freed, by the next session it creates with
     * them (and a second sealed model would be refused: the name is taken). */
    OrtSessionOptions *own = NULL;
    OrtStatus *st = api->CloneSessionOptions(so, &own);
    if (st) return ort_failed(api, st, "ONNX Runtime could not copy the session options", err);
    code = create_from(api, env, m, own, out, err);
    api->ReleaseSessionOptions(own);
    /* RAM files are removed right after the session is built, on every path (their plaintext must not wait
     * for the host to free the model); the model then makes no other session. */
    if (code && ortseal_model_folder(m)) ortseal_model_drop_weights(m);
    if (code) return code;
    /* ORT parsed the bytes and copied the weights ("the buffer can be freed after session creation"):
     * our plaintext goes now, not when the host frees the model. */
    ortseal_model_drop_weights(m);
    clear_error(err);
    return ORTSEAL_OK;
}

static ortseal_code create_from(const OrtApi *api, OrtEnv *env, ortseal_model *m, OrtSessionOptions *so,
                                OrtSession **out, ortseal_error *err) {
    const char *file = NULL;
    size_t weights_len = 0, proto_len = 0;
    const uint8_t *weights = ortseal_model_weights(m, &file, &weights_len);
    const uint8_t *proto = ortseal_model_bytes(m, &proto_len);
    OrtStatus *st;
    if (weights_len) {
#ifdef _WIN32
        wchar_t wide[64];
        size_t i = 0;
        for (; file[i] && i < 63; i++) wide[i] = (wchar_t)file[i];
        wide[i] = 0;
        const ORTCHAR_T *names[1] = {wide};
#else
        const ORTCHAR_T *names[1] = {file};
#endif
        char *buffers[1] = {(char *)weights};
        size_t lengths[1] = {weights_len};
        if ((st = api->AddExternalInitializersFromFilesInMemory(so, names, buffers, lengths, 1)))
            return ort_failed(api, st, "ONNX Runtime refused the opened weights", err);
    }
    /* The RAM route: the large tensors are t<N>.bin files in the model's private folder, which ORT maps */
    const char *folder = ortseal_model_folder(m);
    if (folder && (st = api->AddSessionConfigEntry(so, "session.model_external_initializers_file_folder_path", folder)))
        return ort_failed(api, st, "ONNX Runtime refused the opened model's folder", err);
    size_t n_values = ortseal_model_value_count(m);
    OrtValue *values[256] = {0};
    const char *names[256];
    OrtMemoryInfo *mem = NULL;
    st = n_values ? api->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &mem) : NULL;
    for (size_t i = 0; !st && i < n_values && i < 256; i++) {
        const int64_t *shape;
        size_t rank, len;
        int32_t type;
        const uint8_t *data = ortseal_model_value(m, i, &names[i], &type, &shape, &rank, &len);
        st = api->CreateTensorWithDataAsOrtValue(mem, (void *)data, len, shape, rank, (ONNXTensorElementDataType)type, &values[i]);
    }
    if (!st && n_values) st = api->AddExternalInitializers(so, names, (const OrtValue *const *)values, n_values);
    if (!st) st = api->CreateSessionFromArray(env, proto, proto_len, so, out);
    for (size_t i = 0; i < n_values && i < 256; i++) if (values[i]) api->ReleaseValue(values[i]);
    if (mem) api->ReleaseMemoryInfo(mem);
    if (st) return ort_failed(api, st, "ONNX Runtime refused the opened model", err);
    return ORTSEAL_OK;
}
