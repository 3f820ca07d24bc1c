#include "model/qwen2.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "error.h"
#include "head/simd.h"
#include "model/attention.h"

namespace m2vla::model {
namespace {

RmsNorm load_rms(const Weights& sd, const std::string& name, int64_t dim, double eps) {
  return {sd.get(name + ".weight", {dim}), eps};
}

// HF rotate_half: [x1, x2] -> [-x2, x1] over the two halves of head_dim (not interleaved pairs).
at::Tensor rotate_half(const at::Tensor& x) {
  auto halves = x.chunk(2, -1);
  return at::cat({-halves[1], halves[0]}, -1);
}

at::Tensor apply_rope(const at::Tensor& x, const Rope& r) { return x * r.cos + rotate_half(x) * r.sin; }

// Inference on the CPU: ATen has no fused CPU kernel for either op (at::rms_norm decomposes into pow, mean, add,
// rsqrt, mul and a float32 copy; RoPE as above is six passes with a chunk and a cat), and they measured ~20 % of the
// bf16 LLM in the profile of docs/benchmarks.md. One pass each, float32 inside, 16 lanes so the loops vectorize.
// bfloat16 only: in float32 the ATen ops stay, bit for bit what the parity fixtures (rounded to bf16 with
// referenceCasts) were made with; a reordered float32 sum flips a bf16 rounding there.
bool fused_cpu(const at::Tensor& x) {
  return x.is_cpu() && !at::GradMode::is_enabled() && x.is_contiguous() && x.scalar_type() == at::kBFloat16;
}

// HF Qwen2RMSNorm's roundings: the normalized row is rounded to the activation dtype, then scaled by the weight.
template <typename T>
M2VLA_SIMD_CLONES void rms_row(const T* x, const T* w, T* y, int64_t n, float eps) {
  constexpr int64_t kLanes = 16;
  float lanes[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += float(x[d + l]) * float(x[d + l]);
  float s = 0;
  for (; d < n; ++d) s += float(x[d]) * float(x[d]);
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  const float r = 1.0f / std::sqrt(s / float(n) + eps);
  for (d = 0; d < n; ++d) y[d] = T(float(w[d]) * float(T(float(x[d]) * r)));
}

at::Tensor rms_norm_fused(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor y = at::empty_like(x);
  const int64_t n = x.size(-1), rows = x.numel() / n;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "rms_norm_fused", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) rms_row<scalar_t>(xp + r * n, wp, yp + r * n, n, float(eps));
    });
  });
  return y;
}

// rotate_half RoPE in place on `heads` consecutive heads of each row, with HF's roundings in the activation dtype
// (x * cos and rotate_half(x) * sin each rounded, then their sum): (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
template <typename T>
M2VLA_SIMD_CLONES void rope_row(T* row, int64_t heads, int64_t half, const T* cos, const T* sin) {
  for (int64_t h = 0; h < heads; ++h) {
    T* x1 = row + h * 2 * half;
    T* x2 = x1 + half;
    for (int64_t d = 0; d < half; ++d) {
      const float a = float(x1[d]), b = float(x2[d]), c = float(cos[d]), s = float(sin[d]);
      x1[d] = T(float(T(a * c)) + float(T(-b * s)));
      x2[d] = T(float(T(b * c)) + float(T(a * s)));
    }
  }
}

// qkv [B, T, cols] (contiguous): RoPE on its first `heads` heads (q then k), row t at position start + t.
void rope_inplace(at::Tensor& qkv, int64_t heads, int64_t head_dim, const Rope& r) {
  const int64_t t = qkv.size(1), cols = qkv.size(2), half = head_dim / 2;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, qkv.scalar_type(), "qwen2_rope", [&] {
    const scalar_t* cos = r.cos.const_data_ptr<scalar_t>();  // [T, head_dim]: both halves hold the same values
    const scalar_t* sin = r.sin.const_data_ptr<scalar_t>();
    scalar_t* base = qkv.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, qkv.size(0) * t, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row)
        rope_row<scalar_t>(base + row * cols, heads, half, cos + (row % t) * head_dim, sin + (row % t) * head_dim);
    });
  });
}

}  // namespace

// ATen's rms_norm (float32 inside) under autograd or on a GPU; one fused pass on the CPU otherwise (see above).
at::Tensor RmsNorm::operator()(const at::Tensor& x) const {
  if (fused_cpu(x) && weight.scalar_type() == x.scalar_type()) return rms_norm_fused(x, weight, eps);
  return at::rms_norm(x, {weight.size(0)}, weight, eps);
}

