#include "model/prismatic.h"
#include "timing.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <algorithm>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "error.h"

namespace m2vla::model {

Projector::Projector(const Weights& sd, int64_t vision_dim, int64_t llm_dim)
    : fc1(Linear::load(sd, "projector.fc1", 4 * vision_dim, vision_dim)),
      fc2(Linear::load(sd, "projector.fc2", llm_dim, 4 * vision_dim)),
      fc3(Linear::load(sd, "projector.fc3", llm_dim, llm_dim)) {}

at::Tensor Projector::operator()(const at::Tensor& x) const {
  return fc3(fc2(fc1(x, Linear::Act::Gelu), Linear::Act::Gelu));
}

namespace {

// The projector stays in bfloat16 under int8: its input joins the DINOv2 and SigLIP features, whose scales differ, so
// one activation scale per tensor fits neither (on fixture A, int8 there alone doubled the policy's mean error vs
// float32), and it is ~2% of the FLOPs.
Weights projector_weights(const Weights& sd) {
  if (sd.linear != LinearKernel::Int8) return sd;
  return Weights{sd.dict, sd.dtype, sd.device, LinearKernel::Onednn};
}

}  // namespace

Backbone::Backbone(const BackboneConfig& cfg, const Weights& sd)
    : cfg_(cfg),
      dtype_(sd.dtype),
      featurizer_(cfg.featurizer, sd, "vision_backbone.featurizer.", cfg.image_size),
      fused_featurizer_(cfg.fused_featurizer, sd, "vision_backbone.fused_featurizer.", cfg.image_size),
      projector_(projector_weights(sd), cfg.featurizer.embed_dim + cfg.fused_featurizer.embed_dim, cfg.llm.hidden_size),
      llm_(cfg.llm, sd, "language_model.model."),
      action_queries_(sd.get("action_queries.weight", {cfg.num_action_queries, cfg.llm.hidden_size})) {
  if (cfg.featurizer.patch_size != cfg.fused_featurizer.patch_size)
    fail(ErrorCode::Config, "vision: both towers need the same patch grid, got patch sizes ", cfg.featurizer.patch_size,
         " and ", cfg.fused_featurizer.patch_size);
  if (cfg.num_images < 1) fail(ErrorCode::Config, "numImages: expected at least 1, got ", cfg.num_images);
  if (cfg.stop_token_id < 0 || cfg.stop_token_id >= cfg.llm.vocab_size)
    fail(ErrorCode::Config, "stopTokenId ", cfg.stop_token_id, " is not in the vocabulary (size ", cfg.llm.vocab_size, ")");
}

void Backbone::check_inputs(const at::Tensor& pixel_values, const at::Tensor& input_ids) const {
  const int64_t s = cfg_.image_size, c = cfg_.pixel_channels();
  if (pixel_values.dim() != 4 || pixel_values.size(1) != c || pixel_values.size(2) != s || pixel_values.size(3) != s)
    fail(ErrorCode::Shape, "pixelValues: expected [B, ", c, ", ", s, ", ", s, "] (6 channels per image x ", cfg_.num_images,
         " images), got ", pixel_values.sizes());
  if (input_ids.dim() != 2 || input_ids.size(0) != pixel_values.size(0) || input_ids.size(1) < 1)
    fail(ErrorCode::Shape, "inputIds: expected [", pixel_values.size(0), ", P] with P >= 1, got ", input_ids.sizes());
  // On a GPU the caller checks the ids on the host before they are copied (Policy::act): reading them back here
  // would cost a device->host copy and a synchronization.
  if (input_ids.is_cpu()) check_token_ids(input_ids);
}

void Backbone::check_token_ids(const at::Tensor& input_ids) const {
  const int64_t vocab = cfg_.llm.vocab_size;
  auto ids = input_ids.accessor<int64_t, 2>();
  for (int64_t b = 0; b < ids.size(0); ++b)
    for (int64_t i = 0; i < ids.size(1); ++i)
      if (ids[b][i] < 0 || ids[b][i] >= vocab)
        fail(ErrorCode::Input, "inputIds: token id ", ids[b][i], " at position ", i, " of observation ", b,
             " is outside the vocabulary (0..", vocab - 1, ")");
}

// Both towers see every image of every observation in one batch: [B, N*6, S, S] -> [N*B, 3, S, S] per tower.
at::Tensor Backbone::vision(const at::Tensor& pixel_values) const {
  const int64_t b = pixel_values.size(0), n = cfg_.num_images, s = cfg_.image_size;
  at::Tensor per_tower = pixel_values.reshape({b, n, 2, 3, s, s}).permute({2, 1, 0, 3, 4, 5});  // [2, N, B, 3, S, S]
  at::Tensor dino = featurizer_.forward(per_tower[0].reshape({n * b, 3, s, s}));
  at::Tensor siglip = fused_featurizer_.forward(per_tower[1].reshape({n * b, 3, s, s}));
  at::Tensor fused = at::cat({dino, siglip}, -1);  // [N*B, patches, dino+siglip]
  const int64_t g = fused.size(1), dv = fused.size(2);
  // Images follow each other along tokens: primary patches, then wrist patches.
  return fused.view({n, b, g, dv}).transpose(0, 1).reshape({b, n * g, dv});
}

at::Tensor Backbone::patches(const at::Tensor& pixel_values, bool reference_casts, BackboneOutput* timing) const {
  Stopwatch watch(device());
  at::Tensor pixels = reference_casts ? pixel_values.to(at::kBFloat16).to(dtype_) : pixel_values.to(dtype_);
  at::Tensor features, projected;
  {
    RECORD_USER_SCOPE("m2vla::vision");  // stage scopes: m2vla_bench act --profile attributes ops to stages by them
    features = vision(pixels);
  }
  if (timing) timing->vision_ms = watch.lap();
  {
    RECORD_USER_SCOPE("m2vla::projector");
    projected = projector_(features);
  }
  if (timing) timing->projector_ms = watch.lap();
  return projected;
}

// The reference embeds placeholder ids (aq_placeholder_id) at the action-query positions and overwrites them with
// action_queries.weight; embedding the queries directly gives the same tensor.
at::Tensor Backbone::sequence(const at::Tensor& input_ids, const at::Tensor& patches, const at::Tensor& action_queries) const {
  const int64_t b = input_ids.size(0);
  at::Tensor text = llm_.embed(input_ids);  // [B, P, D]
  std::vector<at::Tensor> parts{text.slice(1, 0, 1), patches, text.slice(1, 1)};
  if (action_queries.defined()) {
    parts.push_back(action_queries.to(dtype_).expand({b, -1, -1}));
    parts.push_back(llm_.embed_tokens()[cfg_.stop_token_id].expand({b, 1, -1}));
  }
  return at::cat(parts, 1);
}

BackboneOutput Backbone::forward(const at::Tensor& pixel_values, const at::Tensor& input_ids, bool reference_casts) const {
  check_inputs(pixel_values, input_ids);
  BackboneOutput out;
  out.projected_patches = patches(pixel_values, reference_casts, &out);
  Stopwatch watch(device());
  {
    RECORD_USER_SCOPE("m2vla::llm");
    out.hidden_states = llm_.hidden_states(sequence(input_ids, out.projected_patches, action_queries_));
  }
  out.llm_ms = watch.lap();
  return out;
}

std::vector<int64_t> Backbone::generate(const at::Tensor& pixel_values, const at::Tensor& input_ids, int64_t max_new_tokens,
                                        const std::vector<int64_t>& stop_ids, bool reference_casts) const {
  check_inputs(pixel_values, input_ids);
  if (input_ids.size(0) != 1) fail(ErrorCode::Input, "generate: one prompt at a time, got a batch of ", input_ids.size(0));
  at::Tensor prompt = sequence(input_ids, patches(pixel_values, reference_casts), at::Tensor());
  KvCache cache = llm_.make_cache(1, prompt.size(1) + max_new_tokens, dtype_);
  at::Tensor hidden = llm_.extend(prompt, cache);
  std::vector<int64_t> tokens;
  while (int64_t(tokens.size()) < max_new_tokens) {
    const int64_t next = llm_.logits(hidden.select(1, -1)).argmax(-1).item<int64_t>();
    tokens.push_back(next);
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) break;
    if (int64_t(tokens.size()) < max_new_tokens) {
      const at::Tensor id = at::full({1, 1}, next, at::TensorOptions().dtype(at::kLong).device(device()));
      hidden = llm_.extend(llm_.embed(id), cache);
    }
  }
  return tokens;
}

