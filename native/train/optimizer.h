// What an optimizer step does to the trainable tensors: the global gradient norm (and clipping to a maximum, as
// torch.nn.utils.clip_grad_norm_), then AdamW (torch.optim.AdamW: decoupled weight decay, bias-corrected moments)
// with at::_fused_adamw_, the kernel torch's AdamW(fused=True) runs.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "io/state_dict.h"

namespace m2vla::train {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999;
  double weight_decay = 0.01;  // torch's AdamW default; finetune.py keeps it
  double eps = 1e-8;
};

struct Parameter {
  std::string name;
  at::Tensor tensor;  // a leaf with requires_grad, float32
};

class AdamW {
 public:
  AdamW(std::vector<Parameter> params, AdamWOptions options);

  const std::vector<Parameter>& parameters() const { return params_; }
  // sqrt(sum of every gradient's squared norm), before clipping; with max_norm > 0 the gradients are then scaled by
  // max_norm / (norm + 1e-6) when the norm exceeds it.
  double clip_grad_norm(double max_norm);
  // One update of every parameter with a gradient at learning rate `lr`, then the gradients are dropped.
  void step(double lr);
  void zero_grad();

  // exp_avg.<name>, exp_avg_sq.<name>, step.<name> (float32 scalars, as torch keeps them).
  io::NamedTensors state() const;
  // E_CHECKPOINT when a tensor is missing or mis-shaped.
  void load_state(const io::StateDict& sd);

 private:
  std::vector<Parameter> params_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_, steps_;
};

}  // namespace m2vla::train
