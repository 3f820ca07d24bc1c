#include "model/attention.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace m2vla::model {

namespace {
// Query positions per causal block: 128 positions (times the GQA group as rows) keep each bmm large while the blocks
// skip ~40 % of the causal score square at Qwen2's ~627 positions.
constexpr int64_t kCausalBlock = 128;
}  // namespace

bool gemm_attention_applies(const at::Tensor& x) {
  return x.is_cpu() && !at::GradMode::is_enabled() && x.scalar_type() == at::kBFloat16;
}

at::Tensor gemm_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads, int64_t kv_heads,
                          bool causal) {
  const int64_t b = q.size(0), t = q.size(1), s = k.size(1), hd = q.size(2) / heads, g = heads / kv_heads;
  // Each kv head's queries as t * g rows, position-major (so a block of positions is a block of rows), pre-scaled.
  at::Tensor qr = at::empty({b, kv_heads, t, g, hd}, q.options());
  qr.copy_(q.view({b, t, kv_heads, g, hd}).permute({0, 2, 1, 3, 4})).mul_(1.0 / std::sqrt(static_cast<double>(hd)));
  qr = qr.view({b * kv_heads, t * g, hd});
  const at::Tensor kr = k.view({b, s, kv_heads, hd}).permute({0, 2, 1, 3}).reshape({b * kv_heads, s, hd});
  const at::Tensor vr = v.view({b, s, kv_heads, hd}).permute({0, 2, 1, 3}).reshape({b * kv_heads, s, hd});
  at::Tensor out = at::empty({b, t, kv_heads, g, hd}, q.options());  // query head h = kv head * g + its index in the group
  const int64_t block = causal ? kCausalBlock : t;
  for (int64_t t0 = 0; t0 < t; t0 += block) {
    const int64_t rows = std::min(block, t - t0), keys = causal ? s - t + t0 + rows : s;
    at::Tensor scores = at::bmm(qr.narrow(1, t0 * g, rows * g), kr.narrow(1, 0, keys).transpose(1, 2));
    if (causal) {
      // Row (t0 + i, any head of the group) sees keys up to s - t + t0 + i: of the block's last `rows` keys, those
      // right of the diagonal are masked.
      const at::Tensor above = at::ones({rows, rows}, q.options().dtype(at::kBool)).triu(1).view({rows, 1, rows});
      scores.view({b * kv_heads, rows, g, keys}).narrow(3, keys - rows, rows).masked_fill_(above, -std::numeric_limits<float>::infinity());
    }
    const at::Tensor o = at::bmm(at::softmax(scores, -1), vr.narrow(1, 0, keys));  // [b * kv_heads, rows * g, hd]
    out.narrow(1, t0, rows).copy_(o.view({b, kv_heads, rows, g, hd}).permute({0, 2, 1, 3, 4}));
  }
  return out.view({b, t, heads * hd});
}

}  // namespace m2vla::model
