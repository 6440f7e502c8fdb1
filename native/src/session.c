/* Session creation through ORT's C API, and the refused-options table of ortseal/_policy.py (kept
 * equal to it by tests/test_native_session.py). */
#include "internal.h"
#include "json.h"
#include "ortseal_ort.h"

#include <stdio.h>

#include <stdlib.h>
#include <string.h>

/* on_by_default: the EP writes unless told not to (ortseal/_policy.py Writer.on_by_default): refused unless given,
 * and off, where the provider's options are seen (ortseal_check_provider_options). */
typedef struct writer { const char *provider; const char *name; const char *kind; bool on_by_default; } writer;

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
    {"CANNExecutionProvider", "dump_graphs", "flag"},
    {"CANNExecutionProvider", "dump_om_model", "flag", true},
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

/* A JSON key that Python's str.upper() makes "CACHE_DIR" (ortseal/_policy.py _names_cache_dir): ASCII letters
 * in any case, and U+0131 (dotless i), which upper() turns into 'I'. */
static bool is_cache_dir_key(const char *k, size_t n) {
    static const char WANT[] = "CACHE_DIR";
    size_t w = 0;
    for (size_t i = 0; i < n; i++, w++) {
        char c = k[i];
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        else if ((unsigned char)c == 0xC4 && i + 1 < n && (unsigned char)k[i + 1] == 0xB1) { c = 'I'; i++; }
        if (w == sizeof WANT - 1 || c != WANT[w]) return false;
    }
    return w == sizeof WANT - 1;
}

static bool json_names_cache_dir(const json *j) {
    for (size_t i = 0; i < j->count; i++) {
        if (j->type == J_OBJECT && is_cache_dir_key(j->keys[i], j->key_lens[i])) return true;
        if (json_names_cache_dir(j->items[i])) return true; /* depth bounded by JSON_MAX_DEPTH */
    }
    return false;
}

/* OpenVINO's load_config: true unless it is a JSON object none of whose keys, at any depth, is CACHE_DIR
 * (OpenVINO writes the compiled blobs, weights included, to that folder). What cannot be read as such (a file
 * path, not JSON, nested deeper than JSON_MAX_DEPTH) is refused, as ortseal/_policy.py refuses it. */
static bool names_cache_dir(const char *load_config) {
    json *doc = json_parse(load_config, strlen(load_config));
    bool named = !doc || doc->type != J_OBJECT || json_names_cache_dir(doc);
    json_free(doc);
    return named;
}

#define LOAD_CONFIG_REFUSED "OpenVINO's load_config naming CACHE_DIR (or a load_config that is not a JSON object, " \
    "such as a file path) is refused for a sealed model: OpenVINO writes the compiled model blobs, weights " \
    "included, there unencrypted"

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
    static const char *const LOAD_CONFIG_KEYS[] = {"ep.openvinoexecutionprovider.load_config", "ep.openvino.load_config"};
    for (size_t k = 0; k < 2; k++) {
        char *value = config_entry(api, so, LOAD_CONFIG_KEYS[k]);
        bool named = value && names_cache_dir(value);
        free(value);
        if (named) return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "the session option %s: " LOAD_CONFIG_REFUSED, LOAD_CONFIG_KEYS[k]);
    }
    clear_error(err);
    return ORTSEAL_OK;
}

/* A provider's name as the table has it (TensorrtExecutionProvider) or as ORT's append calls take it
 * (TensorRT, OpenVINO, NvTensorRtRtx, ...): compared in lower case, with or without "ExecutionProvider". */
static bool same_provider(const char *table_name, const char *given) {
    char a[100], b[100];
    snprintf(a, sizeof a, "%s", table_name);
    snprintf(b, sizeof b, "%s", given);
    lower(a);
    lower(b);
    char *suffix = strstr(a, "executionprovider");
    if (strcmp(a, b) == 0) return true;
    if (suffix) *suffix = '\0';
    return strcmp(a, b) == 0;
}

static const char *option_value(const char *const *keys, const char *const *values, size_t n, const char *key) {
    const char *found = NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i], key) == 0) found = values[i]; /* the last one wins, as in ORT */
    return found;
}

/* The execution providers ONNX Runtime ships (ORT 1.23-1.32), those of the table included. A name the check does
 * not know is refused rather than passed: the typed append takes no name, so a misspelt one (" TensorRT",
 * "TensorRT_V2") would otherwise skip every check and let the options through unseen. */
static const char *const KNOWN_PROVIDERS[] = {
    "CPUExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider",
    "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider", "OpenVINOExecutionProvider", "DnnlExecutionProvider",
    "DmlExecutionProvider", "QNNExecutionProvider", "SNPEExecutionProvider", "CoreMLExecutionProvider",
    "NnapiExecutionProvider", "XnnpackExecutionProvider", "WebGpuExecutionProvider", "WebNNExecutionProvider",
    "JsExecutionProvider", "ACLExecutionProvider", "ArmNNExecutionProvider", "RknpuExecutionProvider",
    "VitisAIExecutionProvider", "AzureExecutionProvider", "CANNExecutionProvider",
};

