// The fused MoL attention (see mol.h). Per (batch, head) work item, for each query: the three logit rows, their
// softmaxes and weighted value sums in one loop, reading keys/values in place from the projection outputs (no
// per-branch reshape, transpose, RoPE copy or concatenation), writing the averaged context straight into the
// head's columns of the o_proj input. Inner loops run over 16 independent float lanes so they vectorize without
// reassociation; the hot function is multi-versioned (simd.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "head/mol.h"
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

// acc[0:hd] = softmax(scale * q·k_j) @ v_j over the n keys of one branch. Keys and values are rows of a projection
// output with `stride` elements between tokens.
template <typename T>
inline void attend_branch(const float* q, const T* keys, const T* values, int64_t n, int64_t stride, float scale,
                          int64_t head_dim, float* logits, float* acc) {
  float max_logit = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    logits[j] = dot(q, keys + j * stride, head_dim) * scale;
    max_logit = std::max(max_logit, logits[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    logits[j] = std::exp(logits[j] - max_logit);
    sum += logits[j];
  }
  const float inv_sum = 1.0f / sum;
  std::fill(acc, acc + head_dim, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float w = logits[j] * inv_sum;
    const T* v = values + j * stride;
    for (int64_t d = 0; d < head_dim; ++d) acc[d] += w * float(v[d]);
  }
}

struct FusedShape {
  int64_t T, S, V, D, H, hd;
};

// One (batch, head)'s columns in the three projection outputs and in the output.
template <typename T>
struct HeadView {
  const T *q, *k_self, *v_self;  // rows of stride 3D
  const T *k_adapter, *gate, *v_adapter;  // rows of stride 2D+H; `gate` is this head's gate-score column
  const T *k_task, *v_task;  // rows of stride 2D
  T* out;  // rows of stride D
};

// The whole block attention for one (batch, head).
template <typename T>
M2VLA_SIMD_CLONES void mol_head(const HeadView<T>& v, const FusedShape& s, float tanh_g, float* scratch) {
  const int64_t D = s.D, hd = s.hd;
  const int64_t qkv_stride = 3 * D, adapter_stride = 2 * D + s.H, task_stride = 2 * D;
  float* q = scratch;
  float* acc_self = q + hd;
  float* acc_adapter = acc_self + hd;
  float* acc_task = acc_adapter + hd;
  float* logits = acc_task + hd;

  // Head-wise dynamic factor: sigmoid of this head's gate score averaged over the NT+1 conditioning tokens.
  float gate_sum = 0;
  for (int64_t j = 0; j < s.S; ++j) gate_sum += float(v.gate[j * adapter_stride]);
  const float alpha = 1.0f / (1.0f + std::exp(-gate_sum / float(s.S)));

  const float scale = 1.0f / std::sqrt(float(hd));
  for (int64_t i = 0; i < s.T; ++i) {
    for (int64_t d = 0; d < hd; ++d) q[d] = float(v.q[i * qkv_stride + d]);
    attend_branch(q, v.k_self, v.v_self, s.T, qkv_stride, scale, hd, logits, acc_self);
    attend_branch(q, v.k_adapter, v.v_adapter, s.S, adapter_stride, scale, hd, logits, acc_adapter);
    attend_branch(q, v.k_task, v.v_task, s.V, task_stride, tanh_g * scale, hd, logits, acc_task);
    T* out = v.out + i * D;
    for (int64_t d = 0; d < hd; ++d) out[d] = T((acc_self[d] + alpha * acc_adapter[d] + acc_task[d]) / 3.0f);
  }
}

}  // namespace

at::Tensor mol_attention_fused(const at::Tensor& qkv, const MolCondition& cond, float tanh_g, int64_t heads, int64_t head_dim) {
  const int64_t B = qkv.size(0), T = qkv.size(1), D = heads * head_dim;
  const FusedShape s{T, cond.adapter.size(1), cond.task.size(1), D, heads, head_dim};
  at::Tensor mix = at::empty({B, T, D}, qkv.options());
  const int64_t scratch_size = 4 * head_dim + std::max({s.T, s.S, s.V});
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, qkv.scalar_type(), "mol_attention_fused", [&] {
    const scalar_t* qkv_p = qkv.data_ptr<scalar_t>();
    const scalar_t* adapter_p = cond.adapter.data_ptr<scalar_t>();
    const scalar_t* task_p = cond.task.data_ptr<scalar_t>();
    scalar_t* mix_p = mix.data_ptr<scalar_t>();
    at::parallel_for(0, B * heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(scratch_size);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / heads, h = item % heads, col = h * head_dim;
        const scalar_t* qkv_b = qkv_p + b * T * 3 * D;
        const scalar_t* adapter_b = adapter_p + b * s.S * (2 * D + heads);
        const scalar_t* task_b = task_p + b * s.V * 2 * D;
        const HeadView<scalar_t> view{qkv_b + col, qkv_b + D + col, qkv_b + 2 * D + col,
                                      adapter_b + col, adapter_b + D + h, adapter_b + D + heads + col,
                                      task_b + col, task_b + D + col, mix_p + b * T * D + col};
        mol_head<scalar_t>(view, s, tanh_g, scratch.data());
      }
    });
  });
  return mix;
}

}  // namespace m2vla::head
