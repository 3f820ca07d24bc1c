#include "model/layers.h"

#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>

namespace m2vla::model {

at::Tensor Weights::get(const std::string& name) const { return dict.get(name).to(device, dtype); }

at::Tensor Weights::get(const std::string& name, const std::vector<int64_t>& shape) const {
  return dict.get(name, shape).to(device, dtype);
}

Linear Linear::load(const Weights& sd, const std::string& name, int64_t out, int64_t in, bool bias) {
  Linear l;
  l.weight = sd.get(name + ".weight", {out, in});
  if (bias) l.bias = sd.get(name + ".bias", {out});
  return l;
}

at::Tensor Linear::operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }

LayerNorm LayerNorm::load(const Weights& sd, const std::string& name, int64_t dim, double eps) {
  return {sd.get(name + ".weight", {dim}), sd.get(name + ".bias", {dim}), eps};
}

at::Tensor LayerNorm::operator()(const at::Tensor& x) const {
  return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
}

}  // namespace m2vla::model
