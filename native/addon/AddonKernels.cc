// kernelSelfCheck({ kernel, candidate, seed?, atol?, rtol?, threads? }): runs the self-check of a custom kernel
// (head/kernel_check.h) through a process-wide KernelRegistry, so tests and `m2vla doctor`-style tools can see the
// verdict, the fallback decision and the warning. Candidates:
//   'reference'  the reference itself (must pass),
//   'perturbed'  the reference + 1e-2 on its first floating output (must be caught),
//   'cuda'       the CUDA kernel through native/cuda/cuda_glue (CUDA builds; inputs moved to the current GPU).
// The registry checks a (kernel, candidate) pair once per process; later calls return the stored verdict.
#include <ATen/ATen.h>

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "addon/addon.h"
#include "addon/workers.h"
#include "error.h"
#include "head/kernel_cases.h"
#include "head/kernel_check.h"

namespace m2vla::addon {
namespace {

using head::Tensors;

// The process-wide registry. Its warnings go to stderr and are also kept, so a call can return the one it caused.
struct Checks {
  std::mutex mutex;
  std::vector<std::string> warnings;
  head::KernelRegistry registry{[this](const std::string& message) {
    head::KernelRegistry::warn_to_stderr(message);
    const std::lock_guard<std::mutex> lock(mutex);
    warnings.push_back(message);
  }};

  size_t warning_count() {
    const std::lock_guard<std::mutex> lock(mutex);
    return warnings.size();
  }
  std::string warning(size_t i) {
    const std::lock_guard<std::mutex> lock(mutex);
    return warnings.at(i);
  }
};

Checks& checks() {
  static Checks c;
  return c;
}

class SelfCheckWorker : public TorchWorker {
 public:
  SelfCheckWorker(Napi::Env env, int threads, std::string kernel, std::string candidate, uint64_t seed,
                  std::optional<head::Tolerance> tolerance)
      : TorchWorker(env, threads), kernel_(std::move(kernel)), candidate_(std::move(candidate)), seed_(seed),
        tolerance_(tolerance) {}

 protected:
  void Run() override {
    const head::KernelCase c = head::kernel_case(kernel_);
    head::KernelCheck check{c.make_inputs, nullptr, c.reference, tolerance_.value_or(c.tolerance), seed_};
    if (candidate_ == "reference") {
      check.candidate = c.reference;
    } else if (candidate_ == "perturbed") {
      check.candidate = [&c](const Tensors& in) {
        Tensors out = c.reference(in);
        for (auto& t : out)
          if (at::isFloatingType(t.scalar_type())) {
            t = t + 1e-2;
            break;
          }
        return out;
      };
    } else if (c.cuda) {
      check.candidate = c.cuda;
    } else {
      fail(ErrorCode::Input, "kernelSelfCheck: this m2vla build has no CUDA kernels (build with M2VLA_CUDA=1)");
    }
    Checks& all = checks();
    const size_t warned_before = all.warning_count();
    const std::string name = kernel_ + ":" + candidate_;
    fast_ = all.registry.use_fast_path(name, [&] { return head::check_kernel(check); });
    verdict_ = *all.registry.verdict(name);
    checks_run_ = all.registry.checks_run();
    if (all.warning_count() > warned_before) warning_ = all.warning(warned_before);
  }

  Napi::Value Result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    out.Set("ok", verdict_.ok);
    out.Set("maxAbsErr", verdict_.max_abs_err);
    out.Set("detail", verdict_.detail);
    out.Set("path", fast_ ? "candidate" : "reference");
    out.Set("checksRun", checks_run_);
    if (!warning_.empty()) out.Set("warning", warning_);
    return out;
  }

 private:
  std::string kernel_, candidate_;
  uint64_t seed_;
  std::optional<head::Tolerance> tolerance_;
  bool fast_ = false;
  head::CheckResult verdict_;
  int checks_run_ = 0;
  std::string warning_;
};

Napi::Value KernelSelfCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw make_error(env, "E_INPUT", "kernelSelfCheck: expected an options object");
  auto opts = info[0].As<Napi::Object>();
  const auto text = [&](const char* key) {
    return opts.Get(key).IsString() ? opts.Get(key).As<Napi::String>().Utf8Value() : std::string();
  };
  const std::string kernel = text("kernel"), candidate = text("candidate");
  if (kernel != "molAttention" && kernel != "l1TopK")
    throw make_error(env, "E_INPUT", "kernelSelfCheck: kernel must be molAttention or l1TopK, got '" + kernel + "'");
  if (candidate != "reference" && candidate != "perturbed" && candidate != "cuda")
    throw make_error(env, "E_INPUT", "kernelSelfCheck: candidate must be reference, perturbed or cuda, got '" + candidate + "'");
  const uint64_t seed = opts.Get("seed").IsNumber() ? uint64_t(opts.Get("seed").As<Napi::Number>().Int64Value()) : 0;
  std::optional<head::Tolerance> tolerance;
  if (opts.Get("atol").IsNumber() || opts.Get("rtol").IsNumber()) {
    const auto number = [&](const char* key) { return opts.Get(key).IsNumber() ? opts.Get(key).As<Napi::Number>().DoubleValue() : 0.0; };
    tolerance = head::Tolerance{number("atol"), number("rtol")};
  }
  return (new SelfCheckWorker(env, threads_option(opts), kernel, candidate, seed, tolerance))->Start();
}

}  // namespace

void init_kernels(Napi::Env env, Napi::Object exports) {
  exports.Set("kernelSelfCheck", Napi::Function::New(env, KernelSelfCheck));
}

}  // namespace m2vla::addon
