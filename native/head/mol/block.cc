#include "head/mol/block.h"

#include <ATen/ATen.h>

#include <cmath>

#include "error.h"
#include "head/mol/reference.h"
#include "head/msm/bank.h"
#ifdef M2VLA_WITH_CUDA
#include "cuda/cuda_glue.h"
#endif

namespace m2vla::head {
namespace {

// The attention contract's inputs (mol/reference.h) from the projections: [B, n, H, hd] views, q and keys rotated.
MolAttentionInputs attention_inputs(const MolBlock& b, const at::Tensor& qkv, const MolCondition& cond,
                                    const MolTables& tables) {
  MolAttentionInputs in = mol_attention_views(qkv, cond.adapter, cond.task, b.gating_factor, b.heads);
  // apply_rope rotates [B, H, n, hd]
  const auto rotated = [](const at::Tensor& t, const RopeTable& table) { return apply_rope(t.transpose(1, 2), table).transpose(1, 2); };
  in.q = rotated(in.q, tables.chunk);
  in.k_self = rotated(in.k_self, tables.chunk);
  in.k_adapter = rotated(in.k_adapter, tables.adapter);
  in.k_task = rotated(in.k_task, tables.task);
  return in;
}

// The reference attention in the head's dtype, as the reference model computes it; the trace gets its intermediates.
at::Tensor mix_reference(const MolBlock& b, const at::Tensor& qkv, const MolCondition& cond, const MolTables& tables,
                         BlockTrace* trace) {
  MolAttentionWeights w;
  at::Tensor mix = mol_attention_reference(attention_inputs(b, qkv, cond, tables), qkv.scalar_type(), trace ? &w : nullptr)
                       .reshape({qkv.size(0), qkv.size(1), b.dim});
  if (trace) {
    trace->tanh_g = w.tanh_g;
    trace->sa_weights = w.sa;
    trace->ca_s_weights = w.ca_s;
    trace->ca_s_gate = w.ca_s_gate;
    trace->ca_v_weights = w.ca_v;
    trace->attn_mix = mix;
  }
  return mix;
}

at::Tensor mix_cuda(const MolBlock& b, const at::Tensor& qkv, const MolCondition& cond, const MolTables& tables) {
#ifdef M2VLA_WITH_CUDA
  return cuda::mol_attention(attention_inputs(b, qkv, cond, tables), qkv.scalar_type()).flatten(2);
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
  load_params(sd, prefix, mol_block_table(), {.D = dim, .H = heads}, dtype, slots(b));
  return b;
}

float MolBlock::tanh_g() const { return std::tanh(gating_factor.item<float>()); }

MolCondition mol_condition(const MolBlock& block, const at::Tensor& h_adapter, const at::Tensor& h_task,
                           const MolTables& tables, Backend backend) {
  const int64_t D = block.dim, H = block.heads;
  if (backend != Backend::CpuFused) return {backend, block.kv_adapter(h_adapter), block.kv_task(h_task), {}, {}};
  // Keys (and the gate scores) only: values are projected after the attention-weighted sum (fused_cpu.cc).
  MolCondition cond{backend, block.kv_adapter.rows(0, D + H)(h_adapter).contiguous(), block.kv_task.rows(0, D)(h_task).contiguous(),
                    h_adapter, h_task};
  apply_rope_inplace(cond.adapter, 0, H, block.head_dim, tables.adapter);
  apply_rope_inplace(cond.task, 0, H, block.head_dim, tables.task);
  return cond;
}

at::Tensor mol_forward(const MolBlock& block, const at::Tensor& x, const MolCondition& cond, const at::Tensor& h_memory,
                       const MolTables& tables, BlockTrace* trace) {
  at::Tensor qkv = block.qkv_self(x).contiguous();
  at::Tensor mix;
  if (cond.backend == Backend::CpuFused) {
    apply_rope_inplace(qkv, 0, 2 * block.heads, block.head_dim, tables.chunk);  // q and k_self are adjacent
    mix = mol_attention_fused(block, qkv, cond);
  } else if (cond.backend == Backend::Cuda) {
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
