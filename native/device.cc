#include "device.h"

#include <ATen/ATen.h>
#include <ATen/cpu/Utils.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
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
  if (dtype == "bfloat16" || dtype == "int8") return c10::kBFloat16;
  if (dtype == "float16") return c10::kHalf;
  fail(ErrorCode::Input, "dtype: expected 'auto', 'float32', 'bfloat16', 'float16' or 'int8', got '", dtype, "'");
}

bool capability(const std::unordered_map<std::string, c10::IValue>& caps, const char* name) {
  auto it = caps.find(name);
  return it != caps.end() && it->second.isBool() && it->second.toBool();
}

// GFLOP/s of a [128, 1024] x [1024, 1024] GEMM (one of the VLM's linears at a short sequence), best of 3 after a
// warm-up: the probe of the 'auto' rule on CPUs without AMX (~2-6 ms for both dtypes). The best of 3 keeps a busy
// neighbour from flipping it. Constant operands: the values do not change a GEMM's speed, and at::randn would take
// the global generator's lock.
double gemm_gflops(at::ScalarType dtype) {
  constexpr int64_t m = 128, k = 1024, n = 1024;
  at::InferenceMode guard;
  const auto a = at::full({m, k}, 0.5, at::TensorOptions(dtype)), b = at::full({k, n}, 0.25, at::TensorOptions(dtype));
  at::mm(a, b);
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    at::mm(a, b);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * m * k * n / s / 1e9);
  }
  return best;
}

CpuMatrixFeatures detect_cpu_matrix_features() {
  const auto caps = at::cpu::get_cpu_capabilities();
  // init_amx() asks the kernel for the AMX tile state (arch_prctl), as oneDNN does: CPUID alone is not enough.
  const bool amx = (capability(caps, "amx_bf16") || capability(caps, "amx_int8")) && at::cpu::init_amx();
  CpuMatrixFeatures f{amx && capability(caps, "amx_bf16"), amx && capability(caps, "amx_int8"),
                      capability(caps, "avx512_bf16"), capability(caps, "avx512_vnni")};
  f.onednn_bf16 = (capability(caps, "avx512_bw") && capability(caps, "avx512_vl") && capability(caps, "avx512_dq")) ||
                  capability(caps, "avx_ne_convert");
  if (f.avx512_bf16 && !f.amx_bf16) {
    f.fp32_gflops = gemm_gflops(at::kFloat);
    f.bf16_gflops = gemm_gflops(at::kBFloat16);
  }
  return f;
}

std::string fixed(double v, int decimals) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace

CpuMatrixFeatures cpu_matrix_features() {
  static const CpuMatrixFeatures features = detect_cpu_matrix_features();
  return features;
}

Placement resolve_placement(const std::string& device, const std::string& dtype, const CpuMatrixFeatures& cpu) {
  static const std::regex kDevice("cpu|cuda(:[0-9]{1,3})?");
  if (!std::regex_match(device, kDevice))
    fail(ErrorCode::Input, "device: expected 'cpu', 'cuda' or 'cuda:N', got '", device, "'");
  const bool automatic = dtype == "auto";
  Placement p;
  p.reason = "asked for";
  if (device == "cpu") {
    if (automatic) {
      const bool measured = cpu.bf16_gflops > 0 && cpu.fp32_gflops > 0;
      const bool bf16 = cpu.amx_bf16 || (measured && cpu.bf16_gflops >= kAutoBf16Speedup * cpu.fp32_gflops);
      p.dtype = bf16 ? c10::kBFloat16 : c10::kFloat;
      if (cpu.amx_bf16)
        p.reason = "auto: this CPU has AMX-BF16, where bfloat16 matmuls run several times faster than float32";
      else if (measured)
        p.reason = std::string("auto: this CPU has no AMX-BF16, ") + (bf16 ? "but" : "and") +
                   " its bfloat16 matmuls measured " + fixed(cpu.bf16_gflops, 0) + " GFLOP/s against float32's " +
                   fixed(cpu.fp32_gflops, 0) + (bf16 ? " (at least " : " (under ") + fixed(kAutoBf16Speedup, 1) +
                   "x), so " + (bf16 ? "bfloat16" : "float32");
      else
        p.reason = cpu.onednn_bf16
                       ? "auto: this CPU has neither AMX-BF16 nor AVX512-BF16, and without them bfloat16 matmuls are "
                         "slower than float32"
                       : "auto: this CPU has no AVX-512, so bfloat16 matmuls run on ATen's fallback kernel, ~50x "
                         "slower than float32";
      return p;
    }
    p.dtype = parse_dtype(dtype);
    if (p.dtype == c10::kHalf)
      fail(ErrorCode::Config, "dtype 'float16' is for CUDA devices; on the CPU use 'float32', 'bfloat16' or 'int8' (or 'auto')");
    p.int8 = dtype == "int8";
    // Measured on an AMD Zen 3 (AVX2, torch 2.13, 2 threads): bfloat16 GEMMs 1.1 GFLOP/s against float32's 60.
    if (dtype == "bfloat16" && !cpu.onednn_bf16)
      p.warning = "dtype 'bfloat16' on this CPU (no AVX-512, no AVX-NE-CONVERT): oneDNN's bfloat16 kernels cannot run "
                  "here, and ATen's fallback runs bfloat16 matmuls ~50x slower than float32; results are correct, "
                  "but use 'float32' (or 'auto') for speed";
    if (p.int8 && !cpu.avx512_vnni && !cpu.amx_int8)
      fail(ErrorCode::Config, "dtype 'int8' needs a CPU with AVX512-VNNI or AMX-INT8 (oneDNN's int8 matmuls); this one has ",
           "neither: use ", cpu.onednn_bf16 ? "'bfloat16', 'float32'" : "'float32'", " or 'auto'");
    return p;
  }
  const int index = device.size() > 4 ? std::stoi(device.substr(5)) : 0;
  if (!automatic) parse_dtype(dtype);  // a bad string is E_INPUT whatever the build
  if (dtype == "int8")
    fail(ErrorCode::Config, "dtype 'int8' runs on the CPU only (oneDNN's int8 kernels); on device '", device,
         "' use 'bfloat16', 'float16' or 'auto'");
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
  if (automatic) p.reason = p.capability >= 80 ? "auto: compute capability 8.0 or newer" : "auto: compute capability below 8.0";
  if (p.dtype == c10::kBFloat16 && p.capability < 80)
    fail(ErrorCode::Config, "dtype 'bfloat16' needs compute capability 8.0 or newer; ", gpu.name, " (", device, ") is ",
         gpu.major, ".", gpu.minor, ": use 'float16' or 'auto'");
  return p;
#endif
}

}  // namespace m2vla
