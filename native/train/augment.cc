// See augment.h. Plain float code over one S x S image; the draws are the only torch calls.
#include "train/augment.h"

#include <ATen/ops/rand.h>

#include <algorithm>
#include <cmath>

#include "error.h"

namespace m2vla::train {
namespace {

struct Hsv {
  float h, s, v;  // h in [0, 1) of a full turn
};

Hsv to_hsv(float r, float g, float b) {
  const float v = std::max({r, g, b}), range = v - std::min({r, g, b});
  if (range <= 0) return {0, 0, v};
  float sector;  // which channel is the largest decides the 60-degree sector the hue lies in
  if (v == r) sector = (g - b) / range;
  else if (v == g) sector = (b - r) / range + 2;
  else sector = (r - g) / range + 4;
  float h = sector / 6;
  if (h < 0) h += 1;
  return {h, range / v, v};
}

void to_rgb(const Hsv& p, float* rgb) {
  const float chroma = p.v * p.s, h6 = p.h * 6;
  const float x = chroma * (1 - std::fabs(std::fmod(h6, 2.0f) - 1)), m = p.v - chroma;
  float r = 0, g = 0, b = 0;
  switch (std::clamp(int(h6), 0, 5)) {
    case 0: r = chroma, g = x; break;
    case 1: r = x, g = chroma; break;
    case 2: g = chroma, b = x; break;
    case 3: g = x, b = chroma; break;
    case 4: r = x, b = chroma; break;
    default: r = chroma, b = x; break;
  }
  rgb[0] = r + m, rgb[1] = g + m, rgb[2] = b + m;
}

void clip(std::vector<float>& img) {
  for (float& v : img) v = std::clamp(v, 0.0f, 1.0f);
}

template <class F>
void each_hsv(std::vector<float>& img, F change) {
  for (size_t i = 0; i < img.size(); i += 3) {
    Hsv p = to_hsv(img[i], img[i + 1], img[i + 2]);
    change(p);
    to_rgb(p, &img[i]);
  }
  clip(img);
}

void check_range(const std::array<double, 2>& r, const char* name) {
  if (!(std::isfinite(r[0]) && std::isfinite(r[1]) && r[0] >= 0 && r[0] <= r[1]))
    fail(ErrorCode::Input, "imageAugmentation.", name, ": expected [lower, upper] with 0 <= lower <= upper, got [", r[0], ", ",
         r[1], "]");
}

}  // namespace

void AugmentOptions::check() const {
  if (!(crop_area > 0 && crop_area <= 1))
    fail(ErrorCode::Input, "imageAugmentation.cropArea: expected an area fraction in (0, 1], got ", crop_area);
  if (!(brightness >= 0 && brightness <= 1))
    fail(ErrorCode::Input, "imageAugmentation.brightness: expected a delta in [0, 1], got ", brightness);
  check_range(contrast, "contrast");
  check_range(saturation, "saturation");
  if (!(hue >= 0 && hue <= 0.5)) fail(ErrorCode::Input, "imageAugmentation.hue: expected a delta in [0, 0.5] of a turn, got ", hue);
}

std::vector<AugmentParams> draw_augmentations(const AugmentOptions& o, int64_t count, at::Generator& generator) {
  std::vector<AugmentParams> out(size_t(std::max<int64_t>(count, 0)));
  if (out.empty()) return out;
  constexpr int64_t kDraws = 6;  // crop top, crop left, brightness, contrast, saturation, hue
  const at::Tensor u = at::rand({count, o.independent ? kDraws : 1}, generator, at::TensorOptions().dtype(at::kDouble));
  const double* p = u.data_ptr<double>();
  const float side = std::sqrt(float(o.crop_area));  // float32, as the reference's box
  auto lerp = [](double lo, double hi, double t) { return lo + (hi - lo) * t; };
  for (int64_t i = 0; i < count; ++i) {
    const double* row = p + i * u.size(1);
    auto draw = [&](int64_t k) { return o.independent ? row[k] : row[0]; };
    AugmentParams& a = out[i];
    const float top = float(draw(0)) * (1 - side), left = float(draw(1)) * (1 - side);
    a.crop = {top, left, top + side, left + side};
    a.brightness = lerp(-o.brightness, o.brightness, draw(2));
    a.contrast = lerp(o.contrast[0], o.contrast[1], draw(3));
    a.saturation = lerp(o.saturation[0], o.saturation[1], draw(4));
    a.hue = lerp(-o.hue, o.hue, draw(5));
  }
  return out;
}

std::vector<uint8_t> augment_frame(const model::ImageView& image, int64_t size, const AugmentParams& a) {
  model::check_image(image);
  const std::vector<uint8_t> resized = model::resize_bicubic(image.data, image.width, image.height, size, size);
  std::vector<float> img = model::crop_and_resize(resized.data(), size, size, a.crop, size, size);
  for (float& v : img) v += float(a.brightness);
  clip(img);
  const size_t pixels = img.size() / 3;
  for (int c = 0; c < 3; ++c) {
    double sum = 0;
    for (size_t i = 0; i < pixels; ++i) sum += img[i * 3 + c];
    const float mean = float(sum / double(pixels)), f = float(a.contrast);
    for (size_t i = 0; i < pixels; ++i) img[i * 3 + c] = (img[i * 3 + c] - mean) * f + mean;
  }
  clip(img);
  const float sat = float(a.saturation), hue = float(a.hue);
  each_hsv(img, [&](Hsv& p) { p.s = std::clamp(p.s * sat, 0.0f, 1.0f); });
  each_hsv(img, [&](Hsv& p) {
    p.h += hue;
    p.h -= std::floor(p.h);  // wraps into [0, 1)
  });
  std::vector<uint8_t> out(img.size());
  std::transform(img.begin(), img.end(), out.begin(), model::unit_to_u8);
  return out;
}

}  // namespace m2vla::train
