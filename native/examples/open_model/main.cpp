// open_model KEYS MODEL: open a sealed model (signature, release, every digest checked, weights in memory
// only) and create an ONNX Runtime session from it; prints the model's name and inputs.
#include <onnxruntime_c_api.h>
#include <ortseal_ort.h>
#include <ortseal.hpp>

#include <cstdio>

int main(int argc, char** argv) {
    if (argc != 3) { std::fprintf(stderr, "usage: open_model KEYS MODEL\n"); return 2; }
    const OrtApi* api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
    OrtEnv* env = nullptr;
    OrtSessionOptions* options = nullptr;
    api->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "open_model", &env);
    api->CreateSessionOptions(&options);
    try {
        ortseal::KeySet keys = ortseal::KeySet::load(argv[1]);
        ortseal::Model model = ortseal::Model::open(argv[2], keys, /*min_release=*/0);
        OrtSession* session = model.create_session(api, env, options);  // ORT copies the weights; ortseal wipes its own
        size_t inputs = 0;
        api->SessionGetInputCount(session, &inputs);
        std::printf("opened %s (release %llu): %zu inputs\n", model.name().c_str(),
                    static_cast<unsigned long long>(model.release()), inputs);
        api->ReleaseSession(session);
    } catch (const ortseal::Error& e) {
        std::fprintf(stderr, "refused (%s): %s\n", e.code_name(), e.what());
        return 1;
    }
    api->ReleaseSessionOptions(options);
    api->ReleaseEnv(env);
    return 0;
}