Qwen2::Qwen2(const LlmConfig& cfg, const Weights& sd, const std::string& prefix) : cfg_(cfg) {
  const int64_t d = cfg.hidden_size, hd = cfg.head_dim, q_out = cfg.num_heads * hd, kv_out = cfg.num_kv_heads * hd;
  if (cfg.num_layers < 1) fail(ErrorCode::Config, "llm: num_layers must be at least 1, got ", cfg.num_layers);
  if (cfg.num_kv_heads <= 0 || cfg.num_heads % cfg.num_kv_heads != 0)
    fail(ErrorCode::Config, "llm: num_heads ", cfg.num_heads, " is not a multiple of num_kv_heads ", cfg.num_kv_heads);
  if (hd % 2 != 0) fail(ErrorCode::Config, "llm: head_dim ", hd, " must be even for rotary embeddings");

  // A view of the mapped checkpoint where the dtype matches (take, not get): act() reads a few rows, so the other
  // ~270 MB of the table stay on disk instead of in the resident set (generate()'s LM head pages them in).
  embed_tokens_ = sd.take(prefix + "embed_tokens.weight", {cfg.vocab_size, d});
  // HF: 1 / theta^(arange(0, head_dim, 2) / head_dim), computed in float32.
  inv_freq_ = (1.0 / at::pow(cfg.rope_theta, at::arange(0, hd, 2, at::kLong).to(at::kFloat) / double(hd)))
                  .to(embed_tokens_.device());

  for (int64_t i = 0; i < cfg.num_layers; ++i) {
    const std::string p = prefix + "layers." + std::to_string(i) + ".";
    const std::string gate = p + "mlp.gate_proj", up = p + "mlp.up_proj";
    const int64_t inter = cfg.intermediate_size;
    const bool split = sd.linear == LinearKernel::Onednn;  // see Layer::gate
    layers_.push_back(Layer{
        load_rms(sd, p + "input_layernorm", d, cfg.rms_norm_eps),
        Linear::load_stacked(sd, {p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"}, {q_out, kv_out, kv_out},
                             d, /*bias=*/true),
        Linear::load(sd, p + "self_attn.o_proj", d, q_out, /*bias=*/false),
        load_rms(sd, p + "post_attention_layernorm", d, cfg.rms_norm_eps),
        split ? Linear::load(sd, gate, inter, d, false) : Linear::load_stacked(sd, {gate, up}, {inter, inter}, d, false),
        split ? Linear::load(sd, up, inter, d, false) : Linear(),
        Linear::load(sd, p + "mlp.down_proj", d, inter, /*bias=*/false),
    });
  }
  norm_ = load_rms(sd, prefix + "norm", d, cfg.rms_norm_eps);
}

at::Tensor Qwen2::embed(const at::Tensor& ids) const { return at::embedding(embed_tokens_, ids); }

Rope Qwen2::rope(int64_t start, int64_t length, at::ScalarType dtype) const {
  at::Tensor pos = at::arange(start, start + length, inv_freq_.options().dtype(at::kLong)).to(at::kFloat);
  at::Tensor freqs = at::outer(pos, inv_freq_);  // [T, head_dim/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);  // [T, head_dim]
  return {emb.cos().to(dtype).contiguous(), emb.sin().to(dtype).contiguous()};
}

at::Tensor Qwen2::attention(int64_t i, const at::Tensor& x, const Rope& r, const History& history) const {
  const int64_t b = x.size(0), t = x.size(1), h = cfg_.num_heads, kvh = cfg_.num_kv_heads, hd = cfg_.head_dim;
  at::Tensor projected = layers_[i].qkv(x);
  const bool fused = fused_cpu(projected) && r.cos.scalar_type() == projected.scalar_type();
  if (fused) rope_inplace(projected, h + kvh, hd, r);  // q and k heads are adjacent
  auto qkv = projected.split({h * hd, kvh * hd, kvh * hd}, -1);
  at::Tensor q = qkv[0].view({b, t, h, hd}).transpose(1, 2);  // [B, heads, T, hd]
  at::Tensor k = qkv[1].view({b, t, kvh, hd}).transpose(1, 2);
  at::Tensor v = qkv[2].view({b, t, kvh, hd}).transpose(1, 2);
  if (!fused) q = apply_rope(q, r), k = apply_rope(k, r);
  // bf16 CPU inference over this call's own keys (act(), a prompt into an empty cache): batched GEMMs (attention.h).
  const bool gemm = fused && gemm_attention_applies(projected) && !history.read && (!history.append || history.append->length == 0);
  bool causal = true;
  std::optional<at::Tensor> mask;
  if (KvCache* cache = history.append) {
    const int64_t start = cache->length;
    if (start > 0 && t > 1) fail(ErrorCode::Native, "Qwen2: extend() takes the prompt once, then one token per call");
    cache->keys[i].narrow(2, start, t).copy_(k);
    cache->values[i].narrow(2, start, t).copy_(v);
    k = cache->keys[i].narrow(2, 0, start + t);
    v = cache->values[i].narrow(2, 0, start + t);
    causal = start == 0;  // a single new token attends to every cached position
    if (gemm) return gemm_attention(qkv[0], qkv[1], qkv[2], h, kvh, /*causal=*/true);
  } else if (const KvCache* past = history.read) {
    // SDPA's is_causal aligns the mask top-left, wrong for queries that follow other positions: pass it explicitly.
    k = at::cat({past->keys[i].narrow(2, 0, past->length), k}, 2);
    v = at::cat({past->values[i].narrow(2, 0, past->length), v}, 2);
    causal = false;
    mask = history.read_mask;
  } else if (gemm) {
    return gemm_attention(qkv[0], qkv[1], qkv[2], h, kvh, /*causal=*/true);
  }
  // Scale head_dim^-0.5 (SDPA's default, as HF eager); each kv head serves heads/kv_heads query heads (GQA).
  at::Tensor out = at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, causal,
                                                    /*scale=*/std::nullopt, /*enable_gqa=*/kvh != h);
  return out.transpose(1, 2).reshape({b, t, h * hd});
}

