// The CUDA kernels (kernels.h) on at::Tensors: checks device, dtype, shape and layout, then launches on the current
// stream of the tensors' device. Compiled only in CUDA builds (CMake option M2VLA_CUDA, which defines
// M2VLA_WITH_CUDA). Each function has the contract of its reference in head/mol/reference.h or head/msm/reference.h.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "head/mol/reference.h"
#include "head/msm/reference.h"

namespace m2vla::cuda {

// [B, T, H, hd] in `out_dtype` (bfloat16 or float32); inputs bf16 views with head_dim contiguous, g float32.
at::Tensor mol_attention(const head::MolAttentionInputs& in, at::ScalarType out_dtype);

// queries [B, key_dim] (converted to float32), keys [capacity, key_dim] bf16 contiguous; key_dim a multiple of 8.
head::TopK l1_topk(const at::Tensor& queries, const at::Tensor& keys, int64_t size, int64_t oldest, int64_t top_k);

// Empty while `device`'s context works; else the sticky error that killed it (a kernel fault), after waiting for the
// device. Clears nothing that could be recovered.
std::string context_error(const at::Device& device);

}  // namespace m2vla::cuda
