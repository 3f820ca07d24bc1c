// The frozen Prismatic VLM of M²-VLA ("Backbone"): per image, DINOv2 and SigLIP patch tokens concatenated along
// channels -> projector MLP -> the multimodal sequence
//   [ids[0]] + projected patches (primary, then wrist) + ids[1:] + action-query embeddings + [stop embedding]
// -> Qwen2 with every hidden state. Weights are converted to the model dtype once, at load; computation runs in it.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/layers.h"
#include "model/qwen2.h"
#include "model/vit.h"

namespace m2vla::model {

// PrismaticProjector "fused-gelu-mlp": fc3(GELU(fc2(GELU(fc1(x))))), exact (erf) GELU.
struct Projector {
  Linear fc1, fc2, fc3;
  Projector(const Weights& sd, int64_t vision_dim, int64_t llm_dim);
  at::Tensor operator()(const at::Tensor& x) const;
};

struct BackboneOutput {
  at::Tensor hidden_states;      // [L+1, B, seq, hidden]
  at::Tensor projected_patches;  // [B, num_patches, hidden]
  double vision_ms = 0, projector_ms = 0, llm_ms = 0;  // stage wall times
};

class Backbone {
 public:
  Backbone(const BackboneConfig& cfg, const Weights& sd);

  // pixel_values [B, 6*num_images, S, S] (per image [DINO RGB, SigLIP RGB]), input_ids [B, P] int64 (the prompt
  // including its first token; every row the same length P: padded batches are rejected by the caller's contract,
  // there is no attention mask). `reference_casts` rounds the pixel values to bfloat16 first, as the reference's
  // `.to(torch.bfloat16)` does, while computation stays in the model dtype.
  BackboneOutput forward(const at::Tensor& pixel_values, const at::Tensor& input_ids, bool reference_casts) const;

  // VQA: greedy decoding of one prompt (input_ids [1, P]) over [ids[0]] + patches + ids[1:] (no action queries),
  // with a KV cache and the tied LM head. Stops after `max_new_tokens` or at the first id of `stop_ids`
  // (which is included in the result).
  std::vector<int64_t> generate(const at::Tensor& pixel_values, const at::Tensor& input_ids, int64_t max_new_tokens,
                                const std::vector<int64_t>& stop_ids, bool reference_casts) const;

  const BackboneConfig& config() const { return cfg_; }
  at::ScalarType dtype() const { return dtype_; }
  c10::Device device() const { return action_queries_.device(); }
  // E_INPUT unless every id of input_ids [B, P] (int64, on the CPU) is in the vocabulary.
  void check_token_ids(const at::Tensor& input_ids) const;

  // Training (native/train) splits forward() at the action queries. The positions before them (first token,
  // patches, prompt) never depend on a trainable tensor (causal attention, frozen weights), so they run once
  // without autograd and keep their keys and values; only the action queries run again, with autograd, after them.
  struct Prefix {
    KvCache cache;             // keys and values of every prefix position in every layer
    at::Tensor hidden_states;  // [L+1, B, NP+P, D]
  };
  Prefix prefix(const at::Tensor& pixel_values, const at::Tensor& input_ids) const;
  // Hidden states [L+1, B, T, D] of `embeds` [B, T, D] (any float dtype) placed right after the prefix.
  at::Tensor hidden_states_after(const Prefix& prefix, const at::Tensor& embeds) const;
  // forward()'s hidden states with `action_queries` [NT, D] (any float dtype) in place of the checkpoint's: the
  // whole sequence in one pass, the yardstick of the split.
  at::Tensor hidden_states(const at::Tensor& pixel_values, const at::Tensor& input_ids, const at::Tensor& action_queries) const;

 private:
  at::Tensor vision(const at::Tensor& pixel_values) const;  // -> fused patch features [B, num_patches, dino+siglip]
  // Projected patches [B, num_patches, D]; adds the stage times to `timing` when given.
  at::Tensor patches(const at::Tensor& pixel_values, bool reference_casts, BackboneOutput* timing = nullptr) const;
  // [ids[0]] + patches + ids[1:], then the action queries [NT, D] and the stop embedding when they are given.
  at::Tensor sequence(const at::Tensor& input_ids, const at::Tensor& patches, const at::Tensor& action_queries) const;
  void check_inputs(const at::Tensor& pixel_values, const at::Tensor& input_ids) const;

  BackboneConfig cfg_;
  at::ScalarType dtype_;
  Vit featurizer_, fused_featurizer_;
  Projector projector_;
  Qwen2 llm_;
  at::Tensor action_queries_;  // [num_action_queries, hidden]
};

// Reads the VLM checkpoint (model.safetensors, a sharded index, or a torch.save zip) and builds the backbone with
// the tensors it uses converted to `dtype` and placed on `device` (each copied once), its linears prepared for
// `linear`; errors are E_CHECKPOINT / E_CONFIG. The file's mapping is released once every weight is repacked.
std::shared_ptr<const Backbone> load_backbone(const std::string& path, const BackboneConfig& cfg, at::ScalarType dtype,
                                              c10::Device device = c10::kCPU, LinearKernel linear = LinearKernel::Aten);

}  // namespace m2vla::model
