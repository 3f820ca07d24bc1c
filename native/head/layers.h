// Linear and LayerNorm as the head's files load them: by name, shape-checked against the dims the head expects,
// so a checkpoint that does not fit fails at load naming the tensor instead of deep inside a matmul. They compute with
// the VLM's model::Linear (its Aten kernel on the plain weights: differentiable, every device) and model::LayerNorm;
// docs/architecture.md "One Linear" says why the head's weights are not prepacked.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "io/state_dict.h"
#include "model/layers.h"

namespace m2vla::head {

struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out]

  static Linear load(const io::StateDict& sd, const std::string& name, int64_t out, int64_t in, at::ScalarType dtype);
  // Several Linears of the same input stacked along the output rows: one GEMM instead of several.
  static Linear stack(const std::vector<Linear>& parts);
  // Rows [begin, begin+count) as views (no copy): the plain path's q/k/v out of a stacked weight.
  Linear rows(int64_t begin, int64_t count) const;
  int64_t out_features() const { return weight.size(0); }
  int64_t in_features() const { return weight.size(1); }
  at::Tensor operator()(const at::Tensor& x) const;
};

struct LayerNorm {
  at::Tensor weight, bias;  // [dim]
  static constexpr double kEps = 1e-5;  // torch.nn.LayerNorm default; the reference never overrides it

  static LayerNorm load(const io::StateDict& sd, const std::string& name, int64_t dim, at::ScalarType dtype);
  at::Tensor operator()(const at::Tensor& x) const;
};

}  // namespace m2vla::head
