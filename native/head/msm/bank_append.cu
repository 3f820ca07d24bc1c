// MSM bank append for training (kernels.h): the new rows go into the ring at the write offset, rounded to bf16, so a
// full bank costs a write of the new rows instead of the reference's shift of all 10,000 (about 54 MB).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace {

constexpr int kThreads = 256;

// Rows [skip, count) of `src` [count, width] into ring rows (offset + i) % capacity of `dst` [capacity, width].
__global__ void ring_write_kernel(__nv_bfloat16* dst, int64_t capacity, int64_t offset, const float* src,
                                  int64_t count, int64_t skip, int width) {
  const int64_t total = (count - skip) * width;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = skip + i / width, col = i % width;
    dst[((offset + row) % capacity) * width + col] = __float2bfloat16_rn(src[row * width + col]);
  }
}

cudaError_t ring_write(void* dst, int64_t capacity, int64_t offset, const float* src, int64_t count, int width,
                       cudaStream_t stream) {
  // Rows that a later row of the same append would overwrite are skipped: every written slot has one writer.
  const int64_t skip = count > capacity ? count - capacity : 0;
  const int64_t total = (count - skip) * width;
  const int blocks = int(total / kThreads + 1 < 4096 ? total / kThreads + 1 : 4096);
  ring_write_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), capacity, offset, src, count,
                                                     skip, width);
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t m2vla_bank_append(const m2vla_bank_append_args* args, cudaStream_t stream) {
  if (!args) return cudaErrorInvalidValue;
  const m2vla_bank_append_args& a = *args;
  if (a.capacity < 1 || a.offset < 0 || a.offset >= a.capacity || a.count < 0 || a.key_dim < 1 || a.value_dim < 1)
    return cudaErrorInvalidValue;
  if (a.count == 0) return cudaSuccess;
  if (!a.keys || !a.values || !a.new_keys || !a.new_values) return cudaErrorInvalidValue;
  const cudaError_t e = ring_write(a.keys, a.capacity, a.offset, a.new_keys, a.count, a.key_dim, stream);
  if (e != cudaSuccess) return e;
  return ring_write(a.values, a.capacity, a.offset, a.new_values, a.count, a.value_dim, stream);
}
