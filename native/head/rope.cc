#include "head/rope.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "head/simd.h"

namespace m2vla::head {
namespace {

// out[d] = x[d]*cos[d] + x[d^1]*signed_sin[d], signed_sin = (-sin, +sin, -sin, ...): rotate_half on pairs.
template <typename T>
M2VLA_SIMD_CLONES void rope_row(T* row, int64_t heads, int64_t head_dim, const float* cos, const float* signed_sin,
                                float* tmp) {
  for (int64_t h = 0; h < heads; ++h) {
    T* x = row + h * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) tmp[d] = float(x[d]);
    for (int64_t d = 0; d < head_dim; ++d) x[d] = T(tmp[d] * cos[d] + tmp[d ^ 1] * signed_sin[d]);
  }
}

}  // namespace

RopeTable RopeTable::make(int64_t positions, int64_t head_dim) {
  // Same ops as the reference (float32 pow, outer product, cos/sin) so the tables are bit-identical.
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor inv_freq = at::pow(10000.0, at::arange(0, head_dim, 2, f32) / double(head_dim)).reciprocal();
  at::Tensor freqs = at::outer(at::arange(positions, f32), inv_freq);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().contiguous(), emb.sin().contiguous()};
}

namespace {

// rotate_half's signs on the sin table: (-sin, +sin, -sin, ...).
at::Tensor signed_sin(const at::Tensor& sin) {
  at::Tensor s = sin.clone();
  s.slice(-1, 0, c10::nullopt, 2).neg_();
  return s;
}

}  // namespace

RopeTable RopeTable::make(int64_t positions, int64_t head_dim, const at::TensorOptions& options) {
  const RopeTable t = make(positions, head_dim);
  const auto dtype = options.dtype().toScalarType();
  return {t.cos.to(options.device()), t.sin.to(options.device()), t.cos.to(options.device(), dtype),
          signed_sin(t.sin).to(options.device(), dtype)};
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTable& table) {
  const bool cached = table.cos_cast.defined() && table.cos_cast.scalar_type() == x.scalar_type() &&
                      table.cos_cast.device() == x.device();
  const at::Tensor cos = cached ? table.cos_cast : table.cos.to(x.scalar_type());
  const at::Tensor ssin = cached ? table.signed_sin_cast : signed_sin(table.sin).to(x.scalar_type());
  // (x1, x0, x3, x2, ...): rotate_half(x) = swapped * (-1, +1, -1, ...).
  const at::Tensor swapped = x.unflatten(-1, {-1, 2}).flip(-1).flatten(-2);
  return x * cos + swapped * ssin;
}

void apply_rope_inplace(at::Tensor& projection, int64_t col_offset, int64_t heads, int64_t head_dim, const RopeTable& table) {
  const int64_t batch = projection.size(0), n = projection.size(1), cols = projection.size(2);
  const at::Tensor ssin_table = signed_sin(table.sin);
  const float* cos = table.cos.data_ptr<float>();
  const float* ssin = ssin_table.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, projection.scalar_type(), "apply_rope_inplace", [&] {
    scalar_t* base = projection.data_ptr<scalar_t>();
    at::parallel_for(0, batch * n, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> tmp(head_dim);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t pos = r % n;
        rope_row<scalar_t>(base + r * cols + col_offset, heads, head_dim, cos + pos * head_dim, ssin + pos * head_dim,
                           tmp.data());
      }
    });
  });
}

}  // namespace m2vla::head
