#include "run_dir.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "error.h"
#include "io/json.h"
#include "policy.h"

namespace m2vla {
namespace {

namespace fs = std::filesystem;
using io::Json;

Json read_json(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(ErrorCode::Config, file.string(), ": cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return io::parse_json(text.str());
  } catch (const std::exception& e) {
    fail(ErrorCode::Config, file.string(), ": ", e.what());
  }
}

const Json* member(const Json* o, const std::string& key) { return o && o->is(Json::Type::Object) ? o->find(key) : nullptr; }

double number(const Json* o, const std::string& key, const fs::path& file, std::optional<double> fallback = {}) {
  const Json* v = member(o, key);
  if (v && v->is(Json::Type::Number)) return v->number;
  if (fallback) return *fallback;
  fail(ErrorCode::Config, file.string(), ": expected a number at \"", key, "\"");
}

int64_t integer(const Json* o, const std::string& key, const fs::path& file, std::optional<double> fallback = {}) {
  const double d = number(o, key, file, fallback);
  if (d != double(int64_t(d))) fail(ErrorCode::Config, file.string(), ": expected an integer at \"", key, "\", got ", d);
  return int64_t(d);
}

bool is_true(const Json* o, const std::string& key) {
  const Json* v = member(o, key);
  return v && v->is(Json::Type::Bool) && v->boolean;
}

// The real towers, by the timm ids a VLA-Adapter/M²-VLA config.json names (lib/config.ts TIMM_VISION_TABLE).
model::VitConfig vit_from_timm_id(const Json* id, const fs::path& file) {
  using K = model::VitConfig::Kind;
  static const std::map<std::string, model::VitConfig> table = {
      {"vit_large_patch14_reg4_dinov2.lvd142m", {K::Dinov2, 1024, 24, 16, 4096, 14, true, 4, true, 22}},
      {"vit_so400m_patch14_siglip_224", {K::Siglip, 1152, 27, 16, 4304, 14, false, 0, false, 25}},
  };
  const auto it = id && id->is(Json::Type::String) ? table.find(id->string) : table.end();
  if (it == table.end())
    fail(ErrorCode::Config, file.string(), ": unknown timm_model_ids entry ", id && id->is(Json::Type::String) ? id->string : "(none)",
         "; known: vit_large_patch14_reg4_dinov2.lvd142m, vit_so400m_patch14_siglip_224 (or explicit dims in manifest.json \"vision\")");
  return it->second;
}

model::VitConfig vit_from_manifest(const Json* m, const fs::path& file) {
  model::VitConfig c;
  const Json* kind = member(m, "kind");
  c.kind = kind && kind->is(Json::Type::String) && kind->string == "siglip" ? model::VitConfig::Kind::Siglip
                                                                            : model::VitConfig::Kind::Dinov2;
  c.embed_dim = integer(m, "embed_dim", file);
  c.depth = integer(m, "depth", file);
  c.num_heads = integer(m, "num_heads", file);
  c.mlp_hidden = integer(m, "mlp_hidden", file);
  c.patch_size = 14;
  c.class_token = is_true(m, "class_token");
  c.reg_tokens = integer(m, "reg_tokens", file, 0);
  c.layer_scale = is_true(m, "layerscale");
  c.take_block = integer(m, "take_block_index", file, double(c.depth - 2));
  return c;
}

std::array<float, 3> triple(const Json* v, const fs::path& file, const char* what) {
  if (!v || !v->is(Json::Type::Array) || v->array.size() != 3)
    fail(ErrorCode::Config, file.string(), ": expected one [r, g, b] ", what, " per vision backbone");
  std::array<float, 3> out{};
  for (size_t i = 0; i < 3; ++i) {
    if (!v->array[i].is(Json::Type::Number)) fail(ErrorCode::Config, file.string(), ": ", what, " values must be numbers");
    out[i] = float(v->array[i].number);
  }
  return out;
}

// lib/images.ts parsePreprocessorConfig: resize-naive, bicubic, one square size, tvf_normalize_params over means/stds.
model::PreprocessOptions preprocess_options(const Json& cfg, const fs::path& file) {
  const Json* strategy = cfg.find("image_resize_strategy");
  if (strategy && !(strategy->is(Json::Type::String) && strategy->string == "resize-naive"))
    fail(ErrorCode::Config, file.string(), ": image_resize_strategy is not supported (only resize-naive)");
  if (is_true(&cfg, "tvf_do_letterbox")) fail(ErrorCode::Config, file.string(), ": tvf_do_letterbox is not supported");
  model::PreprocessOptions p;
  const Json* norm = cfg.find("tvf_normalize_params");
  if (norm && norm->is(Json::Type::Array)) {
    for (const Json& n : norm->array) p.norms.push_back({triple(n.find("mean"), file, "mean"), triple(n.find("std"), file, "std")});
  } else {
    const Json *means = cfg.find("means"), *stds = cfg.find("stds");
    if (!means || !stds || !means->is(Json::Type::Array) || !stds->is(Json::Type::Array) || means->array.size() != stds->array.size())
      fail(ErrorCode::Config, file.string(), ": expected one [r, g, b] mean and std per vision backbone");
    for (size_t i = 0; i < means->array.size(); ++i)
      p.norms.push_back({triple(&means->array[i], file, "mean"), triple(&stds->array[i], file, "std")});
  }
  if (p.norms.empty()) fail(ErrorCode::Config, file.string(), ": expected one [r, g, b] mean and std per vision backbone");
  std::vector<std::pair<double, double>> sizes;
  if (const Json* resize = cfg.find("tvf_resize_params"); resize && resize->is(Json::Type::Array)) {
    for (const Json& r : resize->array) {
      const Json* s = r.find("size");
      const Json* interp = r.find("interpolation");
      if (!interp || !interp->is(Json::Type::Number) || interp->number != 3)
        fail(ErrorCode::Config, file.string(), ": only bicubic resizing (interpolation 3) is supported");
      if (s && s->is(Json::Type::Array) && s->array.size() == 2) sizes.emplace_back(s->array[0].number, s->array[1].number);
      else if (s && s->is(Json::Type::Number)) sizes.emplace_back(s->number, s->number);
      else sizes.emplace_back(-1, -1);
    }
  } else if (const Json* input = cfg.find("input_sizes"); input && input->is(Json::Type::Array)) {
    for (const Json& s : input->array) {
      const size_t n = s.array.size();
      sizes.emplace_back(n >= 2 ? s.array[n - 2].number : -1, n >= 2 ? s.array[n - 1].number : -1);
    }
  }
  const double size = sizes.empty() ? -1 : sizes[0].first;
  bool square = size > 0 && size == double(int64_t(size));
  for (const auto& [h, w] : sizes) square = square && h == size && w == size;
  if (!square) fail(ErrorCode::Config, file.string(), ": all backbones must resize to the same square size");
  p.size = int64_t(size);
  return p;
}

head::BoundsStats bounds(const Json* e, const std::string& what) {
  auto values = [&](const char* key) {
    const Json* v = member(e, key);
    if (!v || !v->is(Json::Type::Array)) fail(ErrorCode::Config, what, ".", key, ": expected an array of finite numbers");
    std::vector<double> out;
    for (const Json& x : v->array) {
      if (!x.is(Json::Type::Number)) fail(ErrorCode::Config, what, ".", key, ": expected an array of finite numbers");
      out.push_back(x.number);
    }
    return out;
  };
  const std::vector<double> q01 = values("q01"), q99 = values("q99");
  if (q01.size() != q99.size()) fail(ErrorCode::Config, what, ": q01 and q99 have different lengths");
  std::vector<uint8_t> mask(q01.size(), 1);
  if (const Json* m = member(e, "mask")) {
    if (!m->is(Json::Type::Array) || m->array.size() != q01.size())
      fail(ErrorCode::Config, what, ".mask: expected ", q01.size(), " booleans");
    for (size_t i = 0; i < mask.size(); ++i) {
      if (!m->array[i].is(Json::Type::Bool)) fail(ErrorCode::Config, what, ".mask: expected ", q01.size(), " booleans");
      mask[i] = m->array[i].boolean;
    }
  }
  const auto n = int64_t(q01.size());
  return {at::tensor(q01, at::kDouble), at::tensor(q99, at::kDouble),
          at::from_blob(mask.data(), {n}, at::kByte).to(at::kBool)};
}

// lib/head.ts headFile: <stem>.safetensors, else the one <stem>--*checkpoint.pt.
std::string head_file(const fs::path& dir, const std::string& stem) {
  if (fs::exists(dir / (stem + ".safetensors"))) return (dir / (stem + ".safetensors")).string();
  std::vector<std::string> pt;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(stem + "--", 0) == 0 && name.size() >= 13 && name.compare(name.size() - 13, 13, "checkpoint.pt") == 0)
      pt.push_back(entry.path().string());
  }
  if (pt.size() != 1)
    fail(ErrorCode::Checkpoint, dir.string(), pt.empty() ? ": no " : ": several ", stem, ".safetensors or ", stem,
         "--*checkpoint.pt");
  return pt[0];
}

}  // namespace

