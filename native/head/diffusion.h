// The noise schedule and sampler of the ε-prediction objective (SPEC §0.1, §4; not in the released code). DDPM
// forward process with the squaredcos_cap_v2 schedule (Nichol & Dhariwal 2021, as RDT-1B uses) for training, and
// the deterministic DDIM sampler (η = 0) at inference. Conventions as diffusers' DDPMScheduler / DDIMScheduler:
// betas from alpha_bar(s) = cos²((s + 0.008)/1.008 · π/2) capped at 0.999, "leading" timestep spacing,
// set_alpha_to_one (the last step lands on ā = 1), ε prediction.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace m2vla::head {

class NoiseSchedule {
 public:
  static NoiseSchedule squaredcos_cap_v2(int64_t train_steps);

  int64_t train_steps() const { return int64_t(alphas_cumprod_.size()); }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }  // ā_t, t = 0..T-1

  // The K DDIM timesteps, descending: (K-1)·⌊T/K⌋, ..., ⌊T/K⌋, 0 (90, 80, ..., 0 for T=100, K=10).
  std::vector<int64_t> ddim_timesteps(int64_t inference_steps) const;

  // One DDIM step from x_t to x_{t_prev} given the predicted noise; t_prev < 0 is the final step (ā = 1):
  //   x0 = (x_t - sqrt(1-ā_t) ε) / sqrt(ā_t)   (clamped to [-1, 1] with clip_sample)
  //   x_{t_prev} = sqrt(ā_prev) x0 + sqrt(1-ā_prev) ε
  at::Tensor ddim_step(const at::Tensor& sample, const at::Tensor& eps, int64_t t, int64_t t_prev, bool clip_sample) const;

  // q(x_t | x0) = sqrt(ā_t) x0 + sqrt(1-ā_t) ε with one timestep per sample (t [B] int64): the training input whose
  // noise the head learns to predict.
  at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t) const;

 private:
  std::vector<double> alphas_cumprod_;
};

}  // namespace m2vla::head
