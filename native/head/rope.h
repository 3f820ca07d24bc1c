// The head's rotary embedding (reference RotaryPositionEmbedding + apply_rope, base 10000 over head_dim): angles
// are built as cat([freqs, freqs]) (half-split layout) but rotate_half pairs interleaved elements (2i, 2i+1), so
// element 2i is rotated with angle pos*inv_freq[2i mod hd/2] and element 2i+1 with pos*inv_freq[(2i+1) mod hd/2].
// Not a true rotation, and not what Llama/Qwen do; checkpoints were trained with it, so it is copied exactly.
#pragma once
#include <ATen/core/Tensor.h>

namespace m2vla::head {

struct RopeTable {
  at::Tensor cos, sin;  // [positions, head_dim] float32 on the CPU or the model's device, positions 0..n-1
  // The same tables cast once to the activation dtype (sin with rotate_half's signs folded in): what apply_rope
  // multiplies by, instead of casting (and negating) on every call. Undefined: cast per call.
  at::Tensor cos_cast, signed_sin_cast;

  static RopeTable make(int64_t positions, int64_t head_dim);
  // `make` on `options`' device, with the casts cached for `options`' dtype.
  static RopeTable make(int64_t positions, int64_t head_dim, const at::TensorOptions& options);
};

// Plain path: x [B, H, n, head_dim] -> x*cos + rotate_half(x)*sin with the tables cast to x's dtype, as the
// reference does (bit for bit: rotate_half(x)*sin is computed as the pair-swapped x times the signed sin, which
// moves only a sign).
at::Tensor apply_rope(const at::Tensor& x, const RopeTable& table);

// Fused path: rotates, in place, the `heads` x `head_dim` columns starting at `col_offset` of a projection output
// [B, n, cols] (contiguous), position = token index. No reshape or transpose of the projection is made.
void apply_rope_inplace(at::Tensor& projection, int64_t col_offset, int64_t heads, int64_t head_dim, const RopeTable& table);

}  // namespace m2vla::head
