// The self-check of each custom kernel (kernel_check.h) as ready-made cases: deterministic random inputs, the libtorch
// reference that defines the result, the CUDA kernel as candidate (CUDA builds) and the tolerance it is held to. Each
// kernel has several variants (edge sizes, the production shapes, batch 1 and batch > 1, the bf16 output production
// writes); a kernel is trusted only when every variant agrees (check_kernel_variants). Shared by a policy's first use
// of a GPU (policy.cc), kernelSelfCheck() (addon/AddonKernels.cc) and the C++ tests (native/tests).
#pragma once
#include <c10/core/Device.h>

#include <functional>
#include <string>
#include <vector>

#include "head/kernel_check.h"

namespace m2vla::head {

struct KernelCase {
  std::string variant;                                   // e.g. "edge", "production-bf16"
  std::function<Tensors(uint64_t seed)> make_inputs;     // on the CPU, so every device checks the same values
  std::function<Tensors(const Tensors&)> reference;
  std::function<Tensors(const Tensors&)> cuda;           // empty in CPU-only builds; outputs come back on the CPU
  Tolerance tolerance;
};

// The kernels with a self-check.
extern const std::vector<std::string> kKernelNames;  // molAttention, l1TopK

// kernel: one of kKernelNames (E_INPUT otherwise); the CUDA candidate runs on `gpu` (index -1: the current GPU).
std::vector<KernelCase> kernel_cases(const std::string& kernel, c10::Device gpu = c10::Device(c10::kCUDA));
// The first variant ("edge": small odd sizes, partial tiles): the quick check kernelSelfCheck() runs.
KernelCase kernel_case(const std::string& kernel, c10::Device gpu = c10::Device(c10::kCUDA));

// Each kernel's variants, beside its reference: mol/cases.cc, msm/cases.cc.
std::vector<KernelCase> mol_attention_cases(const c10::Device& gpu);
std::vector<KernelCase> l1_topk_cases(const c10::Device& gpu);
// Copies of `ts` on `device` (the CUDA candidates' inputs).
Tensors to_device(const Tensors& ts, const c10::Device& device);

// One verdict for `kernel` on `gpu`: every variant's CUDA candidate against its reference (seed 0). ok only when all
// agree; detail names each variant's outcome. CUDA builds only (E_CONFIG otherwise).
CheckResult check_kernel_variants(const std::string& kernel, c10::Device gpu);

}  // namespace m2vla::head
