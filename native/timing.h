// Wall-clock milliseconds of a pipeline stage, for the per-stage breakdown act() reports.
#pragma once
#include <ATen/DeviceAccelerator.h>
#include <c10/core/Device.h>

#include <chrono>

namespace m2vla {

class Stopwatch {
 public:
  // On a GPU, kernels run after they are queued: `device` makes every lap wait for the device first, so a stage's
  // time is its execution, not its launch.
  explicit Stopwatch(c10::Device device = c10::kCPU) : device_(device), start_(std::chrono::steady_clock::now()) {}
  // Milliseconds since construction or the previous lap.
  double lap() {
    if (!device_.is_cpu()) at::accelerator::synchronizeDevice(device_.index());
    auto now = std::chrono::steady_clock::now();
    double ms = std::chrono::duration<double, std::milli>(now - start_).count();
    start_ = now;
    return ms;
  }

 private:
  c10::Device device_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace m2vla
