// Trust, but verify, a fast kernel. Before a custom kernel (a CUDA kernel, a fused CPU loop) is used for real, it
// runs once on a small random input next to the plain libtorch-op path that defines its result; if they disagree
// (or the kernel throws, e.g. "CUDA driver insufficient"), m2vla warns once and keeps using the reference path.
// Device-independent: the callables decide where tensors live; outputs are compared on the CPU.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace m2vla::head {

using Tensors = std::vector<at::Tensor>;

// Floating outputs agree when |candidate - reference| <= atol + rtol * |reference| everywhere (NaN only where the
// reference has NaN); integer and bool outputs must be equal.
struct Tolerance {
  double atol = 0;
  double rtol = 0;
};

struct CheckResult {
  bool ok = false;
  double max_abs_err = 0;  // over the floating outputs
  std::string detail;      // which output disagreed, where, and by how much; or why the candidate failed
};

struct KernelCheck {
  std::function<Tensors(uint64_t seed)> make_inputs;  // random inputs, deterministic in the seed
  std::function<Tensors(const Tensors& inputs)> candidate;
  std::function<Tensors(const Tensors& inputs)> reference;
  Tolerance tolerance;
  uint64_t seed = 0;
};

// Runs both callables on make_inputs(seed) and compares their outputs. An exception from the candidate is a failed
// check (detail says what it threw); one from make_inputs or the reference propagates (a bug, not a bad kernel).
CheckResult check_kernel(const KernelCheck& check);

// Whether each fast kernel is trusted: decided by its check the first time it is asked for, then remembered for the
// life of the registry. Thread-safe; a check runs at most once per kernel name.
class KernelRegistry {
 public:
  using Warn = std::function<void(const std::string& message)>;
  explicit KernelRegistry(Warn warn = warn_to_stderr);

  // True when `kernel`'s fast path may be used. The first call runs `check` (later ones return the stored verdict);
  // a failed check is reported through `warn` once.
  bool use_fast_path(const std::string& kernel, const std::function<CheckResult()>& check);
  std::optional<CheckResult> verdict(const std::string& kernel) const;
  int checks_run() const;

  static void warn_to_stderr(const std::string& message);

 private:
  Warn warn_;
  mutable std::mutex mutex_;
  std::map<std::string, CheckResult> verdicts_;
  int checks_run_ = 0;
};

}  // namespace m2vla::head
