// Plain dims of the frozen VLM, mirroring BackboneConfig / VitConfig / LlmConfig of lib/config.ts (the one place
// that reads run directories). The addon fills them from the JS object; model code builds from them.
#pragma once
#include <cstdint>

namespace m2vla::model {

struct VitConfig {
  enum class Kind { Dinov2, Siglip };
  Kind kind = Kind::Dinov2;
  int64_t embed_dim = 0;
  int64_t depth = 0;
  int64_t num_heads = 0;
  int64_t mlp_hidden = 0;
  int64_t patch_size = 14;
  bool class_token = false;
  int64_t reg_tokens = 0;
  bool layer_scale = false;
  int64_t take_block = 0;  // output of this block is used (timm get_intermediate_layers: the second-to-last)

  int64_t num_prefix_tokens() const { return (class_token ? 1 : 0) + reg_tokens; }
};

struct LlmConfig {
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-6;
  int64_t vocab_size = 0;
};

struct BackboneConfig {
  int64_t image_size = 0;
  int64_t num_images = 0;
  VitConfig featurizer;        // DINOv2 (vision_backbone.featurizer.*)
  VitConfig fused_featurizer;  // SigLIP (vision_backbone.fused_featurizer.*)
  LlmConfig llm;
  int64_t num_action_queries = 0;
  int64_t aq_placeholder_id = 1;
  int64_t stop_token_id = 2;

  int64_t patches_per_image() const { return (image_size / featurizer.patch_size) * (image_size / featurizer.patch_size); }
  int64_t num_patches() const { return num_images * patches_per_image(); }
  // Pixel channels of one observation: per image [DINO RGB, SigLIP RGB].
  int64_t pixel_channels() const { return 6 * num_images; }
};

}  // namespace m2vla::model
