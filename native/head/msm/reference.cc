#include "head/msm/reference.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

namespace m2vla::head {

TopK l1_topk_reference(const at::Tensor& queries, const at::Tensor& keys, int64_t size, int64_t oldest, int64_t top_k,
                       TopKTies ties) {
  const int64_t batch = queries.size(0), capacity = keys.size(0), key_dim = keys.size(1);
  TopK out{at::zeros({batch, top_k}, queries.options().dtype(at::kFloat)),
           at::zeros({batch, top_k}, queries.options().dtype(at::kLong))};
  if (size == 0) return out;
  const at::Tensor rows = (at::arange(size, queries.options().dtype(at::kLong)) + oldest).remainder(capacity);
  const at::Tensor dist = at::cdist(queries.to(at::kFloat), keys.index_select(0, rows).to(at::kFloat), 1);
  const at::Tensor similarity = (dist / double(key_dim)) * -10000.0;
  const int64_t found = std::min(top_k, size);
  // torch.topk does not promise an order for ties; a stable descending sort keeps tied rows in index order.
  const auto [best, order] = ties == TopKTies::TorchTopk ? at::topk(similarity, found, -1)
                                                         : at::sort(similarity, /*stable=*/true, /*dim=*/-1, /*descending=*/true);
  out.similarities.narrow(1, 0, found).copy_(best.narrow(1, 0, found));
  out.indices.narrow(1, 0, found).copy_(order.narrow(1, 0, found));
  return out;
}

Tensors random_l1_topk_inputs(const L1TopKSizes& s, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor keys = (at::rand({s.capacity, s.key_dim}, gen) * 2 - 1).to(at::kBFloat16);
  const at::Tensor near = at::randint(std::max<int64_t>(s.size, 1), {s.batch}, gen);  // an empty bank: any row
  const at::Tensor rows = (near + s.oldest).remainder(s.capacity);
  const at::Tensor queries = keys.index_select(0, rows).to(at::kFloat) + at::randn({s.batch, s.key_dim}, gen) * 0.05;
  return {queries, keys};
}

}  // namespace m2vla::head
