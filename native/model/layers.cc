#include "model/layers.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>

#include <sys/mman.h>
#include <unistd.h>

#include "device.h"
#include "error.h"
#include "model/quantize.h"

namespace m2vla::model {
namespace {

// oneDNN's CPU ops as libtorch_cpu registers them (the ones Inductor's CPU path calls), reached through the
// dispatcher: they have no C++ API in ATen's headers. Schemas (torch 2.13):
//   mkldnn::_reorder_linear_weight(Tensor self, int? batch_size=None) -> Tensor
//   mkldnn::_linear_pointwise(Tensor X, Tensor W, Tensor? B, str attr, Scalar?[] scalars, str? algorithm) -> Tensor
//   mkldnn::_linear_pointwise.binary(Tensor X, Tensor other, Tensor W, Tensor? B, str attr) -> Tensor
//   onednn::qlinear_prepack(Tensor weight, int[]? x_shape) -> Tensor
//   onednn::qlinear_pointwise(Tensor qx, float x_scale, int x_zero_point, Tensor qw, Tensor w_scale,
//       Tensor w_zero_point, Tensor? bias, float output_scale, int output_zero_point, ScalarType? output_dtype,
//       str post_op_name, Scalar?[] post_op_args, str post_op_algorithm) -> Tensor
//   onednn::qlinear_pointwise.binary(..., Tensor w_zero_point, Tensor? other, Tensor? bias, float output_scale,
//       int output_zero_point, ScalarType? output_dtype, float other_scale, int other_zp, str binary_post_op,
//       float binary_alpha, str unary_post_op, Scalar?[] unary_post_op_args, str unary_post_op_algorithm) -> Tensor
using Scalars = c10::List<std::optional<at::Scalar>>;
using Str = c10::string_view;

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name, const char* overload) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload).typed<Signature>();
}

const auto& reorder_op() {
  static const auto h = op<at::Tensor(const at::Tensor&, std::optional<int64_t>)>("mkldnn::_reorder_linear_weight", "");
  return h;
}
const auto& pointwise_op() {
  static const auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, Str, Scalars,
                                      std::optional<Str>)>("mkldnn::_linear_pointwise", "");
  return h;
}
const auto& binary_op() {
  static const auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                      Str)>("mkldnn::_linear_pointwise", "binary");
  return h;
}
const auto& qprepack_op() {
  static const auto h = op<at::Tensor(at::Tensor, std::optional<c10::List<int64_t>>)>("onednn::qlinear_prepack", "");
  return h;
}
const auto& qlinear_op() {
  static const auto h = op<at::Tensor(at::Tensor, double, int64_t, at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>,
                                      double, int64_t, std::optional<at::ScalarType>, Str, Scalars, Str)>(
      "onednn::qlinear_pointwise", "");
  return h;
}
const auto& qlinear_binary_op() {
  static const auto h = op<at::Tensor(at::Tensor, double, int64_t, at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>,
                                      std::optional<at::Tensor>, double, int64_t, std::optional<at::ScalarType>, double, int64_t,
                                      Str, double, Str, Scalars, Str)>("onednn::qlinear_pointwise", "binary");
  return h;
}

std::optional<at::Tensor> opt(const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; }

// A repacked weight's source (a view of the mapped checkpoint when the dtype matched) is never read again: the kernel
// may reclaim its pages now, so the load's peak resident set holds one copy of the model instead of two. MADV_PAGEOUT
// only drops clean file-backed pages (anonymous memory, with no swap, stays): harmless for a tensor that is a copy.
void page_out(const at::Tensor& t) {
#ifdef MADV_PAGEOUT
  const long page = sysconf(_SC_PAGESIZE);
  const auto begin = (reinterpret_cast<uintptr_t>(t.const_data_ptr()) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(t.const_data_ptr()) + t.nbytes()) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_PAGEOUT);
#endif
}

const char* act_name(Linear::Act act) { return act == Linear::Act::Gelu ? "gelu" : act == Linear::Act::Silu ? "swish" : "none"; }

