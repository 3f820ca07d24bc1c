#include "train/distributed.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <exception>
#include <string_view>
#include <type_traits>

#include "error.h"
#include "timing.h"

#ifdef M2VLA_WITH_GLOO
// The gloo headers this includes come from the system (Debian/Ubuntu libgloo-dev): ProcessGroupGloo holds gloo
// objects only behind pointers, so the class compiles against those headers while the gloo code that runs is the
// one libtorch_cpu bundles (nothing here links libgloo).
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef M2VLA_WITH_NCCL
// libtorch_cuda's NCCL group (USE_C10D_NCCL); nccl.h comes from the CUDA wheel's nvidia/nccl/include.
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if defined(M2VLA_WITH_GLOO) || defined(M2VLA_WITH_NCCL)
#define M2VLA_WITH_C10D
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace m2vla::train {

#ifdef M2VLA_WITH_GLOO
constexpr bool kGloo = true;
#else
constexpr bool kGloo = false;
#endif
#ifdef M2VLA_WITH_NCCL
constexpr bool kNccl = true;
#else
constexpr bool kNccl = false;
#endif

bool distributed_available(const c10::Device& device) { return device.is_cuda() ? kNccl : kGloo; }

void require_distributed(const c10::Device& device) {
  if (distributed_available(device)) return;
  if (device.is_cuda())
    fail(ErrorCode::Config, "data-parallel training on ", device.str(), ": this build of m2vla has no NCCL process group ",
         "(it needs a CUDA build, -DM2VLA_CUDA=ON / M2VLA_CUDA=1, against a CUDA libtorch built with NCCL); train on one GPU ",
         "or with device 'cpu'");
  fail(ErrorCode::Config, "distributed training: this build of the m2vla addon has no Gloo process group (gloo's headers ",
       "were missing when it was built); install them (Debian/Ubuntu: apt-get install libgloo-dev) and rebuild it ",
       "(npm run build:native)");
}

#ifdef M2VLA_WITH_C10D

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> group;
  double collective_ms = 0;
};

namespace {

[[noreturn]] void distributed_failure(const DistributedOptions& o, const char* what, const char* detail) {
  if (std::string_view(what) == "rendezvous")
    fail(ErrorCode::Distributed, "rank ", o.rank, " of ", o.world_size, ": rendezvous at ", o.master_addr, ":", o.master_port,
         " failed: not every process arrived within the ", o.timeout.count() / 1000.0, " s timeout, or the address is ",
         "unreachable or taken (", detail, ")");
  fail(ErrorCode::Distributed, "rank ", o.rank, " of ", o.world_size, ": ", what, " failed: another process exited or did not ",
       "take part within the ", o.timeout.count() / 1000.0, " s timeout (", detail, ")");
}

// Runs one collective (or the rendezvous), turning c10d's errors into E_DISTRIBUTED and adding its wall time to `ms`.
template <typename F>
auto collective(const DistributedOptions& o, double& ms, const char* what, F run) -> decltype(run()) {
  Stopwatch watch;
  try {
    if constexpr (std::is_void_v<decltype(run())>) {
      run();
      ms += watch.lap();
    } else {
      auto out = run();
      ms += watch.lap();
      return out;
    }
  } catch (const m2vla::Error&) {
    throw;
  } catch (const c10::Error& e) {
    distributed_failure(o, what, e.what_without_backtrace());
  } catch (const std::exception& e) {
    distributed_failure(o, what, e.what());
  }
}

void check(const DistributedOptions& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    fail(ErrorCode::Input, "distributed: rank ", o.rank, " is not in [0, worldSize ", o.world_size, ")");
  if (o.master_port < 1 || o.master_port > 65535) fail(ErrorCode::Input, "distributed: masterPort ", o.master_port, " is not a TCP port");
  if (o.master_addr.empty()) fail(ErrorCode::Input, "distributed: masterAddr is empty");
  if (o.timeout.count() <= 0) fail(ErrorCode::Input, "distributed: the timeout must be positive");
}

#ifdef M2VLA_WITH_GLOO
// The transport endpoint, as torch.distributed picks it: the interface GLOO_SOCKET_IFNAME names; loopback when the
// master is on this machine's loopback (one machine); otherwise the address this machine's hostname resolves to.
std::shared_ptr<gloo::transport::Device> transport_device(const std::string& master_addr) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (master_addr == "localhost" || master_addr.rfind("127.", 0) == 0)
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

// Consecutive tensors of one dtype in buckets of at most `bucket_bytes` (a larger tensor is a bucket of its own).
std::vector<std::vector<at::Tensor>> buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<std::vector<at::Tensor>> out;
  int64_t bytes = 0;
  for (const at::Tensor& t : tensors) {
    const int64_t n = t.numel() * int64_t(t.element_size());
    if (out.empty() || bytes + n > bucket_bytes || out.back().front().scalar_type() != t.scalar_type()) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(t);
    bytes += n;
  }
  return out;
}

