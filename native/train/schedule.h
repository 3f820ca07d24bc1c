// The learning rate of each optimizer step. Warmup as VLA-Adapter's finetune.py: linear from 10% to 100% of the base
// rate over the warmup steps, lr * (0.1 + 0.9 * min((step + 1) / warmup, 1)). Then either
//   cosine: lr * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2, reaching 0 after the last step (paper,
//           Table F1: cosine with warmup);
//   step:   lr * gamma^(milestones passed), torch's MultiStepLR (finetune.py: x0.1 at num_steps_before_decay).
// (finetune.py rewrites the rate on every step once warmup is set, which cancels its MultiStepLR decay; here the
// two compose.)
#pragma once
#include <cstdint>
#include <vector>

namespace m2vla::train {

struct LrSchedule {
  enum class Kind { Cosine, Step };
  Kind kind = Kind::Cosine;
  double base_lr = 1e-4;
  int64_t total_steps = 1;
  int64_t warmup_steps = 0;
  std::vector<int64_t> milestones;  // Step: steps (0-based) from which the rate is multiplied by gamma once more
  double gamma = 0.1;

  // Throws E_INPUT naming the option that makes no sense (negative warmup, lr <= 0, ...).
  void check() const;
  // The rate of optimizer step `step` (0-based).
  double lr(int64_t step) const;
};

}  // namespace m2vla::train