at::Tensor activate(at::Tensor y, Linear::Act act) {
  // In place unless autograd records: the backward of GELU/SiLU needs their input.
  const bool grad = at::GradMode::is_enabled();
  if (act == Linear::Act::Gelu) return grad ? at::gelu(y) : at::gelu_(y);
  if (act == Linear::Act::Silu) return grad ? at::silu(y) : at::silu_(y);
  return y;
}

at::Tensor as_rows(const at::Tensor& x) { return x.reshape({-1, x.size(-1)}); }

std::vector<int64_t> out_shape(const at::Tensor& x, int64_t out) {
  std::vector<int64_t> s(x.sizes().begin(), x.sizes().end());
  s.back() = out;
  return s;
}

}  // namespace

namespace {

// The inference kernels own every tensor the model keeps (a copy where the dtype already matched), so the file's
// mapping, whose every page the repacking read, is unmapped after load instead of staying in the resident set.
at::Tensor own(const at::Tensor& stored, at::Tensor taken, LinearKernel linear) {
  if (linear == LinearKernel::Aten || !taken.is_alias_of(stored)) return taken;
  at::Tensor copy = taken.clone();
  page_out(stored);
  return copy;
}

}  // namespace

LinearKernel inference_kernel(c10::Device device, at::ScalarType dtype, bool int8) {
  if (int8) return LinearKernel::Int8;
  const bool onednn = device.is_cpu() && dtype == at::kBFloat16 && cpu_matrix_features().onednn_bf16;
  return onednn ? LinearKernel::Onednn : LinearKernel::Aten;
}

at::Tensor Weights::get(const std::string& name) const {
  const at::Tensor& t = dict.get(name);
  return own(t, t.to(device, dtype), linear);
}

at::Tensor Weights::get(const std::string& name, const std::vector<int64_t>& shape) const {
  const at::Tensor& t = dict.get(name, shape);
  return own(t, t.to(device, dtype), linear);
}

at::Tensor Weights::take(const std::string& name, const std::vector<int64_t>& shape) const {
  return dict.get(name, shape).to(device, dtype);
}

Linear Linear::load(const Weights& sd, const std::string& name, int64_t out, int64_t in, bool bias) {
  return make(sd.take(name + ".weight", {out, in}), bias ? sd.get(name + ".bias", {out}) : at::Tensor(), sd.linear);
}

Linear Linear::load_stacked(const Weights& sd, const std::vector<std::string>& names, const std::vector<int64_t>& outs,
                            int64_t in, bool bias) {
  std::vector<at::Tensor> w, b;
  for (size_t i = 0; i < names.size(); ++i) {
    w.push_back(sd.take(names[i] + ".weight", {outs[i], in}));
    if (bias) b.push_back(sd.get(names[i] + ".bias", {outs[i]}));
  }
  at::Tensor stacked_bias = bias ? at::cat(b) : at::Tensor();
  if (sd.linear == LinearKernel::Int8) return quantized(w, stacked_bias);  // no stacked bfloat16 copy
  Linear l = make(at::cat(w), stacked_bias, sd.linear);
  for (const at::Tensor& t : w) page_out(t);
  return l;
}

Linear Linear::make(at::Tensor weight, at::Tensor bias, LinearKernel kernel) {
  Linear l{std::move(weight), std::move(bias), at::Tensor(), at::Tensor(), kernel};
  if (kernel == LinearKernel::Aten) return l;
  if (kernel == LinearKernel::Int8) return quantized({l.weight}, l.bias);
  if (!l.weight.is_cpu())
    fail(ErrorCode::Config, "the oneDNN linear kernel runs on the CPU, the weights are on ", l.weight.device().str());
  const at::Tensor source = l.weight;
  l.weight = reorder_op().call(source.contiguous(), std::nullopt);
  page_out(source);
  return l;
}

