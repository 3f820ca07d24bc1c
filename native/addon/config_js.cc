#include "addon/config_js.h"

#include <string>

#include "addon/js_args.h"
#include "error.h"

namespace m2vla::addon {

head::Ablation ablation_from_js(const Napi::Object& o) {
  const std::string ablation = string_option(o, "ablation");
  if (ablation == "none") return head::Ablation::None;
  if (ablation == "no-mol") return head::Ablation::NoMol;
  if (ablation == "no-msm") return head::Ablation::NoMsm;
  fail(ErrorCode::Input, "ablation: expected 'none', 'no-mol' or 'no-msm', got '", ablation, "'");
}

namespace {

Napi::Object object(const Napi::Value& v, const std::string& path) {
  if (!v.IsObject()) fail(ErrorCode::Config, path, ": expected an object");
  return v.As<Napi::Object>();
}

double number(const Napi::Object& o, const char* key, const std::string& path) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail(ErrorCode::Config, path, ".", key, ": expected a number");
  return v.As<Napi::Number>().DoubleValue();
}

int64_t integer(const Napi::Object& o, const char* key, const std::string& path) {
  double d = number(o, key, path);
  if (d != double(int64_t(d))) fail(ErrorCode::Config, path, ".", key, ": expected an integer, got ", d);
  return int64_t(d);
}

bool boolean(const Napi::Object& o, const char* key, const std::string& path) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) fail(ErrorCode::Config, path, ".", key, ": expected a boolean");
  return v.As<Napi::Boolean>().Value();
}

model::VitConfig vit(const Napi::Value& v, const std::string& path) {
  Napi::Object o = object(v, path);
  model::VitConfig c;
  Napi::Value kind = o.Get("kind");
  std::string k = kind.IsString() ? kind.As<Napi::String>().Utf8Value() : "";
  if (k != "dinov2" && k != "siglip") fail(ErrorCode::Config, path, ".kind: expected 'dinov2' or 'siglip'");
  c.kind = k == "dinov2" ? model::VitConfig::Kind::Dinov2 : model::VitConfig::Kind::Siglip;
  c.embed_dim = integer(o, "embedDim", path);
  c.depth = integer(o, "depth", path);
  c.num_heads = integer(o, "numHeads", path);
  c.mlp_hidden = integer(o, "mlpHidden", path);
  c.patch_size = integer(o, "patchSize", path);
  c.class_token = boolean(o, "classToken", path);
  c.reg_tokens = integer(o, "regTokens", path);
  c.layer_scale = boolean(o, "layerScale", path);
  c.take_block = integer(o, "takeBlock", path);
  return c;
}

model::LlmConfig llm(const Napi::Value& v, const std::string& path) {
  Napi::Object o = object(v, path);
  model::LlmConfig c;
  c.hidden_size = integer(o, "hiddenSize", path);
  c.num_layers = integer(o, "numLayers", path);
  c.num_heads = integer(o, "numHeads", path);
  c.num_kv_heads = integer(o, "numKvHeads", path);
  c.head_dim = integer(o, "headDim", path);
  c.intermediate_size = integer(o, "intermediateSize", path);
  c.rope_theta = number(o, "ropeTheta", path);
  c.rms_norm_eps = number(o, "rmsNormEps", path);
  c.vocab_size = integer(o, "vocabSize", path);
  return c;
}

}  // namespace

model::BackboneConfig backbone_config_from_js(const Napi::Value& v) {
  const std::string path = "config";
  Napi::Object o = object(v, path);
  model::BackboneConfig c;
  c.image_size = integer(o, "imageSize", path);
  c.num_images = integer(o, "numImages", path);
  c.featurizer = vit(o.Get("featurizer"), path + ".featurizer");
  c.fused_featurizer = vit(o.Get("fusedFeaturizer"), path + ".fusedFeaturizer");
  c.llm = llm(o.Get("llm"), path + ".llm");
  c.num_action_queries = integer(o, "numActionQueries", path);
  c.aq_placeholder_id = integer(o, "aqPlaceholderId", path);
  c.stop_token_id = integer(o, "stopTokenId", path);
  return c;
}

head::HeadOptions head_options_from_js(const Napi::Object& o) {
  Napi::Value cv = o.Get("config");
  if (!cv.IsObject()) fail(ErrorCode::Input, "config: expected an object");
  auto c = cv.As<Napi::Object>();
  head::HeadOptions opt;
  opt.key_layer_indices = integer_array_option(c, "keyLayerIndices");
  opt.top_k = integer_option(c, "topK");
  opt.num_patches = integer_option(c, "numPatches");
  opt.num_action_queries = integer_option(c, "numActionQueries");
  const std::string objective = string_option(c, "objective");
  if (objective == "l1") opt.objective = head::Objective::L1;
  else if (objective == "denoise") opt.objective = head::Objective::Denoise;
  else fail(ErrorCode::Input, "objective: expected 'l1' or 'denoise', got '", objective, "'");
  opt.ablation = ablation_from_js(c);
  opt.num_heads = optional_integer(c, "numHeads").value_or(0);
  opt.chunk = optional_integer(c, "chunk").value_or(0);
  Napi::Value dv = c.Get("denoise");
  if (dv.IsObject()) {
    auto d = dv.As<Napi::Object>();
    if (auto v = optional_integer(d, "trainSteps")) opt.denoise.train_steps = *v;
    if (auto v = optional_integer(d, "inferenceSteps")) opt.denoise.inference_steps = *v;
    if (auto v = optional_integer(d, "timeEmbedDim")) opt.denoise.time_embed_dim = *v;
    if (auto v = optional_integer(d, "initSeed")) opt.denoise.init_seed = uint64_t(*v);
    opt.denoise.clip_sample = bool_option(d, "clipSample", opt.denoise.clip_sample);
  }
  const Placement placement = placement_from_js(o);
  opt.dtype = placement.dtype;
  opt.device = placement.device;
  return opt;
}

Placement placement_from_js(const Napi::Object& o, const CpuMatrixFeatures& cpu) {
  const std::string device = o.Get("device").IsUndefined() ? "cpu" : string_option(o, "device");
  const std::string dtype = o.Get("dtype").IsUndefined() ? "float32" : string_option(o, "dtype");
  return resolve_placement(device, dtype, cpu);
}

}  // namespace m2vla::addon
