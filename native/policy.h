// The policy: one observation batch in, an unnormalized action chunk out, in one pass on one worker thread:
//   raw camera images --preprocess--> pixel values --frozen VLM--> every hidden state --action head (MoL + MSM)-->
//   normalized chunk --unnormalize (q01/q99, mask)--> actions
// It composes a loaded Backbone and ActionHead (shared, immutable) with the run's preprocessing and statistics.
// Device: the models' (both on one device, weights placed there at load). Preprocessing and the q01/q99
// (un)normalization stay on the host; each act() makes one host->device copy of its inputs and one device->host
// copy of its outputs (transfer.h). No N-API here.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "head/action_head.h"
#include "head/kernel_check.h"
#include "head/normalize.h"
#include "model/prismatic.h"
#include "model/preprocess.h"

namespace m2vla {

struct PolicyConfig {
  model::PreprocessOptions preprocess;  // the run's preprocessor_config.json (+ the optional LIBERO center crop)
  head::BoundsStats proprio_stats, action_stats;
  // false: never run the custom kernels (no self-check either): act() runs the plain libtorch ops on any device, the
  // "libtorch-ops" path. For comparisons (the bench's forced fallback).
  bool custom_kernels = true;
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
  // On a GPU: synchronize after each stage so `times` is per stage (timing.h). Off by default: the syncs cost host
  // round trips; off, a GPU's stage times are the host's (dispatch) time and only the total is the act's.
  bool time_stages = false;
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

// Which implementation of the head's custom kernels (MoL attention, MSM top-R) act() runs.
struct KernelReport {
  // Each kernel's own verdict (head/backend.h).
  head::Backend mol = head::Backend::Reference, retrieval = head::Backend::Reference;
  // What JS sees as kernels().path, derived from the two:
  // "cpu-fused": the fused CPU loops (head/mol/fused_cpu.cc, head/msm/retrieval_cpu.cc);
  // "cuda-kernels": the CUDA kernels (head/mol/cuda.cu, head/msm/l1_topk.cu), each of which passed its self-check
  // on this GPU;
  // "libtorch-ops": the libtorch references, on the GPU when a kernel failed its check or the model is outside its
  // limits (with one kernel trusted and one not, `mol` / `retrieval` say which runs where).
  std::string path() const;
  std::vector<std::pair<std::string, head::CheckResult>> checks;  // the self-checks run on the GPU
  std::vector<std::string> warnings;                              // why a GPU policy does not use its kernels
};

class Policy {
 public:
  Policy(std::shared_ptr<const model::Backbone> backbone, std::shared_ptr<const head::ActionHead> head, PolicyConfig config);
  ActResult act(const ActRequest& request) const;

  // Decided at the first call (act() makes it): on a GPU each CUDA kernel is compared with its libtorch reference on
  // every variant of its self-check (head/kernel_cases.h: edge and production shapes); a kernel that disagrees is
  // replaced by libtorch ops, the other kernel keeps its own verdict.
  const KernelReport& kernels() const;

  // The device part of act(): inputs already on the policy's device (pixels float32 [B, 6*numImages, S, S], token ids
  // int64 [B, P], normalized proprio float32 [B, proprio_dim]), the head's output left there. No host round trip of
  // its own, so a caller may capture it in a CUDA graph (the bench does). `times` (may be null) gets the stage times.
  head::HeadForwardOutput forward(const at::Tensor& pixels, const at::Tensor& input_ids, const at::Tensor& proprio,
                                  bool reference_casts = false, bool trace = false, std::optional<uint64_t> seed = {},
                                  StageTimes* times = nullptr) const;

  const model::Backbone& backbone() const { return *backbone_; }
  const head::ActionHead& head() const { return *head_; }
  c10::Device device() const { return backbone_->device(); }

 private:
  KernelReport choose_kernels() const;

  std::shared_ptr<const model::Backbone> backbone_;
  std::shared_ptr<const head::ActionHead> head_;
  PolicyConfig config_;
  mutable std::once_flag kernels_once_;
  mutable KernelReport kernels_;
};

}  // namespace m2vla
