// See preprocess.h. Everything is plain integer/float code over uint8 buffers (exact, so it can match PIL and
// TF bit for bit); only the final normalized tensor is a torch tensor. This file is compiled with
// -ffp-contract=off (CMakeLists.txt): fused multiply-adds would change the float results the references produce.
#include "model/preprocess.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "error.h"

namespace m2vla::model {
namespace {

// ---- PIL's separable resampling (8 bits per channel) --------------------------------------------------------

constexpr int kPrecisionBits = 32 - 8 - 2;  // fixed-point fraction bits of the filter weights (PIL's choice)

// Keys' cubic convolution kernel with a = -0.5 (support 2).
double cubic_kernel(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output index: the first input index, the number of taps, and `ksize` fixed-point weights.
struct Taps {
  int64_t ksize = 0;
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;
};

Taps cubic_taps(int64_t in_size, int64_t out_size) {
  // Downscaling widens the kernel by the scale factor (antialiasing); upscaling keeps support 2.
  const double scale = double(in_size) / double(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  const double inv_filter_scale = 1.0 / filter_scale;
  Taps t;
  t.ksize = int64_t(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(out_size * t.ksize, 0);
  std::vector<double> w(t.ksize);
  for (int64_t o = 0; o < out_size; ++o) {
    const double center = (double(o) + 0.5) * scale;
    // Truncating casts of (x + 0.5) round the window ends as PIL does.
    const int64_t lo = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(int64_t(center + support + 0.5), in_size);
    const int64_t n = hi - lo;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      w[i] = cubic_kernel((double(i + lo) - center + 0.5) * inv_filter_scale);
      sum += w[i];
    }
    for (int64_t i = 0; i < n; ++i) {
      const double v = sum != 0.0 ? w[i] / sum : w[i];
      const double fixed = v * double(1 << kPrecisionBits);
      t.weights[o * t.ksize + i] = int32_t(v < 0 ? fixed - 0.5 : fixed + 0.5);  // round half away from zero
    }
    t.first[o] = lo;
    t.count[o] = n;
  }
  return t;
}

inline uint8_t fixed_to_u8(int32_t acc) {
  return uint8_t(std::clamp<int32_t>(acc >> kPrecisionBits, 0, 255));
}

// One separable pass over RGB pixels. `along_x`: output (rows, out_len) from input (rows, in_len) along x;
// otherwise output (out_len, cols) from input (in_len, cols) along y.
void resample_pass(const uint8_t* src, uint8_t* dst, int64_t in_w, int64_t in_h, int64_t out_w, int64_t out_h,
                   bool along_x) {
  const Taps t = along_x ? cubic_taps(in_w, out_w) : cubic_taps(in_h, out_h);
  constexpr int32_t half = 1 << (kPrecisionBits - 1);
  for (int64_t y = 0; y < out_h; ++y) {
    for (int64_t x = 0; x < out_w; ++x) {
      const int64_t o = along_x ? x : y;
      const int32_t* k = &t.weights[o * t.ksize];
      int32_t acc[3] = {half, half, half};
      for (int64_t i = 0; i < t.count[o]; ++i) {
        const int64_t sx = along_x ? t.first[o] + i : x, sy = along_x ? y : t.first[o] + i;
        const uint8_t* p = src + (sy * in_w + sx) * 3;
        for (int c = 0; c < 3; ++c) acc[c] += int32_t(p[c]) * k[i];
      }
      uint8_t* q = dst + (y * out_w + x) * 3;
      for (int c = 0; c < 3; ++c) q[c] = fixed_to_u8(acc[c]);
    }
  }
}

}  // namespace

void check_image(const ImageView& img) {
  if (img.width <= 0 || img.height <= 0)
    fail(ErrorCode::Shape, img.name, ": zero-size image (", img.width, "x", img.height, ")");
  if (img.width > (1 << 24) || img.height > (1 << 24))
    fail(ErrorCode::Shape, img.name, ": image too large (", img.width, "x", img.height, ")");
  const size_t pixels = size_t(img.width) * size_t(img.height);
  if (img.bytes == pixels * 3) return;
  if (img.bytes % pixels == 0)
    fail(ErrorCode::Shape, img.name, ": expected 3 channels (RGB, ", img.width, "x", img.height, "x3 = ", pixels * 3,
         " bytes), got ", img.bytes / pixels, " channels (", img.bytes, " bytes)");
  fail(ErrorCode::Shape, img.name, ": expected ", img.width, "x", img.height, "x3 = ", pixels * 3,
       " bytes (HWC RGB), got ", img.bytes);
}

std::vector<uint8_t> resize_bicubic(const uint8_t* src, int64_t width, int64_t height, int64_t out_width,
                                    int64_t out_height) {
  std::vector<uint8_t> out(size_t(out_width * out_height * 3));
  const bool need_x = out_width != width, need_y = out_height != height;
  if (!need_x && !need_y) {
    std::memcpy(out.data(), src, out.size());
  } else if (need_x && need_y && height > width * 100 && out_height < height) {
    // Pillow >= 12.2 (Image.resize) shrinks very tall images (height > 100 x width) vertically first.
    std::vector<uint8_t> tmp(size_t(width * out_height * 3));
    resample_pass(src, tmp.data(), width, height, width, out_height, false);
    resample_pass(tmp.data(), out.data(), width, out_height, out_width, out_height, true);
  } else if (need_x && need_y) {
    // Horizontal first, rounded to uint8, then vertical (PIL's order; the intermediate is not kept in float).
    std::vector<uint8_t> tmp(size_t(out_width * height * 3));
    resample_pass(src, tmp.data(), width, height, out_width, height, true);
    resample_pass(tmp.data(), out.data(), out_width, height, out_width, out_height, false);
  } else {
    resample_pass(src, out.data(), width, height, out_width, out_height, need_x);
  }
  return out;
}

std::vector<float> crop_and_resize(const uint8_t* src, int64_t width, int64_t height, const CropBox& box,
                                   int64_t out_width, int64_t out_height) {
  const float to_unit = float(1.0 / 255.0);  // convert_image_dtype(uint8 -> float32): x * (1/255)
  auto coords = [](float lo, float hi, int64_t in_size, int64_t out_size) {
    // crop_and_resize's sampling positions (align-corners style: box ends map to pixel centres).
    std::vector<float> pos(out_size);
    const float step = out_size > 1 ? (hi - lo) * float(in_size - 1) / float(out_size - 1) : 0.0f;
    for (int64_t i = 0; i < out_size; ++i)
      pos[i] = out_size > 1 ? lo * float(in_size - 1) + float(i) * step : float(0.5 * double(lo + hi) * double(in_size - 1));
    return pos;
  };
  const std::vector<float> ys = coords(box.y1, box.y2, height, out_height), xs = coords(box.x1, box.x2, width, out_width);
  std::vector<float> out(size_t(out_width * out_height * 3), 0.0f);  // outside the image: TF's extrapolation value 0
  auto px = [&](int64_t y, int64_t x, int c) { return float(src[(y * width + x) * 3 + c]) * to_unit; };
  for (int64_t oy = 0; oy < out_height; ++oy) {
    const float fy = ys[oy];
    if (fy < 0 || fy > float(height - 1)) continue;
    const int64_t y0 = int64_t(std::floor(fy)), y1 = int64_t(std::ceil(fy));
    const float dy = fy - float(y0);
    for (int64_t ox = 0; ox < out_width; ++ox) {
      const float fx = xs[ox];
      if (fx < 0 || fx > float(width - 1)) continue;
      const int64_t x0 = int64_t(std::floor(fx)), x1 = int64_t(std::ceil(fx));
      const float dx = fx - float(x0);
      for (int c = 0; c < 3; ++c) {
        const float top = px(y0, x0, c) + (px(y0, x1, c) - px(y0, x0, c)) * dx;
        const float bottom = px(y1, x0, c) + (px(y1, x1, c) - px(y1, x0, c)) * dx;
        out[(oy * out_width + ox) * 3 + c] = std::clamp(top + (bottom - top) * dy, 0.0f, 1.0f);
      }
    }
  }
  return out;
}

uint8_t unit_to_u8(float v) { return uint8_t(std::clamp(v * 255.5f, 0.0f, 255.0f)); }

std::vector<uint8_t> center_crop(const uint8_t* src, int64_t width, int64_t height, double area, int64_t out_width,
                                 int64_t out_height) {
  // Box [y1, x1, y2, x2] in normalized coordinates, computed in float32 as the TF graph does.
  const float side = std::clamp(std::sqrt(float(area)), 0.0f, 1.0f);
  const float lo = (1.0f - side) / 2.0f, hi = lo + side;
  const std::vector<float> unit = crop_and_resize(src, width, height, {lo, lo, hi, hi}, out_width, out_height);
  std::vector<uint8_t> out(unit.size());
  std::transform(unit.begin(), unit.end(), out.begin(), unit_to_u8);
  return out;
}

at::Tensor preprocess_images(const std::vector<ImageView>& images, int64_t images_per_sample,
                             const PreprocessOptions& options) {
  const int64_t S = options.size, K = int64_t(options.norms.size());
  if (S <= 0) fail(ErrorCode::Input, "preprocess: size must be positive, got ", S);
  if (K == 0) fail(ErrorCode::Input, "preprocess: at least one mean/std set is needed");
  if (!(options.center_crop >= 0 && options.center_crop <= 1))
    fail(ErrorCode::Input, "preprocess: centerCrop must be an area fraction in (0, 1], got ", options.center_crop);
  if (images.empty()) fail(ErrorCode::Input, "preprocess: no images");
  if (images_per_sample <= 0 || int64_t(images.size()) % images_per_sample != 0)
    fail(ErrorCode::Shape, "preprocess: ", images.size(), " images do not split into samples of ", images_per_sample);
  for (const auto& img : images) check_image(img);
  for (const auto& n : options.norms)
    for (int c = 0; c < 3; ++c)
      if (!(n.std[c] != 0.0f) || !std::isfinite(n.mean[c]) || !std::isfinite(n.std[c]))
        fail(ErrorCode::Input, "preprocess: means/stds must be finite and stds non-zero");

  // (v / 255 - mean) / std for every uint8 value, in float32 exactly as to_tensor + normalize compute it.
  std::vector<std::array<float, 256>> lut(size_t(3 * K));
  for (int64_t k = 0; k < K; ++k)
    for (int c = 0; c < 3; ++c)
      for (int v = 0; v < 256; ++v)
        lut[k * 3 + c][v] = (float(v) / 255.0f - options.norms[k].mean[c]) / options.norms[k].std[c];

  const int64_t n = int64_t(images.size()), batch = n / images_per_sample, plane = S * S;
  at::Tensor out = at::empty({batch, 3 * K * images_per_sample, S, S}, at::TensorOptions().dtype(at::kFloat));
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const ImageView& img = images[i];
      std::vector<uint8_t> rgb = resize_bicubic(img.data, img.width, img.height, S, S);
      if (options.center_crop > 0) rgb = center_crop(rgb.data(), S, S, options.center_crop, S, S);
      // Image i is sample i / per_sample, channel block i % per_sample; its channel layout is [set][RGB].
      float* base = dst + i * 3 * K * plane;
      for (int64_t k = 0; k < K; ++k)
        for (int c = 0; c < 3; ++c) {
          const auto& table = lut[k * 3 + c];
          float* ch = base + (k * 3 + c) * plane;
          for (int64_t p = 0; p < plane; ++p) ch[p] = table[rgb[p * 3 + c]];
        }
    }
  });
  return out;
}

}  // namespace m2vla::model
