// What the action head is built from: options the caller states (the reference hard-codes them or takes them
// from constants.py) and dimensions read off the checkpoint's tensor shapes (so a checkpoint cannot disagree
// with them). No N-API here.
#pragma once
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

namespace m2vla::head {

enum class Objective {
  L1,       // the released code: one deterministic pass from a constant latent (SPEC §2, §0.1)
  Denoise,  // the paper's text: ε-prediction, DDPM schedule for training, DDIM sampling (SPEC §4)
};

// The ε-prediction variant. Parameters it adds (`denoise.*`) are drawn from `init_seed` when the checkpoint has none.
struct DenoiseConfig {
  int64_t train_steps = 100;     // T of the squaredcos_cap_v2 schedule
  int64_t inference_steps = 10;  // K DDIM steps ("leading" spacing: T/K*(K-1) .. 0)
  bool clip_sample = true;       // clamp the x0 estimate to [-1, 1] (actions are normalized to that range)
  int64_t time_embed_dim = 256;  // sinusoidal timestep features before the MLP
  uint64_t init_seed = 0;
};

// The paper's ablation (Table V). Each variant creates, trains and saves only the parameters it uses, so a checkpoint
// tells which one it is (ActionHead::load detects it from its tensors and refuses a mismatching request).
enum class Ablation {
  None,   // the full model: MoL blocks + MSM
  NoMol,  // "without MoL": each block has one cross-attention to the last hidden state's tokens (head/cross_block.h)
  NoMsm,  // "without MSM": no query keys, no retrieval, no bank, no memory context in the blocks
};

struct HeadOptions {
  std::vector<int64_t> key_layer_indices;  // hidden-state indices whose vision means form the MSM key
  int64_t top_k = 4;                       // MSM neighbours retrieved
  int64_t num_patches = 0;                 // NP: vision tokens (tok0 + NP-1 patches after the off-by-one)
  int64_t num_action_queries = 0;          // NT
  Objective objective = Objective::L1;
  DenoiseConfig denoise;
  at::ScalarType dtype = at::kFloat;       // weights and activations; the bank stays bfloat16, retrieval float32
  c10::Device device = c10::kCPU;          // where every tensor of the head lives (copied there once, at load)
  Ablation ablation = Ablation::None;
  // Dims an ablated checkpoint no longer shows (no-mol has no k_adapter for the head count, no-msm no
  // memory_value_proj for the chunk): the run directory states them (config.json "m2vla_head"); 0 = not stated.
  // When the checkpoint shows them too, they must agree.
  int64_t num_heads = 0;
  int64_t chunk = 0;
};

// Read off the checkpoint (see ActionHead::load for which tensor gives which).
struct HeadDims {
  int64_t hidden = 0;        // D
  int64_t num_blocks = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
  int64_t action_dim = 0;    // A
  int64_t chunk = 0;         // actions per chunk
  int64_t proprio_dim = 0;
  int64_t key_dim = 0;       // |key layers| * D
  int64_t bank_capacity = 0;
};

}  // namespace m2vla::head