Linear Linear::quantized(const std::vector<at::Tensor>& parts, at::Tensor bias) {
  int64_t out = 0;
  for (const at::Tensor& p : parts) {
    if (!p.is_cpu()) fail(ErrorCode::Config, "the int8 linear kernel runs on the CPU, the weights are on ", p.device().str());
    out += p.size(0);
  }
  const int64_t in = parts.front().size(1);
  at::Tensor q = at::empty({out, in}, at::kChar), scale = at::empty({out}, at::kFloat);
  // Symmetric per output channel: w ≈ scale[o] * q[o, i], q in [-127, 127]. In blocks of rows, so that the float32
  // temporaries are a few MB that each block reuses: whole-weight ones (up to 35 MB, four per weight) left the heap
  // fragmented, and a load's resident set 1-2 GB larger than the model, by chance of the allocation order.
  constexpr int64_t kRows = 256;
  int64_t row = 0;
  for (const at::Tensor& p : parts) {
    for (int64_t r = 0; r < p.size(0); r += kRows) {
      const int64_t n = std::min(kRows, p.size(0) - r);
      at::Tensor w = p.narrow(0, r, n).to(at::kFloat);
      at::Tensor s = (w.abs().amax(1) / 127.0).clamp_min(1e-12);
      scale.narrow(0, row + r, n).copy_(s);
      q.narrow(0, row + r, n).copy_(w.div_(s.unsqueeze(1)).round_().clamp_(-127, 127));  // integral: exact as int8
    }
    row += p.size(0);
    page_out(p);
  }
  return {qprepack_op().call(q, std::nullopt), std::move(bias), scale, at::zeros_like(scale, at::kLong), LinearKernel::Int8};
}

at::Tensor Linear::operator()(const at::Tensor& x, Act act) const {
  switch (kernel) {
    case LinearKernel::Aten:
      return activate(at::linear(x, weight, bias), act);
    case LinearKernel::Onednn:
      return pointwise_op().call(x, weight, opt(bias), act_name(act), Scalars(),
                                 act == Act::Gelu ? std::optional<Str>("none") : std::nullopt);
    case LinearKernel::Int8: {
      const QuantizedActivations q = quantize_activations(as_rows(x).contiguous());
      at::Tensor y = qlinear_op().call(q.values, q.scale, q.zero_point, weight, scale, zero_points,
                                       opt(bias), 1.0, 0, x.scalar_type(), act_name(act), Scalars(), act == Act::Gelu ? "none" : "");
      return y.view(out_shape(x, scale.size(0)));
    }
  }
  fail(ErrorCode::Native, "Linear: unknown kernel");
}

at::Tensor Linear::plus(const at::Tensor& x, const at::Tensor& residual) const {
  switch (kernel) {
    case LinearKernel::Aten:
      if (bias.defined()) return at::linear(x, weight, bias) + residual;
      // residual + x @ weight^T as one GEMM (beta = 1)
      return at::addmm(as_rows(residual), as_rows(x), weight.t()).view(residual.sizes());
    case LinearKernel::Onednn:
      return binary_op().call(x, residual, weight, opt(bias), "add");
    case LinearKernel::Int8: {
      const QuantizedActivations q = quantize_activations(as_rows(x).contiguous());
      at::Tensor y = qlinear_binary_op().call(q.values, q.scale, q.zero_point, weight, scale, zero_points,
                                              as_rows(residual).contiguous(), opt(bias), 1.0, 0, x.scalar_type(), 1.0, 0, "add",
                                              1.0, "none", Scalars(), "");
      return y.view(residual.sizes());
    }
  }
  fail(ErrorCode::Native, "Linear: unknown kernel");
}

at::Tensor Linear::times(const at::Tensor& x, const at::Tensor& other) const {
  if (kernel == LinearKernel::Onednn) return binary_op().call(x, other, weight, opt(bias), "mul");
  at::Tensor y = (*this)(x);
  return at::GradMode::is_enabled() ? y * other : y.mul_(other);
}

LayerNorm LayerNorm::load(const Weights& sd, const std::string& name, int64_t dim, double eps) {
  return {sd.get(name + ".weight", {dim}), sd.get(name + ".bias", {dim}), eps};
}

at::Tensor LayerNorm::operator()(const at::Tensor& x) const {
  return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
}

}  // namespace m2vla::model
