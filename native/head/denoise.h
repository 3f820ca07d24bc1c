// What the ε-prediction objective adds to the head (names `denoise.*`): the noisy action chunk and the timestep
// enter the action latent after the (constant) fc1 stage,
//   latent = relu(fc1(layer_norm1(0))) + action_in(x_t) + time_mlp(sinusoidal(t)),
// and fc2's output is read as the predicted noise. The MoL blocks, MSM and every checkpoint tensor of the L1 head
// are used unchanged, so an L1 checkpoint can be fine-tuned into this objective.
#pragma once
#include <ATen/core/Tensor.h>

#include "head/config.h"
#include "head/layers.h"
#include "head/param_table.h"
#include "io/state_dict.h"

namespace m2vla::head {

// DiT-style timestep features: [cos(t·f_0..f_{h-1}), sin(t·f_0..f_{h-1})], f_i = 10000^(-i/h), h = dim/2.
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim);

struct DenoiseModule {
  Linear action_in;  // denoise.action_in: [D, A]
  Linear time_fc1;   // denoise.time_mlp.0: [D, time_embed_dim]
  Linear time_fc2;   // denoise.time_mlp.2: [D, D] (after SiLU)
  int64_t time_embed_dim = 0;

  // From the checkpoint when it has `denoise.*` tensors; otherwise drawn like torch.nn.Linear's default init
  // (U(±1/sqrt(fan_in)) for weights and biases) from config.init_seed, so two loads give the same head.
  static DenoiseModule load_or_init(const io::StateDict& sd, int64_t hidden, int64_t action_dim, const DenoiseConfig& config,
                                    at::ScalarType dtype, c10::Device device = c10::kCPU);
  // [B, chunk, D] added to the constant latent: action_in(x_t) + time_mlp(embedding(t)) (broadcast over the chunk).
  // `t` [B] int64, one timestep per sample (training), or [1] for the whole batch (sampling).
  at::Tensor operator()(const at::Tensor& noisy_actions, const at::Tensor& t) const;
  // The groups of denoise_table().
  template <class Self>
  static SlotsOf<Self> slots(Self& m) {
    return {{"denoise.action_in", &m.action_in}, {"denoise.time_mlp.0", &m.time_fc1}, {"denoise.time_mlp.2", &m.time_fc2}};
  }
};

}  // namespace m2vla::head