// In place in the gate half of the fused projection's output, unless autograd needs the gate for the backward.
at::Tensor Qwen2::mlp_activation(const Layer& l, const at::Tensor& x) const {
  if (l.up.weight.defined()) return l.up.times(x, l.gate(x, Linear::Act::Silu));
  auto gate_up = l.gate(x).chunk(2, -1);
  if (at::GradMode::is_enabled()) return at::silu(gate_up[0]) * gate_up[1];
  return at::silu_(gate_up[0]).mul_(gate_up[1]);
}

at::Tensor Qwen2::layer(int64_t i, const at::Tensor& x, const Rope& r, const History& history) const {
  const Layer& l = layers_[i];
  at::Tensor h = l.o_proj.plus(attention(i, l.input_norm(x), r, history), x);
  return l.down.plus(mlp_activation(l, l.post_attention_norm(h)), h);
}

at::Tensor Qwen2::hidden_states(const at::Tensor& inputs_embeds, KvCache* cache) const {
  const int64_t n = cfg_.num_layers, b = inputs_embeds.size(0), t = inputs_embeds.size(1);
  if (cache && (cache->length != 0 || cache->keys[0].size(2) < t))
    fail(ErrorCode::Native, "Qwen2: hidden_states() needs an empty cache of at least ", t, " positions");
  const Rope r = rope(0, t, inputs_embeds.scalar_type());
  const History history{cache};
  at::Tensor hs;
  if (at::GradMode::is_enabled()) {
    hs = stacked_hidden_states(inputs_embeds, r, history);  // autograd cannot record out= ops
  } else {
    // Each layer's output is copied into its slot of the result as it comes: no stack of them all at the end.
    hs = at::empty({n + 1, b, t, cfg_.hidden_size}, inputs_embeds.options());
    hs[0].copy_(inputs_embeds);
    at::Tensor x = inputs_embeds;
    for (int64_t i = 0; i < n; ++i) {
      x = layer(i, x, r, history);
      if (i + 1 < n) hs[i + 1].copy_(x);
    }
    hs[n].copy_(norm_(x));
  }
  if (cache) cache->length = t;
  return hs;
}

at::Tensor Qwen2::hidden_states_after(const KvCache& past, const at::Tensor& inputs_embeds) const {
  const int64_t t = inputs_embeds.size(1), s = past.length;
  // New token j (at position s + j) sees every past position and the new tokens up to itself.
  const auto flags = inputs_embeds.options().dtype(at::kBool);
  at::Tensor mask = at::cat({at::ones({t, s}, flags), at::ones({t, t}, flags).tril()}, 1);
  return stacked_hidden_states(inputs_embeds, rope(s, t, inputs_embeds.scalar_type()), History{nullptr, &past, mask});
}

at::Tensor Qwen2::stacked_hidden_states(const at::Tensor& inputs_embeds, const Rope& r, const History& history) const {
  const int64_t n = cfg_.num_layers;
  std::vector<at::Tensor> states{inputs_embeds};
  at::Tensor x = inputs_embeds;
  for (int64_t i = 0; i < n; ++i) {
    x = layer(i, x, r, history);
    states.push_back(i + 1 < n ? x : norm_(x));
  }
  return at::stack(states);
}

KvCache Qwen2::make_cache(int64_t batch, int64_t capacity, at::ScalarType dtype) const {
  KvCache c;
  for (int64_t i = 0; i < cfg_.num_layers; ++i) {
    c.keys.push_back(at::empty({batch, cfg_.num_kv_heads, capacity, cfg_.head_dim}, embed_tokens_.options().dtype(dtype)));
    c.values.push_back(at::empty_like(c.keys.back()));
  }
  return c;
}

at::Tensor Qwen2::extend(const at::Tensor& inputs_embeds, KvCache& cache) const {
  const int64_t t = inputs_embeds.size(1);
  if (cache.length + t > cache.keys[0].size(2))
    fail(ErrorCode::Native, "Qwen2: KV cache of ", cache.keys[0].size(2), " positions is full");
  const Rope r = rope(cache.length, t, inputs_embeds.scalar_type());
  at::Tensor x = inputs_embeds;
  for (int64_t i = 0; i < cfg_.num_layers; ++i) x = layer(i, x, r, History{&cache});
  cache.length += t;
  return norm_(x);
}

at::Tensor Qwen2::logits(const at::Tensor& hidden) const { return at::linear(hidden, embed_tokens_).to(at::kFloat); }

}  // namespace m2vla::model
