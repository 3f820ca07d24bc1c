// The GPUs as the CUDA runtime reports them (for device placement and `m2vla doctor`). Compiled only in CUDA builds:
// the default build never asks the CUDA runtime anything.
#pragma once
#include <cstddef>
#include <string>

namespace m2vla::cuda {

struct GpuInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;        // compute capability
  size_t free_bytes = 0, total_bytes = 0;
  int driver_version = 0;          // the CUDA version the driver supports, e.g. 13000 = 13.0
  int runtime_version = 0;         // the CUDA runtime this addon runs on
};

// The number of usable GPUs; E_CONFIG with the runtime's reason (no driver, driver too old, no device) when zero.
int gpu_count();
// GPU `index`, with its free memory (creates the CUDA context on it); E_CONFIG when there is no such GPU.
GpuInfo gpu_info(int index);

// The most bytes libtorch's caching allocator held for tensors on GPU `index` since the last reset; `reset` starts a
// new window (the benchmarks' peak device memory per act()).
size_t peak_allocated_bytes(int index, bool reset);

}  // namespace m2vla::cuda
