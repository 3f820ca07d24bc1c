// createPolicy({backbone, head, preprocess: {size, means, stds, centerCrop?}, stats: {proprio, action}, threads})
//   -> Policy (synchronous: it only composes already-loaded models);
// policy.act({images? | pixelValues?, batch, inputIds, promptLen, state, referenceCasts, intermediates, stageTimes, seed})
//   -> Promise<{actions, normalized, shape, proprio, retrieval, intermediates?, timing}>;
// policy.kernels() -> Promise<{device, path, checks: [{kernel, ok, maxAbsErr, detail}], warnings}> (the first call on
// a GPU runs the kernel self-checks there); policy.dispose().
#include <ATen/ops/from_blob.h>

#include <cstring>
#include <memory>

#include "addon/addon.h"
#include "addon/inputs_js.h"
#include "addon/js_args.h"
#include "addon/marshal.h"
#include "addon/models_js.h"
#include "addon/workers.h"
#include "error.h"
#include "policy.h"

namespace m2vla::addon {
namespace {

using PolicyPtr = std::shared_ptr<const Policy>;

class ActWorker : public TorchWorker {
 public:
  ActWorker(Napi::Env env, int threads, PolicyPtr policy, OwnedImages images, ActRequest request)
      : TorchWorker(env, threads), policy_(std::move(policy)), images_(std::move(images)), request_(std::move(request)) {}

 protected:
  void Run() override {
    images_.bind();
    request_.images = images_.views;
    result_ = policy_->act(request_);
    result_.actions = result_.actions.contiguous();
    result_.proprio = result_.proprio.contiguous();
    prepare_head_output(result_.head);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = head_output_to_js(env, result_.head);
    auto f64 = [&](const at::Tensor& t) {
      auto a = Napi::Float64Array::New(env, t.numel());
      std::memcpy(a.Data(), t.data_ptr<double>(), t.numel() * sizeof(double));
      return a;
    };
    out.Set("actions", f64(result_.actions));
    out.Set("proprio", f64(result_.proprio));
    const StageTimes& t = result_.times;
    auto timing = Napi::Object::New(env);
    timing.Set("preprocess", t.preprocess);
    timing.Set("vision", t.vision);
    timing.Set("projector", t.projector);
    timing.Set("llm", t.llm);
    timing.Set("head", t.head);
    timing.Set("retrieval", t.retrieval);
    out.Set("timing", timing);
    return out;
  }

 private:
  PolicyPtr policy_;
  OwnedImages images_;
  ActRequest request_;
  ActResult result_;
};

class KernelsWorker : public TorchWorker {
 public:
  KernelsWorker(Napi::Env env, int threads, PolicyPtr policy) : TorchWorker(env, threads), policy_(std::move(policy)) {}

 protected:
  void Run() override { report_ = policy_->kernels(); }

  Napi::Value Result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    out.Set("device", policy_->device().str());
    out.Set("path", report_.path());
    auto checks = Napi::Array::New(env, report_.checks.size());
    for (size_t i = 0; i < report_.checks.size(); ++i) {
      const auto& [kernel, verdict] = report_.checks[i];
      auto c = Napi::Object::New(env);
      c.Set("kernel", kernel);
      c.Set("ok", verdict.ok);
      c.Set("maxAbsErr", verdict.max_abs_err);
      c.Set("detail", verdict.detail);
      checks.Set(uint32_t(i), c);
    }
    out.Set("checks", checks);
    auto warnings = Napi::Array::New(env, report_.warnings.size());
    for (size_t i = 0; i < report_.warnings.size(); ++i) warnings.Set(uint32_t(i), report_.warnings[i]);
    out.Set("warnings", warnings);
    return out;
  }

 private:
  PolicyPtr policy_;
  KernelReport report_;
};

class AddonPolicy : public Napi::ObjectWrap<AddonPolicy> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Policy",
                       {InstanceMethod<&AddonPolicy::Act>("act"), InstanceMethod<&AddonPolicy::Kernels>("kernels"),
                        InstanceMethod<&AddonPolicy::Dispose>("dispose")});
  }

  explicit AddonPolicy(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonPolicy>(info) {
    Napi::Env env = info.Env();
    js_errors(env, [&] {
      Napi::Object o = object_arg(info, 0, "createPolicy");
      PolicyConfig cfg;
      cfg.preprocess = preprocess_options_from_js(env, object_option(o, "preprocess"));
      Napi::Object stats = object_option(o, "stats");
      cfg.proprio_stats = bounds_from_js(object_option(stats, "proprio"));
      cfg.action_stats = bounds_from_js(object_option(stats, "action"));
      policy_ = std::make_shared<const Policy>(backbone_from_js(o.Get("backbone"), "backbone"),
                                               head_from_js(o.Get("head"), "head"), std::move(cfg));
      threads_ = int(optional_integer(o, "threads").value_or(0));
    });
  }

 private:
  Napi::Value Act(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return js_method(env, !policy_, "Policy: act", [&]() -> Napi::Value {
      Napi::Object o = object_arg(info, 0, "act");
      const int64_t batch = integer_option(o, "batch"), prompt_len = integer_option(o, "promptLen");
      const auto& cfg = policy_->backbone().config();
      ActRequest req;
      OwnedImages images;
      if (o.Get("images").IsUndefined()) {
        const int64_t s = cfg.image_size;
        req.pixel_values = float32_from_js(o.Get("pixelValues"), {batch, cfg.pixel_channels(), s, s}, "pixelValues");
      } else {
        images_from_js(env, o.Get("images"), images);
        if (int64_t(images.views.size()) != batch * cfg.num_images)
          fail(ErrorCode::Input, "images: expected ", cfg.num_images, " per observation (", batch, " observations), got ",
               images.views.size());
      }
      req.input_ids = int64_from_js(o.Get("inputIds"), {batch, prompt_len}, "inputIds");
      Napi::Value state = o.Get("state");
      if (!state.IsTypedArray() || state.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
        fail(ErrorCode::Input, "state: expected a Float64Array");
      auto ta = state.As<Napi::TypedArray>();
      const int64_t dim = policy_->head().dims().proprio_dim;
      if (int64_t(ta.ElementLength()) != batch * dim)
        fail(ErrorCode::Shape, "state: expected ", dim, " values per observation, got ", ta.ElementLength(), " for ", batch,
             " observation(s)");
      auto* src = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
      req.state = at::from_blob(src, {batch, dim}, at::kDouble).clone();
      req.reference_casts = bool_option(o, "referenceCasts", false);
      req.trace = bool_option(o, "intermediates", false);
      req.time_stages = bool_option(o, "stageTimes", false);
      if (auto seed = optional_integer(o, "seed")) req.seed = uint64_t(*seed);
      return (new ActWorker(env, threads_, policy_, std::move(images), std::move(req)))->Start();
    });
  }

  Napi::Value Kernels(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!policy_) throw make_error(env, "E_DISPOSED", "Policy: kernels() after dispose()");
    return (new KernelsWorker(env, threads_, policy_))->Start();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    policy_.reset();
    return info.Env().Undefined();
  }

  PolicyPtr policy_;
  int threads_ = 0;
};

}  // namespace

void init_policy(Napi::Env env, Napi::Object exports) {
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(AddonPolicy::Define(env)));
  env.AddCleanupHook([ctor] { delete ctor; });
  exports.Set("createPolicy", Napi::Function::New(env, [ctor](const Napi::CallbackInfo& info) {
    return ctor->New({info[0]});
  }, "createPolicy"));
}

}  // namespace m2vla::addon
