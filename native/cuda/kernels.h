/* The m2vla CUDA kernels' host entry points. Plain C over raw device pointers so the .cu files compile with nvcc
 * alone (no libtorch headers); native/cuda/cuda_glue.cc adapts at::Tensors to these calls.
 *
 * Every launcher only enqueues work on `stream` and returns cudaSuccess, cudaErrorInvalidValue for arguments the
 * kernel cannot handle (checked before anything is launched), or the launch error. Strides count elements. bf16
 * tensors are passed as `const void*` holding __nv_bfloat16 values. */
#ifndef M2VLA_CUDA_KERNELS_H
#define M2VLA_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Fused MoL attention (SPEC §3.1) ---------------------------------------------------------------------------
 * A [batch, tokens, heads, head_dim] bf16 view: element (b, t, h, d) at data[b*batch_stride + t*token_stride +
 * h*head_stride + d] (head_dim contiguous). The projection outputs are used in place through these strides. */
typedef struct m2vla_heads_view {
  const void* data; /* bf16 */
  int64_t batch_stride, token_stride, head_stride;
} m2vla_heads_view;

typedef enum m2vla_out_dtype { M2VLA_OUT_BF16 = 0, M2VLA_OUT_FLOAT32 = 1 } m2vla_out_dtype;

/* Limits of the fused MoL kernel: one warp per query, one lane per key of a 32-key tile, head_dim split over lanes. */
#define M2VLA_MOL_MAX_QUERIES 8
#define M2VLA_MOL_MAX_HEAD_DIM 128

typedef struct m2vla_mol_args {
  int batch, heads, head_dim; /* head_dim even, <= M2VLA_MOL_MAX_HEAD_DIM */
  int queries;                /* T: the action chunk, <= M2VLA_MOL_MAX_QUERIES; also the self branch's key count */
  int adapter_keys;           /* NT+1: action queries of the layer + the proprio token */
  int task_keys;              /* NP: vision tokens of the layer */
  m2vla_heads_view q, k_self, v_self; /* [B, T, H, hd], q and k_self already rotated (RoPE) */
  m2vla_heads_view k_adapter, v_adapter; /* [B, NT+1, H, hd], k rotated */
  m2vla_heads_view gate;      /* [B, NT+1, H] gate logits of the adapter tokens, one per head (no head_dim) */
  m2vla_heads_view k_task, v_task; /* [B, NP, H, hd], k rotated */
  const float* gating_factor; /* device scalar g of the block: vision logits are scaled by tanh(g) */
  void* out;                  /* [B, T, H, hd] */
  int64_t out_batch_stride, out_token_stride, out_head_stride;
  m2vla_out_dtype out_dtype;
} m2vla_mol_args;

/* out[b,t,h] = ( softmax(q·k_selfᵀ/√hd) v_self
 *              + sigmoid(mean_j gate[b,j,h]) · softmax(q·k_adapterᵀ/√hd) v_adapter
 *              + softmax(tanh(g) · q·k_taskᵀ/√hd) v_task ) / 3
 * with fp32 accumulation. bf16 rows must be 4-byte aligned: even strides and an aligned base. */
cudaError_t m2vla_mol_attention(const m2vla_mol_args* args, cudaStream_t stream);

/* ---- MSM retrieval (SPEC §3.2) ---------------------------------------------------------------------------------
 * The bank is a ring of `capacity` bf16 key rows (key_dim contiguous, rows adjacent) holding `size` valid rows; the
 * oldest is at row `oldest`. Rows are ranked in age order (logical index i = physical row (oldest + i) % capacity),
 * which is the reference's row order (it shifts the rows down instead of wrapping).
 *
 * For each fp32 query row b: similarity_i = -10000 * (sum_d |q[b,d] - key_i[d]| / key_dim) in fp32; the top_k
 * largest, descending, ties to the lower logical index (NaN ranks highest, as in torch.topk). Writes
 * similarities [B, top_k] fp32 and logical indices [B, top_k] int64. Slots beyond min(top_k, size) hold similarity 0
 * and index 0 (the reference's padding); size == 0 gives all zeros.
 *
 * key_dim must be a multiple of 8 and the key and query pointers 16-byte aligned (128-bit loads);
 * top_k <= M2VLA_TOPK_MAX. `workspace` holds the per-tile candidates: m2vla_l1_topk_workspace_bytes() bytes. */
#define M2VLA_TOPK_MAX 16

typedef struct m2vla_l1_topk_args {
  const float* queries; /* [batch, key_dim] */
  int batch;
  const void* keys; /* bf16 [capacity, key_dim] */
  int64_t capacity, size, oldest;
  int key_dim;
  int top_k;
  float* similarities; /* [batch, top_k] */
  int64_t* indices;    /* [batch, top_k] */
  void* workspace;
} m2vla_l1_topk_args;

size_t m2vla_l1_topk_workspace_bytes(int batch, int64_t size, int top_k);
cudaError_t m2vla_l1_topk(const m2vla_l1_topk_args* args, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* M2VLA_CUDA_KERNELS_H */
