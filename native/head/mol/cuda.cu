// Fused MoL attention (kernels.h): one launch per block of the head computes the three branches of every
// (batch, head) pair: self, adapter (action queries + proprio, gated) and task (vision, logits × tanh(g)).
//
// Layout of the work: a CUDA block per (head, batch); warp w owns query w (T ≤ 8) for the whole block, so its
// softmax statistics and output accumulators live in registers and need no block-wide reduction. Keys stream
// through shared memory in tiles of 32 (one key per lane for the logits); each branch uses an online softmax
// (running max and sum rescaled per tile) so a key and its value are read from global memory exactly once per
// (batch, head). The queries are read once into shared memory as fp32; all arithmetic is fp32.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "cuda/kernels.h"

namespace {

constexpr int kWarp = 32;
constexpr int kTileKeys = kWarp;  // one key per lane when computing logits
constexpr int kThreads = M2VLA_MOL_MAX_QUERIES * kWarp;
constexpr int kDimsPerLane = M2VLA_MOL_MAX_HEAD_DIM / kWarp;
// A shared-memory key row is head_dim + 2 bf16 long: an odd number of 32-bit words, so 32 lanes reading 32
// different rows at the same column hit 32 different banks.
constexpr int kSmemRow = M2VLA_MOL_MAX_HEAD_DIM + 2;

struct Branch {
  const __nv_bfloat16* keys;    // this (batch, head)'s first key; head_dim contiguous
  const __nv_bfloat16* values;
  int64_t key_stride, value_stride;  // elements between consecutive tokens
  int count;
  float scale;  // multiplies q·k
};

struct TileMemory {
  float q[M2VLA_MOL_MAX_QUERIES][M2VLA_MOL_MAX_HEAD_DIM];
  __nv_bfloat16 k[kTileKeys][kSmemRow];
  __nv_bfloat16 v[kTileKeys][kSmemRow];
};

__device__ float warp_max(float x) {
  for (int o = kWarp / 2; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ float warp_sum(float x) {
  for (int o = kWarp / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Copies `rows` token rows of head_dim bf16 into a shared tile, two elements (one 32-bit word) per thread and step.
__device__ void load_rows(__nv_bfloat16 (*tile)[kSmemRow], const __nv_bfloat16* src, int64_t stride, int rows,
                          int head_dim) {
  const int words_per_row = head_dim / 2;
  for (int i = threadIdx.x; i < rows * words_per_row; i += blockDim.x) {
    const int r = i / words_per_row, c = i % words_per_row;
    const auto* row = reinterpret_cast<const __nv_bfloat162*>(src + r * stride);
    reinterpret_cast<__nv_bfloat162*>(tile[r])[c] = row[c];
  }
}

// softmax(scale · q·Kᵀ)·V for this warp's query, normalized, in the lane's dims (lane + 32·i). Every thread of the
// block calls it (the tile loads need all of them); warps without a query only help loading.
__device__ __forceinline__ void attend(const Branch& br, TileMemory& mem, int query_count, int head_dim, float ctx[kDimsPerLane]) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const bool has_query = warp < query_count;
  float running_max = -INFINITY, running_sum = 0.0f;
  float acc[kDimsPerLane] = {};

  for (int first = 0; first < br.count; first += kTileKeys) {
    const int rows = min(kTileKeys, br.count - first);
    __syncthreads();  // the previous tile is no longer read
    load_rows(mem.k, br.keys + first * br.key_stride, br.key_stride, rows, head_dim);
    load_rows(mem.v, br.values + first * br.value_stride, br.value_stride, rows, head_dim);
    __syncthreads();
    if (!has_query) continue;

    float logit = -INFINITY;
    if (lane < rows) {
      const auto* q2 = reinterpret_cast<const float2*>(mem.q[warp]);
      const auto* k2 = reinterpret_cast<const __nv_bfloat162*>(mem.k[lane]);
      float dot = 0.0f;
      for (int c = 0; c < head_dim / 2; ++c) {
        const float2 q = q2[c], k = __bfloat1622float2(k2[c]);
        dot = fmaf(q.x, k.x, dot);
        dot = fmaf(q.y, k.y, dot);
      }
      logit = dot * br.scale;
    }
    // Online softmax: rescale what was accumulated under the old maximum to the new one.
    const float new_max = fmaxf(running_max, warp_max(logit));
    const float rescale = expf(running_max - new_max);  // 0 on the first tile (running_max = -inf)
    const float p = lane < rows ? expf(logit - new_max) : 0.0f;
    running_sum = running_sum * rescale + warp_sum(p);
    running_max = new_max;
    for (int i = 0; i < kDimsPerLane; ++i) acc[i] *= rescale;
    for (int j = 0; j < rows; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int d = lane + kWarp * i;
        if (d < head_dim) acc[i] = fmaf(pj, __bfloat162float(mem.v[j][d]), acc[i]);
      }
    }
  }
  const float inv_sum = has_query ? 1.0f / running_sum : 0.0f;
  for (int i = 0; i < kDimsPerLane; ++i) ctx[i] = acc[i] * inv_sum;
}

__device__ const __nv_bfloat16* head_ptr(const m2vla_heads_view& v, int b, int h) {
  return static_cast<const __nv_bfloat16*>(v.data) + b * v.batch_stride + h * v.head_stride;
}

__device__ void store(float* p, float x) { *p = x; }
__device__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

template <typename Out>
__global__ void __launch_bounds__(kThreads) mol_attention_kernel(const m2vla_mol_args args) {
  __shared__ TileMemory mem;
  const int h = blockIdx.x, b = blockIdx.y;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int T = args.queries, hd = args.head_dim;

  // The queries, once, as fp32.
  const __nv_bfloat16* q = head_ptr(args.q, b, h);
  for (int i = threadIdx.x; i < T * hd; i += blockDim.x)
    mem.q[i / hd][i % hd] = __bfloat162float(q[(i / hd) * args.q.token_stride + i % hd]);
  // (attend() synchronizes before it first reads mem.q.)

  // Head-wise dynamic factor α_S = sigmoid(mean over the adapter tokens of this head's gate logit); every warp
  // computes it, which is cheaper than a block-wide broadcast.
  const __nv_bfloat16* gate = head_ptr(args.gate, b, h);
  float gate_sum = 0.0f;
  for (int j = lane; j < args.adapter_keys; j += kWarp) gate_sum += __bfloat162float(gate[j * args.gate.token_stride]);
  gate_sum = warp_sum(gate_sum);
  const float alpha = 1.0f / (1.0f + expf(-gate_sum / float(args.adapter_keys)));

  const float scale = 1.0f / sqrtf(float(hd));  // correctly rounded, like the CPU path
  const float tanh_g = tanhf(*args.gating_factor);
  const Branch self{head_ptr(args.k_self, b, h), head_ptr(args.v_self, b, h), args.k_self.token_stride,
                    args.v_self.token_stride, T, scale};
  const Branch adapter{head_ptr(args.k_adapter, b, h), head_ptr(args.v_adapter, b, h), args.k_adapter.token_stride,
                       args.v_adapter.token_stride, args.adapter_keys, scale};
  const Branch task{head_ptr(args.k_task, b, h), head_ptr(args.v_task, b, h), args.k_task.token_stride,
                    args.v_task.token_stride, args.task_keys, tanh_g * scale};

  float ctx_self[kDimsPerLane], ctx_adapter[kDimsPerLane], ctx_task[kDimsPerLane];
  attend(self, mem, T, hd, ctx_self);
  attend(adapter, mem, T, hd, ctx_adapter);
  attend(task, mem, T, hd, ctx_task);
  if (warp >= T) return;

  Out* out = static_cast<Out*>(args.out) + b * args.out_batch_stride + warp * args.out_token_stride +
             h * args.out_head_stride;
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int d = lane + kWarp * i;
    if (d < hd) store(out + d, (ctx_self[i] + alpha * ctx_adapter[i] + ctx_task[i]) / 3.0f);
  }
}

bool aligned_pairs(const m2vla_heads_view& v) {
  return v.data && reinterpret_cast<uintptr_t>(v.data) % 4 == 0 && v.batch_stride % 2 == 0 &&
         v.token_stride % 2 == 0 && v.head_stride % 2 == 0;
}

bool valid(const m2vla_mol_args& a) {
  if (a.batch < 0 || a.heads < 1 || a.heads > 65535 || a.batch > 65535) return false;
  if (a.queries < 1 || a.queries > M2VLA_MOL_MAX_QUERIES || a.adapter_keys < 1 || a.task_keys < 1) return false;
  if (a.head_dim < 2 || a.head_dim > M2VLA_MOL_MAX_HEAD_DIM || a.head_dim % 2 != 0) return false;
  for (const m2vla_heads_view* v : {&a.q, &a.k_self, &a.v_self, &a.k_adapter, &a.v_adapter, &a.k_task, &a.v_task})
    if (!aligned_pairs(*v)) return false;
  return a.gate.data && a.gating_factor && a.out &&
         (a.out_dtype == M2VLA_OUT_BF16 || a.out_dtype == M2VLA_OUT_FLOAT32);
}

}  // namespace

extern "C" cudaError_t m2vla_mol_attention(const m2vla_mol_args* args, cudaStream_t stream) {
  if (!args || !valid(*args)) return cudaErrorInvalidValue;
  if (args->batch == 0) return cudaSuccess;
  const dim3 grid(args->heads, args->batch);
  if (args->out_dtype == M2VLA_OUT_BF16)
    mol_attention_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(*args);
  else
    mol_attention_kernel<float><<<grid, kThreads, 0, stream>>>(*args);
  return cudaGetLastError();
}
