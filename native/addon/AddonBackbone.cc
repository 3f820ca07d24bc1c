// createBackbone({modelPath, config, device, dtype, threads}) -> Promise<Backbone>; backbone.forward({pixelValues, batch,
// inputIds, promptLen, referenceCasts}) -> Promise<{hiddenStates, hiddenShape, projectedPatches, patchesShape}>;
// backbone.generate({pixelValues, inputIds, maxNewTokens, stopIds, referenceCasts}) -> Promise<number[]> (greedy VQA,
// one prompt); backbone.dispose(). Loading, forward and generate run in TorchWorkers; a call in flight keeps the
// model alive after dispose() (it holds a shared_ptr).
#include <memory>
#include <string>
#include <vector>

#include "addon/addon.h"
#include "addon/models_js.h"
#include "addon/config_js.h"
#include "addon/marshal.h"
#include "addon/workers.h"
#include "error.h"
#include "model/prismatic.h"

namespace m2vla::addon {
namespace {

// Marks JS objects made by this class (napi_type_tag): random, fixed.
constexpr napi_type_tag kBackboneTag = {0x6d32766c610001ULL, 0xb4c72f10e85b61c2ULL};

using BackbonePtr = std::shared_ptr<const model::Backbone>;

class AddonBackbone : public Napi::ObjectWrap<AddonBackbone> {
 public:
  const BackbonePtr& model() const { return model_; }
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Backbone", {InstanceMethod<&AddonBackbone::Forward>("forward"),
                                         InstanceMethod<&AddonBackbone::Generate>("generate"),
                                         InstanceMethod<&AddonBackbone::Dispose>("dispose")});
  }

  // Only createBackbone constructs instances: info[0] is an External holding the loaded model, info[1] the threads.
  explicit AddonBackbone(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonBackbone>(info) {
    info.This().As<Napi::Object>().TypeTag(&kBackboneTag);
    if (!info[0].IsExternal()) throw make_error(info.Env(), "E_INPUT", "Backbone: use createBackbone() to load one");
    model_ = *info[0].As<Napi::External<BackbonePtr>>().Data();
    threads_ = info[1].As<Napi::Number>().Int32Value();
  }

 private:
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Generate(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }

  BackbonePtr model_;
  int threads_ = 0;
};

class LoadBackboneWorker : public TorchWorker {
 public:
  LoadBackboneWorker(Napi::Env env, Napi::FunctionReference* ctor, std::string path, model::BackboneConfig cfg,
                     Placement placement, int threads)
      : TorchWorker(env, threads), ctor_(ctor), path_(std::move(path)), cfg_(std::move(cfg)), placement_(placement),
        threads_(threads) {}

 protected:
  void Run() override {
    model_ = model::load_backbone(path_, cfg_, placement_.dtype, placement_.device,
                                  model::inference_kernel(placement_.device, placement_.dtype, placement_.int8));
  }
  Napi::Value Result(Napi::Env env) override {
    return ctor_->New({Napi::External<BackbonePtr>::New(env, &model_), Napi::Number::New(env, threads_)});
  }

 private:
  Napi::FunctionReference* ctor_;
  std::string path_;
  model::BackboneConfig cfg_;
  Placement placement_;
  int threads_;
  BackbonePtr model_;
};

class ForwardWorker : public TorchWorker {
 public:
  ForwardWorker(Napi::Env env, int threads, BackbonePtr model, at::Tensor pixels, at::Tensor ids, bool reference_casts)
      : TorchWorker(env, threads), model_(std::move(model)), pixels_(std::move(pixels)), ids_(std::move(ids)),
        reference_casts_(reference_casts) {}

 protected:
  void Run() override {
    const c10::Device device = model_->device();
    if (!device.is_cpu()) model_->check_token_ids(ids_);  // on the host: forward() does not read GPU ids back
    model::BackboneOutput out = model_->forward(pixels_.to(device), ids_.to(device), reference_casts_);
    // Converted here, on the worker thread, so Result() only copies bytes.
    hidden_ = out.hidden_states.to(at::kCPU, at::kFloat).contiguous();
    patches_ = out.projected_patches.to(at::kCPU, at::kFloat).contiguous();
  }
  Napi::Value Result(Napi::Env env) override {
    auto shape = [&](const at::Tensor& t) {
      auto a = Napi::Array::New(env, t.dim());
      for (int64_t i = 0; i < t.dim(); ++i) a.Set(uint32_t(i), Napi::Number::New(env, double(t.size(i))));
      return a;
    };
    auto out = Napi::Object::New(env);
    out.Set("hiddenStates", tensor_to_float32_array(env, hidden_));
    out.Set("hiddenShape", shape(hidden_));
    out.Set("projectedPatches", tensor_to_float32_array(env, patches_));
    out.Set("patchesShape", shape(patches_));
    return out;
  }

 private:
  BackbonePtr model_;
  at::Tensor pixels_, ids_;
  bool reference_casts_;
  at::Tensor hidden_, patches_;
};

