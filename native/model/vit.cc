#include "model/vit.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "error.h"
#include "model/attention.h"

namespace m2vla::model {
namespace {

// timm LayerScale: Prismatic renames `gamma` to `scale_factor` (HF's loader rewrites any name containing "gamma");
// checkpoints saved straight from timm keep `gamma`.
at::Tensor layer_scale(const Weights& sd, const std::string& name, int64_t dim) {
  std::string renamed = name + ".scale_factor", timm = name + ".gamma";
  return sd.get(sd.has(timm) && !sd.has(renamed) ? timm : renamed, {dim});
}

// x + ls * l(in), in place in x unless autograd records; without LayerScale the add fuses into the GEMM. (Folding
// ls into the weights would fuse it too, but rounding ls * W to bfloat16 measured 1.3x the bf16 error on fixture A.)
at::Tensor residual(const Linear& l, const std::optional<at::Tensor>& ls, const at::Tensor& in, at::Tensor x) {
  if (!ls) return l.plus(in, x);
  return at::GradMode::is_enabled() ? x + l(in) * *ls : x.addcmul_(l(in), *ls);
}

}  // namespace

Vit::Vit(const VitConfig& cfg, const Weights& sd, const std::string& prefix, int64_t image_size) : cfg_(cfg) {
  const int64_t dim = cfg.embed_dim, p = cfg.patch_size;
  if (dim % cfg.num_heads != 0) fail(ErrorCode::Config, prefix, ": embed_dim ", dim, " is not divisible by num_heads ", cfg.num_heads);
  if (image_size % p != 0) fail(ErrorCode::Config, prefix, ": image size ", image_size, " is not a multiple of the patch size ", p);
  if (cfg.take_block < 0 || cfg.take_block >= cfg.depth)
    fail(ErrorCode::Config, prefix, ": take_block ", cfg.take_block, " is not a block index in 0..", cfg.depth - 1);
  const int64_t grid = image_size / p;

  patch_weight_ = sd.get(prefix + "patch_embed.proj.weight", {dim, 3, p, p});
  patch_bias_ = sd.get(prefix + "patch_embed.proj.bias", {dim});
  // No pos_embed interpolation (timm dynamic_img_size is off in Prismatic): the table must match the patch grid.
  pos_embed_ = sd.get(prefix + "pos_embed");
  if (pos_embed_.sizes() != at::IntArrayRef({1, grid * grid, dim}))
    fail(ErrorCode::Checkpoint, sd.source(), ": tensor '", prefix, "pos_embed' has shape ", pos_embed_.sizes(), ", expected [1, ",
         grid * grid, ", ", dim, "] (a ", grid, "x", grid, " patch grid for ", image_size, "px images, patch ", p, ")");
  std::vector<at::Tensor> prefix_tokens;
  if (cfg.class_token) prefix_tokens.push_back(sd.get(prefix + "cls_token", {1, 1, dim}));
  if (cfg.reg_tokens > 0) prefix_tokens.push_back(sd.get(prefix + "reg_token", {1, cfg.reg_tokens, dim}));
  if (!prefix_tokens.empty()) prefix_tokens_ = at::cat(prefix_tokens, 1);

  for (int64_t i = 0; i <= cfg.take_block; ++i) {
    const std::string b = prefix + "blocks." + std::to_string(i) + ".";
    std::optional<at::Tensor> ls1, ls2;
    if (cfg.layer_scale) {
      ls1 = layer_scale(sd, b + "ls1", dim);
      ls2 = layer_scale(sd, b + "ls2", dim);
    }
    blocks_.push_back(Block{
        LayerNorm::load(sd, b + "norm1", dim, 1e-6),
        Linear::load(sd, b + "attn.qkv", 3 * dim, dim),
        Linear::load(sd, b + "attn.proj", dim, dim),
        ls1,
        LayerNorm::load(sd, b + "norm2", dim, 1e-6),
        Linear::load(sd, b + "mlp.fc1", cfg.mlp_hidden, dim),
        Linear::load(sd, b + "mlp.fc2", dim, cfg.mlp_hidden),
        ls2,
    });
  }
}

// Patchify (conv with stride = patch), add pos_embed to the patches, then prepend [cls, reg...] (timm no_embed_class;
// SigLIP has no prefix tokens, so both orders agree).
at::Tensor Vit::embed(const at::Tensor& images) const {
  at::Tensor x = at::conv2d(images, patch_weight_, patch_bias_, cfg_.patch_size);  // [N, dim, g, g]
  x = x.flatten(2).transpose(1, 2) + pos_embed_;                                   // [N, g*g, dim]
  if (!prefix_tokens_.defined()) return x;
  return at::cat({prefix_tokens_.expand({x.size(0), -1, -1}), x}, 1);
}

at::Tensor Vit::attention(const Block& b, const at::Tensor& x) const {
  const int64_t n = x.size(0), t = x.size(1), h = cfg_.num_heads, hd = cfg_.embed_dim / h;
  at::Tensor projected = b.qkv(x);  // [N, T, 3*dim]
  if (gemm_attention_applies(projected)) {
    auto qkv = projected.chunk(3, -1);
    return gemm_attention(qkv[0], qkv[1], qkv[2], h, h, /*causal=*/false);
  }
  // [N, T, 3*dim] -> 3 x [N, heads, T, head_dim]; SDPA's default scale is head_dim^-0.5, as in timm.
  at::Tensor qkv = projected.view({n, t, 3, h, hd}).permute({2, 0, 3, 1, 4});
  at::Tensor out = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]);
  return out.transpose(1, 2).reshape({n, t, cfg_.embed_dim});  // heads merged, before proj
}

at::Tensor Vit::forward(const at::Tensor& images) const {
  at::Tensor x = embed(images);
  for (const Block& b : blocks_) {
    x = residual(b.proj, b.ls1, attention(b, b.norm1(x)), x);
    x = residual(b.fc2, b.ls2, b.fc1(b.norm2(x), Linear::Act::Gelu), x);
  }
  return x.slice(1, cfg_.num_prefix_tokens());
}

}  // namespace m2vla::model
