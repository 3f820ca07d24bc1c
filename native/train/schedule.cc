#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "error.h"

namespace m2vla::train {

void LrSchedule::check() const {
  if (!(base_lr > 0) || !std::isfinite(base_lr)) fail(ErrorCode::Input, "lr: expected a positive number, got ", base_lr);
  if (total_steps < 1) fail(ErrorCode::Input, "steps: expected at least 1, got ", total_steps);
  if (warmup_steps < 0) fail(ErrorCode::Input, "warmup: expected 0 or more steps, got ", warmup_steps);
  if (!(gamma > 0)) fail(ErrorCode::Input, "gamma: expected a positive factor, got ", gamma);
  for (int64_t m : milestones)
    if (m < 0) fail(ErrorCode::Input, "decayAt: expected step indices >= 0, got ", m);
}

double LrSchedule::lr(int64_t step) const {
  double rate = base_lr;
  if (warmup_steps > 0) rate *= 0.1 + 0.9 * std::min(double(step + 1) / double(warmup_steps), 1.0);
  if (kind == Kind::Cosine) {
    if (step >= warmup_steps) {
      const double span = std::max<int64_t>(1, total_steps - warmup_steps);
      const double progress = std::min(double(step - warmup_steps) / span, 1.0);
      rate *= 0.5 * (1 + std::cos(M_PI * progress));
    }
  } else {
    rate *= std::pow(gamma, double(std::count_if(milestones.begin(), milestones.end(), [&](int64_t m) { return m <= step; })));
  }
  return rate;
}

}  // namespace m2vla::train
