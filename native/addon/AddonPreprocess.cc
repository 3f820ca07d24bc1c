// preprocessImages({ images: [{data, width, height, name?}], size, means, stds, centerCrop?, imagesPerSample?,
// threads? }) -> Promise<Float32Array> of shape [images / imagesPerSample, 3 * means.length * imagesPerSample, S, S].
// augmentImage({ image: {data, width, height}, size, augmentation, seed, count, threads? }) -> Promise<[{data,
// params}]>: `count` training augmentations of one image (S x S RGB bytes), drawn in turn from a generator seeded
// with `seed`, with what was drawn. For tests and tools; the policy and the trainer call the native code directly.
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>

#include "addon/addon.h"
#include "addon/inputs_js.h"
#include "addon/js_args.h"
#include "addon/marshal.h"
#include "addon/workers.h"
#include "error.h"
#include "model/preprocess.h"

namespace m2vla::addon {
namespace {

class PreprocessWorker : public TorchWorker {
 public:
  PreprocessWorker(Napi::Env env, int threads, OwnedImages images, int64_t per_sample, model::PreprocessOptions options)
      : TorchWorker(env, threads), images_(std::move(images)), per_sample_(per_sample), options_(std::move(options)) {}

 protected:
  void Run() override {
    images_.bind();
    out_ = model::preprocess_images(images_.views, per_sample_, options_);
  }
  Napi::Value Result(Napi::Env env) override { return tensor_to_float32_array(env, out_); }

 private:
  OwnedImages images_;
  int64_t per_sample_;
  model::PreprocessOptions options_;
  at::Tensor out_;
};

class AugmentWorker : public TorchWorker {
 public:
  AugmentWorker(Napi::Env env, int threads, OwnedImages image, int64_t size, train::AugmentOptions options, uint64_t seed,
                int64_t count)
      : TorchWorker(env, threads), image_(std::move(image)), size_(size), options_(options), seed_(seed), count_(count) {}

 protected:
  void Run() override {
    image_.bind();
    at::Generator generator = at::detail::createCPUGenerator(seed_);
    params_ = train::draw_augmentations(options_, count_, generator);
    for (const train::AugmentParams& p : params_) out_.push_back(train::augment_frame(image_.views[0], size_, p));
  }
  Napi::Value Result(Napi::Env env) override {
    auto list = Napi::Array::New(env, out_.size());
    for (size_t i = 0; i < out_.size(); ++i) {
      auto data = Napi::Uint8Array::New(env, out_[i].size());
      std::memcpy(data.Data(), out_[i].data(), out_[i].size());
      const train::AugmentParams& p = params_[i];
      auto params = Napi::Object::New(env);
      auto box = Napi::Array::New(env, 4);
      const float corners[4] = {p.crop.y1, p.crop.x1, p.crop.y2, p.crop.x2};
      for (uint32_t k = 0; k < 4; ++k) box.Set(k, double(corners[k]));
      params.Set("crop", box);
      params.Set("brightness", p.brightness);
      params.Set("contrast", p.contrast);
      params.Set("saturation", p.saturation);
      params.Set("hue", p.hue);
      auto item = Napi::Object::New(env);
      item.Set("data", data);
      item.Set("params", params);
      list.Set(uint32_t(i), item);
    }
    return list;
  }

 private:
  OwnedImages image_;
  int64_t size_;
  train::AugmentOptions options_;
  uint64_t seed_;
  int64_t count_;
  std::vector<train::AugmentParams> params_;
  std::vector<std::vector<uint8_t>> out_;
};

std::array<double, 2> range_option(const Napi::Object& o, const char* key, std::array<double, 2> fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 2 || !v.As<Napi::Array>().Get(0u).IsNumber() ||
      !v.As<Napi::Array>().Get(1u).IsNumber())
    fail(ErrorCode::Input, "imageAugmentation.", key, ": expected [lower, upper]");
  auto a = v.As<Napi::Array>();
  return {a.Get(0u).As<Napi::Number>().DoubleValue(), a.Get(1u).As<Napi::Number>().DoubleValue()};
}

// [[r, g, b], ...] -> one triple per entry.
std::vector<std::array<float, 3>> triples(Napi::Env env, const Napi::Object& opts, const char* key) {
  auto v = opts.Get(key);
  if (!v.IsArray()) throw make_error(env, "E_INPUT", std::string("preprocessImages: ") + key + " must be an array of [r, g, b]");
  auto arr = v.As<Napi::Array>();
  std::vector<std::array<float, 3>> out;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    auto t = arr.Get(i);
    if (!t.IsArray() || t.As<Napi::Array>().Length() != 3)
      throw make_error(env, "E_INPUT", std::string("preprocessImages: ") + key + "[" + std::to_string(i) + "] must be [r, g, b]");
    std::array<float, 3> a{};
    for (uint32_t c = 0; c < 3; ++c) {
      auto x = t.As<Napi::Array>().Get(c);
      if (!x.IsNumber()) throw make_error(env, "E_INPUT", std::string("preprocessImages: ") + key + " values must be numbers");
      a[c] = float(x.As<Napi::Number>().DoubleValue());
    }
    out.push_back(a);
  }
  return out;
}

}  // namespace

