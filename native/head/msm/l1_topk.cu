// MSM retrieval (kernels.h): L1 similarity of fp32 queries to the bf16 bank keys and the top-R per query, without a
// [batch, size] similarity matrix in memory.
//
// Pass 1 (tile_topk_kernel): a block takes 64 bank rows × up to 8 queries. The key dims stream through shared memory
// in 128-wide chunks (128-bit global loads); each thread owns one row and a quarter of every chunk and keeps one
// fp32 |q − k| accumulator per query, so a loaded key element serves every query of the block. The four quarter
// sums are added in a fixed order, turned into similarities, and one warp per query keeps that tile's top R.
// Pass 2 (merge_kernel): one warp per query merges the tiles' candidates into the global top R.
//
// Ranking is a strict total order on (similarity, logical index): NaN first (as torch.topk), then larger
// similarity, then lower index. Each selection round picks the best candidate ranked after the previous winner,
// so nothing is marked or sorted in place.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace {

constexpr int kWarp = 32;
constexpr int kTileRows = 64;
constexpr int kChunk = 128;                       // key dims per shared-memory pass
constexpr int kGroups = 4;                        // a row's chunk is split over this many threads
constexpr int kThreads = kTileRows * kGroups;     // 256
constexpr int kDimsPerGroup = kChunk / kGroups;   // 32
constexpr int kMaxQueriesPerBlock = kThreads / kWarp;  // one warp per query when selecting
// A shared key row is 132 bf16 = 33 8-byte words (odd): the 64-bit loads of 16 consecutive rows at one column fall
// into 16 different bank pairs.
constexpr int kKeyRow = kChunk + 4;
constexpr int64_t kNoIndex = INT64_MAX;  // an empty candidate slot; ranks after every real row

struct Candidate {
  float similarity;
  int64_t index;
};

__device__ bool ranks_before(const Candidate& a, const Candidate& b) {
  const bool a_nan = isnan(a.similarity), b_nan = isnan(b.similarity);
  if (a_nan != b_nan) return a_nan;
  if (!a_nan && a.similarity != b.similarity) return a.similarity > b.similarity;
  return a.index < b.index;
}

__device__ Candidate warp_best(Candidate c) {
  for (int o = kWarp / 2; o > 0; o /= 2) {
    Candidate other{__shfl_xor_sync(0xffffffffu, c.similarity, o), __shfl_xor_sync(0xffffffffu, c.index, o)};
    if (ranks_before(other, c)) c = other;
  }
  return c;
}

// Of `c`, the better one if it ranks after `previous` (else an empty slot). `first_round` lifts the bound.
__device__ Candidate best_after(Candidate best, const Candidate& c, const Candidate& previous, bool first_round) {
  if ((first_round || ranks_before(previous, c)) && ranks_before(c, best)) return c;
  return best;
}

template <int Q>
struct TileMemory {
  static_assert(Q >= 1 && Q <= kMaxQueriesPerBlock, "one selecting warp per query");
  __align__(16) __nv_bfloat16 keys[kTileRows][kKeyRow];
  __align__(16) float queries[Q][kChunk];
  float partial[kGroups][Q][kTileRows];
  float similarity[Q][kTileRows];
};

