// A C++ host over libortseal and ONNX Runtime's C API, driven by tests/test_native_models.py.
//   ortseal_ort_host plain MODEL INPUTS OUTPUTS [CONFIG_KEY CONFIG_VALUE]...
//   ortseal_ort_host sealed KEYSET PASSPHRASE|- MIN_RELEASE MODEL INPUTS OUTPUTS [CONFIG_KEY CONFIG_VALUE]...
//       (CONFIG_KEY optimized_model_filepath: SetOptimizedModelFilePath(VALUE), as a host's
//        Ort::SessionOptions::SetOptimizedModelFilePath; any other: AddSessionConfigEntry)
//   ortseal_ort_host provider-options PROVIDER SHIM|- [KEY VALUE]...   (ortseal::check_provider_options)
//   ortseal_ort_host plugin-ep KEYSET MODEL INPUTS OUTPUTS LIBRARY EP_NAME [KEY VALUE]...
//       (the plugin EP in LIBRARY registered, its CPU device appended with SessionOptionsAppendExecutionProvider_V2
//        and the EP options KEY VALUE, then the sealed MODEL opened on it)
//   ortseal_ort_host sealed-bytes KEYSET MODEL FOLDER|- INPUTS OUTPUTS  (the model read into memory first,
//       opened with ortseal_model_open_bytes; FOLDER: where its data files are, - for none)
//   ortseal_ort_host time-plain MODEL | time-sealed KEYSET MODEL   (benchmarks/bench_native.py: open time, peak RSS)
//   ortseal_ort_host options                      (prints the refused-options table)
//   ortseal_ort_host reuse KEYSET SEALED SECOND INPUTS OUTPUTS  (one OrtSessionOptions for both sessions)
//   ortseal_ort_host twice KEYSET SEALED          (two sessions from one opened model)
//   ortseal_ort_host hold KEYSET SEALED [INPUTS OUTPUTS]  (opens, prints "folder <path>", waits for a line on
//       stdin, then creates the session and prints "folder-after ..."; with INPUTS, waits for another line and
//       runs the session, printing "ran"; then "ok": a live opening for the stale-cleanup and attack tests)
// $ORTSEAL_HOST_ROUTE (auto, memory, ram) picks the route sealed models are opened with (auto if unset).
// INPUTS/OUTPUTS: u32 count, then per tensor u32 name length, name, i32 ONNX type, u32 rank, i64 dims,
// u64 byte count, bytes. Prints "ok" or "error <code name>: <message>" and exits with the status code.
#include <onnxruntime_c_api.h>
#include "ortseal_ort.h"
#include "ortseal.hpp"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

const OrtApi* api;

ortseal_route host_route() {
    const char* route = std::getenv("ORTSEAL_HOST_ROUTE");
    if (route && std::strcmp(route, "memory") == 0) return ORTSEAL_ROUTE_MEMORY;
    if (route && std::strcmp(route, "ram") == 0) return ORTSEAL_ROUTE_RAM_FOLDER;
    return ORTSEAL_ROUTE_AUTO;
}

struct Tensor {
    std::string name;
    int32_t type;
    std::vector<int64_t> dims;
    std::vector<char> bytes;
};

template <typename T>
T get(std::ifstream& in) {
    T v{};
    in.read(reinterpret_cast<char*>(&v), sizeof v);
    return v;
}

std::vector<Tensor> read_tensors(const char* path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<Tensor> out(get<uint32_t>(in));
    for (auto& t : out) {
        t.name.resize(get<uint32_t>(in));
        in.read(&t.name[0], t.name.size());
        t.type = get<int32_t>(in);
        t.dims.resize(get<uint32_t>(in));
        for (auto& d : t.dims) d = get<int64_t>(in);
        t.bytes.resize(get<uint64_t>(in));
        in.read(t.bytes.data(), t.bytes.size());
    }
    return out;
}

void check_ort(OrtStatus* st) {
    if (st) {
        std::string message = api->GetErrorMessage(st);
        api->ReleaseStatus(st);
        throw ortseal::Error(ORTSEAL_E_RUNTIME, message.c_str());
    }
}

