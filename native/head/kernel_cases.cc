#include "head/kernel_cases.h"

#include <ATen/ATen.h>

#include <sstream>

#include "error.h"

namespace m2vla::head {

Tensors to_device(const Tensors& ts, const c10::Device& device) {
  Tensors out;
  for (const auto& t : ts) out.push_back(t.to(device));
  return out;
}

const std::vector<std::string> kKernelNames = {"molAttention", "l1TopK"};

std::vector<KernelCase> kernel_cases(const std::string& kernel, c10::Device gpu) {
  if (kernel == "molAttention") return mol_attention_cases(gpu);
  if (kernel == "l1TopK") return l1_topk_cases(gpu);
  fail(ErrorCode::Input, "kernel must be molAttention or l1TopK, got '", kernel, "'");
}

KernelCase kernel_case(const std::string& kernel, c10::Device gpu) { return kernel_cases(kernel, gpu).front(); }

CheckResult check_kernel_variants(const std::string& kernel, c10::Device gpu) {
  CheckResult all{true, 0, ""};
  std::ostringstream detail;
  for (const KernelCase& c : kernel_cases(kernel, gpu)) {
    if (!c.cuda) fail(ErrorCode::Config, "kernel ", kernel, ": no CUDA candidate in this CPU-only build");
    const CheckResult r = check_kernel({c.make_inputs, c.cuda, c.reference, c.tolerance, /*seed=*/0});
    all.ok = all.ok && r.ok;
    all.max_abs_err = std::max(all.max_abs_err, r.max_abs_err);
    detail << (detail.tellp() > 0 ? "; " : "") << c.variant << ": ";
    if (r.ok) detail << "ok (max |candidate - reference| " << r.max_abs_err << ")";
    else detail << r.detail;
  }
  all.detail = detail.str();
  return all;
}

}  // namespace m2vla::head
