// The two parametrised building blocks every model file uses, loaded by name with their shapes checked against
// the config (a mis-shaped checkpoint fails at load with the tensor's name, never deep inside a matmul).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "io/state_dict.h"

namespace m2vla::model {

struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined

  // `<name>.weight` [out, in] and, with `bias`, `<name>.bias` [out].
  static Linear load(const io::StateDict& sd, const std::string& name, int64_t out, int64_t in, bool bias = true);
  at::Tensor operator()(const at::Tensor& x) const;
};

struct LayerNorm {
  at::Tensor weight, bias;  // [dim]
  double eps = 1e-6;

  static LayerNorm load(const io::StateDict& sd, const std::string& name, int64_t dim, double eps);
  at::Tensor operator()(const at::Tensor& x) const;
};

}  // namespace m2vla::model