model::PreprocessOptions preprocess_options_from_js(Napi::Env env, const Napi::Object& opts) {
  model::PreprocessOptions options;
  if (!opts.Get("size").IsNumber()) throw make_error(env, "E_INPUT", "preprocessImages: size must be a number");
  options.size = opts.Get("size").As<Napi::Number>().Int64Value();
  auto means = triples(env, opts, "means"), stds = triples(env, opts, "stds");
  if (means.size() != stds.size())
    throw make_error(env, "E_INPUT", "preprocessImages: means and stds must have the same number of sets");
  for (size_t k = 0; k < means.size(); ++k) options.norms.push_back({means[k], stds[k]});
  // lib/images.ts centerCropArea decided it (0 = off); the core checks the range.
  options.center_crop = number_option(opts, "centerCrop", 0);
  return options;
}

train::AugmentOptions augment_options_from_js(const Napi::Value& value) {
  train::AugmentOptions a;
  if (value.IsUndefined() || value.IsNull()) return a;
  if (value.IsBoolean()) {
    a.enabled = value.As<Napi::Boolean>().Value();
    return a;
  }
  if (!value.IsObject() || value.IsArray())
    fail(ErrorCode::Input, "imageAugmentation: expected a boolean or {cropArea, brightness, contrast, saturation, hue, independent}");
  auto o = value.As<Napi::Object>();
  a.enabled = true;
  a.crop_area = number_option(o, "cropArea", a.crop_area);
  a.brightness = number_option(o, "brightness", a.brightness);
  a.contrast = range_option(o, "contrast", a.contrast);
  a.saturation = range_option(o, "saturation", a.saturation);
  a.hue = number_option(o, "hue", a.hue);
  a.independent = bool_option(o, "independent", a.independent);
  return a;
}

void images_from_js(Napi::Env env, const Napi::Value& value, OwnedImages& out) {
  if (!value.IsArray()) throw make_error(env, "E_INPUT", "images must be an array");
  auto images = value.As<Napi::Array>();
  for (uint32_t i = 0; i < images.Length(); ++i) {
    auto v = images.Get(i);
    std::string name = "images[" + std::to_string(i) + "]";
    if (!v.IsObject()) throw make_error(env, "E_INPUT", name + ": expected {data, width, height}");
    auto o = v.As<Napi::Object>();
    if (o.Get("name").IsString()) name = o.Get("name").As<Napi::String>();
    auto data = o.Get("data");
    if (!data.IsTypedArray() || (data.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array &&
                                 data.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_clamped_array))
      throw make_error(env, "E_INPUT", name + ": data must be a Uint8Array of HWC RGB bytes");
    if (!o.Get("width").IsNumber() || !o.Get("height").IsNumber())
      throw make_error(env, "E_INPUT", name + ": width and height must be numbers");
    auto ta = data.As<Napi::TypedArray>();
    const auto* src = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    out.bytes.emplace_back(src, src + ta.ByteLength());
    model::ImageView view;
    view.bytes = ta.ByteLength();
    view.width = o.Get("width").As<Napi::Number>().Int64Value();
    view.height = o.Get("height").As<Napi::Number>().Int64Value();
    view.name = name;
    out.views.push_back(std::move(view));
  }
}

void OwnedImages::bind() {
  for (size_t i = 0; i < views.size(); ++i) views[i].data = bytes[i].data();
}

namespace {

Napi::Value PreprocessImages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw make_error(env, "E_INPUT", "preprocessImages: options object expected");
  auto opts = info[0].As<Napi::Object>();
  model::PreprocessOptions options = preprocess_options_from_js(env, opts);
  OwnedImages images;
  images_from_js(env, opts.Get("images"), images);
  int64_t per_sample = int64_t(images.views.size());
  if (opts.Get("imagesPerSample").IsNumber()) per_sample = opts.Get("imagesPerSample").As<Napi::Number>().Int64Value();
  return (new PreprocessWorker(env, threads_option(opts), std::move(images), per_sample, std::move(options)))->Start();
}

Napi::Value AugmentImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    Napi::Object o = object_arg(info, 0, "augmentImage");
    train::AugmentOptions options = augment_options_from_js(o.Get("augmentation"));
    options.enabled = true;
    options.check();
    OwnedImages image;
    auto list = Napi::Array::New(env, 1);
    list.Set(0u, o.Get("image"));
    images_from_js(env, list, image);
    const int64_t size = integer_option(o, "size"), count = integer_option(o, "count"), seed = integer_option(o, "seed");
    if (size < 1 || count < 1 || seed < 0) fail(ErrorCode::Input, "augmentImage: size and count must be positive, seed non-negative");
    return (new AugmentWorker(env, threads_option(o), std::move(image), size, options, uint64_t(seed), count))->Start();
  });
}

}  // namespace

void init_preprocess(Napi::Env env, Napi::Object exports) {
  exports.Set("preprocessImages", Napi::Function::New(env, PreprocessImages));
  exports.Set("augmentImage", Napi::Function::New(env, AugmentImage));
}

}  // namespace m2vla::addon
