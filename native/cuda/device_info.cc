#include "cuda/device_info.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>

#include "error.h"

namespace m2vla::cuda {
namespace {

std::string describe(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

}  // namespace

int gpu_count() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  // A failed probe leaves a sticky "last error" behind; clear it so later CUDA calls do not report it.
  cudaGetLastError();
  if (e != cudaSuccess)
    fail(ErrorCode::Config, "no usable CUDA GPU (", describe(e), "); check the NVIDIA driver with nvidia-smi");
  if (count == 0) fail(ErrorCode::Config, "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and nvidia-smi)");
  return count;
}

GpuInfo gpu_info(int index) {
  const int count = gpu_count();
  if (index < 0 || index >= count)
    fail(ErrorCode::Config, "device 'cuda:", index, "': this machine has ", count, " CUDA GPU(s) (cuda:0..cuda:", count - 1, ")");
  cudaDeviceProp prop{};
  cudaError_t e = cudaGetDeviceProperties(&prop, index);
  if (e != cudaSuccess) fail(ErrorCode::Config, "cuda:", index, ": cannot read its properties (", describe(e), ")");
  GpuInfo info;
  info.index = index;
  info.name = prop.name;
  info.major = prop.major, info.minor = prop.minor;
  cudaDriverGetVersion(&info.driver_version);
  cudaRuntimeGetVersion(&info.runtime_version);
  int previous = 0;
  cudaGetDevice(&previous);
  if (cudaSetDevice(index) == cudaSuccess) cudaMemGetInfo(&info.free_bytes, &info.total_bytes);
  cudaSetDevice(previous);
  cudaGetLastError();
  return info;
}

size_t peak_allocated_bytes(int index, bool reset) {
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const auto device = static_cast<c10::DeviceIndex>(index);
  const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const size_t peak = size_t(alloc::getDeviceStats(device).allocated_bytes[aggregate].peak);
  if (reset) alloc::resetPeakStats(device);
  return peak;
}

}  // namespace m2vla::cuda