size_t element_size(int32_t type) {
    switch (type) {
    case 1: case 6: case 12: return 4;
    case 2: case 3: case 9: return 1;
    case 4: case 5: case 10: case 16: return 2;
    case 7: case 11: case 13: case 14: return 8;
    case 15: return 16;
    default: return 0;
    }
}

void run(OrtSession* session, const char* inputs_path, const char* outputs_path) {
    std::vector<Tensor> inputs = read_tensors(inputs_path);
    OrtMemoryInfo* mem = nullptr;
    check_ort(api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mem));
    std::vector<OrtValue*> values;
    std::vector<const char*> in_names;
    for (auto& t : inputs) {
        OrtValue* v = nullptr;
        check_ort(api->CreateTensorWithDataAsOrtValue(mem, t.bytes.data(), t.bytes.size(), t.dims.data(), t.dims.size(),
                                                      static_cast<ONNXTensorElementDataType>(t.type), &v));
        values.push_back(v);
        in_names.push_back(t.name.c_str());
    }
    size_t n_out = 0;
    check_ort(api->SessionGetOutputCount(session, &n_out));
    OrtAllocator* alloc = nullptr;
    check_ort(api->GetAllocatorWithDefaultOptions(&alloc));
    std::vector<std::string> out_names(n_out);
    std::vector<const char*> out_ptrs(n_out);
    for (size_t i = 0; i < n_out; i++) {
        char* name = nullptr;
        check_ort(api->SessionGetOutputName(session, i, alloc, &name));
        out_names[i] = name;
        out_ptrs[i] = out_names[i].c_str();
        check_ort(api->AllocatorFree(alloc, name));
    }
    std::vector<OrtValue*> outs(n_out, nullptr);
    check_ort(api->Run(session, nullptr, in_names.data(), values.data(), values.size(), out_ptrs.data(), n_out, outs.data()));
    std::ofstream out(outputs_path, std::ios::binary);
    uint32_t count = static_cast<uint32_t>(n_out);
    out.write(reinterpret_cast<char*>(&count), 4);
    for (size_t i = 0; i < n_out; i++) {
        OrtTensorTypeAndShapeInfo* info = nullptr;
        check_ort(api->GetTensorTypeAndShape(outs[i], &info));
        ONNXTensorElementDataType type;
        size_t rank = 0, n = 0;
        check_ort(api->GetTensorElementType(info, &type));
        check_ort(api->GetDimensionsCount(info, &rank));
        std::vector<int64_t> dims(rank);
        check_ort(api->GetDimensions(info, dims.data(), rank));
        check_ort(api->GetTensorShapeElementCount(info, &n));
        api->ReleaseTensorTypeAndShapeInfo(info);
        size_t size = element_size(type);
        if (!size) throw ortseal::Error(ORTSEAL_E_MISUSE, "output type not supported by the test host");
        void* data = nullptr;
        check_ort(api->GetTensorMutableData(outs[i], &data));
        uint32_t name_len = static_cast<uint32_t>(out_names[i].size()), r = static_cast<uint32_t>(rank);
        int32_t t = type;
        uint64_t nbytes = n * size;
        out.write(reinterpret_cast<char*>(&name_len), 4);
        out.write(out_names[i].data(), name_len);
        out.write(reinterpret_cast<char*>(&t), 4);
        out.write(reinterpret_cast<char*>(&r), 4);
        out.write(reinterpret_cast<char*>(dims.data()), rank * 8);
        out.write(reinterpret_cast<char*>(&nbytes), 8);
        out.write(static_cast<char*>(data), nbytes);
        api->ReleaseValue(outs[i]);
    }
    for (auto* v : values) api->ReleaseValue(v);
    api->ReleaseMemoryInfo(mem);
}

