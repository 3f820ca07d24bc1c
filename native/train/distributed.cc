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
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace m2vla::train {

#ifdef M2VLA_WITH_GLOO

bool distributed_available() { return true; }

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
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

// The transport endpoint, as torch.distributed picks it: the interface GLOO_SOCKET_IFNAME names; loopback when the
// master is on this machine's loopback (one machine); otherwise the address this machine's hostname resolves to.
std::shared_ptr<gloo::transport::Device> transport_device(const std::string& master_addr) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (master_addr == "localhost" || master_addr.rfind("127.", 0) == 0)
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

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

at::Tensor flatten(const std::vector<at::Tensor>& bucket) {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& t : bucket) flat.push_back(t.reshape({-1}));
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
  collective(options_, impl_->collective_ms, "rendezvous", [&] {
    c10d::TCPStoreOptions so;
    so.port = uint16_t(options_.master_port);
    so.isServer = options_.rank == 0;
    so.numWorkers = size_t(options_.world_size);
    so.timeout = options_.timeout;
    so.useLibUV = false;  // distributed.h: libuv inside Node
    impl_->store = c10::make_intrusive<c10d::TCPStore>(options_.master_addr, so);
    auto go = c10d::ProcessGroupGloo::Options::create(options_.timeout);
    go->devices.push_back(transport_device(options_.master_addr));
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, options_.rank, options_.world_size, go);
  });
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  collective(options_, impl_->collective_ms, "broadcast of the initial weights", [&] {
    for (const std::vector<at::Tensor>& bucket : buckets(tensors, options_.bucket_bytes)) {
      std::vector<at::Tensor> flat{flatten(bucket)};
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
      flats.push_back({flatten(bucket)});
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
    std::vector<at::Tensor> input{t.contiguous()};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int r = 0; r < options_.world_size; ++r) output[0].push_back(at::empty_like(input[0]));
    impl_->group->allgather(output, input)->wait(options_.timeout);
    return at::cat(output[0], 0);
  });
}

double ProcessGroup::take_collective_ms() {
  const double ms = impl_->collective_ms;
  impl_->collective_ms = 0;
  return ms;
}

#else  // M2VLA_WITH_GLOO

bool distributed_available() { return false; }

// A build without gloo's headers cannot make a group: the constructor fails, so the other members never run (they
// exist for the linker only).
struct ProcessGroup::Impl {};

ProcessGroup::ProcessGroup(const DistributedOptions& options) : options_(options) {
  fail(ErrorCode::Config, "distributed training: this build of the m2vla addon has no Gloo process group (gloo's headers ",
       "were missing when it was built); install them (Debian/Ubuntu: apt-get install libgloo-dev) and rebuild it ",
       "(npm run build:native)");
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::broadcast(const std::vector<at::Tensor>&) {}
void ProcessGroup::average(const std::vector<at::Tensor>&) {}
at::Tensor ProcessGroup::all_gather(const at::Tensor& t) { return t; }
double ProcessGroup::take_collective_ms() { return 0; }

#endif  // M2VLA_WITH_GLOO

}  // namespace m2vla::train
