// The self-check of each custom kernel (kernel_check.h) as a ready-made case: deterministic random inputs, the
// libtorch reference that defines the result, the CUDA kernel as candidate (CUDA builds) and the tolerance it is held
// to. Shared by a policy's first use of a GPU (policy.cc) and kernelSelfCheck() (addon/AddonKernels.cc).
#pragma once
#include <c10/core/Device.h>

#include <functional>
#include <string>

#include "head/kernel_check.h"

namespace m2vla::head {

struct KernelCase {
  std::function<Tensors(uint64_t seed)> make_inputs;     // on the CPU, so every device checks the same values
  std::function<Tensors(const Tensors&)> reference;
  std::function<Tensors(const Tensors&)> cuda;           // empty in CPU-only builds; outputs come back on the CPU
  Tolerance tolerance;
};

// kernel: "molAttention" | "l1TopK" | "bankAppend" (E_INPUT otherwise); the CUDA candidate runs on `gpu`
// (index -1: the current GPU).
KernelCase kernel_case(const std::string& kernel, c10::Device gpu = c10::Device(c10::kCUDA));

}  // namespace m2vla::head
