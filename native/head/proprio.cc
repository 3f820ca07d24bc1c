#include "head/proprio.h"

#include <ATen/ops/gelu.h>

#include "error.h"

namespace m2vla::head {

ProprioProjector ProprioProjector::load(const io::StateDict& sd, int64_t hidden, at::ScalarType dtype) {
  const at::Tensor& w1 = sd.get("fc1.weight");
  if (w1.dim() != 2 || w1.size(0) != hidden)
    fail(ErrorCode::Checkpoint, sd.source, ": tensor 'fc1.weight' should be [", hidden,
         ", proprio_dim] for a head of hidden size ", hidden, ", got ", w1.sizes());
  ProprioProjector p;
  load_params(sd, "", proprio_table(), {.D = hidden, .P = w1.size(1)}, dtype, slots(p));
  return p;
}

at::Tensor ProprioProjector::operator()(const at::Tensor& p) const { return fc2(at::gelu(fc1(p))); }

}  // namespace m2vla::head
