#include "head/kernel_check.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <sstream>
#include <utility>

namespace m2vla::head {
namespace {

std::string coords(const at::Tensor& t, int64_t flat) {
  std::vector<int64_t> c(t.dim());
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    c[d] = flat % t.size(d);
    flat /= t.size(d);
  }
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < c.size(); ++i) os << (i ? ", " : "") << c[i];
  os << "]";
  return os.str();
}

// Compares one output pair; returns an empty string when they agree and adds floating errors to `max_abs_err`.
std::string compare(size_t i, const at::Tensor& cand_in, const at::Tensor& ref_in, const Tolerance& tol,
                    double& max_abs_err) {
  std::ostringstream os;
  os << "output " << i << ": ";
  if (cand_in.sizes() != ref_in.sizes()) {
    os << "shape " << cand_in.sizes() << ", expected " << ref_in.sizes();
    return os.str();
  }
  const bool floating = at::isFloatingType(ref_in.scalar_type());
  if (floating != at::isFloatingType(cand_in.scalar_type())) {
    os << "dtype " << cand_in.scalar_type() << ", expected " << ref_in.scalar_type();
    return os.str();
  }
  const at::Tensor cand = cand_in.to(at::kCPU).contiguous().flatten(), ref = ref_in.to(at::kCPU).contiguous().flatten();
  if (cand.numel() == 0) return "";

  if (!floating) {
    const at::Tensor differ = cand.ne(ref);
    if (!differ.any().item<bool>()) return "";
    const int64_t pos = differ.to(at::kByte).argmax().item<int64_t>();
    os << "differs at " << coords(ref_in, pos) << ": " << cand[pos].item<int64_t>() << ", expected "
       << ref[pos].item<int64_t>();
    return os.str();
  }

  const at::Tensor c = cand.to(at::kDouble), r = ref.to(at::kDouble);
  const at::Tensor c_nan = c.isnan(), r_nan = r.isnan();
  if (!c_nan.equal(r_nan)) {
    const int64_t pos = c_nan.ne(r_nan).to(at::kByte).argmax().item<int64_t>();
    os << "NaN mismatch at " << coords(ref_in, pos) << ": " << c[pos].item<double>() << ", expected "
       << r[pos].item<double>();
    return os.str();
  }
  // Equal values (infinities included) and NaN pairs count as no error.
  const at::Tensor diff = at::where(c.eq(r).logical_or(c_nan), at::zeros_like(c), (c - r).abs());
  max_abs_err = std::max(max_abs_err, diff.max().item<double>());
  const at::Tensor excess = diff - (tol.atol + tol.rtol * r.abs());
  const int64_t worst = excess.argmax().item<int64_t>();
  if (!(excess[worst].item<double>() > 0)) return "";
  os << "|candidate - reference| = " << diff[worst].item<double>() << " at " << coords(ref_in, worst) << " (candidate "
     << c[worst].item<double>() << ", reference " << r[worst].item<double>() << ") exceeds atol " << tol.atol
     << " + rtol " << tol.rtol << " * |reference|";
  return os.str();
}

}  // namespace

CheckResult check_kernel(const KernelCheck& check) {
  const Tensors inputs = check.make_inputs(check.seed);
  const Tensors expected = check.reference(inputs);
  Tensors got;
  try {
    got = check.candidate(inputs);
  } catch (const c10::Error& e) {
    return {false, 0, std::string("candidate failed: ") + e.what_without_backtrace()};
  } catch (const std::exception& e) {
    return {false, 0, std::string("candidate failed: ") + e.what()};
  }
  if (got.size() != expected.size())
    return {false, 0, "candidate returned " + std::to_string(got.size()) + " outputs, expected " +
                          std::to_string(expected.size())};

  CheckResult result{true, 0, ""};
  for (size_t i = 0; i < expected.size(); ++i) {
    std::string why = compare(i, got[i], expected[i], check.tolerance, result.max_abs_err);
    if (!why.empty() && result.ok) {
      result.ok = false;
      result.detail = std::move(why);
    }
  }
  if (result.ok) {
    std::ostringstream os;
    os << expected.size() << " outputs agree (max |candidate - reference| " << result.max_abs_err << ", seed "
       << check.seed << ")";
    result.detail = os.str();
  }
  return result;
}

KernelRegistry::KernelRegistry(Warn warn) : warn_(std::move(warn)) {}

bool KernelRegistry::use_fast_path(const std::string& kernel, const std::function<CheckResult()>& check) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = verdicts_.find(kernel);
  if (it == verdicts_.end()) {
    // Checked under the lock: a concurrent first use waits for this verdict instead of checking again.
    ++checks_run_;
    it = verdicts_.emplace(kernel, check()).first;
    if (!it->second.ok) warn_("m2vla: kernel '" + kernel + "' disagrees with its reference (" + it->second.detail +
                              "); using the reference implementation");
  }
  return it->second.ok;
}

std::optional<CheckResult> KernelRegistry::verdict(const std::string& kernel) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = verdicts_.find(kernel);
  if (it == verdicts_.end()) return std::nullopt;
  return it->second;
}

int KernelRegistry::checks_run() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return checks_run_;
}

void KernelRegistry::warn_to_stderr(const std::string& message) { std::fprintf(stderr, "%s\n", message.c_str()); }

}  // namespace m2vla::head
