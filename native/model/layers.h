// The two parametrised building blocks every model file uses, loaded by name with their shapes checked against
// the config (a mis-shaped checkpoint fails at load with the tensor's name, never deep inside a matmul).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "io/state_dict.h"

namespace m2vla::model {

// The checkpoint as model files read it: StateDict's lookups, each tensor converted to the model dtype as it is
// taken. Only tensors a model uses are converted (the LM head copy, attn_pool, blocks after take_block never are),
// and tensors already in that dtype stay views of the mapped file. With a GPU `device`, each tensor is copied there
// once, as it is taken, so the host never holds a converted copy of the model.
struct Weights {
  const io::StateDict& dict;
  at::ScalarType dtype;
  c10::Device device = c10::kCPU;

  bool has(const std::string& name) const { return dict.has(name); }
  const std::string& source() const { return dict.source; }
  at::Tensor get(const std::string& name) const;
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape) const;  // E_CHECKPOINT on a mismatch
};

struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined

  // `<name>.weight` [out, in] and, with `bias`, `<name>.bias` [out].
  static Linear load(const Weights& sd, const std::string& name, int64_t out, int64_t in, bool bias = true);
  at::Tensor operator()(const at::Tensor& x) const;
};

struct LayerNorm {
  at::Tensor weight, bias;  // [dim]
  double eps = 1e-6;

  static LayerNorm load(const Weights& sd, const std::string& name, int64_t dim, double eps);
  at::Tensor operator()(const at::Tensor& x) const;
};

}  // namespace m2vla::model
