// Process-level facts (for `m2vla doctor`) and the GEMM peak measurement the benchmarks compare against.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <chrono>

#include "addon/addon.h"
#include "addon/workers.h"
#include "train/distributed.h"

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
#else
  out.Set("cuda", false);
#endif
  out.Set("cudaAvailable", at::hasCUDA());
  out.Set("distributed", train::distributed_available());
  out.Set("threads", at::get_num_threads());
  out.Set("parallelInfo", at::get_parallel_info());
  auto cpu = Napi::Object::New(env);
  for (const char* f : {"avx2", "avx512f", "avx512bf16", "amx-bf16"}) cpu.Set(f, cpu_supports(f));
  out.Set("cpu", cpu);
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

}  // namespace

void init_runtime(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("measureGemm", Napi::Function::New(env, MeasureGemm));
}

}  // namespace m2vla::addon
