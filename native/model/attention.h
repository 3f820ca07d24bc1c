// The VLM's self-attention (the ViT towers and Qwen2) for bfloat16 inference on the CPU, as batched GEMMs.
//
// Why not at::scaled_dot_product_attention there: ATen's CPU flash kernel runs these shapes at 100-150 GFLOP/s in
// bfloat16 on a CPU without AMX (AMD Zen 5, 2 threads: 5.0 ms for DINOv2's 2x16 heads x 261 tokens, 10.4 ms for
// Qwen2's 14 heads x 627 causal tokens) while oneDNN's bf16 batched matmuls reach ~600; the profile of a full-size act()
// put SDPA at ~23 % of it (docs/benchmarks.md). Here: scores = (q * scale) k^T as one bmm per kv head group (the GQA
// query heads of a kv head stacked as rows, so K and V are never repeated), softmax (float32 inside), P V as one bmm;
// causal attention in row blocks, each over only the keys its rows can see (~60 % of the full square).
//
// Numerics are HF's "eager" attention's in bfloat16 (scores rounded to bf16 before the softmax), not the flash
// kernel's (float32 scores): mean |error| against a float64 reference ~2x the flash kernel's (3.1e-4 vs 1.7e-4 on
// unit-normal inputs). float32, training (autograd) and other devices keep at::scaled_dot_product_attention.
#pragma once
#include <ATen/core/Tensor.h>

namespace m2vla::model {

// Whether gemm_attention() below serves `x` (bfloat16 on the CPU, no autograd).
bool gemm_attention_applies(const at::Tensor& x);

// q [B, T, heads * head_dim], k and v [B, S, kv_heads * head_dim] (views with any row stride, e.g. slices of a fused
// qkv projection), heads a multiple of kv_heads (query head h reads kv head h / (heads / kv_heads)); scale
// head_dim^-0.5. causal: query t (position S - T + t) sees keys 0 .. S - T + t. Returns [B, T, heads * head_dim].
at::Tensor gemm_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads, int64_t kv_heads,
                          bool causal);

}  // namespace m2vla::model
