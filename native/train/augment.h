// Training-time image augmentation as the reference trains with `image_aug` (OpenVLA / VLA-Adapter RLDSDataset
// kwargs run through dlimp's augment_image), on the uint8 frame after it is resized to the model's S x S:
//   x / 255 -> random resized crop (area `crop_area`, aspect ratio 1, back to S x S, bilinear)
//           -> brightness + d, d ~ U[-brightness, brightness]
//           -> contrast: per channel (x - mean) * f + mean, f ~ U[contrast]
//           -> saturation: HSV s * f clipped to [0, 1], f ~ U[saturation]
//           -> hue: HSV h + d (wrapping), d ~ U[-hue, hue] (of a full turn)
//   each followed by a clip to [0, 1], then back to uint8 (x * 255.5 truncated).
// The reference hands every op the same stateless seed, so one uniform draw per image sets all of them (the crop
// offset is the same fraction on both axes; brighter frames also get more contrast and saturation). That is the
// default here; `independent` draws each parameter on its own. Draws come from the trainer's generator, so
// checkpoints (which save it) resume them exactly. Primary and wrist frames get their own draws.
#pragma once
#include <ATen/core/Generator.h>

#include <array>
#include <cstdint>
#include <vector>

#include "model/preprocess.h"

namespace m2vla::train {

struct AugmentOptions {
  bool enabled = false;
  double crop_area = 0.9;  // random_resized_crop scale [0.9, 0.9], ratio [1, 1]
  double brightness = 0.2;
  std::array<double, 2> contrast{0.8, 1.2};
  std::array<double, 2> saturation{0.8, 1.2};
  double hue = 0.05;
  bool independent = false;

  // E_INPUT naming the option (the JS names: imageAugmentation.cropArea, ...).
  void check() const;
};

// One image's draw.
struct AugmentParams {
  model::CropBox crop;
  double brightness = 0, contrast = 1, saturation = 1, hue = 0;
};

// `count` draws from `generator`, in frame order.
std::vector<AugmentParams> draw_augmentations(const AugmentOptions& options, int64_t count, at::Generator& generator);

// Checks `image`, resizes it to size x size (PIL bicubic, as preprocessing does) and augments it: size * size * 3
// bytes.
std::vector<uint8_t> augment_frame(const model::ImageView& image, int64_t size, const AugmentParams& params);

}  // namespace m2vla::train