// Grid: x = query group (Q queries), y = tile of kTileRows logical rows. Consecutive blocks share a tile, so the
// bank is read from DRAM about once and from L2 by the other query groups.
template <int Q>
__global__ void __launch_bounds__(kThreads) tile_topk_kernel(const m2vla_l1_topk_args a, int64_t* cand_index,
                                                             float* cand_similarity) {
  __shared__ TileMemory<Q> mem;
  const int tid = threadIdx.x;
  const int row = tid % kTileRows, group = tid / kTileRows;
  const int query0 = blockIdx.x * Q;
  const int64_t tile = blockIdx.y, first_row = tile * kTileRows;
  const auto* keys = static_cast<const __nv_bfloat16*>(a.keys);

  float acc[Q] = {};
  for (int d0 = 0; d0 < a.key_dim; d0 += kChunk) {
    __syncthreads();  // the previous chunk is no longer read
    // Keys: 16 threads read one row's 256 contiguous bytes; rows past `size` and dims past key_dim are zeros, which
    // add |0 - 0| = 0.
    for (int i = tid; i < kTileRows * (kChunk / 8); i += kThreads) {
      const int r = i / (kChunk / 8), c = i % (kChunk / 8);
      const int64_t logical = first_row + r;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (logical < a.size && d0 + 8 * c < a.key_dim) {
        int64_t physical = a.oldest + logical;
        if (physical >= a.capacity) physical -= a.capacity;
        v = *reinterpret_cast<const uint4*>(keys + physical * a.key_dim + d0 + 8 * c);
      }
      auto* dst = reinterpret_cast<uint2*>(&mem.keys[r][8 * c]);  // 8-byte aligned: rows are 264 bytes
      dst[0] = make_uint2(v.x, v.y);
      dst[1] = make_uint2(v.z, v.w);
    }
    for (int i = tid; i < Q * (kChunk / 4); i += kThreads) {
      const int j = i / (kChunk / 4), c = i % (kChunk / 4);
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (query0 + j < a.batch && d0 + 4 * c < a.key_dim)
        v = *reinterpret_cast<const float4*>(a.queries + int64_t(query0 + j) * a.key_dim + d0 + 4 * c);
      reinterpret_cast<float4*>(mem.queries[j])[c] = v;
    }
    __syncthreads();

    for (int d = group * kDimsPerGroup; d < (group + 1) * kDimsPerGroup; d += 4) {
      const uint2 raw = *reinterpret_cast<const uint2*>(&mem.keys[row][d]);
      const float2 k01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
      const float2 k23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
#pragma unroll
      for (int j = 0; j < Q; ++j) {
        const float4 q = *reinterpret_cast<const float4*>(&mem.queries[j][d]);  // same address in the warp
        acc[j] += fabsf(q.x - k01.x);
        acc[j] += fabsf(q.y - k01.y);
        acc[j] += fabsf(q.z - k23.x);
        acc[j] += fabsf(q.w - k23.y);
      }
    }
  }

#pragma unroll
  for (int j = 0; j < Q; ++j) mem.partial[group][j][row] = acc[j];
  __syncthreads();
  for (int i = tid; i < Q * kTileRows; i += kThreads) {
    const int j = i / kTileRows, r = i % kTileRows;
    float dist = 0.0f;
    for (int g = 0; g < kGroups; ++g) dist += mem.partial[g][j][r];
    // The reference's fp32 operations, in its order: -10000 * (dist / key_dim).
    mem.similarity[j][r] = -10000.0f * (dist / float(a.key_dim));
  }
  __syncthreads();

  // Warp j keeps query j's top R of this tile; a lane holds rows lane and lane + 32.
  const int warp = tid / kWarp, lane = tid % kWarp;
  const int query = query0 + warp;
  if (warp >= Q || query >= a.batch) return;
  Candidate mine[2];
  for (int s = 0; s < 2; ++s) {
    const int r = lane + kWarp * s;
    mine[s] = first_row + r < a.size ? Candidate{mem.similarity[warp][r], first_row + r} : Candidate{-INFINITY, kNoIndex};
  }
  const int64_t tiles = gridDim.y;
  int64_t* out_index = cand_index + (query * tiles + tile) * a.top_k;
  float* out_similarity = cand_similarity + (query * tiles + tile) * a.top_k;
  Candidate previous{0.0f, kNoIndex};
  for (int k = 0; k < a.top_k; ++k) {
    Candidate best{-INFINITY, kNoIndex};
    for (int s = 0; s < 2; ++s) best = best_after(best, mine[s], previous, k == 0);
    best = warp_best(best);
    if (lane == 0) {
      out_index[k] = best.index;
      out_similarity[k] = best.similarity;
    }
    previous = best;
  }
}

