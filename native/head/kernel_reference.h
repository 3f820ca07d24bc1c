// What each custom kernel computes, written as plain libtorch ops (any device), plus the random inputs of their
// self-checks (kernel_check.h). The CUDA kernels (native/cuda/kernels.h) implement exactly these contracts.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "head/kernel_check.h"

namespace m2vla::head {

// ---- Fused MoL attention (SPEC §3.1): the three-branch mix that feeds o_proj --------------------------------------
struct MolAttentionInputs {
  at::Tensor q, k_self, v_self;     // [B, T, H, hd], q and k_self rotated
  at::Tensor k_adapter, v_adapter;  // [B, NT+1, H, hd], k rotated
  at::Tensor gate;                  // [B, NT+1, H] head-wise gate logits
  at::Tensor k_task, v_task;        // [B, NP, H, hd], k rotated
  at::Tensor gating_factor;         // [1] float32: the block's g (vision logits are scaled by tanh(g))
};

// Views, without copies, of the projection outputs in the action head's layout: qkv [B, T, 3D] = q | k_self | v_self,
// adapter [B, NT+1, 2D+H] = k | gate | v, task [B, NP, 2D] = k | v, with D = heads * head_dim.
MolAttentionInputs mol_attention_views(const at::Tensor& qkv, const at::Tensor& adapter, const at::Tensor& task,
                                       const at::Tensor& gating_factor, int64_t heads);

// [B, T, H, hd] float32: (softmax(q·k_selfᵀ/√hd)·v_self + sigmoid(mean_j gate)·softmax(q·k_adapterᵀ/√hd)·v_adapter
// + softmax(tanh(g)·q·k_taskᵀ/√hd)·v_task) / 3, computed in float32.
at::Tensor mol_attention_reference(const MolAttentionInputs& in);

// The layout the CUDA kernel reads (native/cuda/kernels.h): every bf16 view with head_dim contiguous and even strides
// and offsets (bf16x2 loads). mol_attention_views() of the head's projections has it exactly when both the head count
// and head_dim are even: the adapter rows are 2D+H wide and its values start at column D+H. The policy keeps a model
// outside it on libtorch ops (policy.cc), the CUDA glue refuses other views, and a CPU test ties the two rules.
bool mol_layout_fits(int64_t heads, int64_t head_dim);
bool mol_kernel_layout(const MolAttentionInputs& in);

struct MolAttentionSizes {
  int64_t batch = 2, heads = 4, head_dim = 40, queries = 8, adapter_keys = 37, task_keys = 70;
};
// {qkv, adapter, task, gating_factor} on the CPU (bf16 projections, float32 g), deterministic in the seed. The
// default sizes cover partial 32-key tiles, several tiles per branch and a head_dim that is not a multiple of 32.
// The full-size head: 14 heads x 64, chunk 8, NT+1 = 65 adapter tokens, NP = 512 vision tokens (two cameras).
constexpr MolAttentionSizes kMolProductionSizes{1, 14, 64, 8, 65, 512};
Tensors random_mol_attention_inputs(const MolAttentionSizes& sizes, uint64_t seed);

// ---- MSM retrieval (SPEC §3.2) -------------------------------------------------------------------------------------
struct TopK {
  at::Tensor similarities;  // [B, R] float32
  at::Tensor indices;       // [B, R] int64, logical (age-order) row indices
};

// The bank is a ring: logical row i (0 = oldest) is keys[(oldest + i) % capacity], i < size. similarity =
// -10000 * (sum_d |q_d - key_d| / key_dim) in float32; top R descending, ties to the lower logical index, NaN first;
// slots beyond min(R, size) hold similarity 0 and index 0.
TopK l1_topk_reference(const at::Tensor& queries, const at::Tensor& keys, int64_t size, int64_t oldest, int64_t top_k);

struct L1TopKSizes {
  int64_t batch = 5, key_dim = 200, capacity = 300, size = 260, oldest = 170, top_k = 4;
};
// The full-size bank: 10,000 rows of 3 key layers x 896, R = 4.
constexpr L1TopKSizes kL1ProductionSizes{1, 2688, 10000, 10000, 0, 4};
// {queries [B, key_dim] float32, keys [capacity, key_dim] bf16} on the CPU. Each query is a bank row plus noise, so
// the best match is clear; the default ring wraps, ends in a partial tile and splits key_dim into partial chunks.
Tensors random_l1_topk_inputs(const L1TopKSizes& sizes, uint64_t seed);

// FIFO append into the ring: new row i goes to (offset + i) % capacity, rounded to the bank's dtype; with more new
// rows than the capacity only the newest `capacity` are written.
void bank_append_reference(at::Tensor& keys, at::Tensor& values, int64_t offset, const at::Tensor& new_keys,
                           const at::Tensor& new_values);

struct BankAppendSizes {
  int64_t capacity = 50, key_dim = 24, value_dim = 56, offset = 37, count = 20;
};
// {keys [capacity, key_dim] bf16, values [capacity, value_dim] bf16, new_keys, new_values float32} on the CPU.
Tensors random_bank_append_inputs(const BankAppendSizes& sizes, uint64_t seed);

}  // namespace m2vla::head
