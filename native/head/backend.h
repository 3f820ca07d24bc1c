// Which implementation of a head kernel contract (MoL attention, MSM top-R) runs. Each kernel has its own: on a GPU
// one kernel may pass its self-check and the other not (policy.cc).
#pragma once

namespace m2vla::head {

enum class Backend {
  Reference,  // the libtorch reference (mol/reference.h, msm/reference.h): any device, differentiable, traceable
  CpuFused,   // the fused CPU loops (mol/fused_cpu.cc, msm/retrieval_cpu.cc)
  Cuda,       // the CUDA kernels (mol/cuda.cu, msm/l1_topk.cu); CUDA builds, bfloat16 head on a GPU
};

}  // namespace m2vla::head