ortseal_code ortseal_check_provider_options(const char *provider, const char *const *keys, const char *const *values,
                                            size_t n, const char *shim_path, ortseal_error *err) {
    if (!provider || (n && (!keys || !values)))
        return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_check_provider_options needs a provider name and n keys and values");
    for (size_t i = 0; i < n; i++)
        if (!keys[i] || !values[i])
            return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_check_provider_options: option %zu has a NULL key or value", i);
    bool known = false;
    for (size_t i = 0; i < sizeof KNOWN_PROVIDERS / sizeof *KNOWN_PROVIDERS && !known; i++)
        known = same_provider(KNOWN_PROVIDERS[i], provider);
    if (!known)
        return FAIL(err, ORTSEAL_E_MISUSE, "ortseal_check_provider_options does not know the execution provider \"%.100s\": "
                    "give its name as ONNX Runtime spells it (TensorrtExecutionProvider or TensorRT, OpenVINO, CUDA, ...), "
                    "so that its options are checked", provider);
    for (size_t i = 0; i < N_WRITERS; i++) {
        const writer *w = &WRITERS[i];
        if (!w->provider || !same_provider(w->provider, provider)) continue;
        const char *value = option_value(keys, values, n, w->name);
        if (value && is_on(w->kind, value))
            return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s option %s is refused for a sealed model: it makes the execution "
                        "provider write the weights, a compiled model or an engine in plaintext (docs/tensorrt.md, "
                        "\"Options refused for sealed models\")", provider, w->name);
        if (!value && w->on_by_default)
            return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s without %s (on by default) is refused for a sealed model: the "
                        "execution provider then writes a compiled model, weights included, in plaintext; pass %s=0",
                        provider, w->name, w->name);
    }
    if (same_provider("OpenVINOExecutionProvider", provider)) {
        const char *load_config = option_value(keys, values, n, "load_config");
        if (load_config && names_cache_dir(load_config))
            return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "%s option load_config: " LOAD_CONFIG_REFUSED, provider);
    }
    /* Environment variables that make the EP write plaintext (ortseal/_policy.py TENSORRT_ENV_WRITERS, read by
     * the TensorRT EP only when it is given no options; OPENVINO_ENV_WRITERS, read by OpenVINO's runtime
     * whatever the options). */
    static const char *const TENSORRT_ENV[] = {"ORT_TENSORRT_DUMP_SUBGRAPHS", "ORT_TENSORRT_ENGINE_CACHE_ENABLE",
                                               "ORT_TENSORRT_WEIGHT_STRIPPED_ENGINE_ENABLE", "ORT_DUMP_EP_CONTEXT_MODEL"};
    static const char *const OPENVINO_ENV[] = {"OV_ENABLE_SERIALIZE_TRACING", "OV_ENABLE_VISUALIZE_TRACING"};
    bool tensorrt = same_provider("TensorrtExecutionProvider", provider);
    bool openvino = same_provider("OpenVINOExecutionProvider", provider);
    const char *const *env = tensorrt && n == 0 ? TENSORRT_ENV : openvino ? OPENVINO_ENV : NULL;
    size_t n_env = env == TENSORRT_ENV ? 4 : env ? 2 : 0;
    for (size_t i = 0; i < n_env; i++) {
        const char *value = getenv(env[i]);
        if (value && is_on("flag", value))
            return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "the environment variable %s (read by %s) is refused for a sealed "
                        "model: it makes it write the weights, a subgraph or an engine in plaintext", env[i],
                        tensorrt ? "the TensorRT EP when it gets no options" : "OpenVINO's runtime");
    }
    /* the TensorRT engine cache only through ortseal's shim (ortseal/_policy.py _tensorrt_cache_rule) */
    if (tensorrt) {
        const char *decrypt = option_value(keys, values, n, "trt_engine_decryption_enable");
        const char *library = option_value(keys, values, n, "trt_engine_decryption_lib_path");
        const char *cache = option_value(keys, values, n, "trt_engine_cache_enable");
        bool decrypting = decrypt && is_on("flag", decrypt);
        if (decrypting && (!shim_path || !library || strcmp(library, shim_path) != 0))
            return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "trt_engine_decryption_enable with trt_engine_decryption_lib_path=%s is "
                        "refused for a sealed model: that library receives every engine TensorRT builds, in plaintext; "
                        "give ortseal's shim (the one ortseal_engine_cache_register loaded)", library ? library : "(none)");
        if (cache && is_on("flag", cache) && !decrypting)
            return FAIL(err, ORTSEAL_E_UNSAFE_OPTION, "trt_engine_cache_enable without ortseal's shim is refused for a sealed "
                        "model: TensorRT would write its engines, weights included, unencrypted; seal the cache with "
                        "ortseal_engine_cache_register");
    }
    clear_error(err);
    return ORTSEAL_OK;
}

/* What ORT's C API cannot show but ortseal can force off in its own copy of the options: the optimized-model
 * path (SetOptimizedModelFilePath). InferenceSession saves the optimized graph, the opened weights in it,
 * whenever that path is not empty (onnxruntime/core/session/inference_session.cc), and the setter stores
 * what it is given, so the empty path turns saving off whatever the host set. */
static OrtStatus *force_off_unreadable_writers(const OrtApi *api, OrtSessionOptions *own) {
    static const ORTCHAR_T none[1] = {0};
    return api->SetOptimizedModelFilePath(own, none);
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
    if ((st = force_off_unreadable_writers(api, own))) {
        api->ReleaseSessionOptions(own);
        return ort_failed(api, st, "ONNX Runtime refused to turn off the optimized-model file", err);
    }
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
