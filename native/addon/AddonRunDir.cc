// The run directory as native/run_dir.cc resolves it, handed to TypeScript (lib/config.ts): the addon only marshals.
//   resolveRunDir(dir, {keyLayerIndices?, unnormKey?, statistics, head}) -> {dir, backbone, head, statistics?, files}
//   parsePreprocessorConfig(jsonText, source) -> {size, means, stds}
//   readPreprocessorConfig(file) -> {size, means, stds}
//   readNormalizationStatistics(file, unnormKey?) -> {key, action, proprio}
#include <cstring>

#include "addon/addon.h"
#include "addon/js_args.h"
#include "addon/workers.h"
#include "error.h"
#include "run_dir.h"

namespace m2vla::addon {
namespace {

Napi::Object vit_to_js(Napi::Env env, const model::VitConfig& c) {
  auto o = Napi::Object::New(env);
  o.Set("kind", c.kind == model::VitConfig::Kind::Siglip ? "siglip" : "dinov2");
  o.Set("embedDim", double(c.embed_dim));
  o.Set("depth", double(c.depth));
  o.Set("numHeads", double(c.num_heads));
  o.Set("mlpHidden", double(c.mlp_hidden));
  o.Set("patchSize", double(c.patch_size));
  o.Set("classToken", c.class_token);
  o.Set("regTokens", double(c.reg_tokens));
  o.Set("layerScale", c.layer_scale);
  o.Set("takeBlock", double(c.take_block));
  return o;
}

Napi::Array triples_to_js(Napi::Env env, const std::vector<std::array<double, 3>>& v) {
  auto a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    auto t = Napi::Array::New(env, 3);
    for (uint32_t k = 0; k < 3; ++k) t.Set(k, v[i][k]);
    a.Set(uint32_t(i), t);
  }
  return a;
}

Napi::Object preprocessor_to_js(Napi::Env env, const PreprocessorConfig& p) {
  auto o = Napi::Object::New(env);
  o.Set("size", double(p.size));
  o.Set("means", triples_to_js(env, p.means));
  o.Set("stds", triples_to_js(env, p.stds));
  return o;
}

Napi::Float64Array doubles_to_js(Napi::Env env, const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  auto a = Napi::Float64Array::New(env, size_t(c.numel()));
  if (c.numel()) std::memcpy(a.Data(), c.data_ptr<double>(), size_t(c.numel()) * sizeof(double));
  return a;
}

Napi::Object bounds_to_js(Napi::Env env, const head::BoundsStats& s) {
  auto o = Napi::Object::New(env);
  o.Set("q01", doubles_to_js(env, s.q01));
  o.Set("q99", doubles_to_js(env, s.q99));
  const at::Tensor mask = s.mask.contiguous();
  auto m = Napi::Array::New(env, size_t(mask.numel()));
  for (int64_t i = 0; i < mask.numel(); ++i) m.Set(uint32_t(i), mask.data_ptr<bool>()[i]);
  o.Set("mask", m);
  return o;
}

Napi::Object stats_to_js(Napi::Env env, const NormalizationStats& s) {
  auto o = Napi::Object::New(env);
  o.Set("key", s.key);
  o.Set("action", bounds_to_js(env, s.action));
  o.Set("proprio", bounds_to_js(env, s.proprio));
  return o;
}

const char* ablation_name(head::Ablation a) {
  return a == head::Ablation::NoMol ? "no-mol" : a == head::Ablation::NoMsm ? "no-msm" : "none";
}

Napi::Object spec_to_js(Napi::Env env, const RunSpec& spec, bool recorded_head) {
  const model::BackboneConfig& b = spec.backbone;
  auto llm = Napi::Object::New(env);
  llm.Set("hiddenSize", double(b.llm.hidden_size));
  llm.Set("numLayers", double(b.llm.num_layers));
  llm.Set("numHeads", double(b.llm.num_heads));
  llm.Set("numKvHeads", double(b.llm.num_kv_heads));
  llm.Set("headDim", double(b.llm.head_dim));
  llm.Set("intermediateSize", double(b.llm.intermediate_size));
  llm.Set("ropeTheta", b.llm.rope_theta);
  llm.Set("rmsNormEps", b.llm.rms_norm_eps);
  llm.Set("vocabSize", double(b.llm.vocab_size));
  llm.Set("maxPositions", double(spec.max_positions));
  auto backbone = Napi::Object::New(env);
  backbone.Set("imageSize", double(b.image_size));
  backbone.Set("numImages", double(b.num_images));
  backbone.Set("featurizer", vit_to_js(env, b.featurizer));
  backbone.Set("fusedFeaturizer", vit_to_js(env, b.fused_featurizer));
  backbone.Set("preprocessing", preprocessor_to_js(env, spec.preprocessor));
  backbone.Set("llm", llm);
  backbone.Set("numActionQueries", double(b.num_action_queries));
  backbone.Set("aqPlaceholderId", double(b.aq_placeholder_id));
  backbone.Set("stopTokenId", double(b.stop_token_id));

  const head::HeadOptions& h = spec.head;
  auto head = Napi::Object::New(env);
  auto keys = Napi::Array::New(env, h.key_layer_indices.size());
  for (size_t i = 0; i < h.key_layer_indices.size(); ++i) keys.Set(uint32_t(i), double(h.key_layer_indices[i]));
  head.Set("keyLayerIndices", keys);
  head.Set("topK", double(h.top_k));
  head.Set("objective", "l1");
  head.Set("ablation", ablation_name(h.ablation));
  if (recorded_head) {
    head.Set("numHeads", double(h.num_heads));
    head.Set("chunk", double(h.chunk));
  }
  auto files = Napi::Object::New(env);
  files.Set("model", spec.model_file);
  files.Set("actionHead", spec.action_head_file);
  files.Set("proprioProjector", spec.proprio_projector_file);

  auto out = Napi::Object::New(env);
  out.Set("dir", spec.dir);
  out.Set("backbone", backbone);
  out.Set("head", head);
  if (spec.stats) out.Set("statistics", stats_to_js(env, *spec.stats));
  out.Set("files", files);
  return out;
}

std::optional<std::string> optional_string(const Napi::Object& o, const char* key) {
  if (o.Get(key).IsUndefined()) return std::nullopt;
  return string_option(o, key);
}

Napi::Value ResolveRunDir(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    if (!info[0].IsString()) fail(ErrorCode::Input, "resolveRunDir: expected a directory path");
    const Napi::Object o = object_arg(info, 1, "resolveRunDir");
    RunDirOverrides overrides;
    if (!o.Get("keyLayerIndices").IsUndefined()) overrides.key_layer_indices = integer_array_option(o, "keyLayerIndices");
    overrides.unnorm_key = optional_string(o, "unnormKey");
    overrides.statistics = bool_option(o, "statistics", true);
    overrides.head = bool_option(o, "head", true);
    const RunSpec spec = resolve_run_dir(info[0].As<Napi::String>().Utf8Value(), overrides);
    return spec_to_js(env, spec, spec.head.num_heads > 0);
  });
}

