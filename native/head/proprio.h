// ProprioProjector: the normalized robot state as one conditioning token, fc2(GELU(fc1(p))) (exact-erf GELU).
#pragma once
#include <ATen/core/Tensor.h>

#include "head/layers.h"
#include "head/param_table.h"
#include "io/state_dict.h"

namespace m2vla::head {

struct ProprioProjector {
  Linear fc1, fc2;

  // fc1: [hidden, proprio_dim] (proprio_dim read off the checkpoint), fc2: [hidden, hidden].
  static ProprioProjector load(const io::StateDict& sd, int64_t hidden, at::ScalarType dtype);
  int64_t proprio_dim() const { return fc1.in_features(); }
  at::Tensor operator()(const at::Tensor& p) const;  // [B, proprio_dim] -> [B, hidden]
  template <class Self>  // the groups of proprio_table()
  static SlotsOf<Self> slots(Self& p) { return {{"fc1", &p.fc1}, {"fc2", &p.fc2}}; }
};

}  // namespace m2vla::head
