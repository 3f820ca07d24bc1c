// Linear and LayerNorm as the head's files load them: by name, shape-checked against the dims the head expects,
// so a checkpoint that does not fit fails at load naming the tensor instead of deep inside a matmul. The head's
// Linear computes with the VLM's model::Linear (one GEMM path): on its plain weights (at::linear, differentiable:
// training, float32, GPUs), or, for CPU bfloat16 inference, on a copy prepacked once at load (LinearKernel::Onednn).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "io/state_dict.h"
#include "model/layers.h"

namespace m2vla::head {

struct Linear {
  at::Tensor weight;  // [out, in] as loaded: what training updates and parameters() and the export read
  at::Tensor bias;    // [out]
  // Set by prepared() with an inference kernel: model::Linear on a prepacked copy of weight; unset (no weight), the
  // GEMM runs on `weight` itself.
  model::Linear packed;

  static Linear load(const io::StateDict& sd, const std::string& name, int64_t out, int64_t in, at::ScalarType dtype);
  // Several Linears of the same input stacked along the output rows: one GEMM instead of several.
  static Linear stack(const std::vector<Linear>& parts);
  // Rows [begin, begin+count) as views (no copy): the plain path's q/k/v out of a stacked weight.
  Linear rows(int64_t begin, int64_t count) const;
  // This Linear computing with `kernel` (model::inference_kernel of an inference head; never Int8, the head stays in
  // its dtype): Onednn prepacks a copy of the weight, which stays as it is. Aten: as is. Only for weights that no
  // longer change (never the trainer's).
  Linear prepared(model::LinearKernel kernel) const;
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
