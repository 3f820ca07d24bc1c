// MemoryBank::query, the fused retrieval: L1 distances straight from the bfloat16 keys with a running top-R per
// query, parallel over chunks of the bank, without materializing the B×N similarity matrix (nor a float32 copy of
// the keys, as the reference does).
//
// Bit-identical to `-10000 * cdist(q, keys.float(), p=1) / key_dim` + `torch.topk`, ties included:
// - cdist(p=1) on CPU sums |q_d - k_d| over d sequentially in float32. Summing in that order per row, but 16 rows
//   at a time in 16 lanes (the packed block layout), gives the same floats and still vectorizes.
// - torch.topk (ATen TopKImpl.h) does not break ties by index: for n >= 64k it runs std::partial_sort (heap select
//   + sort_heap), otherwise std::nth_element + std::sort of the first k-1, with "a > b, NaN largest" as the order.
//   Heap select only changes its heap when an element beats the current k-th best, so running it on any
//   subsequence that keeps the first k elements and every element that beats the k-th best of the rows before it
//   gives the same heap. Each chunk keeps exactly such a superset for its rows (every element that beats the k-th
//   best of the chunk's own earlier rows; the chunk's k-th best is never above the global one), the chunks'
//   candidate lists are concatenated in row order and std::partial_sort runs on that. A chunk keeps about
//   k·ln(rows/k) candidates on unordered data (at most all its rows, for a bank sorted by increasing similarity).
//   Small banks (n < 64k) keep all n similarities (fewer than 64k floats per query) and repeat the nth_element path.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <queue>
#include <utility>
#include <vector>

#include "head/msm/bank.h"
#include "head/simd.h"

