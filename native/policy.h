// The policy: one observation batch in, an unnormalized action chunk out, in one pass on one worker thread:
//   raw camera images --preprocess--> pixel values --frozen VLM--> every hidden state --action head (MoL + MSM)-->
//   normalized chunk --unnormalize (q01/q99, mask)--> actions
// It composes a loaded Backbone and ActionHead (shared, immutable) with the run's preprocessing and statistics.
// No N-API here.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <vector>

#include "head/action_head.h"
#include "head/normalize.h"
#include "model/prismatic.h"
#include "model/preprocess.h"

namespace m2vla {

struct PolicyConfig {
  model::PreprocessOptions preprocess;  // the run's preprocessor_config.json (+ the optional LIBERO center crop)
  head::BoundsStats proprio_stats, action_stats;
};

struct ActRequest {
  // Either raw images (sample-major: [s0 primary, s0 wrist, s1 primary, ...], views into `image_bytes`) or
  // preprocessed `pixel_values` [B, 6*numImages, S, S].
  std::vector<std::vector<uint8_t>> image_bytes;
  std::vector<model::ImageView> images;
  at::Tensor pixel_values;
  at::Tensor input_ids;  // [B, P] int64
  at::Tensor state;      // [B, proprio_dim] float64, raw
  bool reference_casts = false;
  bool trace = false;    // record the head's intermediates (plain MoL path)
  std::optional<uint64_t> seed;
};

struct StageTimes {
  double preprocess = 0, vision = 0, projector = 0, llm = 0, head = 0, retrieval = 0;
};

struct ActResult {
  at::Tensor actions;     // [B, chunk, A] float64, unnormalized
  at::Tensor normalized;  // [B, chunk, A] float32, the head output
  at::Tensor proprio;     // [B, proprio_dim] float64, normalized state as the head saw it
  head::HeadForwardOutput head;
  StageTimes times;
};

class Policy {
 public:
  Policy(std::shared_ptr<const model::Backbone> backbone, std::shared_ptr<const head::ActionHead> head, PolicyConfig config);
  ActResult act(const ActRequest& request) const;

  const model::Backbone& backbone() const { return *backbone_; }
  const head::ActionHead& head() const { return *head_; }

 private:
  std::shared_ptr<const model::Backbone> backbone_;
  std::shared_ptr<const head::ActionHead> head_;
  PolicyConfig config_;
};

}  // namespace m2vla
