// Policy inputs read from JS on the JS thread (shared by preprocessImages, head normalization and policy.act).
#pragma once
#include <napi.h>

#include <cstdint>
#include <vector>

#include "head/normalize.h"
#include "model/preprocess.h"
#include "train/augment.h"

namespace m2vla::addon {

// Raw camera images copied out of JS (JS may reuse its buffers while a worker runs) with views for the model.
struct OwnedImages {
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<model::ImageView> views;
  void bind();  // point the views at `bytes` (call on the worker, after the last move)
};

// {size, means, stds, centerCrop?}: the run's preprocessor_config.json as lib/images.ts parses it.
model::PreprocessOptions preprocess_options_from_js(Napi::Env env, const Napi::Object& opts);
// undefined / false (off), true (the reference's parameters) or {cropArea?, brightness?, contrast?: [lo, hi],
// saturation?: [lo, hi], hue?, independent?} (the reference's for what is left out). Ranges are checked by
// AugmentOptions::check().
train::AugmentOptions augment_options_from_js(const Napi::Value& value);
// [{data: Uint8Array, width, height, name?}, ...] appended to `out`.
void images_from_js(Napi::Env env, const Napi::Value& value, OwnedImages& out);
// {q01: Float64Array, q99: Float64Array, mask: Uint8Array} (BOUNDS_Q99 statistics; mask 0 = pass through).
head::BoundsStats bounds_from_js(const Napi::Object& o);

}  // namespace m2vla::addon
