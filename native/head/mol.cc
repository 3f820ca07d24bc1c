#include "head/mol.h"

#include <ATen/ATen.h>

#include <cmath>

#include "error.h"
#include "head/msm.h"
#ifdef M2VLA_WITH_CUDA
#include "cuda/cuda_glue.h"
#endif

namespace m2vla::head {
namespace {

// [B, n, H*hd] -> [B, H, n, hd]
at::Tensor split_heads(const at::Tensor& t, int64_t heads, int64_t head_dim) {
  return t.reshape({t.size(0), t.size(1), heads, head_dim}).transpose(1, 2);
}

// softmax(logits) @ v, returning the weights too (the trace stores them).
std::pair<at::Tensor, at::Tensor> attend(const at::Tensor& logits, const at::Tensor& v) {
  at::Tensor w = at::softmax(logits, -1);
  return {at::matmul(w, v), w};
}

at::Tensor mix_reference(const MolBlock& b, const at::Tensor& qkv, const MolCondition& cond, const MolTables& tables,
                         BlockTrace* trace) {
  const int64_t D = b.dim, H = b.heads, hd = b.head_dim;
  const int64_t B = qkv.size(0), T = qkv.size(1), S = cond.adapter.size(1);
  const double scale = std::sqrt(double(hd));
  at::Tensor q = apply_rope(split_heads(qkv.narrow(-1, 0, D), H, hd), tables.chunk);
  at::Tensor k_self = apply_rope(split_heads(qkv.narrow(-1, D, D), H, hd), tables.chunk);
  at::Tensor v_self = split_heads(qkv.narrow(-1, 2 * D, D), H, hd);
  at::Tensor k_adapter = apply_rope(split_heads(cond.adapter.narrow(-1, 0, D), H, hd), tables.adapter);
  at::Tensor gate_scores = cond.adapter.narrow(-1, D, H);
  at::Tensor v_adapter = split_heads(cond.adapter.narrow(-1, D + H, D), H, hd);
  at::Tensor k_task = apply_rope(split_heads(cond.task.narrow(-1, 0, D), H, hd), tables.task);
  at::Tensor v_task = split_heads(cond.task.narrow(-1, D, D), H, hd);
  at::Tensor tanh_g = at::tanh(b.gating_factor).to(qkv.scalar_type());

  auto [ctx_self, w_self] = attend(at::matmul(q, k_self.transpose(-2, -1)) / scale, v_self);
  auto [ctx_adapter, w_adapter] = attend(at::matmul(q, k_adapter.transpose(-2, -1)) / scale, v_adapter);
  at::Tensor gate = at::sigmoid(gate_scores.reshape({B, S, H, 1}).transpose(1, 2).mean(2, true));
  ctx_adapter = ctx_adapter * gate;
  auto [ctx_task, w_task] = attend(at::matmul(q, k_task.transpose(-2, -1)) * tanh_g / scale, v_task);
  at::Tensor mix = at::stack({ctx_self, ctx_adapter, ctx_task}, 0).mean(0).transpose(1, 2).reshape({B, T, D});
  if (trace) {
    trace->tanh_g = tanh_g;
    trace->sa_weights = w_self;
    trace->ca_s_weights = w_adapter;
    trace->ca_s_gate = gate;
    trace->ca_v_weights = w_task;
    trace->attn_mix = mix;
  }
  return mix;
}

// The three-branch mix by the fused CUDA kernel, from the plain path's rotated heads as [B, n, H, hd] views
// (head_dim contiguous, as the kernel reads them).
at::Tensor mix_cuda(const MolBlock& b, const at::Tensor& qkv, const MolCondition& cond, const MolTables& tables) {
#ifdef M2VLA_WITH_CUDA
  const int64_t D = b.dim, H = b.heads, hd = b.head_dim;
  const auto heads = [&](const at::Tensor& t, int64_t first) { return t.narrow(-1, first, D).unflatten(-1, {H, hd}); };
  const auto rotated = [&](const at::Tensor& t, int64_t first, const RopeTable& table) {
    return apply_rope(split_heads(t.narrow(-1, first, D), H, hd), table).transpose(1, 2);
  };
  MolAttentionInputs in{rotated(qkv, 0, tables.chunk),           rotated(qkv, D, tables.chunk),  heads(qkv, 2 * D),
                        rotated(cond.adapter, 0, tables.adapter), heads(cond.adapter, D + H),     cond.adapter.narrow(-1, D, H),
                        rotated(cond.task, 0, tables.task),       heads(cond.task, D),            b.gating_factor};
  return cuda::mol_attention(in, qkv.scalar_type()).flatten(2);
#else
  fail(ErrorCode::Config, "MoL attention: the CUDA kernel is not in this CPU-only build");
#endif
}

}  // namespace

MolBlock MolBlock::load(const io::StateDict& sd, const std::string& prefix, int64_t dim, int64_t heads, at::ScalarType dtype) {
  if (heads < 1 || dim % heads != 0 || (dim / heads) % 2 != 0)
    fail(ErrorCode::Checkpoint, sd.source, ": '", prefix, "k_adapter.weight' implies ", heads, " heads for hidden size ", dim,
         "; need a head count dividing it into an even head_dim");
  MolBlock b;
  b.dim = dim;
  b.heads = heads;
  b.head_dim = dim / heads;
  load_params(sd, prefix, mol_block_table(), {.D = dim, .H = heads}, dtype, b.slots());
  return b;
}

ParamSlots MolBlock::slots() {
  return {{"qkv_self", &qkv_self}, {"kv_adapter", &kv_adapter}, {"kv_task", &kv_task}, {"o_proj", &o_proj},
          {"gating_factor", &gating_factor}, {"ffn.0", &ffn_norm}, {"ffn.1", &ffn_fc}};
}

float MolBlock::tanh_g() const { return std::tanh(gating_factor.item<float>()); }

MolCondition mol_condition(const MolBlock& block, const at::Tensor& h_adapter, const at::Tensor& h_task,
                           const MolTables& tables, MolImpl impl) {
  const int64_t D = block.dim, H = block.heads;
  if (impl != MolImpl::Fused) return {impl, block.kv_adapter(h_adapter), block.kv_task(h_task), {}, {}};
  // Keys (and the gate scores) only: values are projected after the attention-weighted sum (mol_fused.cc).
  MolCondition cond{impl, block.kv_adapter.rows(0, D + H)(h_adapter).contiguous(), block.kv_task.rows(0, D)(h_task).contiguous(),
                    h_adapter, h_task};
  apply_rope_inplace(cond.adapter, 0, H, block.head_dim, tables.adapter);
  apply_rope_inplace(cond.task, 0, H, block.head_dim, tables.task);
  return cond;
}

at::Tensor mol_forward(const MolBlock& block, const at::Tensor& x, const MolCondition& cond, const at::Tensor& h_memory,
                       const MolTables& tables, BlockTrace* trace) {
  at::Tensor qkv = block.qkv_self(x).contiguous();
  at::Tensor mix;
  if (cond.impl == MolImpl::Fused) {
    apply_rope_inplace(qkv, 0, 2 * block.heads, block.head_dim, tables.chunk);  // q and k_self are adjacent
    mix = mol_attention_fused(block, qkv, cond);
  } else if (cond.impl == MolImpl::Cuda) {
    mix = mix_cuda(block, qkv, cond, tables);
  } else {
    mix = mix_reference(block, qkv, cond, tables, trace);
  }
  return block_output(block.o_proj, block.ffn_norm, block.ffn_fc, x, mix, h_memory, trace);
}

at::Tensor block_output(const Linear& o_proj, const LayerNorm& ffn_norm, const Linear& ffn_fc, const at::Tensor& x,
                        const at::Tensor& mix, const at::Tensor& h_memory, BlockTrace* trace) {
  at::Tensor o = o_proj(mix);
  at::Tensor ctx, mem_weights;
  if (h_memory.defined()) ctx = memory_context(x, h_memory, trace ? &mem_weights : nullptr);
  at::Tensor ffn_in = ctx.defined() ? o + ctx + x : o + x;
  at::Tensor out = at::relu(ffn_fc(ffn_norm(ffn_in)));
  if (trace) {
    trace->in = x;
    trace->o_proj_out = o;
    trace->mem_weights = mem_weights;
    trace->mem_context = ctx;
    trace->ffn_in = ffn_in;
    trace->out = out;
  }
  return out;
}

}  // namespace m2vla::head
