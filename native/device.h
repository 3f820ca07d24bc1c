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
  c10::ScalarType dtype = c10::kFloat;  // of the activations and of every weight but int8 ones
  bool int8 = false;         // dtype 'int8': the VLM's linears in W8A8 int8 (model/layers.h), the rest in bfloat16
  std::string name = "CPU";  // the GPU's name on CUDA
  int capability = 0;        // CUDA compute capability x 10 (86 = 8.6); 0 on the CPU
  std::string reason;        // why this dtype: what 'auto' saw, or that it was asked for
  std::string warning;       // set when the dtype runs far below this CPU's float32 speed (bfloat16 without oneDNN's)
};

// The CPU's matrix engines as oneDNN can use them (AMX only where the kernel grants this process the tile state).
struct CpuMatrixFeatures {
  bool amx_bf16 = false, amx_int8 = false, avx512_bf16 = false, avx512_vnni = false;
  // AVX512-BF16 without AMX: the flag does not tell whether bfloat16 GEMMs are faster (measured 0.53x float32 on one
  // such Xeon, 4.3x on an AMD Zen 5), so cpu_matrix_features() measures bfloat16 and float32 GEMM throughput here
  // (GFLOP/s; 0 = not measured).
  double bf16_gflops = 0, fp32_gflops = 0;
  // oneDNN's bfloat16 linears (model::LinearKernel::Onednn) need AVX512-BW/VL/DQ or AVX-NE-CONVERT: its weight
  // reorder refuses other CPUs, where bfloat16 runs through at::linear (AVX2-only CPUs: AMD Zen 2/3, older Intel).
  bool onednn_bf16 = false;
};
// The first call measures (~2-6 ms, once per process): call it first off the JS thread (the addon's
// probeCpuMatrix() worker, which loadPolicy awaits).
CpuMatrixFeatures cpu_matrix_features();

// device: "cpu" | "cuda" | "cuda:N"; dtype: "auto" | "float32" | "bfloat16" | "float16" | "int8".
// "auto" on the CPU is bfloat16 where it has AMX-BF16 (bf16 GEMMs on AMX tiles run ~6x float32's) or where its
// bf16 GEMMs measured >= kAutoBf16Speedup x float32's, and float32 elsewhere; on CUDA bfloat16 on compute capability >= 8.0,
// float16 below. float16 on the CPU is refused (E_CONFIG): libtorch's CPU half-precision matmuls are slow and the
// CPU kernels of the head are float32/bfloat16 only. int8 needs the CPU and AVX512-VNNI or AMX-INT8 (E_CONFIG
// otherwise). `cpu` is the CPU to decide for (this machine's by default; tests pass others).
constexpr double kAutoBf16Speedup = 1.5;
Placement resolve_placement(const std::string& device, const std::string& dtype,
                            const CpuMatrixFeatures& cpu = cpu_matrix_features());

// The build command a CUDA user runs, for error messages and `m2vla doctor`.
extern const char* const kCudaBuildHint;

}  // namespace m2vla