namespace m2vla::head {
namespace {

constexpr int64_t kBlockRows = 16;
constexpr int64_t kQueryGroup = 4;  // queries sharing one pass over a key block (one load, four accumulators)

using Scored = std::pair<float, int64_t>;

// torch.topk's order for largest=true: NaN first, then descending.
inline bool better(float x, float y) { return (std::isnan(x) && !std::isnan(y)) || x > y; }
struct BetterScored {
  bool operator()(const Scored& x, const Scored& y) const { return better(x.first, y.first); }
};
struct BetterFloat {
  bool operator()(float x, float y) const { return better(x, y); }
};

inline float bf16_to_float(uint16_t bits) {
  const uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// dist[g*16 + r] = sum_d |q_g[d] - key_r[d]| for G queries and the 16 rows of one packed block, d in order.
template <int G>
M2VLA_SIMD_CLONES void l1_block(const uint16_t* block, const float* const* queries, int64_t key_dim, float* dist) {
  float acc[G][kBlockRows] = {};
  for (int64_t d = 0; d < key_dim; ++d) {
    float key[kBlockRows];
    for (int64_t r = 0; r < kBlockRows; ++r) key[r] = bf16_to_float(block[d * kBlockRows + r]);
    for (int g = 0; g < G; ++g) {
      const float q = queries[g][d];
      for (int64_t r = 0; r < kBlockRows; ++r) acc[g][r] += std::fabs(q - key[r]);
    }
  }
  for (int g = 0; g < G; ++g) std::memcpy(dist + g * kBlockRows, acc[g], sizeof acc[g]);
}

void l1_block_any(const uint16_t* block, const float* const* queries, int64_t count, int64_t key_dim, float* dist) {
  switch (count) {
    case 4: return l1_block<4>(block, queries, key_dim, dist);
    case 3: return l1_block<3>(block, queries, key_dim, dist);
    case 2: return l1_block<2>(block, queries, key_dim, dist);
    default: return l1_block<1>(block, queries, key_dim, dist);
  }
}

// The rows of one chunk that can matter to torch.topk (see the file comment), in row order.
class Candidates {
 public:
  Candidates(int64_t k, bool keep_all) : k_(k), keep_all_(keep_all) {}
  void offer(float score, int64_t row) {
    if (keep_all_) {
      list_.emplace_back(score, row);
      return;
    }
    if (int64_t(kth_.size()) < k_) {
      kth_.push(score);
    } else if (better(score, kth_.top())) {
      kth_.pop();
      kth_.push(score);
    } else {
      return;
    }
    list_.emplace_back(score, row);
  }
  std::vector<Scored>& list() { return list_; }

 private:
  int64_t k_;
  bool keep_all_;
  std::priority_queue<float, std::vector<float>, BetterFloat> kth_;  // top() = the chunk's current k-th best
  std::vector<Scored> list_;
};

}  // namespace

Retrieval MemoryBank::query(const at::Tensor& queries_in, int64_t top_k) const {
  const at::Tensor queries = queries_in.to(at::kFloat).contiguous();
  if (size_ == 0) return finish(queries, at::Tensor(), at::Tensor(), top_k);
  const int64_t batch = queries.size(0), key_dim = this->key_dim(), n = size_;
  const int64_t k = std::min(top_k, n);
  const bool keep_all = k * 64 > n;  // torch.topk's nth_element path
  const int64_t blocks = (n + kBlockRows - 1) / kBlockRows;
  const int64_t chunk_blocks = std::max<int64_t>(8, (blocks + 4 * at::get_num_threads() - 1) / (4 * at::get_num_threads()));
  const int64_t chunks = (blocks + chunk_blocks - 1) / chunk_blocks;
  const float key_dim_f = float(key_dim);

  std::vector<std::vector<std::vector<Scored>>> found(chunks, std::vector<std::vector<Scored>>(batch));
  const auto* packed = reinterpret_cast<const uint16_t*>(packed_.data_ptr<at::BFloat16>());
  const float* q = queries.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<float> dist(batch * kBlockRows);
    std::vector<const float*> rows(batch);
    for (int64_t b = 0; b < batch; ++b) rows[b] = q + b * key_dim;
    for (int64_t c = chunk_begin; c < chunk_end; ++c) {
      std::vector<Candidates> cands(batch, Candidates(k, keep_all));
      const int64_t block_end = std::min(blocks, (c + 1) * chunk_blocks);
      for (int64_t blk = c * chunk_blocks; blk < block_end; ++blk) {
        const uint16_t* block = packed + blk * key_dim * kBlockRows;
        for (int64_t b0 = 0; b0 < batch; b0 += kQueryGroup)
          l1_block_any(block, rows.data() + b0, std::min(kQueryGroup, batch - b0), key_dim, dist.data() + b0 * kBlockRows);
        const int64_t valid = std::min(kBlockRows, n - blk * kBlockRows);
        for (int64_t b = 0; b < batch; ++b)
          for (int64_t r = 0; r < valid; ++r)
            // The reference's float32 ops, in its order: (dist / key_dim) * -10000.
            cands[b].offer(dist[b * kBlockRows + r] / key_dim_f * -10000.0f, blk * kBlockRows + r);
      }
      for (int64_t b = 0; b < batch; ++b) found[c][b] = std::move(cands[b].list());
    }
  });

  at::Tensor indices = at::empty({batch, k}, at::kLong), sims = at::empty({batch, k}, at::kFloat);
  int64_t* index_out = indices.data_ptr<int64_t>();
  float* sim_out = sims.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<Scored> all;
    for (int64_t c = 0; c < chunks; ++c) all.insert(all.end(), found[c][b].begin(), found[c][b].end());
    if (keep_all) {
      std::nth_element(all.begin(), all.begin() + k - 1, all.end(), BetterScored());
      std::sort(all.begin(), all.begin() + k - 1, BetterScored());
    } else {
      std::partial_sort(all.begin(), all.begin() + k, all.end(), BetterScored());
    }
    for (int64_t j = 0; j < k; ++j) {
      sim_out[b * k + j] = all[j].first;
      index_out[b * k + j] = all[j].second;
    }
  }
  return finish(queries, indices, sims, top_k);
}

}  // namespace m2vla::head
