#include "head/cross_block.h"

#include <ATen/ATen.h>

#include <cmath>

#include "error.h"

namespace m2vla::head {
namespace {

void check_heads(const io::StateDict& sd, const std::string& prefix, int64_t dim, int64_t heads) {
  if (heads < 1 || dim % heads != 0 || (dim / heads) % 2 != 0)
    fail(ErrorCode::Config, sd.source, ": '", prefix, "*': ", heads, " heads do not divide hidden size ", dim,
         " into an even head_dim");
}

CrossBlock make(const io::StateDict& sd, const std::string& prefix, int64_t dim, int64_t heads, at::ScalarType dtype,
                bool from_mol) {
  check_heads(sd, prefix, dim, heads);
  CrossBlock b;
  b.dim = dim;
  b.heads = heads;
  b.head_dim = dim / heads;
  load_params(sd, prefix, cross_block_table(), {.D = dim, .H = heads}, dtype, CrossBlock::slots(b), from_mol);
  return b;
}

// [B, n, H*hd] -> [B, H, n, hd]
at::Tensor split_heads(const at::Tensor& t, int64_t heads, int64_t head_dim) {
  return t.reshape({t.size(0), t.size(1), heads, head_dim}).transpose(1, 2);
}

}  // namespace

CrossBlock CrossBlock::load(const io::StateDict& sd, const std::string& prefix, int64_t dim, int64_t heads, at::ScalarType dtype) {
  return make(sd, prefix, dim, heads, dtype, false);
}

CrossBlock CrossBlock::from_mol(const io::StateDict& sd, const std::string& prefix, int64_t dim, int64_t heads, at::ScalarType dtype) {
  return make(sd, prefix, dim, heads, dtype, true);
}

at::Tensor cross_keys(const CrossBlock& block, const at::Tensor& tokens, const RopeTable& token_rope) {
  return apply_rope(split_heads(block.kv_last.rows(0, block.dim)(tokens), block.heads, block.head_dim), token_rope);
}

at::Tensor cross_forward(const CrossBlock& block, const at::Tensor& x, const at::Tensor& keys, const at::Tensor& tokens,
                         const at::Tensor& h_memory, const RopeTable& chunk_rope, BlockTrace* trace) {
  const int64_t D = block.dim, H = block.heads, hd = block.head_dim;
  at::Tensor q = apply_rope(split_heads(block.q_proj(x), H, hd), chunk_rope);
  at::Tensor w = at::softmax(at::matmul(q, keys.transpose(-2, -1)) / std::sqrt(double(hd)), -1);  // [B, H, chunk, n]
  // v_last applied after the weighted sum (see the header): [B, H, chunk, D] x per-head rows [H, D, hd].
  const Linear v = block.kv_last.rows(D, D);
  at::Tensor pooled = at::matmul(w, tokens.unsqueeze(1));
  at::Tensor values = at::matmul(pooled, v.weight.view({H, hd, D}).transpose(1, 2)) + v.bias.view({H, 1, hd});
  at::Tensor mix = values.transpose(1, 2).reshape({x.size(0), x.size(1), D});
  if (trace) {
    trace->ca_v_weights = w;
    trace->attn_mix = mix;
  }
  return block_output(block.o_proj, block.ffn_norm, block.ffn_fc, x, mix, h_memory, trace);
}

}  // namespace m2vla::head