// One warp per query: the best R of its tiles × R candidates, then the reference's padding.
__global__ void merge_kernel(const m2vla_l1_topk_args a, int64_t tiles, const int64_t* cand_index,
                             const float* cand_similarity) {
  const int query = blockIdx.x, lane = threadIdx.x;
  const int64_t count = tiles * a.top_k;
  const int64_t* index = cand_index + query * count;
  const float* similarity = cand_similarity + query * count;
  const int found = int(a.size < a.top_k ? a.size : a.top_k);
  Candidate previous{0.0f, kNoIndex};
  for (int k = 0; k < a.top_k; ++k) {
    Candidate best{0.0f, 0};  // padding: similarity 0, index 0
    if (k < found) {
      best = Candidate{-INFINITY, kNoIndex};
      for (int64_t i = lane; i < count; i += kWarp)
        best = best_after(best, Candidate{similarity[i], index[i]}, previous, k == 0);
      best = warp_best(best);
      previous = best;
    }
    if (lane == 0) {
      a.similarities[int64_t(query) * a.top_k + k] = best.similarity;
      a.indices[int64_t(query) * a.top_k + k] = best.index;
    }
  }
}

int64_t tile_count(int64_t size) { return (size + kTileRows - 1) / kTileRows; }

template <int Q>
void launch_tiles(const m2vla_l1_topk_args& a, int64_t tiles, int64_t* cand_index, float* cand_similarity,
                  cudaStream_t stream) {
  const dim3 grid((a.batch + Q - 1) / Q, unsigned(tiles));
  tile_topk_kernel<Q><<<grid, kThreads, 0, stream>>>(a, cand_index, cand_similarity);
}

bool valid(const m2vla_l1_topk_args& a) {
  if (a.batch < 0 || a.top_k < 1 || a.top_k > M2VLA_TOPK_MAX || a.key_dim < 8 || a.key_dim % 8 != 0) return false;
  if (a.capacity < 0 || a.size < 0 || a.size > a.capacity || a.oldest < 0 || (a.capacity > 0 && a.oldest >= a.capacity))
    return false;
  if (tile_count(a.size) > 65535) return false;  // gridDim.y
  if (!a.similarities || !a.indices) return false;
  if (a.size == 0 || a.batch == 0) return true;
  const auto misaligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 != 0; };
  return a.queries && a.keys && a.workspace && !misaligned(a.queries) && !misaligned(a.keys) &&
         !misaligned(a.workspace);
}

}  // namespace

extern "C" size_t m2vla_l1_topk_workspace_bytes(int batch, int64_t size, int top_k) {
  // int64 indices first, then fp32 similarities: both arrays stay naturally aligned.
  return size_t(batch) * size_t(tile_count(size)) * size_t(top_k) * (sizeof(int64_t) + sizeof(float));
}

extern "C" cudaError_t m2vla_l1_topk(const m2vla_l1_topk_args* args, cudaStream_t stream) {
  if (!args || !valid(*args)) return cudaErrorInvalidValue;
  const m2vla_l1_topk_args& a = *args;
  if (a.batch == 0) return cudaSuccess;
  const int64_t tiles = tile_count(a.size);
  auto* cand_index = static_cast<int64_t*>(a.workspace);
  auto* cand_similarity = reinterpret_cast<float*>(cand_index + int64_t(a.batch) * tiles * a.top_k);
  if (tiles > 0) {
    // The fewest queries per block that covers the batch (up to 8): small batches do not pay for idle accumulators.
    if (a.batch >= kMaxQueriesPerBlock) launch_tiles<8>(a, tiles, cand_index, cand_similarity, stream);
    else if (a.batch > 2) launch_tiles<4>(a, tiles, cand_index, cand_similarity, stream);
    else if (a.batch == 2) launch_tiles<2>(a, tiles, cand_index, cand_similarity, stream);
    else launch_tiles<1>(a, tiles, cand_index, cand_similarity, stream);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  merge_kernel<<<a.batch, kWarp, 0, stream>>>(a, tiles, cand_index, cand_similarity);
  return cudaGetLastError();
}
