// Image preprocessing of the Prismatic processor (resize-naive strategy), reproduced bit for bit:
//   uint8 RGB (H, W, 3) --PIL Image.resize((S, S), BICUBIC)--> uint8 (S, S, 3)
//   [optional LIBERO center crop: TF crop_and_resize (bilinear) of the central sqrt(area) box back to S x S]
//   --> float32 v / 255 --> (x - mean) / std per normalization set (DINO, SigLIP) --> channels [set0 RGB, set1 RGB, ...]
// No N-API here; errors are m2vla::Error(Input|Shape) naming the image.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace m2vla::model {

// A borrowed view of one raw image: `data` holds height * width * 3 bytes, row-major HWC RGB.
struct ImageView {
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  int64_t width = 0, height = 0;
  std::string name;  // e.g. "images.wrist" (for error messages)
};

struct Normalization {
  std::array<float, 3> mean, std;
};

struct PreprocessOptions {
  int64_t size = 224;                 // output side S
  std::vector<Normalization> norms;   // one per backbone: [DINO, SigLIP] -> 6 channels per image
  double center_crop = 0;             // 0 = off; else the crop's area fraction (LIBERO: 0.9)
};

// Throws E_SHAPE when `img` is empty or its byte count is not width * height * 3.
void check_image(const ImageView& img);

// PIL's uint8 BICUBIC resize (a = -0.5, antialiased support, 22-bit fixed point, horizontal then vertical pass,
// rounded and clamped to 0..255 after each; Pillow >= 12.2 does vertical first for images taller than 100 x their
// width, and so does this). Returns out_h * out_w * 3 bytes.
std::vector<uint8_t> resize_bicubic(const uint8_t* src, int64_t width, int64_t height, int64_t out_width,
                                    int64_t out_height);

// A crop box in normalized coordinates (0..1 spans the image), as tf.image.crop_and_resize takes it.
struct CropBox {
  float y1, x1, y2, x2;
};

// tf.image.crop_and_resize (bilinear, float32) of `box` of a uint8 image read as x * (1/255), output out_h x out_w,
// each value clipped to [0, 1]: out_h * out_w * 3 floats (HWC). Positions outside the image read 0 (TF's
// extrapolation value).
std::vector<float> crop_and_resize(const uint8_t* src, int64_t width, int64_t height, const CropBox& box,
                                   int64_t out_width, int64_t out_height);

// tf.image.convert_image_dtype(float32 -> uint8, saturate=True) of a value in [0, 1]: x * 255.5 clamped, truncated.
uint8_t unit_to_u8(float v);

// LIBERO's center crop: crop_and_resize of the box with side sqrt(area) centred in the image, output out_h x out_w,
// applied as the reference does it to uint8 data (convert_image_dtype both ways).
std::vector<uint8_t> center_crop(const uint8_t* src, int64_t width, int64_t height, double area, int64_t out_width,
                                 int64_t out_height);

// Images ordered sample-major ([s0 primary, s0 wrist, s1 primary, ...]) -> float32
// [batch, 3 * norms * images_per_sample, S, S]. images.size() must be a multiple of images_per_sample.
at::Tensor preprocess_images(const std::vector<ImageView>& images, int64_t images_per_sample,
                             const PreprocessOptions& options);

}  // namespace m2vla::model
