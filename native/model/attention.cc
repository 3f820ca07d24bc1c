#include "model/attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "head/simd.h"
#include "model/quantize.h"

namespace m2vla::model {

namespace {
// Query positions per causal block: 128 positions (times the GQA group as rows) keep each bmm large while the blocks
// skip ~40 % of the causal score square at Qwen2's ~627 positions.
constexpr int64_t kCausalBlock = 128;

// exp(x) for x <= 0, as a loop body the compiler vectorizes: std::exp does not (without -ffast-math it stays a libm
// call per element), and at::vec's exp is the scalar fallback in a baseline x86-64 build. Cephes expf: x = n ln2 + r
// with |r| <= ln2 / 2 (ln2 split in two so r is exact), e^r by a degree-5 polynomial, 2^n into the exponent bits; n is
// rounded by adding 1.5 * 2^23 (no reassociation needed). x is clamped at -87 (e^-87 ~ 1.6e-38, still a normal
// float), far below any term that reaches a bf16 result. Max relative error vs double exp over [-87, 0] (step 1e-5):
// 8.3e-8, under one float ulp; bf16 rounds at 3.9e-3.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float shifted = x * 1.44269504f + 12582912.0f;  // 1.5 * 2^23: its low mantissa bits hold round(x / ln2)
  const float n = shifted - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t scale = (std::bit_cast<int32_t>(shifted) - 0x4B400000 + 127) << 23;  // 2^n, n in [-126, 0]
  return p * std::bit_cast<float>(scale);
}

// Softmax of one row of bf16 scores in place over its first `valid` entries (float32 inside, as at::softmax), the
// rest written as exact zeros (the causal mask). `e` holds `valid` floats of scratch.
M2VLA_SIMD_CLONES void softmax_row(at::BFloat16* row, int64_t valid, int64_t n, float* e) {
  uint16_t lo, hi;
  key_range(reinterpret_cast<const uint16_t*>(row), valid, lo, hi);
  const float max = from_key(hi);
  constexpr int64_t kLanes = 16;
  float lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= valid; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += e[j + l] = exp_nonpositive(float(row[j + l]) - max);
  float sum = 0;
  for (; j < valid; ++j) sum += e[j] = exp_nonpositive(float(row[j]) - max);
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  const float inv = 1.0f / sum;
  for (j = 0; j < valid; ++j) row[j] = at::BFloat16(e[j] * inv);
  for (; j < n; ++j) row[j] = at::BFloat16(0.0f);
}

// softmax over the last dim of scores [groups, rows * g, keys] (contiguous) in place; causal: row i * g + head of the
// block sees keys 0 .. keys - rows + i.
void softmax_inplace(at::Tensor& scores, int64_t rows, int64_t g, bool causal) {
  RECORD_USER_SCOPE("m2vla_attention_softmax");  // an op of its stage in m2vla_bench act --profile
  const int64_t keys = scores.size(2), total = scores.size(0) * scores.size(1);
  at::BFloat16* base = scores.mutable_data_ptr<at::BFloat16>();
  at::parallel_for(0, total, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> e(keys);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t valid = causal ? keys - rows + (r % (rows * g)) / g + 1 : keys;
      softmax_row(base + r * keys, valid, keys, e.data());
    }
  });
}
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
    // Row (t0 + i, any head of the group) sees keys up to s - t + t0 + i when causal.
    softmax_inplace(scores, rows, g, causal);
    const at::Tensor o = at::bmm(scores, vr.narrow(1, 0, keys));  // [b * kv_heads, rows * g, hd]
    out.narrow(1, t0, rows).copy_(o.view({b, kv_heads, rows, g, hd}).permute({0, 2, 1, 3, 4}));
  }
  return out.view({b, t, heads * hd});
}

}  // namespace m2vla::model
