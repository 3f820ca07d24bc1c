// loadStateDict(path, { dtype?, threads? }) -> Promise<Record<name, {dtype, shape, data}>>: for inspection,
// conversion tools and tests. Models load their checkpoints natively and never round-trip tensors through JS.
#include <optional>

#include "addon/addon.h"
#include "addon/marshal.h"
#include "addon/workers.h"
#include "io/state_dict.h"

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

}  // namespace

void init_checkpoint(Napi::Env env, Napi::Object exports) {
  exports.Set("loadStateDict", Napi::Function::New(env, LoadStateDict));
}

}  // namespace m2vla::addon
