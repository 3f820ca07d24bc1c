// The M²-VLA action head (reference L1RegressionActionHead with MLPResNet(use_pro_version) and MemoryBank):
// the VLM's hidden states + normalized proprio in, a normalized action chunk [B, chunk, A] out.
//
//   latent x = relu(fc1(layer_norm1(zeros(B, chunk, A*D))))   (a constant at inference: LN(0) = its bias)
//   block i (0..blocks-1) = MoL block over hidden state i+1, with the MSM retrieval made once per forward
//   out = fc2(layer_norm2(x))
//
// Objective::Denoise runs the same network K times under DDIM (denoise.h, diffusion.h); conditioning projections
// and the retrieval are computed once per forward and shared by all steps.
//
// The ablations (HeadOptions::ablation, config.h) swap the MoL blocks for CrossBlocks (no-mol, cross_block.h) or drop
// the MSM (no-msm: no query keys, retrieval, memory_value_proj or bank; the blocks get no memory context).
//
// Training (native/train) uses the same object: its tensors become autograd leaves that AdamW updates in place, and
// the members in the "Training" section below (head_training.cc) evaluate it from inputs the trainer slices itself.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "head/config.h"
#include "head/cross_block.h"
#include "head/denoise.h"
#include "head/diffusion.h"
#include "head/head_input.h"
#include "head/layers.h"
#include "head/mol/block.h"
#include "head/msm/bank.h"
#include "head/param_table.h"
#include "head/proprio.h"

namespace m2vla::head {

struct HeadForwardInput {
  at::Tensor hidden;   // [L+1, B, seq, D] float32, index 0 = embeddings
  int64_t prompt_len = 0;
  at::Tensor proprio;  // [B, proprio_dim], already normalized
  // The reference's hard-coded bfloat16 roundings inside the head: the action-query slice of every hidden state and
  // the normalized proprio (values rounded, computation continues in the head's dtype).
  bool reference_casts = false;
  // Each kernel's implementation (head/backend.h); on a GPU the policy decides them per kernel (policy.cc).
  Backend mol = Backend::CpuFused, retrieval = Backend::CpuFused;
  bool trace = false;             // record intermediates (mol == Reference only)
  std::optional<uint64_t> seed;   // Denoise: seed of the initial noise (random when absent)
};

// Intermediates of one forward (Denoise: the blocks of its last network evaluation).
struct HeadTrace {
  at::Tensor input_aq;          // [B, L+1, NT, D] the AQ part of the head input as the blocks see it
  at::Tensor proprio_features;  // [B, D]
  at::Tensor h_memory;          // [B, R, chunk*D]
  at::Tensor x0;                // [B, chunk, D] latent entering block 0
  std::vector<BlockTrace> blocks;
};

// The head's inputs with the off-by-one slicing already done: a training step builds them from a frozen prefix and
// an autograd suffix of the VLM instead of one hidden-state tensor.
struct HeadBatch {
  HeadInput input;       // per hidden state 0..L: vision [B, NP, D] and action queries [B, NT, D]
  at::Tensor proprio;    // [B, proprio_dim] normalized
  at::Tensor retrieved;  // [B, R, chunk*A] float32: the bank values retrieved for these samples (undefined: no MSM)
};

// What a training evaluation adds to a HeadBatch (the reference's phase == "Training").
struct TrainingNoise {
  at::Tensor latent;         // L1: [chunk, A*D], added to the zero latent before layer_norm1 (reference: N(0, 0.02))
  at::Tensor noisy_actions;  // Denoise: x_t [B, chunk, A] float32
  at::Tensor timesteps;      // Denoise: t [B] int64
};

struct HeadForwardOutput {
  at::Tensor normalized;  // [B, chunk, A] float32
  at::Tensor query_keys;  // [B, key_dim] float32 ([B, 0] without MSM)
  Retrieval retrieval;    // without MSM: no rows ([B, 0] indices and similarities, [B, 0, value_dim] values)
  std::optional<HeadTrace> trace;
  double retrieval_ms = 0;  // query key + top-R + value projection
};

// "none", "no-mol", "no-msm": the names lib/ and run directories use.
const char* ablation_name(Ablation a);

class ActionHead {
 public:
  // Dims come from the checkpoint: hidden D and action dim A from model.fc2 [A, D], blocks from the count of
  // model.mlp_resnet_blocks.N, heads from k_adapter rows - D, chunk from memory_value_proj rows / D, proprio dim
  // from the projector's fc1 columns, bank capacity from memory_bank.keys rows.
  static std::shared_ptr<ActionHead> load(const std::string& action_head_path, const std::string& proprio_path,
                                          const HeadOptions& options);
  // The same from state dicts already read (the trainer keeps the head's other tensors for its checkpoints).
  // `from_full`: the trainer may start an ablation from a full model's checkpoint (the tensors the variant does not use
  // are left out, see CrossBlock::from_mol); otherwise the checkpoint's variant must be options.ablation (E_CHECKPOINT).
  static std::shared_ptr<ActionHead> load(const io::StateDict& action_head, const io::StateDict& proprio,
                                          const HeadOptions& options, bool from_full = false);

  const HeadDims& dims() const { return dims_; }
  const HeadOptions& options() const { return options_; }
  const MemoryBank& bank() const { return bank_; }  // capacity 0 without MSM
  bool uses_msm() const { return options_.ablation != Ablation::NoMsm; }
  HeadForwardOutput forward(const HeadForwardInput& in) const;

