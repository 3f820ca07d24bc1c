#include "device.h"

#include <regex>

#include "error.h"
#ifdef M2VLA_WITH_CUDA
#include "cuda/device_info.h"
#endif

namespace m2vla {

const char* const kCudaBuildHint =
    "build the addon with CUDA: M2VLA_CUDA=1 LIBTORCH=<a CUDA libtorch, e.g. the torch==2.14.1 wheel's torch/ folder> "
    "npm run build:native (docs/cuda.md)";

namespace {

c10::ScalarType parse_dtype(const std::string& dtype) {
  if (dtype == "float32") return c10::kFloat;
  if (dtype == "bfloat16") return c10::kBFloat16;
  if (dtype == "float16") return c10::kHalf;
  fail(ErrorCode::Input, "dtype: expected 'auto', 'float32', 'bfloat16' or 'float16', got '", dtype, "'");
}

}  // namespace

Placement resolve_placement(const std::string& device, const std::string& dtype) {
  static const std::regex kDevice("cpu|cuda(:[0-9]{1,3})?");
  if (!std::regex_match(device, kDevice))
    fail(ErrorCode::Input, "device: expected 'cpu', 'cuda' or 'cuda:N', got '", device, "'");
  const bool automatic = dtype == "auto";
  Placement p;
  if (device == "cpu") {
    p.dtype = automatic ? c10::kFloat : parse_dtype(dtype);
    if (p.dtype == c10::kHalf)
      fail(ErrorCode::Config, "dtype 'float16' is for CUDA devices; on the CPU use 'float32' or 'bfloat16' (or 'auto')");
    return p;
  }
  const int index = device.size() > 4 ? std::stoi(device.substr(5)) : 0;
  if (!automatic) parse_dtype(dtype);  // a bad string is E_INPUT whatever the build
#ifndef M2VLA_WITH_CUDA
  (void)index;
  fail(ErrorCode::Config, "device '", device, "': this m2vla addon is a CPU-only build (compiled without M2VLA_CUDA), ",
       "so it cannot use a GPU; ", kCudaBuildHint);
#else
  const cuda::GpuInfo gpu = cuda::gpu_info(index);  // E_CONFIG with the runtime's reason when there is no such GPU
  p.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  p.name = gpu.name;
  p.capability = gpu.major * 10 + gpu.minor;
  p.dtype = automatic ? (p.capability >= 80 ? c10::kBFloat16 : c10::kHalf) : parse_dtype(dtype);
  if (p.dtype == c10::kBFloat16 && p.capability < 80)
    fail(ErrorCode::Config, "dtype 'bfloat16' needs compute capability 8.0 or newer; ", gpu.name, " (", device, ") is ",
         gpu.major, ".", gpu.minor, ": use 'float16' or 'auto'");
  return p;
#endif
}

}  // namespace m2vla
