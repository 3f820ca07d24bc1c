#include "head/mol/reference.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "error.h"

namespace m2vla::head {

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

at::Tensor mol_attention_reference(const MolAttentionInputs& in, at::ScalarType compute, MolAttentionWeights* weights) {
  // [B, L, H, hd] -> [B, H, L, hd] (a view when already in `compute`)
  const auto heads_first = [compute](const at::Tensor& t) { return t.to(compute).transpose(1, 2); };
  const double scale = std::sqrt(double(in.q.size(3)));
  const at::Tensor q = heads_first(in.q);
  const auto attend = [&](const at::Tensor& logits, const at::Tensor& v, at::Tensor& w) {
    w = at::softmax(logits, -1);
    return at::matmul(w, heads_first(v));
  };
  const auto logits = [&](const at::Tensor& k) { return at::matmul(q, heads_first(k).transpose(-2, -1)); };
  MolAttentionWeights local;
  MolAttentionWeights& out = weights ? *weights : local;
  out.tanh_g = at::tanh(in.gating_factor.to(q.device(), at::kFloat)).to(compute);
  const at::Tensor self = attend(logits(in.k_self) / scale, in.v_self, out.sa);
  // Head-wise gate: the mean over the adapter tokens of each head's logit -> [B, H, 1, 1].
  out.ca_s_gate = at::sigmoid(in.gate.to(compute).unsqueeze(-1).transpose(1, 2).mean(2, true));
  const at::Tensor adapter = attend(logits(in.k_adapter) / scale, in.v_adapter, out.ca_s) * out.ca_s_gate;
  const at::Tensor task = attend(logits(in.k_task) * out.tanh_g / scale, in.v_task, out.ca_v);
  return at::stack({self, adapter, task}, 0).mean(0).transpose(1, 2);
}

Tensors random_mol_attention_inputs(const MolAttentionSizes& s, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t D = s.heads * s.head_dim;
  const auto randn = [&](at::IntArrayRef shape) { return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)); };
  return {randn({s.batch, s.queries, 3 * D}).to(at::kBFloat16),
          randn({s.batch, s.adapter_keys, 2 * D + s.heads}).to(at::kBFloat16),
          randn({s.batch, s.task_keys, 2 * D}).to(at::kBFloat16),
          randn({1})};
}

}  // namespace m2vla::head
