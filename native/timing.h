// Wall-clock milliseconds of a pipeline stage, for the per-stage breakdown act() reports.
#pragma once
#include <ATen/DeviceAccelerator.h>
#include <c10/core/Device.h>

#include <chrono>

namespace m2vla {

// Whether stage laps on a GPU wait for the device (per thread; on by default). A caller that does not want the stage
// breakdown (the bench's throughput runs, a CUDA graph capture) turns it off for a scope: a device sync per stage
// costs host round trips and cannot be captured.
inline bool& stage_syncs_enabled() {
  thread_local bool enabled = true;
  return enabled;
}

class StageSyncScope {
 public:
  explicit StageSyncScope(bool enabled) : previous_(stage_syncs_enabled()) { stage_syncs_enabled() = enabled; }
  ~StageSyncScope() { stage_syncs_enabled() = previous_; }
  StageSyncScope(const StageSyncScope&) = delete;
  StageSyncScope& operator=(const StageSyncScope&) = delete;

 private:
  bool previous_;
};

class Stopwatch {
 public:
  // On a GPU, kernels run after they are queued: `device` makes every lap wait for the device first (unless a
  // StageSyncScope turned that off), so a stage's time is its execution, not its launch.
  explicit Stopwatch(c10::Device device = c10::kCPU) : device_(device), start_(std::chrono::steady_clock::now()) {}
  // Milliseconds since construction or the previous lap.
  double lap() {
    if (!device_.is_cpu() && stage_syncs_enabled()) at::accelerator::synchronizeDevice(device_.index());
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
