#include "head/diffusion.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "error.h"

namespace m2vla::head {

NoiseSchedule NoiseSchedule::squaredcos_cap_v2(int64_t train_steps) {
  if (train_steps < 1) fail(ErrorCode::Config, "trainSteps: expected at least 1, got ", train_steps);
  auto alpha_bar = [](double s) {
    const double c = std::cos((s + 0.008) / 1.008 * M_PI / 2);
    return c * c;
  };
  NoiseSchedule schedule;
  double prod = 1;
  for (int64_t i = 0; i < train_steps; ++i) {
    const double beta = std::min(1 - alpha_bar(double(i + 1) / train_steps) / alpha_bar(double(i) / train_steps), 0.999);
    prod *= 1 - beta;
    schedule.alphas_cumprod_.push_back(prod);
  }
  return schedule;
}

std::vector<int64_t> NoiseSchedule::ddim_timesteps(int64_t inference_steps) const {
  if (inference_steps < 1 || inference_steps > train_steps())
    fail(ErrorCode::Config, "inferenceSteps: expected 1..", train_steps(), " (the training steps), got ", inference_steps);
  const int64_t ratio = train_steps() / inference_steps;
  std::vector<int64_t> steps;
  for (int64_t i = inference_steps - 1; i >= 0; --i) steps.push_back(i * ratio);
  return steps;
}

at::Tensor NoiseSchedule::ddim_step(const at::Tensor& sample, const at::Tensor& eps, int64_t t, int64_t t_prev,
                                    bool clip_sample) const {
  if (t < 0 || t >= train_steps() || t_prev >= t)
    fail(ErrorCode::Input, "timestep: expected 0 <= prevTimestep < timestep < ", train_steps(), ", got ", t_prev, " -> ", t);
  const double a_t = alphas_cumprod_[t], a_prev = t_prev >= 0 ? alphas_cumprod_[t_prev] : 1.0;
  at::Tensor x0 = (sample - std::sqrt(1 - a_t) * eps) / std::sqrt(a_t);
  if (clip_sample) x0 = x0.clamp(-1, 1);
  return std::sqrt(a_prev) * x0 + std::sqrt(1 - a_prev) * eps;
}

at::Tensor NoiseSchedule::add_noise(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t) const {
  if (t.dim() != 1 || t.size(0) != x0.size(0))
    fail(ErrorCode::Shape, "timesteps: expected one per sample (", x0.size(0), "), got ", t.sizes());
  if (t.numel() && (t.min().item<int64_t>() < 0 || t.max().item<int64_t>() >= train_steps()))
    fail(ErrorCode::Input, "timesteps: expected values in 0..", train_steps() - 1);
  at::Tensor a = at::tensor(alphas_cumprod_, at::kDouble).index_select(0, t.to(at::kCPU)).to(x0.device());
  std::vector<int64_t> shape(x0.dim(), 1);
  shape[0] = x0.size(0);
  at::Tensor signal = a.sqrt().reshape(shape).to(x0.scalar_type()), noise = (1 - a).sqrt().reshape(shape).to(x0.scalar_type());
  return signal * x0 + noise * eps;
}

}  // namespace m2vla::head
