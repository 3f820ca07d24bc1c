// Process-level facts (for `m2vla doctor`), device placement, and the GEMM peak measurement the benchmarks compare
// against. A CPU-only build reports no GPU fields and never asks the CUDA runtime anything.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <chrono>

#include "addon/addon.h"
#include "addon/config_js.h"
#include "addon/workers.h"
#include "device.h"
#include "error.h"
#include "train/distributed.h"
#ifdef M2VLA_WITH_CUDA
#include "cuda/device_info.h"
#endif

namespace m2vla::addon {
namespace {

bool cpu_supports(const char* feature) {
#if defined(__x86_64__)
  if (std::string(feature) == "avx2") return __builtin_cpu_supports("avx2");
  if (std::string(feature) == "avx512f") return __builtin_cpu_supports("avx512f");
  if (std::string(feature) == "avx512bf16") return __builtin_cpu_supports("avx512bf16");
  if (std::string(feature) == "amx-bf16") return __builtin_cpu_supports("amx-bf16");
#endif
  return false;
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto out = Napi::Object::New(env);
  out.Set("torchVersion", TORCH_VERSION);
#ifdef M2VLA_WITH_CUDA
  out.Set("cuda", true);
  // Every GPU the runtime sees, or why it sees none (no driver, driver too old, none visible).
  auto gpus = Napi::Array::New(env);
  try {
    const int count = cuda::gpu_count();
    for (int i = 0; i < count; ++i) {
      const cuda::GpuInfo g = cuda::gpu_info(i);
      auto o = Napi::Object::New(env);
      o.Set("device", "cuda:" + std::to_string(i));
      o.Set("name", g.name);
      o.Set("capability", std::to_string(g.major) + "." + std::to_string(g.minor));
      o.Set("freeBytes", double(g.free_bytes));
      o.Set("totalBytes", double(g.total_bytes));
      o.Set("driverVersion", g.driver_version);
      o.Set("runtimeVersion", g.runtime_version);
      gpus.Set(uint32_t(i), o);
    }
  } catch (const m2vla::Error& e) {
    out.Set("gpuError", e.what());
  }
  out.Set("gpus", gpus);
  out.Set("cudaAvailable", gpus.Length() > 0);
#else
  out.Set("cuda", false);
  out.Set("cudaAvailable", false);
  out.Set("cudaBuildHint", kCudaBuildHint);
#endif
  out.Set("distributed", train::distributed_available(c10::kCPU));
  out.Set("nccl", train::distributed_available(c10::Device(c10::kCUDA, 0)));
  out.Set("threads", at::get_num_threads());
  out.Set("parallelInfo", at::get_parallel_info());
  auto cpu = Napi::Object::New(env);
  for (const char* f : {"avx2", "avx512f", "avx512bf16", "amx-bf16"}) cpu.Set(f, cpu_supports(f));
  const CpuMatrixFeatures m = cpu_matrix_features();
  cpu.Set("amx-int8", m.amx_int8);
  cpu.Set("avx512vnni", m.avx512_vnni);
  cpu.Set("amxUsable", m.amx_bf16 || m.amx_int8);  // the kernel granted the tile state (oneDNN will use AMX)
  out.Set("cpu", cpu);
  const Placement automatic = resolve_placement("cpu", "auto");
  auto dtype = Napi::Object::New(env);
  dtype.Set("auto", automatic.dtype == at::kBFloat16 ? "bfloat16" : "float32");
  dtype.Set("reason", automatic.reason);
  dtype.Set("int8", m.avx512_vnni || m.amx_int8);
  dtype.Set("onednnBf16", m.onednn_bf16);
  if (m.bf16_gflops > 0) {  // measured for 'auto' (AVX512-BF16 without AMX)
    dtype.Set("bf16Gflops", m.bf16_gflops);
    dtype.Set("fp32Gflops", m.fp32_gflops);
  }
  out.Set("cpuDtype", dtype);
  out.Set("napiVersion", NAPI_VERSION);
  return out;
}

// Square GEMM throughput in GFLOP/s: the roofline the forward-pass benchmarks are measured against.
class GemmWorker : public TorchWorker {
 public:
  GemmWorker(Napi::Env env, int threads, int64_t n, int iters, at::ScalarType dtype)
      : TorchWorker(env, threads), n_(n), iters_(iters), dtype_(dtype) {}

 protected:
  void Run() override {
    auto a = at::randn({n_, n_}).to(dtype_), b = at::randn({n_, n_}).to(dtype_);
    at::mm(a, b);  // warm-up (packing, thread pool)
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters_; ++i) at::mm(a, b);
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  Napi::Value Result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    out.Set("gflops", 2.0 * n_ * n_ * n_ * iters_ / seconds_ / 1e9);
    out.Set("seconds", seconds_);
    return out;
  }

