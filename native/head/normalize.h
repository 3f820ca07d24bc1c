// BOUNDS_Q99 normalization of proprio (into the head) and unnormalization of actions (out of it), with the
// statistics of dataset_statistics.json[unnorm_key]. Computed in float64 like the reference's numpy code.
#pragma once
#include <ATen/core/Tensor.h>

namespace m2vla::head {

struct BoundsStats {
  at::Tensor q01, q99;  // [n] float64
  at::Tensor mask;      // [n] bool: false = pass the value through (the gripper dimension of actions)
};

// clip(where(mask, 2*(x-q01)/(q99-q01+1e-8)-1, x), -1, 1) over the last dim of x (float64) — normalize_proprio.
at::Tensor normalize_bounds_q99(const at::Tensor& x, const BoundsStats& s);

// where(mask, 0.5*(a+1)*(q99-q01+1e-8)+q01, a) over the last dim of a (float32) -> float64 — _unnormalize_actions.
// `a+1` is rounded to float32 first: numpy evaluates `normalized_actions + 1` on the float32 array before the
// float64 statistics promote the product, and matching that keeps results bit-identical to the reference.
at::Tensor unnormalize_bounds_q99(const at::Tensor& a, const BoundsStats& s);

}  // namespace m2vla::head
