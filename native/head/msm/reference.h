// The one libtorch definition of the MSM's L1 top-R retrieval (SPEC §3.2): what MemoryBank::query_reference
// computes (msm/bank.cc), what the CPU loop (msm/retrieval_cpu.cc) and the CUDA kernel (msm/l1_topk.cu, through
// native/cuda/cuda_glue.h) are held to, plus the random inputs of their self-check (msm/cases.cc).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "head/kernel_check.h"

namespace m2vla::head {

struct TopK {
  at::Tensor similarities;  // [B, R] float32
  at::Tensor indices;       // [B, R] int64, logical (age-order) row indices
};

// How rows of equal similarity are ordered. Only the indices of tied rows differ; similarities are the same.
enum class TopKTies {
  LowerIndex,  // a stable sort: the lower logical index first (the CUDA kernel's contract)
  TorchTopk,   // exactly what torch.topk does on the CPU, as the reference model (and the CPU loop, bit for bit)
};

// The bank is a ring: logical row i (0 = oldest) is keys[(oldest + i) % capacity], i < size. similarity =
// -10000 * (sum_d |q_d - key_d| / key_dim) in float32 (at::cdist p=1 over the float32 keys); top R descending,
// NaN first; slots beyond min(R, size) hold similarity 0 and index 0.
TopK l1_topk_reference(const at::Tensor& queries, const at::Tensor& keys, int64_t size, int64_t oldest, int64_t top_k,
                       TopKTies ties = TopKTies::LowerIndex);

struct L1TopKSizes {
  int64_t batch = 5, key_dim = 200, capacity = 300, size = 260, oldest = 170, top_k = 4;
};
// The full-size bank: 10,000 rows of 3 key layers x 896, R = 4.
constexpr L1TopKSizes kL1ProductionSizes{1, 2688, 10000, 10000, 0, 4};
// {queries [B, key_dim] float32, keys [capacity, key_dim] bf16} on the CPU. Each query is a bank row plus noise, so
// the best match is clear; the default ring wraps, ends in a partial tile and splits key_dim into partial chunks.
Tensors random_l1_topk_inputs(const L1TopKSizes& sizes, uint64_t seed);

}  // namespace m2vla::head
