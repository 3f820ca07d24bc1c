// The denoise objective's schedule and sampler step, exposed so they can be checked against closed forms (the head
// uses the same functions inside its forward). Synchronous: a few hundred numbers.
// ddimSchedule({trainSteps, inferenceSteps}) -> {alphasCumprod: Float64Array, timesteps: Int32Array}
// ddimStep({sample, modelOutput, timestep, prevTimestep, trainSteps, clipSample}) -> Float32Array
// ddimAddNoise({sample, noise, timesteps, trainSteps}) -> Float32Array (rows of sample.length / timesteps.length)
#include <ATen/core/Tensor.h>
#include <ATen/ops/tensor.h>

#include <cstring>

#include "addon/addon.h"
#include "addon/js_args.h"
#include "addon/marshal.h"
#include "addon/workers.h"
#include "error.h"
#include "head/diffusion.h"

namespace m2vla::addon {
namespace {

at::Tensor flat_f32(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray()) fail(ErrorCode::Input, key, ": expected a Float32Array");
  return float32_from_js(v, {int64_t(v.As<Napi::TypedArray>().ElementLength())}, key);
}

template <typename Body>
Napi::Value guarded(const Napi::CallbackInfo& info, const char* what, Body body) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value { return body(env, object_arg(info, 0, what)); });
}

Napi::Value DdimSchedule(const Napi::CallbackInfo& info) {
  return guarded(info, "ddimSchedule", [](Napi::Env env, const Napi::Object& o) -> Napi::Value {
    auto schedule = head::NoiseSchedule::squaredcos_cap_v2(integer_option(o, "trainSteps"));
    const auto& ac = schedule.alphas_cumprod();
    auto alphas = Napi::Float64Array::New(env, ac.size());
    std::memcpy(alphas.Data(), ac.data(), ac.size() * sizeof(double));
    std::vector<int64_t> steps = schedule.ddim_timesteps(integer_option(o, "inferenceSteps"));
    auto out = Napi::Object::New(env);
    out.Set("alphasCumprod", alphas);
    out.Set("timesteps", tensor_to_int32_array(env, at::tensor(steps)));
    return out;
  });
}

Napi::Value DdimStep(const Napi::CallbackInfo& info) {
  return guarded(info, "ddimStep", [](Napi::Env env, const Napi::Object& o) -> Napi::Value {
    auto schedule = head::NoiseSchedule::squaredcos_cap_v2(integer_option(o, "trainSteps"));
    at::Tensor sample = flat_f32(o, "sample"), eps = flat_f32(o, "modelOutput");
    if (eps.numel() != sample.numel())
      fail(ErrorCode::Shape, "modelOutput: expected ", sample.numel(), " values (as sample), got ", eps.numel());
    at::Tensor out = schedule.ddim_step(sample, eps, integer_option(o, "timestep"), integer_option(o, "prevTimestep"),
                                        bool_option(o, "clipSample", true));
    return tensor_to_float32_array(env, out);
  });
}

Napi::Value DdimAddNoise(const Napi::CallbackInfo& info) {
  return guarded(info, "ddimAddNoise", [](Napi::Env env, const Napi::Object& o) -> Napi::Value {
    auto schedule = head::NoiseSchedule::squaredcos_cap_v2(integer_option(o, "trainSteps"));
    std::vector<int64_t> t = integer_array_option(o, "timesteps");
    at::Tensor x0 = flat_f32(o, "sample"), eps = flat_f32(o, "noise");
    const int64_t rows = int64_t(t.size());
    if (rows == 0 || x0.numel() % rows != 0 || eps.numel() != x0.numel())
      fail(ErrorCode::Shape, "sample/noise: expected the same length, a multiple of timesteps.length (", rows, ")");
    at::Tensor out = schedule.add_noise(x0.reshape({rows, -1}), eps.reshape({rows, -1}), at::tensor(t));
    return tensor_to_float32_array(env, out);
  });
}

}  // namespace

void init_diffusion(Napi::Env env, Napi::Object exports) {
  exports.Set("ddimSchedule", Napi::Function::New(env, DdimSchedule, "ddimSchedule"));
  exports.Set("ddimStep", Napi::Function::New(env, DdimStep, "ddimStep"));
  exports.Set("ddimAddNoise", Napi::Function::New(env, DdimAddNoise, "ddimAddNoise"));
}

}  // namespace m2vla::addon
