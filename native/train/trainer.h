// Trains the M²-VLA head on the frozen VLM (SPEC §2, §3.2). Trainable: the action queries (action_queries.weight),
// the proprio projector and every head tensor the forward uses (ActionHead::parameters); the VLM's weights get no
// gradients. One step = `accumulation` micro-batches, each:
//
//   frames --preprocess--> pixels ; per prompt length (the backbone has no padding mask, so samples are grouped):
//     no grad:  prefix = [tok0] + patches + prompt through the VLM, its keys/values kept   (Backbone::prefix)
//     autograd: the first NT-1 action queries after it, reading those keys/values         (hidden_states_after)
//   head inputs (off-by-one, SPEC §1.5): vision = prefix[0:NP]; action queries = last prompt token (prefix) + the
//     suffix. The last query and the stop token never reach the head and cannot change earlier positions (causal
//     attention), so they are not run.
//   MSM: query the bank with the batch's keys, then (probability memory_sample_rate) append (key, normalized chunk)
//   loss: L1 on the normalized chunk with the latent perturbation N(0, 0.02) (reference), or ε-prediction MSE at
//     random DDPM timesteps (Objective::Denoise)
//
// then clipping, AdamW, the learning-rate schedule. With prefix_trick off, the whole sequence runs with autograd in
// one pass (the yardstick the split is tested against). Every random draw comes from one seeded generator that
// checkpoints save, so a resumed run repeats an uninterrupted one.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "head/action_head.h"
#include "head/diffusion.h"
#include "io/state_dict.h"
#include "model/config.h"
#include "model/prismatic.h"
#include "model/preprocess.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace m2vla::train {

struct Frame {
  std::vector<uint8_t> rgb;  // height * width * 3 bytes, HWC
  int64_t width = 0, height = 0;
};

// One micro-batch as lib/train.ts packs it.
struct MicroBatch {
  std::vector<Frame> frames;                  // sample-major: num_images per sample (primary, then wrist)
  std::vector<std::vector<int64_t>> prompts;  // per sample: prompt ids including the first token (lengths may differ)
  at::Tensor proprio;                         // [B, proprio_dim] float32, normalized
  at::Tensor actions;                         // [B, chunk, action_dim] float32, normalized
};

struct TrainerOptions {
  std::string model_path;  // the VLM checkpoint; its action_queries.weight starts the training unless resumed
  model::BackboneConfig backbone;
  model::PreprocessOptions preprocess;
  std::string action_head_path, proprio_path;
  std::string resume_action_queries_path;  // resuming: the checkpoint's action queries
  std::string resume_state_path;           // resuming: the checkpoint's optimizer moments, step and generator
  head::HeadOptions head;                  // dtype is ignored: the trained weights are float32
  AdamWOptions adamw;
  LrSchedule schedule;
  int64_t accumulation = 1;
  double clip_norm = 0;  // 0 = no clipping (finetune.py clips nothing)
  double memory_sample_rate = 0.2;
  bool bf16 = false;  // VLM in bfloat16, head under CPU autocast (bfloat16) with float32 master weights
  bool prefix_trick = true;
  uint64_t seed = 0;
};

struct StepMetrics {
  int64_t step = 0;  // optimizer steps done, this one included
  double loss = 0;   // mean over the micro-batches
  double lr = 0, grad_norm = 0, ms = 0;
};

class Trainer {
 public:
  explicit Trainer(const TrainerOptions& options);

  const model::BackboneConfig& backbone_config() const { return backbone_->config(); }
  const head::HeadDims& head_dims() const { return head_->dims(); }
  int64_t steps_done() const { return step_; }
  int64_t num_parameters() const;

  // One optimizer step over `micro` (exactly `accumulation` micro-batches); `on_micro(index, loss)` after each.
  StepMetrics step(const std::vector<MicroBatch>& micro, const std::function<void(size_t, double)>& on_micro);
  // The gradients of one micro-batch's loss by parameter name; nothing is updated and the bank is left as it is.
  io::NamedTensors gradients(const MicroBatch& batch);
  // Normalized actions [B, chunk, A] of the model as it is now, computed as inference does (no perturbation, no
  // bank writes; Denoise samples with `seed`).
  at::Tensor predict(const MicroBatch& batch, std::optional<uint64_t> seed);

  // What checkpoints hold (checkpoint.h). The full model's head state dict includes the tensors the head never loads
  // (k_memory, v_memory, film_gen), unchanged from the one it started from; an ablation's holds only its own.
  io::NamedTensors action_head_state_dict() const;
  io::NamedTensors proprio_state_dict() const;
  io::NamedTensors action_queries_state_dict() const;
  // The VLM checkpoint with the trained action queries (in the dtype the file stores them in).
  io::NamedTensors vlm_state_dict() const;
  // Optimizer moments, `step` (int64) and `generator` (the CPU generator's state bytes).
  io::NamedTensors training_state() const;

 private:
  // Micro-batch -> head inputs (prefix trick or the whole sequence) and the MSM query keys (detached).
  head::HeadBatch head_batch(const MicroBatch& batch, at::Tensor& query_keys);
  // Forward of one micro-batch: the scalar float32 loss. Appends to the bank (after querying it) when `fill_bank`.
  at::Tensor loss(const MicroBatch& batch, bool fill_bank);
  void check(const MicroBatch& batch) const;
  void restore(const io::StateDict& state);

  TrainerOptions options_;
  io::StateDict vlm_;               // the frozen VLM's tensors (views of the mapped file)
  io::NamedTensors head_unused_;    // head checkpoint tensors the head does not load, passed through to checkpoints
  std::shared_ptr<const model::Backbone> backbone_;
  std::shared_ptr<head::ActionHead> head_;
  at::Tensor action_queries_;       // [NT, D] float32 leaf
  std::optional<head::NoiseSchedule> noise_schedule_;
  std::unique_ptr<AdamW> optimizer_;
  at::Generator generator_;
  int64_t step_ = 0;
};

}  // namespace m2vla::train