// The options a test names, on so: the ones ORT cannot read back through their own setter.
void set_options(OrtSessionOptions* so, int argc, char** argv, int from) {
    for (int i = from; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "optimized_model_filepath") == 0)
            check_ort(api->SetOptimizedModelFilePath(so, argv[i + 1]));
        else
            check_ort(api->AddSessionConfigEntry(so, argv[i], argv[i + 1]));
    }
}

}  // namespace

int main(int argc, char** argv) {
    api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
    if (!api || argc < 2) return 100;
    std::string cmd = argv[1];
    if (cmd == "options") {
        for (size_t i = 0; i < ortseal_refused_option_count(); i++) {
            const char *provider = nullptr, *kind = nullptr;
            const char* name = ortseal_refused_option(i, &provider, &kind);
            std::printf("%s %s %s\n", provider ? provider : "-", name, kind);
        }
        return 0;
    }
    if (cmd == "provider-options" && argc >= 4) {
        std::vector<const char*> keys, values;
        for (int i = 4; i + 1 < argc; i += 2) {
            keys.push_back(argv[i]);
            values.push_back(argv[i + 1]);
        }
        std::string shim = argv[3];
        try {
            ortseal::check_provider_options(argv[2], keys, values, shim == "-" ? nullptr : shim.c_str());
        } catch (const ortseal::Error& e) {
            std::printf("error %s: %s\n", e.code_name(), e.what());
            return e.code();
        }
        std::printf("ok\n");
        return 0;
    }
    OrtEnv* env = nullptr;
    OrtSessionOptions* so = nullptr;
    OrtSession* session = nullptr;
    try {
        check_ort(api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "ortseal-test", &env));
        check_ort(api->CreateSessionOptions(&so));
        if ((cmd == "time-plain" && argc == 3) || (cmd == "time-sealed" && argc == 4)) {
            auto start = std::chrono::steady_clock::now();
            if (cmd == "time-plain") {
                check_ort(api->CreateSession(env, argv[2], so, &session));
            } else {
                ortseal::KeySet keys = ortseal::KeySet::load(argv[2]);
                ortseal::Model model = ortseal::Model::open(argv[3], keys, 0, nullptr, host_route());
                std::printf("verify_decrypt_s %.4f ", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
                session = model.create_session(api, env, so);
            }
            double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            struct rusage usage;
            getrusage(RUSAGE_SELF, &usage);
            long pages = 0, resident = 0;
            if (FILE* statm = std::fopen("/proc/self/statm", "r")) {
                if (std::fscanf(statm, "%ld %ld", &pages, &resident) != 2) resident = 0;
                std::fclose(statm);
            }
            std::printf("open_s %.4f maxrss_kb %ld rss_after_kb %ld\n", seconds, usage.ru_maxrss, resident * 4);
        } else if (cmd == "plain" && argc >= 5) {
            set_options(so, argc, argv, 5);
            check_ort(api->CreateSession(env, argv[2], so, &session));
            run(session, argv[3], argv[4]);
        } else if (cmd == "sealed" && argc >= 8) {
            std::string phrase = argv[3];
            ortseal::KeySet keys = ortseal::KeySet::load(argv[2], phrase == "-" ? nullptr : &phrase);
            set_options(so, argc, argv, 8);
            ortseal::Model model = ortseal::Model::open(argv[5], keys, std::strtoull(argv[4], nullptr, 10), nullptr, host_route());
            session = model.create_session(api, env, so);
            run(session, argv[6], argv[7]);
            api->ReleaseSession(session);
            session = nullptr;
        } else if (cmd == "plugin-ep" && argc >= 8) {
            check_ort(api->RegisterExecutionProviderLibrary(env, "ortseal-test-ep", argv[6]));
            const OrtEpDevice* const* devices = nullptr;
            size_t n_devices = 0;
            check_ort(api->GetEpDevices(env, &devices, &n_devices));
            const OrtEpDevice* cpu = nullptr;
            for (size_t i = 0; i < n_devices && !cpu; i++)
                if (std::strcmp(api->EpDevice_EpName(devices[i]), argv[7]) == 0 &&
                    api->HardwareDevice_Type(api->EpDevice_Device(devices[i])) == OrtHardwareDeviceType_CPU)
                    cpu = devices[i];
            if (!cpu) throw ortseal::Error(ORTSEAL_E_RUNTIME, "the plugin EP offers no CPU device here");
            std::vector<const char*> keys, values;
            for (int i = 8; i + 1 < argc; i += 2) {
                keys.push_back(argv[i]);
                values.push_back(argv[i + 1]);
            }
            check_ort(api->SessionOptionsAppendExecutionProvider_V2(so, env, &cpu, 1, keys.data(), values.data(), keys.size()));
            ortseal::KeySet keys_file = ortseal::KeySet::load(argv[2]);
            ortseal::Model model = ortseal::Model::open(argv[3], keys_file);
            session = model.create_session(api, env, so);
            run(session, argv[4], argv[5]);
        } else if (cmd == "sealed-bytes" && argc == 7) {
            ortseal::KeySet keys = ortseal::KeySet::load(argv[2]);
            std::ifstream in(argv[3], std::ios::binary);
            std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            std::string folder = argv[4];
            ortseal::Model model = ortseal::Model::open_bytes(bytes.data(), bytes.size(),
                                                              folder == "-" ? nullptr : folder.c_str(), keys);
            session = model.create_session(api, env, so);
            run(session, argv[5], argv[6]);
        } else if (cmd == "hold" && (argc == 4 || argc == 6)) {
            ortseal::KeySet keys = ortseal::KeySet::load(argv[2]);
            ortseal::Model model = ortseal::Model::open(argv[3], keys, 0, nullptr, host_route());
            std::printf("folder %s\n", model.folder() ? model.folder() : "-");
            std::fflush(stdout);
            char line[16];
            if (!std::fgets(line, sizeof line, stdin)) return 101;
            session = model.create_session(api, env, so);
            std::printf("folder-after %s\n", model.folder() ? model.folder() : "-");
            if (argc == 6) { /* a second line, then a run: the session used after its folder is gone */
                std::fflush(stdout);
                if (!std::fgets(line, sizeof line, stdin)) return 101;
                run(session, argv[4], argv[5]);
                std::printf("ran\n");
            }
        } else if (cmd == "twice" && argc == 4) {
            // Two sessions from one opened model: the second must be a refusal, not a crash.
            ortseal::KeySet keys = ortseal::KeySet::load(argv[2]);
            ortseal::Model model = ortseal::Model::open(argv[3], keys);
            OrtSession* first = model.create_session(api, env, so);
            api->ReleaseSession(first);
            session = model.create_session(api, env, so);
        } else if (cmd == "reuse" && argc == 7) {
            // One OrtSessionOptions for two sessions, as a host with one Ort::SessionOptions does: a sealed
            // model first (kept open), then SECOND (sealed if it ends in .sealed.onnx, else plain) run.
            ortseal::KeySet keys = ortseal::KeySet::load(argv[2]);
            OrtSession* first = nullptr;
            {
                ortseal::Model model = ortseal::Model::open(argv[3], keys);
                first = model.create_session(api, env, so);
            }
            std::string second = argv[4];
            try {
                if (second.size() > 12 && second.compare(second.size() - 12, 12, ".sealed.onnx") == 0) {
                    ortseal::Model model = ortseal::Model::open(second, keys);
                    session = model.create_session(api, env, so);
                } else {
                    check_ort(api->CreateSession(env, second.c_str(), so, &session));
                }
                run(session, argv[5], argv[6]);
            } catch (...) {
                api->ReleaseSession(first);
                throw;
            }
            api->ReleaseSession(first);
        } else {
            return 100;
        }
    } catch (const ortseal::Error& e) {
        std::printf("error %s: %s\n", e.code_name(), e.what());
        if (session) api->ReleaseSession(session);
        if (so) api->ReleaseSessionOptions(so);
        if (env) api->ReleaseEnv(env);
        return e.code();
    }
    if (session) api->ReleaseSession(session);
    api->ReleaseSessionOptions(so);
    api->ReleaseEnv(env);
    std::printf("ok\n");
    return 0;
}
