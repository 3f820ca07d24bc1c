#include "policy.h"

#include <ATen/ATen.h>

#include "error.h"
#include "timing.h"

namespace m2vla {

Policy::Policy(std::shared_ptr<const model::Backbone> backbone, std::shared_ptr<const head::ActionHead> head,
               PolicyConfig config)
    : backbone_(std::move(backbone)), head_(std::move(head)), config_(std::move(config)) {
  const auto& cfg = backbone_->config();
  const auto& dims = head_->dims();
  if (dims.hidden != cfg.llm.hidden_size)
    fail(ErrorCode::Config, "action head: hidden size ", dims.hidden, " does not fit the VLM's ", cfg.llm.hidden_size);
  if (dims.num_blocks != cfg.llm.num_layers)
    fail(ErrorCode::Config, "action head: ", dims.num_blocks, " MoL blocks, but the VLM has ", cfg.llm.num_layers,
         " layers (one block per layer)");
  if (config_.proprio_stats.q01.numel() != dims.proprio_dim || config_.action_stats.q01.numel() != dims.action_dim)
    fail(ErrorCode::Config, "dataset statistics: proprio/action have ", config_.proprio_stats.q01.numel(), "/",
         config_.action_stats.q01.numel(), " dimensions, the head ", dims.proprio_dim, "/", dims.action_dim);
}

ActResult Policy::act(const ActRequest& req) const {
  const auto& cfg = backbone_->config();
  ActResult out;
  Stopwatch watch;
  at::Tensor pixels = req.images.empty() ? req.pixel_values
                                         : model::preprocess_images(req.images, cfg.num_images, config_.preprocess);
  if (!at::isfinite(pixels).all().item<bool>()) fail(ErrorCode::Input, "pixelValues: contain NaN or Inf");
  const int64_t batch = pixels.size(0);
  if (req.state.dim() != 2 || req.state.size(0) != batch || req.state.size(1) != head_->dims().proprio_dim)
    fail(ErrorCode::Shape, "state: expected ", head_->dims().proprio_dim, " values per observation (proprio dim), got ",
         req.state.numel(), " for ", batch, " observation(s)");
  if (!at::isfinite(req.state).all().item<bool>()) fail(ErrorCode::Input, "state: contains NaN or Inf");
  out.proprio = head::normalize_bounds_q99(req.state, config_.proprio_stats);
  out.times.preprocess = watch.lap();

  model::BackboneOutput vlm = backbone_->forward(pixels, req.input_ids, req.reference_casts);
  out.times.vision = vlm.vision_ms;
  out.times.projector = vlm.projector_ms;
  out.times.llm = vlm.llm_ms;
  watch.lap();

  head::HeadForwardInput in;
  in.hidden = vlm.hidden_states.to(at::kFloat);
  in.prompt_len = req.input_ids.size(1);
  in.proprio = out.proprio.to(at::kFloat);  // torch.Tensor(normalized) in the reference: float64 -> float32
  in.reference_casts = req.reference_casts;
  in.impl = req.trace ? head::MolImpl::Reference : head::MolImpl::Fused;
  in.trace = req.trace;
  in.seed = req.seed;
  out.head = head_->forward(in);
  out.normalized = out.head.normalized;
  out.actions = head::unnormalize_bounds_q99(out.normalized, config_.action_stats);
  out.times.retrieval = out.head.retrieval_ms;
  out.times.head = watch.lap() - out.head.retrieval_ms;
  return out;
}

}  // namespace m2vla
