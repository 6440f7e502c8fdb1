// libortseal for C++: RAII owners over the C API and one exception type carrying the status code.
//   ortseal::KeySet keys = ortseal::KeySet::load("keys.json");
//   ortseal::Model model = ortseal::Model::open("model.sealed.onnx", keys, /*min_release=*/4);
//   OrtSession* session = model.create_session(api, env, options);   // needs ortseal_ort.h first
#ifndef ORTSEAL_HPP
#define ORTSEAL_HPP

#include "ortseal.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ortseal {

class Error : public std::runtime_error {
  public:
    Error(ortseal_code code, const char* message) : std::runtime_error(message), code_(code) {}
    ortseal_code code() const noexcept { return code_; }
    const char* code_name() const noexcept { return ortseal_code_name(code_); }

  private:
    ortseal_code code_;
};

inline void check(ortseal_code code, const ortseal_error& err) {
    if (code != ORTSEAL_OK) throw Error(code, err.message);
}

class KeySet {
  public:
    static KeySet load(const std::string& path, const std::string* passphrase = nullptr) {
        ortseal_error err{};
        ortseal_keyset* ks = nullptr;
        check(ortseal_keyset_load(path.c_str(), passphrase ? passphrase->data() : nullptr,
                                  passphrase ? passphrase->size() : 0, &ks, &err), err);
        return KeySet(ks);
    }
    static KeySet from_provider(ortseal_content_key_fn fn, void* user, const char* seal_key_id = nullptr) {
        ortseal_error err{};
        ortseal_keyset* ks = nullptr;
        check(ortseal_keyset_from_provider(fn, user, seal_key_id, &ks, &err), err);
        return KeySet(ks);
    }
    void merge(const KeySet& other) {
        ortseal_error err{};
        check(ortseal_keyset_merge(get(), other.get(), &err), err);
    }
    ortseal_keyset* get() const noexcept { return ks_.get(); }

  private:
    explicit KeySet(ortseal_keyset* ks) : ks_(ks, ortseal_keyset_free) {}
    std::unique_ptr<ortseal_keyset, void (*)(ortseal_keyset*)> ks_;
};

class Model {
  public:
    static Model open(const std::string& path, const KeySet& keys, uint64_t min_release = 0,
                      const char* model_name = nullptr, ortseal_route route = ORTSEAL_ROUTE_AUTO) {
        ortseal_error err{};
        ortseal_model* m = nullptr;
        check(ortseal_model_open_route(path.c_str(), nullptr, 0, nullptr, keys.get(), min_release, model_name, route, &m,
                                       &err), err);
        return Model(m);
    }
    static Model open_bytes(const uint8_t* bytes, size_t len, const char* folder, const KeySet& keys,
                            uint64_t min_release = 0, ortseal_route route = ORTSEAL_ROUTE_AUTO) {
        ortseal_error err{};
        ortseal_model* m = nullptr;
        check(ortseal_model_open_route(nullptr, bytes, len, folder, keys.get(), min_release, nullptr, route, &m, &err),
              err);
        return Model(m);
    }
    std::string name() const { return ortseal_model_name(get()); }
    // The private RAM folder holding the large tensors, or nullptr (in memory).
    const char* folder() const noexcept { return ortseal_model_folder(get()); }
    uint64_t release() const noexcept { return ortseal_model_release(get()); }
    ortseal_model* get() const noexcept { return m_.get(); }
#ifdef ORTSEAL_ORT_H
    // ORT copies the weights (or reads them from the RAM folder); on success or failure of the RAM route, and on
    // success in memory, this Model's plaintext is wiped and freed and its folder removed (it can then be dropped).
    OrtSession* create_session(const OrtApi* api, OrtEnv* env, OrtSessionOptions* options) {
        ortseal_error err{};
        OrtSession* session = nullptr;
        check(ortseal_session_create(api, env, get(), options, &session, &err), err);
        return session;
    }
#endif

  private:
    explicit Model(ortseal_model* m) : m_(m, ortseal_model_free) {}
    std::unique_ptr<ortseal_model, void (*)(ortseal_model*)> m_;
};

#ifdef ORTSEAL_ORT_H
// Before appending an EP with a typed call whose options ORT cannot show (SessionOptionsAppendExecutionProvider_
// TensorRT_V2, ...): throws ortseal::Error (ORTSEAL_E_UNSAFE_OPTION) for an option that writes plaintext.
inline void check_provider_options(const char* provider, const std::vector<const char*>& keys,
                                   const std::vector<const char*>& values, const char* shim_path = nullptr) {
    if (keys.size() != values.size()) throw Error(ORTSEAL_E_MISUSE, "as many option values as keys are needed");
    ortseal_error err{};
    check(ortseal_check_provider_options(provider, keys.data(), values.data(), keys.size(), shim_path, &err), err);
}
#endif

}  // namespace ortseal

#endif
