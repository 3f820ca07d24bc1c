// The two parametrised building blocks every model file uses, loaded by name with their shapes checked against
// the config (a mis-shaped checkpoint fails at load with the tensor's name, never deep inside a matmul).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "io/state_dict.h"

namespace m2vla::model {

// How the Linear layers of a model compute, chosen once at load.
enum class LinearKernel {
  // at::linear / at::addmm on the weights as stored: any device and dtype, differentiable (the trainer's path).
  Aten,
  // CPU inference: oneDNN matmuls (mkldnn::_linear_pointwise) on weights reordered once at load into oneDNN's blocked
  // layout, with the bias, GELU/SiLU, the residual add and the SwiGLU product fused into the GEMM. In bfloat16 this
  // reaches the AMX tiles; ATen's bf16 at::linear adds the bias in a separate pass and re-blocks the weight per call.
  Onednn,
  // CPU inference, W8A8: int8 weights with per-output-channel symmetric scales computed at load, activations
  // quantized per call (per tensor, asymmetric uint8), oneDNN int8 GEMMs (AMX-INT8 / VNNI), bfloat16 out.
  Int8,
};

// The kernel of a model loaded for inference (not training): Int8 when asked, Onednn for bfloat16 on a CPU whose
// oneDNN runs it (CpuMatrixFeatures::onednn_bf16), Aten otherwise (float32 on the CPU: MKL's sgemm behind at::linear
// is as fast as oneDNN's there).
LinearKernel inference_kernel(c10::Device device, at::ScalarType dtype, bool int8);

// The checkpoint as model files read it: StateDict's lookups, each tensor converted to the model dtype as it is
// taken. Only tensors a model uses are converted (the LM head copy, attn_pool, blocks after take_block never are),
// and tensors already in that dtype stay views of the mapped file. With a GPU `device`, each tensor is copied there
// once, as it is taken, so the host never holds a converted copy of the model.
struct Weights {
  const io::StateDict& dict;
  at::ScalarType dtype;
  c10::Device device = c10::kCPU;
  LinearKernel linear = LinearKernel::Aten;  // how Linear::load prepares the weights it takes

  bool has(const std::string& name) const { return dict.has(name); }
  const std::string& source() const { return dict.source; }
  at::Tensor get(const std::string& name) const;
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape) const;  // E_CHECKPOINT on a mismatch
  // get() without the copy the inference kernels make: for a weight the caller repacks (Linear::make), or one that
  // should stay a view of the mapped file (the embedding table: act() reads a few rows).
  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape) const;
};

struct Linear {
  enum class Act { None, Gelu, Silu };  // Gelu: exact (erf)

  at::Tensor weight;  // Aten: [out, in] as loaded; Onednn: oneDNN-blocked; Int8: oneDNN-packed int8
  at::Tensor bias;    // [out] in the model dtype, or undefined
  at::Tensor scale;        // Int8: [out] float32 weight scales
  at::Tensor zero_points;  // Int8: [out] int64 zeros (symmetric weights)
  LinearKernel kernel = LinearKernel::Aten;

  // `<name>.weight` [out, in] and, with `bias`, `<name>.bias` [out].
  static Linear load(const Weights& sd, const std::string& name, int64_t out, int64_t in, bool bias = true);
  // Projections of one input stacked along their outputs, one GEMM for all (q/k/v): `<name>.weight` [outs[i], in] each.
  static Linear load_stacked(const Weights& sd, const std::vector<std::string>& names, const std::vector<int64_t>& outs,
                             int64_t in, bool bias);
  // A plain weight [out, in] (and bias) in the model dtype, prepared for `kernel`.
  static Linear make(at::Tensor weight, at::Tensor bias, LinearKernel kernel);
  // LinearKernel::Int8 of the weights [out_i, in] stacked along their outputs, quantized part by part.
  static Linear quantized(const std::vector<at::Tensor>& parts, at::Tensor bias);

  at::Tensor operator()(const at::Tensor& x, Act act = Act::None) const;
  // residual + this(x), the add fused into the GEMM where the kernel can.
  at::Tensor plus(const at::Tensor& x, const at::Tensor& residual) const;
  // other * this(x), the product fused into the GEMM where the kernel can.
  at::Tensor times(const at::Tensor& x, const at::Tensor& other) const;
};

struct LayerNorm {
  at::Tensor weight, bias;  // [dim]
  double eps = 1e-6;

  static LayerNorm load(const Weights& sd, const std::string& name, int64_t dim, double eps);
  at::Tensor operator()(const at::Tensor& x) const;
};

}  // namespace m2vla::model
