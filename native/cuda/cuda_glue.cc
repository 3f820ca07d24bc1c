#include "cuda/cuda_glue.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <string>

#include "cuda/kernels.h"
#include "error.h"

namespace m2vla::cuda {
namespace {

// Launches through `launch` on the current stream of `device`. An error already pending belongs to an earlier
// operation: it is reported as such instead of being blamed on this kernel. cudaErrorInvalidValue from the launcher
// means arguments the checks below should have refused: a bug here, not bad input.
template <typename Launch>
void launch_checked(const at::Device& device, const char* kernel, Launch launch) {
  const c10::cuda::CUDAGuard guard(device);
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess)
    fail(ErrorCode::Native, kernel, ": not launched, an earlier CUDA operation failed: ", cudaGetErrorName(e), " (",
         cudaGetErrorString(e), ")");
  const cudaError_t e = launch(c10::cuda::getCurrentCUDAStream(device.index()).stream());
  if (e != cudaSuccess) fail(ErrorCode::Native, kernel, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

bool aligned(const at::Tensor& t, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % bytes == 0; }

// The stride of a dimension of size 1 is never used and may be anything (unsqueeze, views): pass 0 for it.
int64_t used_stride(const at::Tensor& t, int64_t dim) { return t.size(dim) == 1 ? 0 : t.stride(dim); }

void require_device(const at::Tensor& t, const std::string& name, const at::Device& device) {
  if (!t.defined() || t.device() != device)
    fail(ErrorCode::Input, name, ": expected a tensor on ", device.str(), ", got ",
         t.defined() ? t.device().str() : std::string("none"));
}

// A [B, L, H, hd] bf16 view with head_dim contiguous and 32-bit aligned element pairs (bf16x2 loads).
m2vla_heads_view heads_view(const at::Tensor& t, const std::string& name, const at::Device& device, int64_t batch,
                            int64_t tokens, int64_t heads, int64_t head_dim) {
  require_device(t, name, device);
  if (t.scalar_type() != at::kBFloat16) fail(ErrorCode::Input, name, ": expected bfloat16, got ", t.scalar_type());
  if (t.dim() != 4 || t.size(0) != batch || t.size(1) != tokens || t.size(2) != heads || t.size(3) != head_dim)
    fail(ErrorCode::Shape, name, ": expected [", batch, ", ", tokens, ", ", heads, ", ", head_dim, "], got ", t.sizes());
  if (!aligned(t, 4))
    fail(ErrorCode::Input, name, ": must start at a 4-byte aligned address (bf16 pairs); got storage offset ",
         t.storage_offset());
  return {t.data_ptr(), used_stride(t, 0), used_stride(t, 1), used_stride(t, 2)};
}

}  // namespace

at::Tensor mol_attention(const head::MolAttentionInputs& in, at::ScalarType out_dtype) {
  for (const at::Tensor* t : {&in.q, &in.k_adapter, &in.k_task})
    if (!t->defined() || t->dim() != 4)
      fail(ErrorCode::Shape, "mol attention (CUDA): q, k_adapter and k_task must be [B, L, H, head_dim] tensors");
  const at::Device device = in.q.device();
  const int64_t B = in.q.size(0), T = in.q.size(1), H = in.q.size(2), hd = in.q.size(3);
  const int64_t S = in.k_adapter.size(1), NP = in.k_task.size(1);
  if (T > M2VLA_MOL_MAX_QUERIES || hd > M2VLA_MOL_MAX_HEAD_DIM || hd % 2 || S < 1 || NP < 1 || B > 65535 || H > 65535)
    fail(ErrorCode::Shape, "mol attention (CUDA): needs chunk <= ", M2VLA_MOL_MAX_QUERIES, ", an even head_dim <= ",
         M2VLA_MOL_MAX_HEAD_DIM, " and at least one adapter and vision token; got chunk ", T, ", head_dim ", hd, ", ",
         S, " adapter and ", NP, " vision tokens");
  if (out_dtype != at::kBFloat16 && out_dtype != at::kFloat)
    fail(ErrorCode::Input, "mol attention (CUDA): output dtype must be bfloat16 or float32, got ", out_dtype);

  // The layout rule the policy's limits use too (head/mol/reference.h): an odd head count never reaches here.
  if (!head::mol_kernel_layout(in))
    fail(ErrorCode::Input, "mol attention (CUDA): every view needs head_dim contiguous and even strides and offsets "
         "(an even head count and head_dim); got q strides ", in.q.strides(), ", v_adapter strides ", in.v_adapter.strides(),
         " at offset ", in.v_adapter.storage_offset());
  m2vla_mol_args a{};
  a.batch = int(B), a.heads = int(H), a.head_dim = int(hd), a.queries = int(T);
  a.adapter_keys = int(S), a.task_keys = int(NP);
  a.q = heads_view(in.q, "q", device, B, T, H, hd);
  a.k_self = heads_view(in.k_self, "k_self", device, B, T, H, hd);
  a.v_self = heads_view(in.v_self, "v_self", device, B, T, H, hd);
  a.k_adapter = heads_view(in.k_adapter, "k_adapter", device, B, S, H, hd);
  a.v_adapter = heads_view(in.v_adapter, "v_adapter", device, B, S, H, hd);
  a.k_task = heads_view(in.k_task, "k_task", device, B, NP, H, hd);
  a.v_task = heads_view(in.v_task, "v_task", device, B, NP, H, hd);

  require_device(in.gate, "gate", device);
  if (in.gate.scalar_type() != at::kBFloat16 || in.gate.dim() != 3 || in.gate.size(0) != B || in.gate.size(1) != S ||
      in.gate.size(2) != H)
    fail(ErrorCode::Shape, "gate: expected bfloat16 [", B, ", ", S, ", ", H, "], got ", in.gate.scalar_type(), " ",
         in.gate.sizes());
  a.gate = {in.gate.data_ptr(), used_stride(in.gate, 0), used_stride(in.gate, 1), used_stride(in.gate, 2)};

  require_device(in.gating_factor, "gating_factor", device);
  if (in.gating_factor.numel() != 1) fail(ErrorCode::Shape, "gating_factor: expected one value, got ", in.gating_factor.sizes());
  const at::Tensor g = in.gating_factor.to(at::kFloat).contiguous();
  a.gating_factor = g.data_ptr<float>();

  at::Tensor out = at::empty({B, T, H, hd}, in.q.options().dtype(out_dtype));
  a.out = out.data_ptr();
  a.out_batch_stride = out.stride(0), a.out_token_stride = out.stride(1), a.out_head_stride = out.stride(2);
  a.out_dtype = out_dtype == at::kBFloat16 ? M2VLA_OUT_BF16 : M2VLA_OUT_FLOAT32;

  launch_checked(device, "mol attention", [&](cudaStream_t stream) { return m2vla_mol_attention(&a, stream); });
  return out;
}

head::TopK l1_topk(const at::Tensor& queries_in, const at::Tensor& keys, int64_t size, int64_t oldest, int64_t top_k) {
  const at::Device device = keys.device();
  require_device(queries_in, "queries", device);
  if (keys.scalar_type() != at::kBFloat16 || keys.dim() != 2 || !keys.is_contiguous() || !aligned(keys, 16))
    fail(ErrorCode::Input, "bank keys: expected a contiguous, 16-byte aligned bfloat16 [capacity, key_dim] tensor");
  const int64_t capacity = keys.size(0), key_dim = keys.size(1);
  if (queries_in.dim() != 2 || queries_in.size(1) != key_dim)
    fail(ErrorCode::Shape, "queries: expected [B, ", key_dim, "], got ", queries_in.sizes());
  if (key_dim % 8 || top_k < 1 || top_k > M2VLA_TOPK_MAX || size < 0 || size > capacity || oldest < 0 ||
      (capacity > 0 && oldest >= capacity))
    fail(ErrorCode::Input, "l1 top-k (CUDA): needs key_dim % 8 == 0, 1 <= top_k <= ", M2VLA_TOPK_MAX,
         ", 0 <= size <= capacity and 0 <= oldest < capacity; got key_dim ", key_dim, ", top_k ", top_k, ", size ",
         size, ", oldest ", oldest, ", capacity ", capacity);
  at::Tensor queries = queries_in.to(at::kFloat).contiguous();
  if (!aligned(queries, 16)) queries = queries.clone();  // a view at an odd offset: 128-bit loads need alignment

  const int64_t batch = queries.size(0);
  head::TopK out{at::empty({batch, top_k}, queries.options()), at::empty({batch, top_k}, queries.options().dtype(at::kLong))};
  const at::Tensor workspace = at::empty(
      {int64_t(m2vla_l1_topk_workspace_bytes(int(batch), size, int(top_k)))}, keys.options().dtype(at::kByte));
  m2vla_l1_topk_args a{};
  a.queries = queries.data_ptr<float>(), a.batch = int(batch);
  a.keys = keys.data_ptr(), a.capacity = capacity, a.size = size, a.oldest = oldest;
  a.key_dim = int(key_dim), a.top_k = int(top_k);
  a.similarities = out.similarities.data_ptr<float>(), a.indices = out.indices.data_ptr<int64_t>();
  a.workspace = workspace.data_ptr();

  launch_checked(device, "l1 top-k", [&](cudaStream_t stream) { return m2vla_l1_topk(&a, stream); });
  return out;
}

std::string context_error(const at::Device& device) {
  const c10::cuda::CUDAGuard guard(device);
  // A sticky error is returned by every later call; a plain one is cleared by cudaGetLastError and harmless.
  if (cudaDeviceSynchronize() == cudaSuccess) return "";
  cudaGetLastError();
  const cudaError_t e = cudaDeviceSynchronize();
  return e == cudaSuccess ? "" : std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

}  // namespace m2vla::cuda
