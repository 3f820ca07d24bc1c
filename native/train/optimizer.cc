#include "train/optimizer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "error.h"

namespace m2vla::train {

AdamW::AdamW(std::vector<Parameter> params, AdamWOptions options) : params_(std::move(params)), options_(options) {
  for (const Parameter& p : params_) {
    exp_avg_.push_back(at::zeros_like(p.tensor, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p.tensor, at::MemoryFormat::Contiguous));
    steps_.push_back(at::zeros({}, p.tensor.options().dtype(at::kFloat)));  // the fused kernel reads it on the device
  }
}

double AdamW::clip_grad_norm(double max_norm) {
  at::NoGradGuard no_grad;
  double sum = 0;
  for (const Parameter& p : params_)
    if (p.tensor.grad().defined()) sum += p.tensor.grad().to(at::kDouble).pow(2).sum().item<double>();
  const double norm = std::sqrt(sum);
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const Parameter& p : params_)
      if (p.tensor.grad().defined()) p.tensor.mutable_grad().mul_(scale);
  }
  return norm;
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;  // in-place updates of leaves
  // Parameters without a gradient this step (unused by the objective) keep their state, as in torch.
  std::vector<at::Tensor> params, grads, m, v, steps;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& g = params_[i].tensor.grad();
    if (!g.defined()) continue;
    params.push_back(params_[i].tensor);
    grads.push_back(g);
    m.push_back(exp_avg_[i]);
    v.push_back(exp_avg_sq_[i]);
    steps.push_back(steps_[i]);
  }
  if (params.empty()) return;
  for (at::Tensor& s : steps) s.add_(1);  // torch increments the step before the fused kernel reads it
  at::_fused_adamw_(params, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, options_.beta1, options_.beta2,
                    options_.weight_decay, options_.eps, /*amsgrad=*/false, /*maximize=*/false);
  zero_grad();
}

void AdamW::zero_grad() {
  for (Parameter& p : params_) p.tensor.mutable_grad().reset();
}

io::NamedTensors AdamW::state() const {
  io::NamedTensors out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].name, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].name, exp_avg_sq_[i]);
    out.emplace_back("step." + params_[i].name, steps_[i]);
  }
  return out;
}

void AdamW::load_state(const io::StateDict& sd) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].name;
    const std::vector<int64_t> shape(params_[i].tensor.sizes().begin(), params_[i].tensor.sizes().end());
    exp_avg_[i].copy_(sd.get("exp_avg." + name, shape));
    exp_avg_sq_[i].copy_(sd.get("exp_avg_sq." + name, shape));
    steps_[i].copy_(sd.get("step." + name, {}));
  }
}

}  // namespace m2vla::train
