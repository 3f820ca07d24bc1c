// preprocessImages({ images: [{data, width, height, name?}], size, means, stds, centerCrop?, imagesPerSample?,
// threads? }) -> Promise<Float32Array> of shape [images / imagesPerSample, 3 * means.length * imagesPerSample, S, S].
// For tests and tools; the policy calls model::preprocess_images directly.
#include "addon/addon.h"
#include "addon/config_js.h"
#include "addon/marshal.h"
#include "addon/workers.h"
#include "error.h"
#include "model/preprocess.h"

namespace m2vla::addon {
namespace {

class PreprocessWorker : public TorchWorker {
 public:
  PreprocessWorker(Napi::Env env, int threads, std::vector<std::vector<uint8_t>> pixels,
                   std::vector<model::ImageView> views, int64_t per_sample, model::PreprocessOptions options)
      : TorchWorker(env, threads), pixels_(std::move(pixels)), views_(std::move(views)), per_sample_(per_sample),
        options_(std::move(options)) {}

 protected:
  void Run() override {
    for (size_t i = 0; i < views_.size(); ++i) views_[i].data = pixels_[i].data();
    out_ = model::preprocess_images(views_, per_sample_, options_);
  }
  Napi::Value Result(Napi::Env env) override { return tensor_to_float32_array(env, out_); }

 private:
  std::vector<std::vector<uint8_t>> pixels_;  // owned copies: JS may reuse its buffers while the worker runs
  std::vector<model::ImageView> views_;
  int64_t per_sample_;
  model::PreprocessOptions options_;
  at::Tensor out_;
};

Napi::Value PreprocessImages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw make_error(env, "E_INPUT", "preprocessImages: options object expected");
  auto opts = info[0].As<Napi::Object>();

  model::PreprocessOptions options;
  try {
    options = preprocess_options_from_js(opts);
  } catch (const m2vla::Error& e) {
    throw make_error(env, error_code_name(e.code()), std::string("preprocessImages: ") + e.what());
  }

  if (!opts.Get("images").IsArray()) throw make_error(env, "E_INPUT", "preprocessImages: images must be an array");
  auto images = opts.Get("images").As<Napi::Array>();
  std::vector<std::vector<uint8_t>> pixels;
  std::vector<model::ImageView> views;
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
    pixels.emplace_back(src, src + ta.ByteLength());
    model::ImageView view;
    view.bytes = ta.ByteLength();
    view.width = o.Get("width").As<Napi::Number>().Int64Value();
    view.height = o.Get("height").As<Napi::Number>().Int64Value();
    view.name = name;
    views.push_back(std::move(view));
  }
  int64_t per_sample = int64_t(images.Length());
  if (opts.Get("imagesPerSample").IsNumber()) per_sample = opts.Get("imagesPerSample").As<Napi::Number>().Int64Value();
  return (new PreprocessWorker(env, threads_option(opts), std::move(pixels), std::move(views), per_sample,
                               std::move(options)))
      ->Start();
}

}  // namespace

void init_preprocess(Napi::Env env, Napi::Object exports) {
  exports.Set("preprocessImages", Napi::Function::New(env, PreprocessImages));
}

}  // namespace m2vla::addon
