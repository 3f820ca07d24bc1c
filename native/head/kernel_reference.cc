#include "head/kernel_reference.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "error.h"

namespace m2vla::head {
namespace {

at::Generator generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// [B, L, H, hd] -> [B, H, L, hd] float32
at::Tensor heads_first(const at::Tensor& t) { return t.to(at::kFloat).permute({0, 2, 1, 3}); }

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& scale) {
  return at::matmul(at::softmax(at::matmul(q, k.transpose(-2, -1)) * scale, -1), v);
}

}  // namespace

MolAttentionInputs mol_attention_views(const at::Tensor& qkv, const at::Tensor& adapter, const at::Tensor& task,
                                       const at::Tensor& gating_factor, int64_t heads) {
  const int64_t D = task.size(2) / 2, head_dim = D / heads;
  if (qkv.size(2) != 3 * D || adapter.size(2) != 2 * D + heads || task.size(2) != 2 * D || head_dim * heads != D)
    fail(ErrorCode::Shape, "mol attention: expected qkv [B, T, 3D], adapter [B, NT+1, 2D+H], task [B, NP, 2D] with D = ",
         heads, " heads x head_dim, got ", qkv.sizes(), ", ", adapter.sizes(), ", ", task.sizes());
  const auto split = [&](const at::Tensor& t, int64_t first) { return t.narrow(2, first, D).unflatten(2, {heads, head_dim}); };
  return {split(qkv, 0),          split(qkv, D),     split(qkv, 2 * D),
          split(adapter, 0),      split(adapter, D + heads), adapter.narrow(2, D, heads),
          split(task, 0),         split(task, D),    gating_factor};
}

bool mol_layout_fits(int64_t heads, int64_t head_dim) { return heads > 0 && heads % 2 == 0 && head_dim % 2 == 0; }

bool mol_kernel_layout(const MolAttentionInputs& in) {
  for (const at::Tensor* t : {&in.q, &in.k_self, &in.v_self, &in.k_adapter, &in.v_adapter, &in.k_task, &in.v_task}) {
    if (t->dim() != 4 || t->stride(3) != 1 || t->storage_offset() % 2) return false;
    for (int64_t d = 0; d < 3; ++d)
      if (t->size(d) > 1 && t->stride(d) % 2) return false;
  }
  return true;
}

at::Tensor mol_attention_reference(const MolAttentionInputs& in) {
  const at::Tensor q = heads_first(in.q);
  const at::Tensor scale = at::full({1}, 1.0f / std::sqrt(float(in.q.size(3))), q.options());
  const at::Tensor self = attend(q, heads_first(in.k_self), heads_first(in.v_self), scale);
  // Gate: mean over the adapter tokens of each head's logit -> [B, H, 1, 1].
  const at::Tensor alpha = at::sigmoid(in.gate.to(at::kFloat).mean(1)).unsqueeze(-1).unsqueeze(-1);
  const at::Tensor adapter = attend(q, heads_first(in.k_adapter), heads_first(in.v_adapter), scale) * alpha;
  const at::Tensor task_scale = at::tanh(in.gating_factor.to(q.device(), at::kFloat)) * scale;
  const at::Tensor task = attend(q, heads_first(in.k_task), heads_first(in.v_task), task_scale);
  return ((self + adapter + task) / 3.0).permute({0, 2, 1, 3}).contiguous();
}

Tensors random_mol_attention_inputs(const MolAttentionSizes& s, uint64_t seed) {
  at::Generator gen = generator(seed);
  const int64_t D = s.heads * s.head_dim;
  const auto randn = [&](at::IntArrayRef shape) { return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)); };
  return {randn({s.batch, s.queries, 3 * D}).to(at::kBFloat16),
          randn({s.batch, s.adapter_keys, 2 * D + s.heads}).to(at::kBFloat16),
          randn({s.batch, s.task_keys, 2 * D}).to(at::kBFloat16),
          randn({1})};
}

TopK l1_topk_reference(const at::Tensor& queries, const at::Tensor& keys, int64_t size, int64_t oldest, int64_t top_k) {
  const int64_t batch = queries.size(0), capacity = keys.size(0), key_dim = keys.size(1);
  TopK out{at::zeros({batch, top_k}, queries.options().dtype(at::kFloat)),
           at::zeros({batch, top_k}, queries.options().dtype(at::kLong))};
  if (size == 0) return out;
  const at::Tensor rows = (at::arange(size, queries.options().dtype(at::kLong)) + oldest).remainder(capacity);
  const at::Tensor dist = at::cdist(queries.to(at::kFloat), keys.index_select(0, rows).to(at::kFloat), 1);
  const at::Tensor similarity = (dist / double(key_dim)) * -10000.0;
  // A stable descending sort keeps tied rows in index order (torch.topk does not promise an order for ties).
  const auto [sorted, order] = at::sort(similarity, /*stable=*/true, /*dim=*/-1, /*descending=*/true);
  const int64_t found = std::min(top_k, size);
  out.similarities.narrow(1, 0, found).copy_(sorted.narrow(1, 0, found));
  out.indices.narrow(1, 0, found).copy_(order.narrow(1, 0, found));
  return out;
}

Tensors random_l1_topk_inputs(const L1TopKSizes& s, uint64_t seed) {
  at::Generator gen = generator(seed);
  const at::Tensor keys = (at::rand({s.capacity, s.key_dim}, gen) * 2 - 1).to(at::kBFloat16);
  const at::Tensor near = at::randint(std::max<int64_t>(s.size, 1), {s.batch}, gen);  // an empty bank: any row
  const at::Tensor rows = (near + s.oldest).remainder(s.capacity);
  const at::Tensor queries = keys.index_select(0, rows).to(at::kFloat) + at::randn({s.batch, s.key_dim}, gen) * 0.05;
  return {queries, keys};
}

void bank_append_reference(at::Tensor& keys, at::Tensor& values, int64_t offset, const at::Tensor& new_keys,
                           const at::Tensor& new_values) {
  const int64_t capacity = keys.size(0), count = new_keys.size(0), skip = std::max<int64_t>(0, count - capacity);
  const at::Tensor rows = (at::arange(skip, count, keys.options().dtype(at::kLong)) + offset).remainder(capacity);
  keys.index_copy_(0, rows, new_keys.narrow(0, skip, count - skip).to(keys.scalar_type()));
  values.index_copy_(0, rows, new_values.narrow(0, skip, count - skip).to(values.scalar_type()));
}

Tensors random_bank_append_inputs(const BankAppendSizes& s, uint64_t seed) {
  at::Generator gen = generator(seed);
  return {at::randn({s.capacity, s.key_dim}, gen).to(at::kBFloat16),
          at::randn({s.capacity, s.value_dim}, gen).to(at::kBFloat16),
          at::randn({s.count, s.key_dim}, gen), at::randn({s.count, s.value_dim}, gen)};
}

}  // namespace m2vla::head
