// One Mixture-of-Layers block (reference MLPResNetBlock_Pro with the head-wise gate, SPEC §3.1). The action
// latent x [B, chunk, D] attends, with three separate softmaxes whose contexts are averaged, to
//   SA   itself                                   (q & k_self RoPE positions 0..chunk-1)
//   CA_S [AQ_l ; proprio] (NT+1 tokens)          (k_adapter RoPE 0..NT; context × sigmoid(mean gate) per head)
//   CA_V vision_l (NP tokens), logits × tanh(g)  (k_task RoPE 0..NP-1)
// then out = o_proj(mix) + MSM context, x = FFN(out + x) with FFN = LayerNorm → Linear → ReLU (no outer residual).
// k_memory, v_memory and film_gen exist in checkpoints but the reference forward never uses them: not loaded.
//
// Three backends (head/backend.h) that agree to float rounding (tests: 1e-5):
// - Reference: the projections (those of one input share a GEMM through stacked weights, same dot products), head
//   views and RoPE, then the one libtorch definition of the attention, mol_attention_reference (mol/reference.h);
//   yields every intermediate.
// - Cuda: the same projections and RoPE feeding the fused CUDA kernel (mol/cuda.cu) for the three-branch attention;
//   CUDA builds with a bfloat16 head on a GPU only.
// - CpuFused (fused_cpu.cc): one pass over the queries per (batch, head) computes the three logit rows and softmaxes, reading keys in
//   place from the projection outputs (no reshape/transpose/RoPE copy/concat). The conditioning values are never
//   projected per token: sum_j w_j (W_v h_j + b) = W_v (sum_j w_j h_j) + b because the weights sum to one, so the
//   weighted sums are taken over the raw tokens (one GEMM per branch) and projected once per query and head. For
//   the 512 vision tokens that drops the v_task projection, half of the head's FLOPs (SPEC §3.1 shapes).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "head/backend.h"
#include "head/layers.h"
#include "head/param_table.h"
#include "head/rope.h"
#include "io/state_dict.h"

namespace m2vla::head {

struct MolBlock {
  int64_t dim = 0, heads = 0, head_dim = 0;
  Linear qkv_self;    // q_proj | k_self | v_self stacked: [3D, D]
  Linear kv_adapter;  // k_adapter (D key rows + `heads` gate rows) | v_adapter: [2D + H, D]
  Linear kv_task;     // k_task | v_task: [2D, D]
  Linear o_proj;
  at::Tensor gating_factor;  // [1] float32 g: vision logits are scaled by the static factor tanh(g)
  LayerNorm ffn_norm;
  Linear ffn_fc;

  // `prefix` e.g. "model.mlp_resnet_blocks.3."; heads = k_adapter rows - D (head-wise gate: one column per head).
  static MolBlock load(const io::StateDict& sd, const std::string& prefix, int64_t dim, int64_t heads, at::ScalarType dtype);
  float tanh_g() const;
  // The groups of mol_block_table(): mutable for loading, read-only for parameters() and the export.
  template <class Self>
  static SlotsOf<Self> slots(Self& b) {
    return {{"qkv_self", &b.qkv_self}, {"kv_adapter", &b.kv_adapter}, {"kv_task", &b.kv_task}, {"o_proj", &b.o_proj},
            {"gating_factor", &b.gating_factor}, {"ffn.0", &b.ffn_norm}, {"ffn.1", &b.ffn_fc}};
  }
};

// RoPE tables for the three position ranges a block uses.
struct MolTables {
  RopeTable chunk, adapter, task;  // 0..chunk-1, 0..NT, 0..NP-1
};

// What a block needs of its conditioning tokens. It does not depend on the action latent, so a forward computes it
// once and every denoising step reuses it.
struct MolCondition {
  Backend backend;
  at::Tensor adapter;  // Reference, Cuda: [B, NT+1, 2D+H] keys | gate scores | values. CpuFused: [B, NT+1, D+H] rotated keys | gate
  at::Tensor task;     // Reference, Cuda: [B, NP, 2D] keys | values. CpuFused: [B, NP, D] rotated keys
  at::Tensor adapter_tokens, task_tokens;  // CpuFused: the [AQ; proprio] and vision tokens, [B, n, D]
};

// Every intermediate of the Reference path, named like the fixture's `expected.head.block{N}.*`.
struct BlockTrace {
  at::Tensor in, tanh_g, sa_weights, ca_s_weights, ca_s_gate, ca_v_weights, attn_mix, o_proj_out, mem_weights,
      mem_context, ffn_in, out;
};

MolCondition mol_condition(const MolBlock& block, const at::Tensor& h_adapter, const at::Tensor& h_task,
                           const MolTables& tables, Backend backend);

// x [B, chunk, D] -> [B, chunk, D]. `h_memory` [B, R, chunk*D] is the MSM's projected retrieval (undefined without
// MSM). `trace` (Reference backend only) receives the intermediates.
at::Tensor mol_forward(const MolBlock& block, const at::Tensor& x, const MolCondition& cond, const at::Tensor& h_memory,
                       const MolTables& tables, BlockTrace* trace = nullptr);

// The tail every head block shares after its attention: out = o_proj(mix) + MSM context (none when `h_memory` is
// undefined: the no-msm ablation), x = FFN(out + x). Fills in, o_proj_out, mem_*, ffn_in and out of `trace`.
at::Tensor block_output(const Linear& o_proj, const LayerNorm& ffn_norm, const Linear& ffn_fc, const at::Tensor& x,
                        const at::Tensor& mix, const at::Tensor& h_memory, BlockTrace* trace);

// The fused attention: mix [B, chunk, D] (o_proj input) from the q/k/v projection [B, chunk, 3D] (q and k rotated)
// and a CpuFused condition.
at::Tensor mol_attention_fused(const MolBlock& block, const at::Tensor& qkv, const MolCondition& cond);

}  // namespace m2vla::head
