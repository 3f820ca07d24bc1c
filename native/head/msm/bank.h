// Meta Skill Module (reference MemoryBank and its use in L1RegressionActionHead, SPEC §3.2): a FIFO bank of
// (key, value) rows in bfloat16; a query key per sample (cat over key layers of the mean over the NP vision
// positions); L1 retrieval of the top R rows; their values projected to h_memory [B, R, chunk*D]; and in every
// block a projection-free cross-attention of the flattened action latent over those R entries.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "io/state_dict.h"

namespace m2vla::head {

// Top-R retrieval, R = the requested top_k, in the reference's conventions:
// - rows sorted by descending similarity = -10000 * mean_d |q_d - key_d| (float32, torch.topk order incl. ties);
// - bank with 0 < size < R: the missing entries have index 0, similarity 0 and row 0's value (the reference pads
//   the indices with zeros and then gathers values[indices]), so row 0 takes part in the MSM attention again;
// - empty bank: index -1 (no row), similarity 0, value zeros (the reference returns zero values).
struct Retrieval {
  at::Tensor indices;       // [B, R] int64
  at::Tensor similarities;  // [B, R] float32
  at::Tensor values;        // [B, R, value_dim] float32
};

class MemoryBank {
 public:
  MemoryBank(int64_t capacity, int64_t key_dim, int64_t value_dim, c10::Device device = c10::kCPU);
  // The checkpoint buffers memory_bank.keys [capacity, key_dim], .values [capacity, value_dim], .size (scalar); the
  // bank lives where memory_bank.keys is.
  static MemoryBank load(const io::StateDict& sd, int64_t key_dim, int64_t value_dim);

  int64_t size() const { return size_; }
  int64_t capacity() const { return keys_.size(0); }
  int64_t key_dim() const { return keys_.size(1); }
  int64_t value_dim() const { return values_.size(1); }
  const at::Tensor& keys() const { return keys_; }      // [capacity, key_dim] bfloat16; rows >= size unused
  const at::Tensor& values() const { return values_; }  // [capacity, value_dim] bfloat16

  // Reference MemoryBank.add: rows are written after the current ones; when full, the oldest rows are dropped and
  // the rest shift down (row 0 is always the oldest; retrieval indices are these positions). Rows are rounded to
  // bfloat16. More rows than the capacity at once: only the newest `capacity` are kept.
  void append(const at::Tensor& keys, const at::Tensor& values);

  // Fused retrieval: queries [B, key_dim] float32. See retrieval_cpu.cc.
  Retrieval query(const at::Tensor& queries, int64_t top_k) const;
  // The reference computation, l1_topk_reference (msm/reference.h) with torch.topk's ties: the yardstick for query().
  Retrieval query_reference(const at::Tensor& queries, int64_t top_k) const;
  // The CUDA kernel (msm/l1_topk.cu) over the bank in device memory; CUDA builds, bank on a GPU.
  Retrieval query_cuda(const at::Tensor& queries, int64_t top_k) const;

 private:
  void repack(int64_t from_row);
  Retrieval finish(const at::Tensor& queries, at::Tensor indices, at::Tensor similarities, int64_t top_k) const;

  at::Tensor keys_, values_;
  // The keys again, in the CPU retrieval kernel's layout: blocks of 16 rows, [ceil(capacity/16), key_dim, 16], so the
  // 16 rows of a block are 16 adjacent lanes at every key position. Undefined for a bank on a GPU.
  at::Tensor packed_;
  int64_t size_ = 0;
};

// [B, |key_layers| * D] float32: cat over key layers k of mean over the NP vision positions of hidden state k
// (`hidden` [L+1, B, seq, D]). Computed in float32 whatever the head's dtype.
at::Tensor msm_query_keys(const at::Tensor& hidden, int64_t num_patches, const std::vector<int64_t>& key_layers);

// Reference injection (same in every block, no learned projections): w = softmax(x.reshape(B,1,chunk*D) @ h_mem^T
// / sqrt(chunk*D)), context = (w @ h_mem).reshape(B, chunk, D). `weights` receives w [B, 1, R] when given.
at::Tensor memory_context(const at::Tensor& x, const at::Tensor& h_memory, at::Tensor* weights = nullptr);

}  // namespace m2vla::head
