#include "run_dir.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "error.h"
#include "policy.h"

namespace m2vla {
namespace {

namespace fs = std::filesystem;
using io::Json;

// Bounds far above any released model (DINOv2-L 1024 wide, SigLIP 27 blocks, Qwen2.5-0.5B 896 / 151936 ids).
constexpr int64_t kMaxWidth = 16384, kMaxDepth = 256, kMaxMlp = 65536, kMaxVocab = int64_t(1) << 22, kMaxImage = 1008;
// Far above any robot quantity; ±1e308 would turn (q99 - q01) into Inf and every action into NaN.
constexpr double kMaxStatistic = 1e9;

// A number as JavaScript prints it (1000000000, 0.5, 1e+21), so messages read the same from either language.
std::string js_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  if (v == std::floor(v) && std::fabs(v) < 1e21) return std::to_string(int64_t(v));
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {  // the shortest form that reads back exactly
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// JSON.stringify of a value (undefined for a missing one), for "got ..." in messages.
std::string describe(const Json* v) {
  if (!v) return "undefined";
  switch (v->type) {
    case Json::Type::Null: return "null";
    case Json::Type::Bool: return v->boolean ? "true" : "false";
    case Json::Type::Number: return js_number(v->number);
    case Json::Type::String: return "\"" + v->string + "\"";
    case Json::Type::Array: {
      std::string out = "[";
      for (size_t i = 0; i < v->array.size(); ++i) out += (i ? "," : "") + describe(&v->array[i]);
      return out + "]";
    }
    case Json::Type::Object: return "{...}";
  }
  return "?";
}

const Json* member(const Json* o, const std::string& key) { return o && o->is(Json::Type::Object) ? o->find(key) : nullptr; }
bool missing(const Json* v) { return !v || v->is(Json::Type::Null); }
bool is_true(const Json* o, const std::string& key) {
  const Json* v = member(o, key);
  return v && v->is(Json::Type::Bool) && v->boolean;
}
// JavaScript truthiness of a member (tvf_do_letterbox).
bool truthy(const Json* v) {
  if (missing(v)) return false;
  switch (v->type) {
    case Json::Type::Bool: return v->boolean;
    case Json::Type::Number: return v->number != 0 && !std::isnan(v->number);
    case Json::Type::String: return !v->string.empty();
    default: return true;
  }
}

// The numbers of one JSON object, read with the file and the field's path in every error.
struct Fields {
  const Json* obj;
  std::string file, prefix;

  [[noreturn]] void fail_at(const std::string& key, const std::string& msg) const {
    fail(ErrorCode::Config, file, ": ", prefix, key, ": ", msg);
  }
  double num(const std::string& key, std::optional<double> fallback = {}) const {
    const Json* v = member(obj, key);
    if (v && v->is(Json::Type::Number) && std::isfinite(v->number)) return v->number;
    if (missing(v) && fallback) return *fallback;
    fail_at(key, "expected a finite number, got " + describe(v));
  }
  // An integer in lo..hi.
  int64_t integer(const std::string& key, int64_t lo, int64_t hi, std::optional<double> fallback = {}) const {
    const double v = num(key, fallback);
    if (v != std::floor(v) || v < double(lo) || v > double(hi))
      fail_at(key, "expected an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + js_number(v));
    return int64_t(v);
  }
  // A finite number > 0.
  double positive(const std::string& key, std::optional<double> fallback = {}) const {
    const double v = num(key, fallback);
    if (!(v > 0)) fail_at(key, "expected a number > 0, got " + js_number(v));
    return v;
  }
};

// The real towers, by the timm ids a VLA-Adapter/M²-VLA config.json names.
model::VitConfig vit_from_timm_id(const Json* id, const std::string& file) {
  using K = model::VitConfig::Kind;
  static const std::map<std::string, model::VitConfig> table = {
      {"vit_large_patch14_reg4_dinov2.lvd142m", {K::Dinov2, 1024, 24, 16, 4096, 14, true, 4, true, 22}},
      {"vit_so400m_patch14_siglip_224", {K::Siglip, 1152, 27, 16, 4304, 14, false, 0, false, 25}},
  };
  const auto it = id && id->is(Json::Type::String) ? table.find(id->string) : table.end();
  if (it == table.end())
    fail(ErrorCode::Config, file, ": unknown timm_model_ids entry ", describe(id),
         "; known: vit_large_patch14_reg4_dinov2.lvd142m, vit_so400m_patch14_siglip_224 (or give explicit dims in ",
         "manifest.json \"vision\")");
  return it->second;
}

model::VitConfig vit_from_manifest(const Json* m, const std::string& file, const std::string& prefix) {
  const Fields f{m, file, prefix};
  model::VitConfig c;
  const Json* kind = member(m, "kind");
  c.kind = kind && kind->is(Json::Type::String) && kind->string == "siglip" ? model::VitConfig::Kind::Siglip
                                                                            : model::VitConfig::Kind::Dinov2;
  c.depth = f.integer("depth", 2, kMaxDepth);
  c.embed_dim = f.integer("embed_dim", 1, kMaxWidth);
  c.num_heads = f.integer("num_heads", 1, c.embed_dim);
  if (c.embed_dim % c.num_heads != 0)
    f.fail_at("num_heads", std::to_string(c.num_heads) + " does not divide embed_dim " + std::to_string(c.embed_dim));
  c.mlp_hidden = f.integer("mlp_hidden", 1, kMaxMlp);
  c.patch_size = 14;
  c.class_token = is_true(m, "class_token");
  c.reg_tokens = f.integer("reg_tokens", 0, 64, 0);
  c.layer_scale = is_true(m, "layerscale");
  c.take_block = f.integer("take_block_index", 0, c.depth - 1, double(c.depth - 2));
  return c;
}

bool triple(const Json& v) {
  if (!v.is(Json::Type::Array) || v.array.size() != 3) return false;
  for (const Json& x : v.array)
    if (!x.is(Json::Type::Number)) return false;
  return true;
}

std::array<double, 3> triple_values(const Json& v) { return {v.array[0].number, v.array[1].number, v.array[2].number}; }

head::BoundsStats bounds(const Json* e, const std::string& what) {
  auto values = [&](const char* key) {
    const std::string where = what + "." + key;
    const Json* v = member(e, key);
    if (!v || !v->is(Json::Type::Array)) fail(ErrorCode::Config, where, ": expected an array of finite numbers");
    std::vector<double> out;
    for (size_t i = 0; i < v->array.size(); ++i) {
      const Json& x = v->array[i];
      if (!x.is(Json::Type::Number) || !(std::fabs(x.number) <= kMaxStatistic))
        fail(ErrorCode::Config, where, "[", i, "]: expected a finite number within ±", js_number(kMaxStatistic), ", got ",
             describe(&x));
      out.push_back(x.number);
    }
    return out;
  };
  const std::vector<double> q01 = values("q01"), q99 = values("q99");
  if (q01.size() != q99.size()) fail(ErrorCode::Config, what, ": q01 and q99 have different lengths");
  for (size_t i = 0; i < q01.size(); ++i)
    if (q99[i] < q01[i])
      fail(ErrorCode::Config, what, ": q99[", i, "] = ", js_number(q99[i]), " is below q01[", i, "] = ", js_number(q01[i]));
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

}  // namespace

io::Json read_json_file(const std::string& file) {
  // Opened non-blocking so that the regular-file check itself cannot hang on a FIFO.
  const int fd = ::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::Config, file, ": cannot read (", std::strerror(errno), ")");
  std::string text;
  struct stat st {};
  const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (regular) {
    char buf[1 << 16];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, size_t(n));
  }
  ::close(fd);
  if (!regular) fail(ErrorCode::Config, file, ": not a regular file");
  return parse_json_object(text, file);
}

io::Json parse_json_object(const std::string& text, const std::string& source) {
  Json value;
  try {
    value = io::parse_json(text);
  } catch (const std::exception& e) {
    fail(ErrorCode::Config, source, ": invalid JSON (", e.what(), ")");
  }
  if (!value.is(Json::Type::Object))
    fail(ErrorCode::Config, source, ": expected a JSON object, got ",
         value.is(Json::Type::Null) ? "null" : value.is(Json::Type::Array) ? "a list"
         : value.is(Json::Type::Number) ? "number" : value.is(Json::Type::String) ? "string" : "boolean");
  return value;
}

model::PreprocessOptions PreprocessorConfig::options() const {
  model::PreprocessOptions p;
  p.size = size;
  for (size_t i = 0; i < means.size(); ++i)
    p.norms.push_back({{float(means[i][0]), float(means[i][1]), float(means[i][2])},
                       {float(stds[i][0]), float(stds[i][1]), float(stds[i][2])}});
  return p;
}

PreprocessorConfig parse_preprocessor_config(const Json& cfg, const std::string& source) {
  auto bad = [&](const std::string& msg) { fail(ErrorCode::Config, source, ": ", msg); };
  if (const Json* strategy = member(&cfg, "image_resize_strategy"); !missing(strategy)) {
    if (!strategy->is(Json::Type::String) || strategy->string != "resize-naive")
      bad("image_resize_strategy '" + (strategy->is(Json::Type::String) ? strategy->string : describe(strategy)) +
          "' is not supported (only resize-naive)");
  }
  if (truthy(member(&cfg, "tvf_do_letterbox"))) bad("tvf_do_letterbox is not supported");
  PreprocessorConfig p;
  const Json* norm = member(&cfg, "tvf_normalize_params");
  std::vector<const Json*> means, stds;
  bool ok = true;
  if (norm && norm->is(Json::Type::Array)) {
    for (const Json& n : norm->array) means.push_back(member(&n, "mean")), stds.push_back(member(&n, "std"));
  } else {
    const Json *m = member(&cfg, "means"), *s = member(&cfg, "stds");
    ok = m && s && m->is(Json::Type::Array) && s->is(Json::Type::Array);
    if (ok)
      for (size_t i = 0; i < std::max(m->array.size(), s->array.size()); ++i) {
        means.push_back(i < m->array.size() ? &m->array[i] : nullptr);
        stds.push_back(i < s->array.size() ? &s->array[i] : nullptr);
      }
    ok = ok && m->array.size() == s->array.size();
  }
  ok = ok && !means.empty();
  for (size_t i = 0; ok && i < means.size(); ++i) ok = means[i] && stds[i] && triple(*means[i]) && triple(*stds[i]);
  if (!ok) bad("expected one [r, g, b] mean and std per vision backbone");
  for (size_t i = 0; i < means.size(); ++i) p.means.push_back(triple_values(*means[i])), p.stds.push_back(triple_values(*stds[i]));

  // Every backbone's [height, width]: tvf_resize_params' size ([h, w] or one number), else input_sizes' last two.
  std::vector<std::pair<const Json*, const Json*>> sizes;
  const Json* resize = member(&cfg, "tvf_resize_params");
  const bool has_resize = resize && resize->is(Json::Type::Array);
  if (has_resize) {
    for (const Json& r : resize->array) {
      const Json* s = member(&r, "size");
      if (s && s->is(Json::Type::Array)) sizes.emplace_back(s->array.size() > 0 ? &s->array[0] : nullptr,
                                                            s->array.size() > 1 ? &s->array[1] : nullptr);
      else sizes.emplace_back(s, s);
    }
  } else if (const Json* input = member(&cfg, "input_sizes"); input && input->is(Json::Type::Array)) {
    for (const Json& s : input->array) {
      const size_t n = s.is(Json::Type::Array) ? s.array.size() : 0;
      sizes.emplace_back(n >= 2 ? &s.array[n - 2] : n == 1 ? &s.array[0] : nullptr, n >= 2 ? &s.array[n - 1] : nullptr);
    }
  }
  const auto value = [](const Json* v) { return v && v->is(Json::Type::Number) ? v->number : std::nan(""); };
  const double size = sizes.empty() ? std::nan("") : value(sizes[0].first);
  bool square = size > 0 && size == std::floor(size);
  for (const auto& [h, w] : sizes) square = square && value(h) == size && value(w) == size;
  if (!square) bad("all backbones must resize to the same square size");
  if (has_resize)
    for (const Json& r : resize->array) {
      const Json* interp = member(&r, "interpolation");
      if (!interp || !interp->is(Json::Type::Number) || interp->number != 3)
        bad("only bicubic resizing (interpolation 3) is supported");
    }
  p.size = int64_t(size);
  return p;
}

NormalizationStats read_normalization_statistics(const std::string& file, const std::optional<std::string>& unnorm_key) {
  const Json all = read_json_file(file);
  std::string available;
  for (const auto& [k, v] : all.object) available += (available.empty() ? "" : ", ") + k;
  std::string key;
  if (!unnorm_key) {
    if (all.object.size() != 1)
      fail(ErrorCode::Config, file, ": holds ", all.object.size(), " datasets; pass unnormKey, one of: ", available);
    key = all.object.begin()->first;
  } else {
    key = *unnorm_key;
    if (!all.find(key) && all.find(key + "_no_noops")) key += "_no_noops";
    if (!all.find(key)) fail(ErrorCode::Config, "unnormKey: \"", *unnorm_key, "\" is not in ", file, "; available: ", available);
  }
  const std::string what = file + ": " + key;
  const Json* entry = all.find(key);
  return {key, bounds(member(entry, "action"), what + ".action"), bounds(member(entry, "proprio"), what + ".proprio")};
}

std::string head_checkpoint_file(const std::string& dir_in, const std::string& stem) {
  const fs::path dir(dir_in);
  if (fs::exists(dir / (stem + ".safetensors"))) return (dir / (stem + ".safetensors")).string();
  std::vector<std::string> pt;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(stem + "--", 0) == 0 && name.size() >= 13 && name.compare(name.size() - 13, 13, "checkpoint.pt") == 0)
      pt.push_back(name);
  }
  std::sort(pt.begin(), pt.end());
  if (pt.size() == 1) return (dir / pt[0]).string();
  if (pt.empty()) fail(ErrorCode::Checkpoint, dir_in, ": no ", stem, ".safetensors or ", stem, "--*checkpoint.pt");
  std::string names;
  for (const std::string& n : pt) names += (names.empty() ? "" : ", ") + n;
  fail(ErrorCode::Checkpoint, dir_in, ": several ", stem, " checkpoints (", names, "); pass the file explicitly to createHead()");
}

