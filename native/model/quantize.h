// The activations of the int8 linears (model/layers.h, LinearKernel::Int8), quantized per call: bfloat16 -> uint8
// with one scale and zero point for the whole tensor, from its range (which always contains 0, so 0 stays exact).
// Hand-written because ATen has no op for it: at::quantize_per_tensor takes float32 only and returns a quantized
// tensor whose int_repr() is another copy, and at::aminmax is a pass of its own: four passes and a float32 copy,
// measured slower than the int8 GEMM they feed, where this makes two passes over the bfloat16 values.
#pragma once
#include <ATen/core/Tensor.h>

namespace m2vla::model {

struct QuantizedActivations {
  at::Tensor values;  // uint8, the shape of the input
  double scale = 1;
  int64_t zero_point = 0;
};

// x: bfloat16, contiguous (E_NATIVE otherwise).
QuantizedActivations quantize_activations(const at::Tensor& x);

// The range of n bfloat16 values (their bits) as order keys, one pass: integer min/max vectorize, float ones do not
// without fast-math. from_key(key) is the value.
void key_range(const uint16_t* x, int64_t n, uint16_t& lo, uint16_t& hi);
float from_key(uint16_t key);

}  // namespace m2vla::model