Backbone::Prefix Backbone::prefix(const at::Tensor& pixel_values, const at::Tensor& input_ids) const {
  check_inputs(pixel_values, input_ids);
  at::Tensor embeds = sequence(input_ids, patches(pixel_values, /*reference_casts=*/false), at::Tensor());
  Prefix p{llm_.make_cache(embeds.size(0), embeds.size(1), dtype_), {}};
  p.hidden_states = llm_.hidden_states(embeds, &p.cache);
  return p;
}

at::Tensor Backbone::hidden_states_after(const Prefix& prefix, const at::Tensor& embeds) const {
  return llm_.hidden_states_after(prefix.cache, embeds.to(dtype_));
}

at::Tensor Backbone::hidden_states(const at::Tensor& pixel_values, const at::Tensor& input_ids,
                                   const at::Tensor& action_queries) const {
  check_inputs(pixel_values, input_ids);
  if (action_queries.dim() != 2 || action_queries.size(0) != cfg_.num_action_queries || action_queries.size(1) != cfg_.llm.hidden_size)
    fail(ErrorCode::Shape, "actionQueries: expected [", cfg_.num_action_queries, ", ", cfg_.llm.hidden_size, "], got ",
         action_queries.sizes());
  return llm_.hidden_states(sequence(input_ids, patches(pixel_values, /*reference_casts=*/false), action_queries));
}

std::shared_ptr<const Backbone> load_backbone(const std::string& path, const BackboneConfig& cfg, at::ScalarType dtype,
                                              c10::Device device, LinearKernel linear) {
  io::StateDict sd = io::load_state_dict(path);
  auto backbone = std::make_shared<const Backbone>(cfg, Weights{sd, dtype, device, linear});
#ifdef __GLIBC__
  // Repacking freed a model's worth of temporaries into the heap; glibc keeps free heap pages resident until asked.
  malloc_trim(0);
#endif
  return backbone;
}

}  // namespace m2vla::model