 private:
  int64_t n_;
  int iters_;
  at::ScalarType dtype_;
  double seconds_ = 0;
};

Napi::Value MeasureGemm(const Napi::CallbackInfo& info) {
  auto opts = info[0].As<Napi::Object>();
  int64_t n = opts.Get("n").As<Napi::Number>().Int64Value();
  int iters = opts.Get("iters").As<Napi::Number>().Int32Value();
  std::string dtype = opts.Get("dtype").As<Napi::String>();
  auto st = dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  return (new GemmWorker(info.Env(), threads_option(opts), n, iters, st))->Start();
}

// probeCpuMatrix() -> Promise<void>: the one-time GEMM measurement behind dtype 'auto' (device.h), on a worker, so
// that resolvePlacement() after it only reads the result.
class ProbeCpuMatrixWorker : public TorchWorker {
 public:
  explicit ProbeCpuMatrixWorker(Napi::Env env) : TorchWorker(env, 0) {}

 protected:
  void Run() override { cpu_matrix_features(); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }
};

Napi::Value ProbeCpuMatrix(const Napi::CallbackInfo& info) { return (new ProbeCpuMatrixWorker(info.Env()))->Start(); }

// resolvePlacement({device?, dtype?, cpuFeatures?}) -> {device, dtype, reason, name, capability}: what loadPolicy will
// load onto. cpuFeatures {amxBf16, amxInt8, avx512Bf16, avx512Vnni, bf16Gflops?, fp32Gflops?} decides for another
// CPU than this one (tests).
Napi::Value ResolvePlacement(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail(ErrorCode::Input, "resolvePlacement: expected an options object");
    const Napi::Object o = info[0].As<Napi::Object>();
    // Given features decide for another CPU; only this machine's are detected (and maybe measured).
    const auto given = [&]() -> CpuMatrixFeatures {
      const Napi::Object f = o.Get("cpuFeatures").As<Napi::Object>();
      const auto flag = [&](const char* name) { return f.Get(name).ToBoolean().Value(); };
      const auto gflops = [&](const char* name) { return f.Has(name) ? f.Get(name).ToNumber().DoubleValue() : 0.0; };
      CpuMatrixFeatures given{flag("amxBf16"), flag("amxInt8"), flag("avx512Bf16"), flag("avx512Vnni"),
                              gflops("bf16Gflops"), gflops("fp32Gflops")};
      given.onednn_bf16 = !f.Has("onednnBf16") || flag("onednnBf16");  // features given for an AVX-512 CPU by default
      return given;
    };
    const Placement p = placement_from_js(o, o.Has("cpuFeatures") ? given() : cpu_matrix_features());
    auto out = Napi::Object::New(env);
    out.Set("device", p.device.str());
    out.Set("dtype", p.int8 ? "int8" : p.dtype == at::kFloat ? "float32" : p.dtype == at::kBFloat16 ? "bfloat16" : "float16");
    out.Set("reason", p.reason);
    if (!p.warning.empty()) out.Set("warning", p.warning);
    out.Set("name", p.name);
    out.Set("capability", p.capability / 10.0);
    return out;
  });
}

#ifdef M2VLA_WITH_CUDA
// gpuPeakMemory({device: 'cuda:N', reset}) -> bytes: the caching allocator's peak since the last reset (CUDA builds).
Napi::Value GpuPeakMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail(ErrorCode::Input, "gpuPeakMemory: expected an options object");
    auto o = info[0].As<Napi::Object>();
    const Placement p = placement_from_js(o);
    if (p.device.is_cpu()) fail(ErrorCode::Input, "gpuPeakMemory: expected a CUDA device, got 'cpu'");
    return Napi::Number::New(env, double(cuda::peak_allocated_bytes(p.device.index(), o.Get("reset").ToBoolean())));
  });
}
#endif

}  // namespace

void init_runtime(Napi::Env env, Napi::Object exports) {
  exports.Set("probeCpuMatrix", Napi::Function::New(env, ProbeCpuMatrix));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("resolvePlacement", Napi::Function::New(env, ResolvePlacement));
#ifdef M2VLA_WITH_CUDA
  exports.Set("gpuPeakMemory", Napi::Function::New(env, GpuPeakMemory));
#endif
  exports.Set("measureGemm", Napi::Function::New(env, MeasureGemm));
}

}  // namespace m2vla::addon
