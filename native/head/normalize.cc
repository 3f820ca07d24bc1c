#include "head/normalize.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/where.h>

#include "error.h"

namespace m2vla::head {
namespace {

void check(const at::Tensor& x, const BoundsStats& s, const char* what) {
  const int64_t n = s.q01.size(0);
  if (s.q99.size(0) != n || s.mask.size(0) != n)
    fail(ErrorCode::Input, what, ": q01, q99 and mask must have the same length");
  if (x.size(-1) != n) fail(ErrorCode::Shape, what, ": expected ", n, " values per row (statistics length), got ", x.size(-1));
}

}  // namespace

at::Tensor normalize_bounds_q99(const at::Tensor& x, const BoundsStats& s) {
  check(x, s, "state");
  at::Tensor v = x.to(at::kDouble);
  at::Tensor scaled = (v - s.q01).mul(2).div(s.q99 - s.q01 + 1e-8).sub(1);
  return at::clamp(at::where(s.mask, scaled, v), -1.0, 1.0);
}

at::Tensor unnormalize_bounds_q99(const at::Tensor& a, const BoundsStats& s) {
  check(a, s, "actions");
  at::Tensor a32 = a.to(at::kFloat);
  at::Tensor plus_one = (a32 + 1).to(at::kDouble);
  at::Tensor value = plus_one.mul(0.5).mul(s.q99 - s.q01 + 1e-8).add(s.q01);
  return at::where(s.mask, value, a32.to(at::kDouble));
}

}  // namespace m2vla::head
