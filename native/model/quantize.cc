#include "model/quantize.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "error.h"
#include "head/simd.h"

namespace m2vla::model {
namespace {

// bfloat16 bits -> an unsigned key with the order of the values (negatives reversed below positives).
inline uint16_t order_key(uint16_t b) { return (b & 0x8000) ? uint16_t(~b) : uint16_t(b | 0x8000); }
M2VLA_SIMD_CLONES void quantize_range(const uint16_t* x, uint8_t* q, int64_t n, float inv_scale, float offset) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = uint32_t(x[i]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    const float v = std::min(std::max(f * inv_scale + offset, 0.0f), 255.0f);  // offset = zero point + 0.5: rounds
    q[i] = uint8_t(int32_t(v));
  }
}

}  // namespace

float from_key(uint16_t k) {
  const uint16_t b = (k & 0x8000) ? uint16_t(k & 0x7fff) : uint16_t(~k);
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

M2VLA_SIMD_CLONES void key_range(const uint16_t* x, int64_t n, uint16_t& lo, uint16_t& hi) {
  uint16_t l = 0xffff, h = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t k = order_key(x[i]);
    l = k < l ? k : l;
    h = k > h ? k : h;
  }
  lo = l, hi = h;
}

QuantizedActivations quantize_activations(const at::Tensor& x) {
  if (x.scalar_type() != at::kBFloat16 || !x.is_contiguous() || !x.is_cpu())
    fail(ErrorCode::Native, "quantize_activations: expected a contiguous bfloat16 CPU tensor, got ", x.scalar_type());
  const int64_t n = x.numel();
  const auto* src = reinterpret_cast<const uint16_t*>(x.const_data_ptr());
  constexpr int64_t kGrain = 1 << 16;
  const int64_t chunks = std::max<int64_t>(1, (n + kGrain - 1) / kGrain);
  std::vector<uint16_t> lo(chunks, 0xffff), hi(chunks, 0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t from = c * kGrain;
      key_range(src + from, std::min(kGrain, n - from), lo[c], hi[c]);
    }
  });
  const double low = std::min<double>(from_key(*std::min_element(lo.begin(), lo.end())), 0.0);
  const double high = std::max<double>(from_key(*std::max_element(hi.begin(), hi.end())), 0.0);
  if (!std::isfinite(low) || !std::isfinite(high))
    fail(ErrorCode::Native, "int8 linear: the activations contain NaN or Inf");
  QuantizedActivations out;
  out.scale = high > low ? (high - low) / 255.0 : 1.0;
  out.zero_point = std::clamp<int64_t>(std::llround(-low / out.scale), 0, 255);
  out.values = at::empty(x.sizes(), x.options().dtype(at::kByte));
  auto* dst = out.values.mutable_data_ptr<uint8_t>();
  const float inv = float(1.0 / out.scale), offset = float(out.zero_point) + 0.5f;
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) { quantize_range(src + begin, dst + begin, end - begin, inv, offset); });
  return out;
}

}  // namespace m2vla::model