RunSpec resolve_run_dir(const std::string& dir_in, const RunDirOverrides& overrides) {
  const fs::path dir(dir_in);
  RunSpec spec;
  spec.dir = dir_in;
  const std::string cfg_file = (dir / "config.json").string(), manifest_file = (dir / "manifest.json").string();
  const Json cfg = read_json_file(cfg_file);
  const Json* tc = cfg.find("text_config");
  if (missing(tc)) fail(ErrorCode::Config, cfg_file, ": no \"text_config\" (expected a VLA-Adapter/M²-VLA OpenVLAConfig)");
  const std::optional<Json> manifest = fs::exists(manifest_file) ? std::optional<Json>(read_json_file(manifest_file)) : std::nullopt;
  const Json* mv = manifest ? member(&*manifest, "vision") : nullptr;
  if (missing(mv)) mv = nullptr;
  const Json* ids = cfg.find("timm_model_ids");
  auto id = [&](size_t i) { return ids && ids->is(Json::Type::Array) && ids->array.size() > i ? &ids->array[i] : nullptr; };

  model::BackboneConfig& b = spec.backbone;
  b.featurizer = !missing(member(mv, "featurizer"))
                     ? vit_from_manifest(member(mv, "featurizer"), manifest_file, "vision.featurizer.")
                     : vit_from_timm_id(id(0), cfg_file);
  b.fused_featurizer = !missing(member(mv, "fused_featurizer"))
                           ? vit_from_manifest(member(mv, "fused_featurizer"), manifest_file, "vision.fused_featurizer.")
                           : vit_from_timm_id(id(1), cfg_file);
  if (const Json* fused = cfg.find("use_fused_vision_backbone"); fused && fused->is(Json::Type::Bool) && !fused->boolean)
    fail(ErrorCode::Config, cfg_file, ": use_fused_vision_backbone=false (single tower) is not supported; M²-VLA uses ",
         "DINOv2+SigLIP");
  const Json* sizes = cfg.find("image_sizes");
  const double image_size = !sizes ? 224
                            : sizes->is(Json::Type::Array) && !sizes->array.empty() && sizes->array[0].is(Json::Type::Number)
                                ? sizes->array[0].number
                                : std::nan("");
  if (!(image_size == std::floor(image_size) && image_size >= 14 && image_size <= kMaxImage && std::fmod(image_size, 14) == 0))
    fail(ErrorCode::Config, cfg_file, ": image_sizes: expected a multiple of the patch size 14 in 14..", kMaxImage, ", got ",
         describe(sizes));
  b.image_size = int64_t(image_size);
  const std::string prep_file = (dir / "preprocessor_config.json").string();
  spec.preprocessor = parse_preprocessor_config(read_json_file(prep_file), prep_file);
  if (spec.preprocessor.size != b.image_size || spec.preprocessor.means.size() != 2)
    fail(ErrorCode::Config, prep_file, ": expects ", spec.preprocessor.size, "px images for ", spec.preprocessor.means.size(),
         " backbone(s); config.json image_sizes says ", b.image_size, "px for the DINOv2 + SigLIP pair");
  spec.preprocess = spec.preprocessor.options();

  const Fields t{tc, cfg_file, "text_config."};
  model::LlmConfig& l = b.llm;
  l.hidden_size = t.integer("hidden_size", 1, kMaxWidth);
  l.num_heads = t.integer("num_attention_heads", 1, l.hidden_size);
  l.num_kv_heads = t.integer("num_key_value_heads", 1, l.num_heads, double(l.num_heads));
  if (l.num_heads % l.num_kv_heads != 0)
    t.fail_at("num_key_value_heads",
              std::to_string(l.num_kv_heads) + " does not divide num_attention_heads " + std::to_string(l.num_heads));
  l.head_dim = t.integer("head_dim", 2, kMaxWidth, double(l.hidden_size) / double(l.num_heads));
  if (l.head_dim % 2 != 0) t.fail_at("head_dim", std::to_string(l.head_dim) + " is odd (rotary embeddings rotate pairs)");
  l.num_layers = t.integer("num_hidden_layers", 1, kMaxDepth);
  l.intermediate_size = t.integer("intermediate_size", 1, kMaxMlp);
  const Json* rope = member(tc, "rope_parameters");
  const double rope_fallback = Fields{missing(rope) ? nullptr : rope, cfg_file, "text_config.rope_parameters."}.positive("rope_theta", 1e6);
  l.rope_theta = t.positive("rope_theta", rope_fallback);
  l.rms_norm_eps = t.positive("rms_norm_eps", 1e-6);
  l.vocab_size = t.integer("vocab_size", 3, kMaxVocab);
  spec.max_positions = t.integer("max_position_embeddings", 1, int64_t(1) << 20, 32768);

  const Json* ms = manifest ? member(&*manifest, "sequence") : nullptr;
  const Json* mh = member(manifest ? member(&*manifest, "action_head") : nullptr, "memory");
  if (missing(ms)) ms = nullptr;
  if (missing(mh)) mh = nullptr;
  b.num_images = mv ? Fields{mv, manifest_file, "vision."}.integer("num_images", 1, kMaxCameras) : 2;
  const Fields seq{ms, manifest_file, "sequence."};
  b.num_action_queries = ms ? seq.integer("num_action_queries_NT", 1, 1024) : 64;
  b.aq_placeholder_id = ms ? seq.integer("aq_placeholder_token_id", 0, l.vocab_size - 1) : 1;
  b.stop_token_id = ms ? seq.integer("stop_token_id", 0, l.vocab_size - 1) : 2;

  head::HeadOptions& h = spec.head;
  const Json* keys = member(mh, "key_layer_indices");
  if (overrides.key_layer_indices) {
    h.key_layer_indices = *overrides.key_layer_indices;
  } else if (keys && keys->is(Json::Type::Array)) {
    for (const Json& v : keys->array) {
      if (!v.is(Json::Type::Number) || v.number != std::floor(v.number) || v.number < 0 || v.number > double(l.num_layers))
        fail(ErrorCode::Config, "keyLayerIndices: ", describe(&v), " is not a hidden-state index in 0..", l.num_layers);
      h.key_layer_indices.push_back(int64_t(v.number));
    }
  } else {
    h.key_layer_indices = {3, 11, 23};
  }
  for (int64_t k : h.key_layer_indices)
    if (k < 0 || k > l.num_layers)
      fail(ErrorCode::Config, "keyLayerIndices: ", k, " is not a hidden-state index in 0..", l.num_layers);
  h.top_k = mh ? Fields{mh, manifest_file, "action_head.memory."}.integer("top_k", 1, 1024) : 4;
  h.num_patches = b.num_patches();
  h.num_action_queries = b.num_action_queries;
  if (const Json* rec = cfg.find("m2vla_head"); rec) {
    const Json* a = member(rec, "ablation");
    const std::string ablation = a && a->is(Json::Type::String) ? a->string : "";
    if (ablation == "none") h.ablation = head::Ablation::None;
    else if (ablation == "no-mol") h.ablation = head::Ablation::NoMol;
    else if (ablation == "no-msm") h.ablation = head::Ablation::NoMsm;
    else fail(ErrorCode::Config, cfg_file, ": m2vla_head.ablation: expected one of 'none', 'no-mol', 'no-msm', got ", describe(a));
    const Fields r{rec, cfg_file, "m2vla_head."};
    h.num_heads = r.integer("num_heads", 1, 1024);
    h.chunk = r.integer("chunk", 1, 1024);
  }

  if (overrides.statistics)
    spec.stats = read_normalization_statistics((dir / "dataset_statistics.json").string(), overrides.unnorm_key);

  for (const char* name : {"model.safetensors", "model.safetensors.index.json"})
    if (spec.model_file.empty() && fs::exists(dir / name)) spec.model_file = (dir / name).string();
  if (spec.model_file.empty()) fail(ErrorCode::Checkpoint, dir_in, ": no model.safetensors or model.safetensors.index.json");
  if (overrides.head) {
    spec.action_head_file = head_checkpoint_file(dir_in, "action_head");
    spec.proprio_projector_file = head_checkpoint_file(dir_in, "proprio_projector");
  }
  return spec;
}

std::shared_ptr<const Policy> load_policy(const RunSpec& spec, const Placement& placement, bool custom_kernels) {
  if (!spec.stats) fail(ErrorCode::Config, spec.dir, ": resolved without dataset_statistics.json; a policy needs it");
  head::HeadOptions options = spec.head;
  options.dtype = placement.dtype;
  options.device = placement.device;
  auto backbone = model::load_backbone(spec.model_file, spec.backbone, placement.dtype, placement.device,
                                       model::inference_kernel(placement.device, placement.dtype, placement.int8));
  auto head = head::ActionHead::load(spec.action_head_file, spec.proprio_projector_file, options);
  return std::make_shared<const Policy>(std::move(backbone), std::move(head),
                                        PolicyConfig{spec.preprocess, spec.stats->proprio, spec.stats->action, custom_kernels});
}

}  // namespace m2vla