  // ---- Training (head_training.cc) ----
  // Every learnable tensor: the MoL blocks, fc1/fc2 and both layer norms, memory_value_proj, the proprio projector
  // and, for Objective::Denoise, the denoise module. k_memory, v_memory and film_gen are never loaded (unused).
  std::vector<HeadParameter> parameters() const;
  // One differentiable evaluation in training mode: the normalized chunk (L1) or the predicted noise (Denoise),
  // [B, chunk, A] in the head's dtype (or autocast's).
  at::Tensor train_forward(const HeadBatch& batch, const TrainingNoise& noise) const;
  // Inference on a HeadBatch, as forward() computes it from hidden states (zero latent, DDIM for Denoise),
  // from the current weights: [B, chunk, A] float32.
  at::Tensor predict(const HeadBatch& batch, std::optional<uint64_t> seed) const;
  MemoryBank& mutable_bank() { return bank_; }

  // ---- Skills added without training (msm_skills.cc) ----
  // Appends (key [N, key_dim], normalized action chunk [N, chunk*A]) rows to the bank FIFO, as training does. All or
  // nothing: a shape, a non-finite value or a head without MSM is an error before any row changes. Takes the bank
  // exclusively; forward() holds it shared while it retrieves, so a loaded head's bank may grow between calls.
  void add_skills(const at::Tensor& keys, const at::Tensor& values);
  // Rewrites the action-head checkpoint `from` (safetensors or torch.save zip, by extension) as `to` in the same
  // format with the bank as it is now (memory_bank.keys/.values/.size; every other tensor as read). `to` may be `from`.
  void write_bank(const std::string& from, const std::string& to) const;
  // Guards bank_ against add_skills() (memory-bank snapshots take it shared).
  std::shared_mutex& bank_mutex() const { return bank_mutex_; }
  // The bank values retrieved for query keys [B, key_dim]: Retrieval::values, or undefined without MSM.
  at::Tensor retrieve_values(const at::Tensor& query_keys) const;
  // The reference state dicts (action_head--checkpoint.pt / proprio_projector--checkpoint.pt names, the stacked
  // projections split again; the bank included) of the learned tensors: what the head was loaded from, updated.
  io::NamedTensors action_head_state_dict() const;
  io::NamedTensors proprio_state_dict() const;

 private:
  ActionHead() = default;
  // One condition per block from the sliced inputs (converted to the head's dtype). No-mol: `task` holds the
  // CrossBlock's rotated keys and `task_tokens` the last hidden state's [vision; AQ; proprio] tokens.
  std::vector<MolCondition> conditions(const HeadInput& input, const at::Tensor& proprio_features, Backend backend) const;
  // layer_norm2 → fc2 after the blocks, from a latent [B, chunk, D].
  // h_memory [B, R, chunk*D] from the retrieved values, or undefined without MSM.
  at::Tensor memory(const at::Tensor& retrieved) const;
  at::Tensor network(const at::Tensor& latent, const std::vector<MolCondition>& conds, const at::Tensor& h_memory,
                     HeadTrace* trace) const;
  // The inference output from the initial latent x0 [B, chunk, D]: one network pass (L1) or the DDIM loop (Denoise).
  at::Tensor decode(const at::Tensor& x0, const std::vector<MolCondition>& conds, const at::Tensor& h_memory,
                    std::optional<uint64_t> seed, HeadTrace* trace) const;
  void check_input(const HeadForwardInput& in) const;
  // relu(fc1(layer_norm1(z))) for z [.., A*D] (training perturbs z); without `z` the inference latent, z = 0, whose
  // LayerNorm output is layer_norm1's bias: one constant row [1, 1, D], from the current weights.
  at::Tensor initial_latent(const at::Tensor& z = {}) const;
  // The groups of latent_table(), output_table() and msm_table().
  template <class Self>
  static SlotsOf<Self> latent_slots(Self& h) { return {{"model.layer_norm1", &h.layer_norm1}, {"model.fc1", &h.fc1}}; }
  template <class Self>
  static SlotsOf<Self> output_slots(Self& h) { return {{"model.layer_norm2", &h.layer_norm2}, {"model.fc2", &h.fc2}}; }
  template <class Self>
  static SlotsOf<Self> msm_slots(Self& h) { return {{"memory_value_proj", &h.memory_value_proj}}; }

  HeadOptions options_;
  HeadDims dims_;
  Linear fc1, fc2, memory_value_proj;
  LayerNorm layer_norm1, layer_norm2;
  std::vector<MolBlock> blocks_;         // empty for no-mol
  std::vector<CrossBlock> cross_blocks_;  // no-mol only
  MolTables tables_;
  RopeTable token_rope_;                  // no-mol: positions 0..NP+NT of [vision; AQ; proprio]
  at::Tensor x0_;  // [1, 1, D]: relu(fc1(layer_norm1(0))), the constant initial latent row (as loaded)
  ProprioProjector proprio_;
  MemoryBank bank_{0, 0, 0};
  mutable std::shared_mutex bank_mutex_;
  std::optional<DenoiseModule> denoise_;
  std::optional<NoiseSchedule> schedule_;
  std::vector<int64_t> ddim_steps_;
};

}  // namespace m2vla::head
