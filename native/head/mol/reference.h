// The one libtorch definition of the MoL three-branch attention (SPEC §3.1): what the head's reference path computes
// (mol/block.cc), what the CPU-fused loop (mol/fused_cpu.cc) and the CUDA kernel (mol/cuda.cu, through
// native/cuda/cuda_glue.h) are held to, plus the random inputs of their self-check (mol/cases.cc).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "head/kernel_check.h"

namespace m2vla::head {

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

// The intermediates the head's trace records (BlockTrace, named like the fixture's expected.head.block{N}.*).
struct MolAttentionWeights {
  at::Tensor tanh_g;                // [1] in the compute dtype
  at::Tensor sa, ca_s, ca_v;        // softmax weights [B, H, T, n] of the self, adapter and vision branches
  at::Tensor ca_s_gate;             // [B, H, 1, 1] sigmoid(mean_j gate)
};

// [B, T, H, hd] in `compute`: (softmax(q·k_selfᵀ/√hd)·v_self + sigmoid(mean_j gate)·softmax(q·k_adapterᵀ/√hd)·v_adapter
// + softmax(q·k_taskᵀ·tanh(g)/√hd)·v_task) / 3, in the reference code's op order, every op in `compute`: float32
// for the kernels' self-check (they accumulate in float32), the head's dtype in the head (as the reference model
// runs). Differentiable (training's plain path). `weights` (may be null) receives the intermediates.
at::Tensor mol_attention_reference(const MolAttentionInputs& in, at::ScalarType compute = at::kFloat,
                                   MolAttentionWeights* weights = nullptr);

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

}  // namespace m2vla::head
