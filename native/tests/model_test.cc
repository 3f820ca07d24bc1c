// The VLM's building blocks against libtorch's own ops. gemm_attention (model/attention.h): bfloat16 inputs, compared
// with at::scaled_dot_product_attention of the same inputs in float64, at the towers' shapes (no mask, odd lengths,
// head_dim 64 and 72) and Qwen2's (GQA, causal over several row blocks, keys beyond the queries; rows from 1 key, the
// first of a block, to more than 16, the softmax's lanes, with a remainder).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstdio>

#include "check.h"
#include "model/attention.h"

namespace m2vla::test {
namespace {

struct AttentionCase {
  int64_t batch, heads, kv_heads, queries, keys, head_dim;
  bool causal;
};

// Max and mean |error| of gemm_attention and of bf16 SDPA, both against float64 SDPA of the same bf16 inputs.
struct Errors {
  double max, mean, sdpa_mean;
};

Errors attention_errors(const AttentionCase& c) {
  at::manual_seed(c.queries * 31 + c.heads);
  const int64_t q_width = c.heads * c.head_dim, kv_width = c.kv_heads * c.head_dim;
  // One fused projection's output, as the models slice it (the slices are views with the row stride of the whole).
  const at::Tensor qkv = at::randn({c.batch, c.keys, q_width + 2 * kv_width}).to(at::kBFloat16);
  const auto parts = qkv.split({q_width, kv_width, kv_width}, -1);
  const at::Tensor q = parts[0].narrow(1, c.keys - c.queries, c.queries), k = parts[1], v = parts[2];
  const at::Tensor got = model::gemm_attention(q, k, v, c.heads, c.kv_heads, c.causal).to(at::kDouble);

  const auto heads_first = [&](const at::Tensor& x, int64_t h) {
    return x.view({c.batch, x.size(1), h, c.head_dim}).transpose(1, 2);
  };
  std::optional<at::Tensor> mask;  // bottom-right aligned causal mask (query t is position keys - queries + t)
  if (c.causal) mask = at::ones({c.queries, c.keys}, at::kBool).tril(c.keys - c.queries);
  const auto sdpa = [&](at::ScalarType dtype) {
    const at::Tensor out = at::scaled_dot_product_attention(
        heads_first(q, c.heads).to(dtype), heads_first(k, c.kv_heads).to(dtype), heads_first(v, c.kv_heads).to(dtype),
        mask, 0.0, false, std::nullopt, c.kv_heads != c.heads);
    return out.transpose(1, 2).reshape({c.batch, c.queries, q_width}).to(at::kDouble);
  };
  const at::Tensor want = sdpa(at::kDouble);
  EXPECT_MSG(got.sizes() == want.sizes(), "gemm_attention returned ", got.sizes(), ", expected ", want.sizes());
  const at::Tensor err = (got - want).abs();
  return {err.max().item<double>(), err.mean().item<double>(), (sdpa(at::kBFloat16) - want).abs().mean().item<double>()};
}

TEST(gemm_attention_matches_sdpa_at_the_vlm_shapes) {
  c10::InferenceMode guard;
  const AttentionCase cases[] = {
      {2, 16, 16, 261, 261, 64, false},  // DINOv2-L/14 + 4 registers + cls, two cameras
      {2, 16, 16, 256, 256, 72, false},  // SigLIP-so400m/14
      {1, 14, 2, 300, 300, 64, true},    // Qwen2.5-0.5B, three causal row blocks
      {2, 4, 2, 130, 133, 16, true},     // keys beyond the queries (a prompt after cached positions)
      {1, 2, 1, 1, 1, 8, true},          // one position
      {1, 4, 1, 9, 13, 8, true},         // rows of 5 .. 13 keys, fewer than the softmax's 16 lanes
  };
  for (const AttentionCase& c : cases) {
    const Errors e = attention_errors(c);
    std::printf("  %ld x %ld/%ld heads, %ld queries over %ld keys, head_dim %ld%s: max %.2e, mean %.2e (bf16 SDPA mean %.2e)\n",
                c.batch, c.heads, c.kv_heads, c.queries, c.keys, c.head_dim, c.causal ? ", causal" : "", e.max, e.mean,
                e.sdpa_mean);
    // bf16 scores before the softmax (HF eager's numerics): ~2x the flash kernel's mean error, never more than 3x.
    EXPECT_MSG(e.mean <= 3 * e.sdpa_mean + 1e-6 && e.max < 0.05, "mean ", e.mean, " (SDPA ", e.sdpa_mean, "), max ",
               e.max);
  }
}

TEST(gemm_attention_serves_bf16_cpu_inference_only) {
  const at::Tensor bf16 = at::zeros({1, 2, 8}, at::kBFloat16);
  {
    c10::InferenceMode guard;
    EXPECT(model::gemm_attention_applies(bf16));
    EXPECT(!model::gemm_attention_applies(bf16.to(at::kFloat)));
  }
  c10::AutoGradMode grad(true);
  EXPECT(!model::gemm_attention_applies(bf16));  // training keeps SDPA (its backward)
}

}  // namespace
}  // namespace m2vla::test

TEST_MAIN()