// One bucket as one flat tensor on the group's device (NCCL: the GPU; host tensors such as the agreed loss go over).
at::Tensor flatten(const std::vector<at::Tensor>& bucket, const c10::Device& device) {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& t : bucket) flat.push_back(t.reshape({-1}).to(device));
  return at::cat(flat, 0);
}

void unflatten(const at::Tensor& flat, const std::vector<at::Tensor>& bucket) {
  int64_t offset = 0;
  for (const at::Tensor& t : bucket) {
    t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

}  // namespace

ProcessGroup::ProcessGroup(const DistributedOptions& options) : options_(options), impl_(std::make_unique<Impl>()) {
  check(options_);
  require_distributed(options_.device);
  collective(options_, impl_->collective_ms, "rendezvous", [&] {
    c10d::TCPStoreOptions so;
    so.port = uint16_t(options_.master_port);
    so.isServer = options_.rank == 0;
    so.numWorkers = size_t(options_.world_size);
    so.timeout = options_.timeout;
    so.useLibUV = false;  // distributed.h: libuv inside Node
    impl_->store = c10::make_intrusive<c10d::TCPStore>(options_.master_addr, so);
#ifdef M2VLA_WITH_NCCL
    if (options_.device.is_cuda()) {
      // NCCL binds a communicator to the current device; the collectives run on its current stream.
      c10::cuda::set_device(options_.device.index());
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = options_.timeout;
      impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, options_.rank, options_.world_size, no);
      return;
    }
#endif
#ifdef M2VLA_WITH_GLOO
    auto go = c10d::ProcessGroupGloo::Options::create(options_.timeout);
    go->devices.push_back(transport_device(options_.master_addr));
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, options_.rank, options_.world_size, go);
#endif
  });
}

ProcessGroup::~ProcessGroup() {
  // NCCL's communicators and watchdog end here rather than in the destructor, which warns about a missing
  // destroy_process_group; Gloo's shutdown does nothing.
  try {
    if (impl_->group) impl_->group->shutdown();
  } catch (const std::exception&) {  // a dead peer: nothing left to release cleanly
  }
}

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  collective(options_, impl_->collective_ms, "broadcast of the initial weights", [&] {
    for (const std::vector<at::Tensor>& bucket : buckets(tensors, options_.bucket_bytes)) {
      std::vector<at::Tensor> flat{flatten(bucket, options_.device)};
      impl_->group->broadcast(flat, c10d::BroadcastOptions{})->wait(options_.timeout);
      unflatten(flat[0], bucket);
    }
  });
}

void ProcessGroup::average(const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  collective(options_, impl_->collective_ms, "all-reduce", [&] {
    const std::vector<std::vector<at::Tensor>> parts = buckets(tensors, options_.bucket_bytes);
    std::vector<std::vector<at::Tensor>> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    flats.reserve(parts.size());  // the works hold references to these vectors' tensors
    for (const std::vector<at::Tensor>& bucket : parts) {
      flats.push_back({flatten(bucket, options_.device)});
      works.push_back(impl_->group->allreduce(flats.back()));
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      works[i]->wait(options_.timeout);
      unflatten(flats[i][0].div_(options_.world_size), parts[i]);
    }
  });
}

at::Tensor ProcessGroup::all_gather(const at::Tensor& t) {
  at::NoGradGuard no_grad;
  return collective(options_, impl_->collective_ms, "all-gather of the memory bank's new entries", [&] {
    std::vector<at::Tensor> input{t.to(options_.device).contiguous()};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int r = 0; r < options_.world_size; ++r) output[0].push_back(at::empty_like(input[0]));
    impl_->group->allgather(output, input)->wait(options_.timeout);
    return at::cat(output[0], 0).to(t.device());
  });
}

double ProcessGroup::take_collective_ms() {
  const double ms = impl_->collective_ms;
  impl_->collective_ms = 0;
  return ms;
}

#else  // M2VLA_WITH_C10D

// A build without either group: the constructor fails (require_distributed), so the other members never run (they
// exist for the linker only).
struct ProcessGroup::Impl {};

ProcessGroup::ProcessGroup(const DistributedOptions& options) : options_(options) { require_distributed(options.device); }
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::broadcast(const std::vector<at::Tensor>&) {}
void ProcessGroup::average(const std::vector<at::Tensor>&) {}
at::Tensor ProcessGroup::all_gather(const at::Tensor& t) { return t; }
double ProcessGroup::take_collective_ms() { return 0; }

#endif  // M2VLA_WITH_C10D

}  // namespace m2vla::train
