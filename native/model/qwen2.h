// The Qwen2 decoder (HF Qwen2Model) from `language_model.model.*`: pre-norm layers of RMSNorm -> GQA self-attention
// with RoPE (q/k/v biases, no o bias) -> residual, RMSNorm -> SwiGLU MLP -> residual; a final RMSNorm.
// The policy path needs every hidden state and never the LM head.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "model/config.h"
#include "model/layers.h"

namespace m2vla::model {

// HF Qwen2RMSNorm: x * rsqrt(mean(x²) + eps) * weight, normalised in float32.
struct RmsNorm {
  at::Tensor weight;
  double eps;
  at::Tensor operator()(const at::Tensor& x) const;
};

// cos/sin tables [T, head_dim] for positions start..start+T-1 (HF default rope: inv_freq in float32,
// emb = cat(freqs, freqs), cast to the activation dtype).
struct Rope {
  at::Tensor cos, sin;
};

// Keys and values of every layer for incremental decoding, [B, kv_heads, capacity, head_dim] each; positions
// 0..length-1 are filled.
struct KvCache {
  std::vector<at::Tensor> keys, values;
  int64_t length = 0;
};

class Qwen2 {
 public:
  // `prefix` ends with '.', e.g. "language_model.model.". Weights are used in the dtype they were loaded in.
  Qwen2(const LlmConfig& cfg, const Weights& sd, const std::string& prefix);

  const LlmConfig& config() const { return cfg_; }
  const at::Tensor& embed_tokens() const { return embed_tokens_; }  // [vocab, hidden]
  at::Tensor embed(const at::Tensor& ids) const;                     // [B, T] int64 -> [B, T, hidden]

  // Every hidden state as HF's output_hidden_states returns them: [L+1, B, T, hidden] with index 0 = inputs_embeds,
  // 1..L-1 = decoder layer outputs and L = the final RMSNorm of the last layer's output (HF replaces it).
  // Causal attention over the whole sequence, positions 0..T-1. With `cache` (empty, capacity >= T) the keys and
  // values of every position are kept for hidden_states_after(). Differentiable when grad mode is on.
  at::Tensor hidden_states(const at::Tensor& inputs_embeds, KvCache* cache = nullptr) const;
  // The hidden states [L+1, B, T, hidden] of `inputs_embeds` placed right after the `past` positions (which it
  // attends to, causally, without recomputing them): the same values hidden_states() gives these positions for the
  // whole sequence. `past` is only read, so autograd can run through this while the cache stays frozen.
  at::Tensor hidden_states_after(const KvCache& past, const at::Tensor& inputs_embeds) const;

  // Incremental decoding (VQA): an empty cache for `capacity` positions, then extend() with the whole prompt once
  // (causal) and with one token per call after that. Returns the final-normed hidden states of the new tokens.
  KvCache make_cache(int64_t batch, int64_t capacity, at::ScalarType dtype) const;
  at::Tensor extend(const at::Tensor& inputs_embeds, KvCache& cache) const;
  // Next-token logits with the tied LM head (embed_tokens), in float32.
  at::Tensor logits(const at::Tensor& hidden) const;

 private:
  // Where a layer's attention finds the positions before the new tokens: nowhere (the sequence starts with them), a
  // cache it appends the new keys and values to (decoding), or a cache it only reads (training: an autograd suffix
  // after a frozen prefix; nothing is written in place, so autograd can record every op).
  struct History {
    KvCache* append = nullptr;
    const KvCache* read = nullptr;
    at::Tensor read_mask;  // with `read`: [T, length + T] bool, the causal mask of the new tokens over past + new
  };
  struct Layer {
    RmsNorm input_norm;
    Linear qkv;  // q_proj, k_proj, v_proj fused into one GEMM: [(heads + 2*kv_heads) * head_dim, hidden]
    Linear o_proj;
    RmsNorm post_attention_norm;
    // Onednn: gate_proj with the SiLU fused, then up_proj with the product fused (no pass over the [T, intermediate]
    // activations outside a GEMM). Otherwise gate holds gate_proj and up_proj stacked (one GEMM) and up is empty.
    Linear gate, up;
    Linear down;
  };
  Rope rope(int64_t start, int64_t length, at::ScalarType dtype) const;
  // One decoder layer. With an `append` cache, the new keys/values are stored at positions cache->length.. and the
  // queries attend to everything cached so far.
  at::Tensor layer(int64_t i, const at::Tensor& x, const Rope& rope, const History& history) const;
  // Attention output before o_proj (heads merged): o_proj is fused with the residual add.
  at::Tensor attention(int64_t i, const at::Tensor& x, const Rope& rope, const History& history) const;
  // Every layer's output in fresh tensors, stacked (the out= writes of hidden_states() are not differentiable).
  at::Tensor stacked_hidden_states(const at::Tensor& inputs_embeds, const Rope& rope, const History& history) const;
  // silu(gate) * up, before down_proj (fused with the residual add); in place unless autograd records.
  at::Tensor mlp_activation(const Layer& l, const at::Tensor& x) const;

  LlmConfig cfg_;
  at::Tensor embed_tokens_;
  at::Tensor inv_freq_;  // [head_dim/2] float32
  std::vector<Layer> layers_;
  RmsNorm norm_;
};

}  // namespace m2vla::model