RunSpec resolve_run_dir(const std::string& dir_in, const RunDirOverrides& overrides) {
  const fs::path dir(dir_in);
  if (!fs::is_directory(dir)) fail(ErrorCode::Config, dir_in, ": not a directory");
  RunSpec spec;
  spec.dir = dir_in;
  const fs::path cfg_file = dir / "config.json", manifest_file = dir / "manifest.json";
  const Json cfg = read_json(cfg_file);
  const Json* tc = cfg.find("text_config");
  if (!tc || !tc->is(Json::Type::Object))
    fail(ErrorCode::Config, cfg_file.string(), ": no \"text_config\" (expected a VLA-Adapter/M²-VLA OpenVLAConfig)");
  const std::optional<Json> manifest = fs::exists(manifest_file) ? std::optional<Json>(read_json(manifest_file)) : std::nullopt;
  const Json* mv = manifest ? manifest->find("vision") : nullptr;
  const Json* ids = cfg.find("timm_model_ids");
  auto id = [&](size_t i) { return ids && ids->is(Json::Type::Array) && ids->array.size() > i ? &ids->array[i] : nullptr; };

  model::BackboneConfig& b = spec.backbone;
  b.featurizer = member(mv, "featurizer") ? vit_from_manifest(member(mv, "featurizer"), manifest_file)
                                          : vit_from_timm_id(id(0), cfg_file);
  b.fused_featurizer = member(mv, "fused_featurizer") ? vit_from_manifest(member(mv, "fused_featurizer"), manifest_file)
                                                      : vit_from_timm_id(id(1), cfg_file);
  if (const Json* fused = cfg.find("use_fused_vision_backbone"); fused && fused->is(Json::Type::Bool) && !fused->boolean)
    fail(ErrorCode::Config, cfg_file.string(), ": use_fused_vision_backbone=false (single tower) is not supported");
  const Json* sizes = cfg.find("image_sizes");
  b.image_size = sizes && sizes->is(Json::Type::Array) && !sizes->array.empty() ? int64_t(sizes->array[0].number) : 224;
  const fs::path prep_file = dir / "preprocessor_config.json";
  spec.preprocess = preprocess_options(read_json(prep_file), prep_file);
  if (spec.preprocess.size != b.image_size || spec.preprocess.norms.size() != 2)
    fail(ErrorCode::Config, prep_file.string(), ": expects ", spec.preprocess.size, "px images for ",
         spec.preprocess.norms.size(), " backbone(s); config.json image_sizes says ", b.image_size,
         "px for the DINOv2 + SigLIP pair");

  model::LlmConfig& l = b.llm;
  l.hidden_size = integer(tc, "hidden_size", cfg_file);
  l.num_layers = integer(tc, "num_hidden_layers", cfg_file);
  l.num_heads = integer(tc, "num_attention_heads", cfg_file);
  l.num_kv_heads = integer(tc, "num_key_value_heads", cfg_file, double(l.num_heads));
  l.head_dim = integer(tc, "head_dim", cfg_file, double(l.hidden_size / l.num_heads));
  l.intermediate_size = integer(tc, "intermediate_size", cfg_file);
  l.rope_theta = number(tc, "rope_theta", cfg_file, number(member(tc, "rope_parameters"), "rope_theta", cfg_file, 1e6));
  l.rms_norm_eps = number(tc, "rms_norm_eps", cfg_file, 1e-6);
  l.vocab_size = integer(tc, "vocab_size", cfg_file);

  const Json* ms = manifest ? manifest->find("sequence") : nullptr;
  const Json* mh = member(manifest ? manifest->find("action_head") : nullptr, "memory");
  b.num_images = overrides.num_images.value_or(mv ? integer(mv, "num_images", manifest_file) : 2);
  if (b.num_images < 1) fail(ErrorCode::Config, "numImages: expected a positive integer, got ", b.num_images);
  b.num_action_queries = ms ? integer(ms, "num_action_queries_NT", manifest_file) : 64;
  b.aq_placeholder_id = ms ? integer(ms, "aq_placeholder_token_id", manifest_file) : 1;
  b.stop_token_id = ms ? integer(ms, "stop_token_id", manifest_file) : 2;

  head::HeadOptions& h = spec.head;
  if (overrides.key_layer_indices) {
    h.key_layer_indices = *overrides.key_layer_indices;
  } else if (const Json* k = member(mh, "key_layer_indices"); k && k->is(Json::Type::Array)) {
    for (const Json& v : k->array) h.key_layer_indices.push_back(int64_t(v.number));
  } else {
    h.key_layer_indices = {3, 11, 23};
  }
  for (int64_t k : h.key_layer_indices)
    if (k < 0 || k > l.num_layers)
      fail(ErrorCode::Config, "keyLayerIndices: ", k, " is not a hidden-state index in 0..", l.num_layers);
  h.top_k = mh ? integer(mh, "top_k", manifest_file) : 4;
  h.num_patches = b.num_patches();
  h.num_action_queries = b.num_action_queries;
  if (const Json* rec = cfg.find("m2vla_head")) {
    const Json* a = rec->find("ablation");
    const std::string ablation = a && a->is(Json::Type::String) ? a->string : "";
    if (ablation == "none") h.ablation = head::Ablation::None;
    else if (ablation == "no-mol") h.ablation = head::Ablation::NoMol;
    else if (ablation == "no-msm") h.ablation = head::Ablation::NoMsm;
    else fail(ErrorCode::Config, cfg_file.string(), ": m2vla_head.ablation: expected one of 'none', 'no-mol', 'no-msm'");
    h.num_heads = integer(rec, "num_heads", cfg_file);
    h.chunk = integer(rec, "chunk", cfg_file);
  }

  const fs::path stats_file = dir / "dataset_statistics.json";
  const Json stats = read_json(stats_file);
  if (!stats.is(Json::Type::Object)) fail(ErrorCode::Config, stats_file.string(), ": expected an object");
  std::string key, available;
  for (const auto& [k, v] : stats.object) available += (available.empty() ? "" : ", ") + k;
  if (!overrides.unnorm_key) {
    if (stats.object.size() != 1)
      fail(ErrorCode::Config, stats_file.string(), ": holds ", stats.object.size(), " datasets; pass unnormKey, one of: ", available);
    key = stats.object.begin()->first;
  } else {
    key = *overrides.unnorm_key;
    if (!stats.find(key) && stats.find(key + "_no_noops")) key += "_no_noops";
    if (!stats.find(key))
      fail(ErrorCode::Config, "unnormKey: \"", *overrides.unnorm_key, "\" is not in ", stats_file.string(), "; available: ", available);
  }
  spec.unnorm_key = key;
  const std::string what = stats_file.string() + ": " + key;
  spec.action_stats = bounds(member(stats.find(key), "action"), what + ".action");
  spec.proprio_stats = bounds(member(stats.find(key), "proprio"), what + ".proprio");

  for (const char* name : {"model.safetensors", "model.safetensors.index.json"})
    if (spec.model_file.empty() && fs::exists(dir / name)) spec.model_file = (dir / name).string();
  if (spec.model_file.empty()) fail(ErrorCode::Checkpoint, dir_in, ": no model.safetensors or model.safetensors.index.json");
  spec.action_head_file = head_file(dir, "action_head");
  spec.proprio_projector_file = head_file(dir, "proprio_projector");
  return spec;
}

std::shared_ptr<const Policy> load_policy(const RunSpec& spec, const Placement& placement, bool custom_kernels) {
  head::HeadOptions options = spec.head;
  options.dtype = placement.dtype;
  options.device = placement.device;
  auto backbone = model::load_backbone(spec.model_file, spec.backbone, placement.dtype, placement.device,
                                       model::inference_kernel(placement.device, placement.dtype, placement.int8));
  auto head = head::ActionHead::load(spec.action_head_file, spec.proprio_projector_file, options);
  return std::make_shared<const Policy>(std::move(backbone), std::move(head),
                                        PolicyConfig{spec.preprocess, spec.proprio_stats, spec.action_stats, custom_kernels});
}

}  // namespace m2vla
