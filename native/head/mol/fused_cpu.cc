// The fused MoL attention (see mol.h for the value reordering it relies on).
// 1. Per (batch, head) work item, for each query: the three logit rows and softmaxes in one loop, reading q and the
//    rotated keys in place from the projection outputs. The self branch's context is summed right away (its values
//    are 8 projected tokens); for the two conditioning branches the weights are written out, pre-scaled by the
//    branch's factor in the average (alpha/3 and 1/3), together with the value biases those factors carry.
// 2. Per conditioning branch one batched GEMM sums the raw tokens with those weights, and one more per-head GEMM
//    projects the sums with v_adapter / v_task; both add into the o_proj input.
// Inner loops run over 16 independent float lanes so they vectorize without reassociation; the per-head function
// is multi-versioned (simd.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "head/mol/block.h"
#include "head/simd.h"

namespace m2vla::head {
namespace {

constexpr int64_t kLanes = 16;

template <typename T>
inline float dot(const float* a, const T* b, int64_t n) {
  float lanes[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += a[d + l] * float(b[d + l]);
  float s = 0;
  for (; d < n; ++d) s += a[d] * float(b[d]);
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

// probs[j] = softmax_j(scale * q·k_j) over n keys that are rows `stride` apart.
template <typename T>
inline void softmax_row(const float* q, const T* keys, int64_t n, int64_t stride, float scale, int64_t head_dim, float* probs) {
  float max_logit = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    probs[j] = dot(q, keys + j * stride, head_dim) * scale;
    max_logit = std::max(max_logit, probs[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    probs[j] = std::exp(probs[j] - max_logit);
    sum += probs[j];
  }
  const float inv_sum = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) probs[j] *= inv_sum;
}

struct FusedShape {
  int64_t T, S, V, D, H, hd;
};

// One (batch, head)'s columns / rows in the inputs and outputs.
template <typename T>
struct HeadView {
  const T *q, *k_self, *v_self;            // rows of stride 3D (q and k_self rotated)
  const T *k_adapter, *gate;                // rows of stride D+H; `gate` is this head's gate-score column
  const T* k_task;                          // rows of stride D
  const T *bias_adapter, *bias_task;        // this head's hd values of the v_adapter / v_task biases
  T* mix;                                   // rows of stride D: the o_proj input
  T *w_adapter, *w_task;                    // [T, S] and [T, V]: scaled weights of the conditioning branches
};

template <typename T>
M2VLA_SIMD_CLONES void mol_head(const HeadView<T>& v, const FusedShape& s, float tanh_g, float* scratch) {
  const int64_t D = s.D, hd = s.hd;
  const int64_t qkv_stride = 3 * D, adapter_stride = D + s.H;
  float* q = scratch;
  float* acc = q + hd;
  float* probs = acc + hd;

  // Head-wise dynamic factor: sigmoid of this head's gate score averaged over the NT+1 conditioning tokens.
  float gate_sum = 0;
  for (int64_t j = 0; j < s.S; ++j) gate_sum += float(v.gate[j * adapter_stride]);
  const float alpha = 1.0f / (1.0f + std::exp(-gate_sum / float(s.S)));
  const float third = 1.0f / 3.0f, adapter_factor = alpha / 3.0f;

  const float scale = 1.0f / std::sqrt(float(hd));
  for (int64_t i = 0; i < s.T; ++i) {
    for (int64_t d = 0; d < hd; ++d) q[d] = float(v.q[i * qkv_stride + d]);
    softmax_row(q, v.k_self, s.T, qkv_stride, scale, hd, probs);
    std::fill(acc, acc + hd, 0.0f);
    for (int64_t j = 0; j < s.T; ++j) {
      const T* vj = v.v_self + j * qkv_stride;
      for (int64_t d = 0; d < hd; ++d) acc[d] += probs[j] * float(vj[d]);
    }
    T* out = v.mix + i * D;
    for (int64_t d = 0; d < hd; ++d)
      out[d] = T(acc[d] * third + adapter_factor * float(v.bias_adapter[d]) + third * float(v.bias_task[d]));

    softmax_row(q, v.k_adapter, s.S, adapter_stride, scale, hd, probs);
    for (int64_t j = 0; j < s.S; ++j) v.w_adapter[i * s.S + j] = T(probs[j] * adapter_factor);
    softmax_row(q, v.k_task, s.V, D, tanh_g * scale, hd, probs);
    for (int64_t j = 0; j < s.V; ++j) v.w_task[i * s.V + j] = T(probs[j] * third);
  }
}

}  // namespace

at::Tensor mol_attention_fused(const MolBlock& block, const at::Tensor& qkv, const MolCondition& cond) {
  const int64_t H = block.heads, hd = block.head_dim, D = block.dim;
  const int64_t B = qkv.size(0), T = qkv.size(1);
  const FusedShape s{T, cond.adapter.size(1), cond.task.size(1), D, H, hd};
  const Linear v_adapter = block.kv_adapter.rows(D + H, D), v_task = block.kv_task.rows(D, D);
  at::Tensor mix = at::empty({B, T, D}, qkv.options());
  at::Tensor w_adapter = at::empty({B, H, T, s.S}, qkv.options()), w_task = at::empty({B, H, T, s.V}, qkv.options());
  const float tanh_g = block.tanh_g();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, qkv.scalar_type(), "mol_attention_fused", [&] {
    const scalar_t* qkv_p = qkv.data_ptr<scalar_t>();
    const scalar_t* adapter_p = cond.adapter.data_ptr<scalar_t>();
    const scalar_t* task_p = cond.task.data_ptr<scalar_t>();
    const scalar_t* bias_adapter = v_adapter.bias.data_ptr<scalar_t>();
    const scalar_t* bias_task = v_task.bias.data_ptr<scalar_t>();
    scalar_t* mix_p = mix.data_ptr<scalar_t>();
    scalar_t* wa_p = w_adapter.data_ptr<scalar_t>();
    scalar_t* wt_p = w_task.data_ptr<scalar_t>();
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(2 * hd + std::max({s.T, s.S, s.V}));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / H, h = item % H, col = h * hd;
        const scalar_t* qkv_b = qkv_p + b * T * 3 * D;
        const scalar_t* adapter_b = adapter_p + b * s.S * (D + H);
        const HeadView<scalar_t> view{qkv_b + col, qkv_b + D + col, qkv_b + 2 * D + col,
                                      adapter_b + col, adapter_b + D + h, task_p + b * s.V * D + col,
                                      bias_adapter + col, bias_task + col, mix_p + b * T * D + col,
                                      wa_p + item * T * s.S, wt_p + item * T * s.V};
        mol_head<scalar_t>(view, s, tanh_g, scratch.data());
      }
    });
  });
  // Weighted token sums [B, H*T, D], then each head's rows of v_adapter / v_task applied to its sums: [H, B*T, hd].
  at::Tensor sum_adapter = at::bmm(w_adapter.view({B, H * T, s.S}), cond.adapter_tokens);
  at::Tensor sum_task = at::bmm(w_task.view({B, H * T, s.V}), cond.task_tokens);
  auto per_head = [&](const at::Tensor& sums) { return sums.view({B, H, T, D}).transpose(0, 1).reshape({H, B * T, D}); };
  auto head_weights = [&](const Linear& l) { return l.weight.view({H, hd, D}).transpose(1, 2); };
  at::Tensor ctx = at::baddbmm(at::bmm(per_head(sum_adapter), head_weights(v_adapter)), per_head(sum_task), head_weights(v_task));
  return mix.add_(ctx.view({H, B, T, hd}).permute({1, 2, 0, 3}).reshape({B, T, D}));
}

}  // namespace m2vla::head
