#include "head/msm/bank.h"

#include <ATen/ATen.h>

#include <cmath>

#include "error.h"
#include "head/msm/reference.h"
#include "head/param_table.h"
#ifdef M2VLA_WITH_CUDA
#include "cuda/cuda_glue.h"
#endif

namespace m2vla::head {

MemoryBank::MemoryBank(int64_t capacity, int64_t key_dim, int64_t value_dim, c10::Device device) {
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(device);
  keys_ = at::zeros({capacity, key_dim}, bf16);
  values_ = at::zeros({capacity, value_dim}, bf16);
  if (device.is_cpu()) packed_ = at::zeros({(capacity + 15) / 16, key_dim, 16}, bf16);
}

MemoryBank MemoryBank::load(const io::StateDict& sd, int64_t key_dim, int64_t value_dim) {
  const at::Tensor& keys = sd.get(kBankKeys);
  if (keys.dim() != 2 || keys.size(1) != key_dim)
    fail(ErrorCode::Checkpoint, sd.source, ": tensor '", kBankKeys, "' has shape ", keys.sizes(), ", expected [capacity, ",
         key_dim, "] (", key_dim, " = number of key layers x hidden size)");
  const int64_t capacity = keys.size(0);
  const at::Tensor& values = sd.get(kBankValues, {capacity, value_dim});
  const at::Tensor& size = sd.get(kBankSize);
  if (size.numel() != 1 || at::isFloatingType(size.scalar_type()))
    fail(ErrorCode::Checkpoint, sd.source, ": tensor '", kBankSize, "' should be an integer scalar");
  const int64_t n = size.item<int64_t>();
  if (n < 0 || n > capacity)
    fail(ErrorCode::Checkpoint, sd.source, ": ", kBankSize, " = ", n, " is outside 0..", capacity, " (the bank's rows)");
  MemoryBank bank(capacity, key_dim, value_dim, keys.device());
  bank.keys_.copy_(keys);
  bank.values_.copy_(values);
  bank.size_ = n;
  bank.repack(0);
  return bank;
}

void MemoryBank::append(const at::Tensor& keys, const at::Tensor& values) {
  if (keys.dim() != 2 || keys.size(1) != key_dim())
    fail(ErrorCode::Shape, "keys: expected [N, ", key_dim(), "], got ", keys.sizes());
  const int64_t n = keys.size(0);
  if (values.dim() != 2 || values.size(0) != n || values.size(1) != value_dim())
    fail(ErrorCode::Shape, "values: expected [", n, ", ", value_dim(), "], got ", values.sizes());
  const int64_t cap = capacity();
  const int64_t keep_new = std::min(n, cap);
  at::Tensor new_keys = keys.narrow(0, n - keep_new, keep_new), new_values = values.narrow(0, n - keep_new, keep_new);
  const int64_t overflow = std::max<int64_t>(0, size_ + keep_new - cap);
  int64_t first_changed = size_;
  if (overflow > 0) {
    // Shift the surviving rows down (clone: source and destination overlap).
    const int64_t survivors = size_ - overflow;
    keys_.narrow(0, 0, survivors).copy_(keys_.narrow(0, overflow, survivors).clone());
    values_.narrow(0, 0, survivors).copy_(values_.narrow(0, overflow, survivors).clone());
    size_ = survivors;
    first_changed = 0;
  }
  keys_.narrow(0, size_, keep_new).copy_(new_keys);
  values_.narrow(0, size_, keep_new).copy_(new_values);
  size_ += keep_new;
  repack(first_changed);
}

void MemoryBank::repack(int64_t from_row) {
  const int64_t first_block = from_row / 16, end_block = (size_ + 15) / 16;
  if (!packed_.defined() || end_block <= first_block) return;
  const int64_t rows = (end_block - first_block) * 16, start = first_block * 16;
  at::Tensor padded = at::zeros({rows, key_dim()}, at::kBFloat16);
  const int64_t valid = std::min(rows, capacity() - start);
  padded.narrow(0, 0, valid).copy_(keys_.narrow(0, start, valid));
  packed_.narrow(0, first_block, end_block - first_block)
      .copy_(padded.view({end_block - first_block, 16, key_dim()}).transpose(1, 2));
}

Retrieval MemoryBank::query_reference(const at::Tensor& queries, int64_t top_k) const {
  if (size_ == 0) return finish(queries, at::Tensor(), at::Tensor(), top_k);
  const TopK top = l1_topk_reference(queries, keys_, size_, /*oldest=*/0, top_k, TopKTies::TorchTopk);
  return finish(queries, top.indices, top.similarities, top_k);
}

Retrieval MemoryBank::query_cuda(const at::Tensor& queries, int64_t top_k) const {
#ifdef M2VLA_WITH_CUDA
  if (size_ == 0) return finish(queries, at::Tensor(), at::Tensor(), top_k);
  // The kernel pads the slots past `size_` itself (index 0, similarity 0), as finish() would.
  const TopK top = cuda::l1_topk(queries, keys_, size_, /*oldest=*/0, top_k);
  return finish(queries, top.indices, top.similarities, top_k);
#else
  fail(ErrorCode::Config, "MSM retrieval: the CUDA kernel is not in this CPU-only build");
#endif
}

Retrieval MemoryBank::finish(const at::Tensor& queries, at::Tensor indices, at::Tensor similarities, int64_t top_k) const {
  const int64_t batch = queries.size(0);
  if (size_ == 0) {
    const auto f32 = queries.options().dtype(at::kFloat);
    return {at::full({batch, top_k}, -1, f32.dtype(at::kLong)), at::zeros({batch, top_k}, f32),
            at::zeros({batch, top_k, value_dim()}, f32)};
  }
  const int64_t found = indices.size(1);
  if (found < top_k) {
    indices = at::cat({indices, at::zeros({batch, top_k - found}, indices.options())}, 1);
    similarities = at::cat({similarities, at::zeros({batch, top_k - found}, similarities.options())}, 1);
  }
  at::Tensor values = values_.index_select(0, indices.reshape(-1)).reshape({batch, top_k, value_dim()}).to(at::kFloat);
  return {indices, similarities, values};
}

at::Tensor msm_query_keys(const at::Tensor& hidden, int64_t num_patches, const std::vector<int64_t>& key_layers) {
  std::vector<at::Tensor> parts;
  for (int64_t k : key_layers) parts.push_back(hidden.select(0, k).narrow(1, 0, num_patches).to(at::kFloat).mean(1));
  return at::cat(parts, -1);
}

at::Tensor memory_context(const at::Tensor& x, const at::Tensor& h_memory, at::Tensor* weights) {
  const int64_t batch = x.size(0), mem_dim = x.size(1) * x.size(2);
  at::Tensor q = x.reshape({batch, 1, mem_dim});
  at::Tensor w = at::softmax(at::matmul(q, h_memory.transpose(-2, -1)) / std::sqrt(double(mem_dim)), -1);
  if (weights) *weights = w;
  return at::matmul(w, h_memory).reshape(x.sizes());
}

}  // namespace m2vla::head
