// loadStateDict(path, { dtype?, threads? }) -> Promise<Record<name, {dtype, shape, data}>>: for inspection,
// conversion tools and tests. Models load their checkpoints natively and never round-trip tensors through JS.
// saveSafetensors(path, [[name, {dtype, shape, data}], ...]) -> Promise<void>: io::write_safetensors, the one
// safetensors writer (lib/random-run.ts writes its generated weights through it).
#include <optional>
#include <utility>
#include <vector>

#include "addon/addon.h"
#include "addon/marshal.h"
#include "addon/workers.h"
#include "error.h"
#include "io/state_dict.h"
#include "io/write.h"

namespace m2vla::addon {
namespace {

class LoadStateDictWorker : public TorchWorker {
 public:
  LoadStateDictWorker(Napi::Env env, std::string path, std::optional<at::ScalarType> dtype, int threads)
      : TorchWorker(env, threads), path_(std::move(path)), dtype_(dtype) {}

 protected:
  void Run() override {
    sd_ = io::load_state_dict(path_, dtype_);
    for (auto& [name, t] : sd_.tensors) t = t.contiguous();  // touch every page on this thread, not in Result()
  }
  Napi::Value Result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    for (const auto& [name, t] : sd_.tensors) out.Set(name, tensor_to_js(env, t));
    return out;
  }

 private:
  std::string path_;
  std::optional<at::ScalarType> dtype_;
  io::StateDict sd_;
};

Napi::Value LoadStateDict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw make_error(env, "E_INPUT", "loadStateDict: path must be a string");
  auto opts = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  std::optional<at::ScalarType> dtype;
  if (opts.Has("dtype") && opts.Get("dtype").IsString()) {
    std::string d = opts.Get("dtype").As<Napi::String>();
    if (d == "float32") dtype = at::kFloat;
    else if (d == "bfloat16") dtype = at::kBFloat16;
    else if (d == "float16") dtype = at::kHalf;
    else if (d == "float64") dtype = at::kDouble;
    else throw make_error(env, "E_INPUT", "loadStateDict: dtype must be float32, bfloat16, float16 or float64, got '" + d + "'");
  }
  return (new LoadStateDictWorker(env, info[0].As<Napi::String>(), dtype, threads_option(opts)))->Start();
}

// The tensors view the JS arrays' bytes (no copy of gigabytes of weights): the worker holds a reference to each array
// until it is deleted, on the JS thread, after the Promise settles.
class SaveSafetensorsWorker : public TorchWorker {
 public:
  SaveSafetensorsWorker(Napi::Env env, std::string path, io::NamedTensors tensors, std::vector<Napi::ObjectReference> arrays)
      : TorchWorker(env, 0), path_(std::move(path)), tensors_(std::move(tensors)), arrays_(std::move(arrays)) {}

 protected:
  void Run() override { io::write_safetensors(path_, tensors_); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::string path_;
  io::NamedTensors tensors_;
  std::vector<Napi::ObjectReference> arrays_;
};

Napi::Value SaveSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    if (!info[0].IsString()) fail(ErrorCode::Input, "saveSafetensors: path must be a string");
    if (!info[1].IsArray()) fail(ErrorCode::Input, "saveSafetensors: tensors must be an array of [name, tensor]");
    auto list = info[1].As<Napi::Array>();
    io::NamedTensors tensors;
    std::vector<Napi::ObjectReference> arrays;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      Napi::Value entry = list.Get(i);
      if (!entry.IsArray() || entry.As<Napi::Array>().Length() != 2 || !entry.As<Napi::Array>().Get(0u).IsString())
        fail(ErrorCode::Input, "saveSafetensors: tensors[", i, "]: expected [name, tensor]");
      const std::string name = entry.As<Napi::Array>().Get(0u).As<Napi::String>();
      Napi::Value tensor = entry.As<Napi::Array>().Get(1u);
      tensors.emplace_back(name, tensor_view_from_js(tensor, "saveSafetensors: " + name));
      arrays.push_back(Napi::Persistent(tensor.As<Napi::Object>().Get("data").As<Napi::Object>()));
    }
    return (new SaveSafetensorsWorker(env, info[0].As<Napi::String>(), std::move(tensors), std::move(arrays)))->Start();
  });
}

}  // namespace

void init_checkpoint(Napi::Env env, Napi::Object exports) {
  exports.Set("loadStateDict", Napi::Function::New(env, LoadStateDict));
  exports.Set("saveSafetensors", Napi::Function::New(env, SaveSafetensors));
}

}  // namespace m2vla::addon