Napi::Value ParsePreprocessorConfig(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    if (!info[0].IsString() || !info[1].IsString()) fail(ErrorCode::Input, "parsePreprocessorConfig: expected (jsonText, source)");
    const std::string source = info[1].As<Napi::String>().Utf8Value();
    return preprocessor_to_js(env, parse_preprocessor_config(parse_json_object(info[0].As<Napi::String>().Utf8Value(), source), source));
  });
}

Napi::Value ReadPreprocessorConfig(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    if (!info[0].IsString()) fail(ErrorCode::Input, "readPreprocessorConfig: expected a file path");
    const std::string file = info[0].As<Napi::String>().Utf8Value();
    return preprocessor_to_js(env, parse_preprocessor_config(read_json_file(file), file));
  });
}

Napi::Value ReadNormalizationStatistics(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    if (!info[0].IsString()) fail(ErrorCode::Input, "readNormalizationStatistics: expected a file path");
    std::optional<std::string> key;
    if (!info[1].IsUndefined()) {
      if (!info[1].IsString()) fail(ErrorCode::Input, "unnormKey: expected a string");
      key = info[1].As<Napi::String>().Utf8Value();
    }
    return stats_to_js(env, read_normalization_statistics(info[0].As<Napi::String>().Utf8Value(), key));
  });
}

}  // namespace

void init_run_dir(Napi::Env env, Napi::Object exports) {
  exports.Set("resolveRunDir", Napi::Function::New(env, ResolveRunDir));
  exports.Set("parsePreprocessorConfig", Napi::Function::New(env, ParsePreprocessorConfig));
  exports.Set("readPreprocessorConfig", Napi::Function::New(env, ReadPreprocessorConfig));
  exports.Set("readNormalizationStatistics", Napi::Function::New(env, ReadNormalizationStatistics));
}

}  // namespace m2vla::addon
