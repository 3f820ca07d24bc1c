// Trains the M²-VLA head on the frozen VLM (SPEC §2, §3.2). Trainable: the action queries (action_queries.weight),
// the proprio projector and every head tensor the forward uses (ActionHead::parameters); the VLM's weights get no
// gradients. One step = `accumulation` micro-batches, each:
//
//   frames [--augment (augment.h), training only]--> --preprocess--> pixels ; per prompt length (the backbone has no padding mask, so samples are grouped):
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
//
// Data-parallel (options.distributed.world_size > 1, distributed.h): every process runs this trainer on its own
// rows of each global micro-batch (rank r holds rows [r·b, (r+1)·b)). The trainable weights start as rank 0's, the
// gradients are averaged over the ranks before clipping and AdamW, and every rank draws the random numbers of the
// whole global batch from its generator (identical on every rank) and keeps its rows; the bank receives the
// global batch's entries in rank order. N processes × b samples thus follow one process × N·b samples (up to the
// summation order of the averaged gradients).
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
#include "train/augment.h"
#include "train/distributed.h"
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
  AugmentOptions augment;  // training steps only (not predict)
  std::string action_head_path, proprio_path;
  std::string resume_action_queries_path;  // resuming: the checkpoint's action queries
  std::string resume_state_path;           // resuming: the checkpoint's optimizer moments, step and generator
  head::HeadOptions head;                  // dtype is ignored: the trained weights are float32
  AdamWOptions adamw;
  LrSchedule schedule;
  int64_t accumulation = 1;
  double clip_norm = 0;  // 0 = no clipping (finetune.py clips nothing)
  double memory_sample_rate = 0.2;
  bool bf16 = false;  // VLM in bfloat16, head under autocast (bfloat16) on the device with float32 master weights
  // Where the weights, the optimizer state, the MSM bank and the computation live (checkpoints are written from the
  // host; random draws come from the CPU generator on every device). Data-parallel: Gloo on the CPU, NCCL on a GPU.
  c10::Device device = c10::kCPU;
  bool prefix_trick = true;
  uint64_t seed = 0;
  DistributedOptions distributed;
};

struct StepMetrics {
  int64_t step = 0;  // optimizer steps done, this one included
  double loss = 0;   // mean over the micro-batches
  double lr = 0, grad_norm = 0, ms = 0;
  double collective_ms = 0;  // of `ms`, the time in collectives (data-parallel only)
  bool stop = false;         // some rank asked to stop after this step (all ranks then stop together)
};

class Trainer {
 public:
  explicit Trainer(const TrainerOptions& options);

  const model::BackboneConfig& backbone_config() const { return backbone_->config(); }
  const head::HeadDims& head_dims() const { return head_->dims(); }
  int64_t steps_done() const { return step_; }
  int64_t num_parameters() const;
  int rank() const { return group_ ? group_->rank() : 0; }
  int world_size() const { return group_ ? group_->world_size() : 1; }

  // One optimizer step over `micro` (exactly `accumulation` micro-batches); `on_micro(index, loss)` after each.
  // Data-parallel: every rank calls it with micro-batches of the same sizes; the loss is the mean over the ranks and
  // `stop` is whether any rank passed `stop_requested`.
  StepMetrics step(const std::vector<MicroBatch>& micro, const std::function<void(size_t, double)>& on_micro,
                   bool stop_requested = false);
  // The gradients of one micro-batch's loss by parameter name; nothing is updated and the bank is left as it is
  // (this rank's own, not averaged).
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
  // Micro-batch -> head inputs (prefix trick or the whole sequence) and the MSM query keys (detached). `augment`:
  // the frames are augmented first (when the options enable it).
  head::HeadBatch head_batch(const MicroBatch& batch, bool augment, at::Tensor& query_keys);
  // The micro-batch's frames preprocessed to pixel values, augmented first when `augment` and the options say so.
  at::Tensor pixels(const MicroBatch& batch, bool augment);
  // Forward of one micro-batch: the scalar float32 loss. Appends to the bank (after querying it) when `fill_bank`.
  at::Tensor loss(const MicroBatch& batch, bool fill_bank);
  void check(const MicroBatch& batch) const;
  void check_same_sizes(const std::vector<MicroBatch>& micro);
  // Rows of this rank's micro-batch (n samples) in a draw made for the global batch.
  at::Tensor own_rows(const at::Tensor& global, int64_t n) const { return global.narrow(0, rank() * n, n); }
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
  std::unique_ptr<ProcessGroup> group_;  // data-parallel only
};

}  // namespace m2vla::train
