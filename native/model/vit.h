// One timm VisionTransformer for both towers of the fused backbone:
//   DINOv2-reg4 (`vision_backbone.featurizer.*`): class token + register tokens, pos_embed on patches only
//     (timm no_embed_class), LayerScale;
//   SigLIP (`vision_backbone.fused_featurizer.*`): patches only, pos_embed on patches; the attn_pool (MAP) head is
//     never used.
// Prismatic calls timm's get_intermediate_layers(n={depth-2}): the output of block `take_block` (the second-to-last),
// prefix tokens dropped, without the final norm. Blocks after `take_block` are not loaded.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/layers.h"

namespace m2vla::model {

class Vit {
 public:
  // `prefix` ends with '.', e.g. "vision_backbone.featurizer."; `image_size` fixes the patch grid pos_embed must match.
  Vit(const VitConfig& cfg, const Weights& sd, const std::string& prefix, int64_t image_size);

  // images [N, 3, S, S] -> patch tokens [N, (S/patch)^2, embed_dim] of block take_block.
  at::Tensor forward(const at::Tensor& images) const;

 private:
  struct Block {
    LayerNorm norm1;
    Linear qkv, proj;
    std::optional<at::Tensor> ls1;  // LayerScale [dim]
    LayerNorm norm2;
    Linear fc1, fc2;
    std::optional<at::Tensor> ls2;
  };
  at::Tensor attention(const Block& b, const at::Tensor& x) const;  // before proj
  at::Tensor embed(const at::Tensor& images) const;

  VitConfig cfg_;
  at::Tensor patch_weight_, patch_bias_;  // patch_embed.proj: Conv2d(3, dim, patch, stride=patch)
  at::Tensor pos_embed_;                  // [1, grid^2, dim]
  at::Tensor prefix_tokens_;              // [1, num_prefix_tokens, dim]: [cls, reg...] (undefined if none)
  std::vector<Block> blocks_;
};

}  // namespace m2vla::model
