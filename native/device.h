// Where a policy runs: the device and computation dtype a caller asked for, checked against this build and this
// machine before any weight is loaded. A CPU-only build (the default) never asks the CUDA runtime anything; asking it
// for a CUDA device is a typed E_CONFIG error that says how to get a CUDA build. No N-API here.
#pragma once
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace m2vla {

struct Placement {
  c10::Device device{c10::kCPU};
  c10::ScalarType dtype = c10::kFloat;
  std::string name = "CPU";  // the GPU's name on CUDA
  int capability = 0;        // CUDA compute capability x 10 (86 = 8.6); 0 on the CPU
};

// device: "cpu" | "cuda" | "cuda:N"; dtype: "auto" | "float32" | "bfloat16" | "float16". "auto" is float32 on the CPU,
// bfloat16 on compute capability >= 8.0 and float16 below. float16 on the CPU is refused (E_CONFIG): libtorch's CPU
// half-precision matmuls are slow and the CPU kernels of the head are float32/bfloat16 only.
Placement resolve_placement(const std::string& device, const std::string& dtype);

// The build command a CUDA user runs, for error messages and `m2vla doctor`.
extern const char* const kCudaBuildHint;

}  // namespace m2vla