class GenerateWorker : public TorchWorker {
 public:
  GenerateWorker(Napi::Env env, int threads, BackbonePtr model, at::Tensor pixels, at::Tensor ids, int64_t max_new_tokens,
                 std::vector<int64_t> stop_ids, bool reference_casts)
      : TorchWorker(env, threads), model_(std::move(model)), pixels_(std::move(pixels)), ids_(std::move(ids)),
        max_new_tokens_(max_new_tokens), stop_ids_(std::move(stop_ids)), reference_casts_(reference_casts) {}

 protected:
  void Run() override {
    const c10::Device device = model_->device();
    if (!device.is_cpu()) model_->check_token_ids(ids_);
    tokens_ = model_->generate(pixels_.to(device), ids_.to(device), max_new_tokens_, stop_ids_, reference_casts_);
  }
  Napi::Value Result(Napi::Env env) override {
    auto out = Napi::Array::New(env, tokens_.size());
    for (size_t i = 0; i < tokens_.size(); ++i) out.Set(uint32_t(i), Napi::Number::New(env, double(tokens_[i])));
    return out;
  }

 private:
  BackbonePtr model_;
  at::Tensor pixels_, ids_;
  int64_t max_new_tokens_;
  std::vector<int64_t> stop_ids_;
  bool reference_casts_;
  std::vector<int64_t> tokens_;
};

int64_t integer_option(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail(ErrorCode::Input, key, ": expected a number");
  return v.As<Napi::Number>().Int64Value();
}

Napi::Value AddonBackbone::Generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_method(env, !model_, "Backbone: generate", [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail(ErrorCode::Input, "generate: expected an options object");
    auto o = info[0].As<Napi::Object>();
    const model::BackboneConfig& cfg = model_->config();
    const int64_t prompt_len = integer_option(o, "promptLen"), max_new = integer_option(o, "maxNewTokens");
    if (prompt_len < 1) fail(ErrorCode::Input, "promptLen: expected at least 1, got ", prompt_len);
    if (max_new < 1) fail(ErrorCode::Input, "maxNewTokens: expected at least 1, got ", max_new);
    at::Tensor pixels = float32_from_js(o.Get("pixelValues"), {1, cfg.pixel_channels(), cfg.image_size, cfg.image_size},
                                        "pixelValues");
    at::Tensor ids = int64_from_js(o.Get("inputIds"), {1, prompt_len}, "inputIds");
    std::vector<int64_t> stop_ids;
    if (o.Get("stopIds").IsArray()) {
      auto a = o.Get("stopIds").As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        if (!a.Get(i).IsNumber()) fail(ErrorCode::Input, "stopIds[", i, "]: expected a number");
        stop_ids.push_back(a.Get(i).As<Napi::Number>().Int64Value());
      }
    }
    bool casts = o.Get("referenceCasts").ToBoolean();
    return (new GenerateWorker(env, threads_, model_, std::move(pixels), std::move(ids), max_new, std::move(stop_ids), casts))
        ->Start();
  });
}

Napi::Value AddonBackbone::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_method(env, !model_, "Backbone: forward", [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail(ErrorCode::Input, "forward: expected an options object");
    auto o = info[0].As<Napi::Object>();
    const model::BackboneConfig& cfg = model_->config();
    const int64_t batch = integer_option(o, "batch"), prompt_len = integer_option(o, "promptLen");
    if (batch < 1) fail(ErrorCode::Input, "batch: expected at least 1, got ", batch);
    if (prompt_len < 1) fail(ErrorCode::Input, "promptLen: expected at least 1, got ", prompt_len);
    at::Tensor pixels = float32_from_js(o.Get("pixelValues"), {batch, cfg.pixel_channels(), cfg.image_size, cfg.image_size},
                                        "pixelValues");
    at::Tensor ids = int64_from_js(o.Get("inputIds"), {batch, prompt_len}, "inputIds");
    bool casts = o.Get("referenceCasts").ToBoolean();
    return (new ForwardWorker(env, threads_, model_, std::move(pixels), std::move(ids), casts))->Start();
  });
}

Napi::Value CreateBackbone(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail(ErrorCode::Input, "createBackbone: expected an options object");
    auto o = info[0].As<Napi::Object>();
    if (!o.Get("modelPath").IsString()) fail(ErrorCode::Input, "modelPath: expected a string");
    auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
    return (new LoadBackboneWorker(env, ctor, o.Get("modelPath").As<Napi::String>(), backbone_config_from_js(o.Get("config")),
                                   placement_from_js(o), threads_option(o)))
        ->Start();
  });
}

}  // namespace

void init_backbone(Napi::Env env, Napi::Object exports) {
  // The class constructor lives as long as this env; createBackbone's workers use it to wrap loaded models.
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(AddonBackbone::Define(env)));
  env.AddCleanupHook([ctor] { delete ctor; });
  exports.Set("createBackbone", Napi::Function::New(env, CreateBackbone, "createBackbone", ctor));
}


std::shared_ptr<const model::Backbone> backbone_from_js(const Napi::Value& v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kBackboneTag))
    fail(ErrorCode::Input, what, ": expected a Backbone object");
  const auto& model = AddonBackbone::Unwrap(v.As<Napi::Object>())->model();
  if (!model) fail(ErrorCode::Disposed, what, ": the Backbone was disposed");
  return model;
}

}  // namespace m2vla::addon
