#include "head/layers.h"

#include <ATen/ops/cat.h>

namespace m2vla::head {

Linear Linear::load(const io::StateDict& sd, const std::string& name, int64_t out, int64_t in, at::ScalarType dtype) {
  return {sd.get(name + ".weight", {out, in}).to(dtype).contiguous(), sd.get(name + ".bias", {out}).to(dtype).contiguous()};
}

Linear Linear::stack(const std::vector<Linear>& parts) {
  std::vector<at::Tensor> w, b;
  for (const auto& p : parts) {
    w.push_back(p.weight);
    b.push_back(p.bias);
  }
  return {at::cat(w, 0), at::cat(b, 0)};
}

Linear Linear::rows(int64_t begin, int64_t count) const {
  return {weight.narrow(0, begin, count), bias.narrow(0, begin, count)};
}

at::Tensor Linear::operator()(const at::Tensor& x) const { return model::Linear{weight, bias}(x); }

LayerNorm LayerNorm::load(const io::StateDict& sd, const std::string& name, int64_t dim, at::ScalarType dtype) {
  return {sd.get(name + ".weight", {dim}).to(dtype).contiguous(), sd.get(name + ".bias", {dim}).to(dtype).contiguous()};
}

at::Tensor LayerNorm::operator()(const at::Tensor& x) const {
  return model::LayerNorm{weight, bias, kEps}(x);
}

}  // namespace m2vla::head
