// The head block of the "without MoL" ablation (paper Table V; issue #9: "without MoL = a single cross-attention to
// the last layer's features"). The paper's ablation text was not available here (only its abstract: MoL "selectively
// extracts task-critical information from dense semantic features"); what MoL selects is *which layers* feed each
// block and *how much* of each token group (the tanh(g) vision scale, the head-wise gate, three softmaxes). This block
// removes exactly that selection and keeps the rest of a MoL block:
//
//   tokens = [vision_L (NP) ; AQ_L (NT) ; proprio (1)]   of the LAST hidden state the full head reads (L = number of
//            blocks: MoL's last block reads it too), the same tokens for every block
//   mix    = softmax(RoPE(q_proj x) · RoPE(k_last tokens)^T / sqrt(hd)) · v_last tokens   (one softmax over all tokens)
//   then the MoL block's tail (block_output): out = o_proj(mix) + MSM context, x = FFN(out + x)
//
// RoPE keeps MoL's convention (queries at chunk positions 0..chunk-1, keys at token positions 0..NP+NT): at inference
// every chunk row of the initial latent is the same constant, and without a position on the queries the rows would
// stay identical through every block (one action repeated over the chunk). There is no self-attention branch (MoL's
// third branch) and no gate. Parameters: q_proj, k_last, v_last, o_proj, ffn.0, ffn.1 per block.
//
// As in MoL's fused path, the values are never projected per token: the weights of a query sum to one, so
// sum_j w_j (W_v t_j + b) = W_v (sum_j w_j t_j) + b. The weighted sums are taken over the raw tokens and projected once
// per query and head, which drops the per-token v_last projection (half of the block's FLOPs at NP + NT + 1 = 553
// tokens) and is plain differentiable ops, so training uses the same code.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "head/layers.h"
#include "head/mol/block.h"
#include "head/param_table.h"
#include "head/rope.h"
#include "io/state_dict.h"

namespace m2vla::head {

struct CrossBlock {
  int64_t dim = 0, heads = 0, head_dim = 0;
  Linear q_proj;
  Linear kv_last;  // k_last | v_last: [2D, D]
  Linear o_proj;
  LayerNorm ffn_norm;
  Linear ffn_fc;

  // A no-mol checkpoint (`prefix` e.g. "model.mlp_resnet_blocks.3.").
  static CrossBlock load(const io::StateDict& sd, const std::string& prefix, int64_t dim, int64_t heads, at::ScalarType dtype);
  // Training a no-mol head from a full one: q_proj, o_proj and the FFN are the MoL block's, k_last / v_last start from
  // its vision branch (k_task / v_task), so every variant starts from the same weights where they share them.
  static CrossBlock from_mol(const io::StateDict& sd, const std::string& prefix, int64_t dim, int64_t heads, at::ScalarType dtype);
  template <class Self>  // the groups of cross_block_table(), as MolBlock::slots
  static SlotsOf<Self> slots(Self& b) {
    return {{"q_proj", &b.q_proj}, {"kv_last", &b.kv_last}, {"o_proj", &b.o_proj}, {"ffn.0", &b.ffn_norm}, {"ffn.1", &b.ffn_fc}};
  }
};

// The rotated keys [B, H, n, head_dim] of the block's tokens [B, n, D]: they do not depend on the latent, so a forward
// computes them once for every network evaluation.
at::Tensor cross_keys(const CrossBlock& block, const at::Tensor& tokens, const RopeTable& token_rope);

// x [B, chunk, D] -> [B, chunk, D] from the keys and the raw tokens. `h_memory` as mol_forward (undefined without MSM).
// `trace` gets the block tail's intermediates and the attention weights in `ca_v_weights` ([B, H, chunk, n]).
at::Tensor cross_forward(const CrossBlock& block, const at::Tensor& x, const at::Tensor& keys, const at::Tensor& tokens,
                         const at::Tensor& h_memory, const RopeTable& chunk_rope, BlockTrace* trace = nullptr);

}  // namespace m2vla::head
