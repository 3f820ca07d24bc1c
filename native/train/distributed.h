// Data-parallel training across processes on PyTorch's own distributed engine, c10d (Gloo on the CPU, NCCL on CUDA
// devices, chosen by DistributedOptions::device), with torchrun's
// conventions: every process has a rank in [0, world_size); rank 0 hosts the rendezvous store at
// master_addr:master_port and every rank connects to it.
//
// The trainer (trainer.cc) uses the group for four things only: the initial trainable weights come from rank 0
// (broadcast), the gradients are averaged over the ranks (bucketed all-reduce), what each rank adds to the MSM bank
// is gathered in rank order (all-gather), and the step's loss and stop request are agreed on (all-reduce).
//
// Every collective waits at most `timeout`: a rank that died (connection reset: at once) or hangs (after the
// timeout) turns the collective into an m2vla::Error with ErrorCode::Distributed on the others.
//
// The store is c10d's TCPStore with its classic (non-libuv) backend: libtorch exports the libuv symbols it bundles,
// and inside Node they bind to Node's own libuv, so the libuv backend would run its event loop on a libuv torch was
// not built against. (It happened to work with Node 20 in a test; the classic backend does not depend on it.)
//
// Optional at build time: CMakeLists.txt compiles the Gloo group only when gloo's headers are installed (libtorch
// ships gloo's code, not its headers), and the NCCL group only in a CUDA build against a libtorch with NCCL; a group
// the build lacks fails with E_CONFIG saying what to install. With NCCL, host tensors (the agreed loss) are staged
// through the device and come back where they were.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace m2vla::train {

struct DistributedOptions {
  c10::Device device = c10::kCPU;  // the trainer's: CPU -> Gloo, cuda:N -> NCCL on that GPU
  int rank = 0;
  int world_size = 1;  // 1: no process group at all
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // All-reduce buckets of at most this many bytes (torch DDP's bucket_cap_mb default, 25 MiB).
  int64_t bucket_bytes = int64_t(25) << 20;
};

// Whether this build has the process group for `device`: Gloo (M2VLA_WITH_GLOO) for the CPU, NCCL (M2VLA_WITH_NCCL)
// for CUDA devices.
bool distributed_available(const c10::Device& device);
// E_CONFIG saying what to build or install when this build has no group for `device`.
void require_distributed(const c10::Device& device);

class ProcessGroup {
 public:
  // Rendezvous and the device's group; E_CONFIG when this build lacks it, E_DISTRIBUTED when the peers do not all arrive within the timeout.
  explicit ProcessGroup(const DistributedOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

  // In place: every rank's tensors become rank 0's.
  void broadcast(const std::vector<at::Tensor>& tensors);
  // In place: every tensor becomes the mean over the ranks. Float32 tensors are packed into buckets of at most
  // bucket_bytes; all buckets are in flight together.
  void average(const std::vector<at::Tensor>& tensors);
  // Every rank's `t` (the same shape on each) concatenated along dim 0 in rank order.
  at::Tensor all_gather(const at::Tensor& t);

  // Milliseconds spent in collectives since the last call (the all-reduce share of a step).
  double take_collective_ms();

 private:
  struct Impl;
  DistributedOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace m2vla::train
